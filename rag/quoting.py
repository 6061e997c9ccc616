"""User input quoted back in an error message, cut short: a message that echoed a
3,000-character value whole would be longer than a chat reply may be."""

from __future__ import annotations

ECHO_CHARS = 60


def quoted(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` in single quotes, cut to `limit` characters with an ellipsis."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"'{text}'"
