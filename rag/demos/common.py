"""What every demo shares: the typed input error, model pickers and readable token text."""

from __future__ import annotations

from collections.abc import Sequence

from rag.answering.assistant import InvalidQuestion
from rag.llm.base import ChatModel
from rag.llm.local import LocalChatModel
from rag.llm.registry import ModelRegistry, UnknownModel

# Shown instead of invisible characters, so students see where spaces and newlines are.
VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


class DemoInputError(InvalidQuestion):
    """A demo was asked for something it cannot do; the message says why, for the user.

    It is an `InvalidQuestion`, so the CLI and the bot's one error policy already show its
    message as it is (privately, in Discord) instead of a traceback.
    """


def check_text(value: str, what: str, max_chars: int) -> str:
    """`value` if it has text and fits `max_chars`, else a clear `DemoInputError`."""
    if not value or not value.strip():
        raise DemoInputError(f"The {what} is empty: please write something.")
    if len(value) > max_chars:
        raise DemoInputError(
            f"The {what} is {len(value):,} characters long; the limit is {max_chars:,}."
        )
    return value


def check_range(value: float, what: str, low: float, high: float) -> None:
    """Raise a clear `DemoInputError` unless `low <= value <= high`."""
    if not low <= value <= high:
        raise DemoInputError(f"{what} must be between {low:g} and {high:g} (got {value:g}).")


def pick_model(registry: ModelRegistry, name: str | None) -> ChatModel:
    """The registry's model called `name` (the default when None), or a `DemoInputError`."""
    try:
        return registry.get(name or None)
    except UnknownModel as exc:
        raise DemoInputError(str(exc)) from exc


def local_names(registry: ModelRegistry) -> list[str]:
    """The registry's models that run in this process (they expose logits and attention)."""
    return [n for n, spec in registry.settings.models.items() if spec.backend == "local"]


def pick_local_model(registry: ModelRegistry, name: str | None, feature: str) -> LocalChatModel:
    """A local model for a demo that needs the weights, or a `DemoInputError` saying why."""
    chat = pick_model(registry, name)
    if not isinstance(chat, LocalChatModel):
        local = ", ".join(local_names(registry)) or "none configured"
        raise DemoInputError(
            f"{feature} is only available for local models (not '{chat.name}', which runs on a "
            f"server); local models: {local}."
        )
    return chat


def visible(text: str) -> str:
    """Token text with spaces, newlines and tabs made visible (`␣Paris`, `↵`)."""
    return text.translate(VISIBLE) if text else "∅"


Table = tuple[tuple[str, ...], Sequence[tuple[str, ...]]]


def text_table(table: Table) -> str:
    """A header and rows as fixed-width text columns (for terminals and code blocks)."""
    header, rows = table
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def percent(p: float) -> str:
    """A probability as a short percentage: `41.2%`, `0.03%`, `<0.01%`."""
    if p >= 0.001:
        return f"{p:.1%}"
    return f"{p:.2%}" if p >= 0.0001 else "<0.01%"
