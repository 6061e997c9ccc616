"""Keep the system prompt out of streamed answers, before any of it reaches a reader.

Checking only the finished answer is too late: its tokens have already been printed in the
terminal and shown in Discord drafts. `LeakGuard` sits on the stream itself. It holds back
the end of the text whenever that end could be the beginning of a copy of the protected
text, and releases it as soon as the answer goes another way. Once the held text matches a
long enough stretch of the protected text, the answer counts as a leak and nothing more is
released. Matching is done on skeletons (rag/answering/injection.py), so a copy in
look-alike letters, with invisible characters or other spacing and case, is caught too.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.answering.injection import skeleton

# A copied stretch this long (in skeleton characters) is a leak. Shorter overlaps are
# ordinary: an answer may well say "the course materials do not cover it".
LEAK_CHARS = 60


class LeakGuard:
    """Filters a stream of text pieces so that no copy of the protected texts gets out."""

    def __init__(self, protected: Sequence[str], leak_chars: int = LEAK_CHARS) -> None:
        self._secrets = [s for s in (skeleton(p) for p in protected) if s]
        self._leak_chars = leak_chars
        self._held = ""
        self.leaked = False

    def feed(self, piece: str) -> str:
        """Take the next piece; return the text that is safe to show now (maybe empty)."""
        if self.leaked:
            return ""
        text = self._held + piece
        start = self._copy_start(text)
        if len(skeleton(text[start:])) >= self._leak_chars:
            self.leaked = True
            self._held = ""
            return ""
        self._held = text[start:]
        return text[:start]

    def finish(self) -> str:
        """The end of the stream: release what was held back, unless it was a leak."""
        held, self._held = self._held, ""
        return "" if self.leaked else held

    def _copy_start(self, text: str) -> int:
        """Where the longest end of `text` that reads as part of a protected text begins."""
        for start in range(len(text)):
            folded = skeleton(text[start:])
            if folded and any(folded in secret for secret in self._secrets):
                return start
        return len(text)


def leaks(text: str, protected: Sequence[str], leak_chars: int = LEAK_CHARS) -> bool:
    """Whether a finished text contains a long enough copy of any protected text."""
    folded = skeleton(text)
    secrets = [skeleton(p) for p in protected]
    return any(
        folded[i : i + leak_chars] in secret
        for secret in secrets
        for i in range(max(len(folded) - leak_chars + 1, 0))
    )
