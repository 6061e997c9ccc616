"""The protected list of open assignments: find any item in a text, and withhold the sentences
that contain one. Matching ignores case, spacing, markdown emphasis and thousands separators,
so "65,536", "65 536" and "**65536**" are one item."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

WITHHELD = "[withheld: this would give away part of an open assignment]"


def normalise(text: str) -> str:
    """NFKC, lower case, no markdown emphasis or code ticks, digits unseparated, single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[*`_]", "", text)
    text = re.sub(r"(?<=\d)[,\u202f'\s](?=\d{3}\b)", "", text)
    return " ".join(text.split())


class ProtectedGuard:
    """Checks texts against a list of protected items (empty list: checks nothing)."""

    def __init__(self, items: Iterable[str]) -> None:
        self.items = tuple(dict.fromkeys(i for i in items if normalise(i)))
        self._patterns = [self._pattern(normalise(i)) for i in self.items]
        self.longest = max((len(i) for i in self.items), default=0)

    @staticmethod
    def _pattern(item: str) -> re.Pattern[str]:
        # Word edges only where the item itself starts or ends with a word character, so
        # "42" does not match inside "1420" but "r * (d + k)" still matches anywhere.
        left = r"(?<!\w)" if item[0].isalnum() else ""
        right = r"(?!\w)" if item[-1].isalnum() else ""
        return re.compile(left + re.escape(item) + right)

    def __bool__(self) -> bool:
        return bool(self.items)

    def leaks(self, text: str) -> list[str]:
        """The protected items that appear in a text."""
        flat = normalise(text)
        return [i for i, p in zip(self.items, self._patterns, strict=True) if p.search(flat)]

    def withhold(self, text: str) -> str:
        """The text with every sentence (or line) that holds a protected item replaced."""
        if not self or not self.leaks(text):
            return text
        parts = re.split(r"((?<=[.!?])\s+|\n+)", text)
        kept = [WITHHELD if part.strip() and self.leaks(part) else part for part in parts]
        out = "".join(kept)
        # An item split across two sentences (rare) survives sentence-wise: drop everything.
        return out if not self.leaks(out) else WITHHELD
