"""Questions about a version of a model family that the materials never mention.

"How many parameters does GPT-5 have?" retrieves passages about GPT-3 that look relevant
enough to pass the abstention gate, and quoting them would answer a different question. The
materials name model families with versions ("GPT-3", "GPT-4", "LLaMA-65B" is a size, not a
version), so a question naming a version of a family the materials know, in a form they never
use, asks about something they don't cover. Only written-together forms count ("GPT-5",
"gpt5", "Llama-4", "Qwen2.5"): "rank 8" or "week 6" are not names. Families of number formats
and hardware ("int4", "fp16", "top-5", "utf-8") are left alone, and a family the materials
name only once is not recognised as one.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Iterable

from rag.index.chroma_store import ChromaStore

# A family name written with its version: "GPT-5", "gpt5", "Llama-3.1", "Qwen2.5", "GPT-4o".
_NAME = r"(?<![\w.-])([a-z]{{2,12}}){}(\d{{1,2}}(?:\.\d{{1,2}})?[a-z]?)(?![\w.]*\d)"
_VERSIONED = re.compile(_NAME.format("-?"), re.IGNORECASE)
# The materials' side also counts "Llama 2" written with a space as a mention of llama-2.
_VERSIONED_SPACED = re.compile(_NAME.format("[- ]?"), re.IGNORECASE)
# Prefixes of number formats, encodings, ranks and hardware rather than model families.
NOT_FAMILIES = frozenset({
    "int", "uint", "fp", "bf", "float", "top", "utf", "sha", "md", "rtx", "gtx", "cuda", "sm",
    "python", "py", "ubuntu", "torch", "pytorch", "cu", "rank", "layer", "step", "week",
    "class", "lab", "task", "part", "chapter", "section", "table", "fig", "figure", "eq", "page",
})
_SIZE_UNITS = frozenset("bmkt")
# A family must appear with this many distinct versions before an unseen one is refused.
MIN_VERSIONS = 2


def versioned_names(text: str, spaced: bool = False) -> set[tuple[str, str]]:
    """The (family, version) pairs a text names, lower case, written together ("GPT-4",
    "gpt4") or with `spaced` also apart ("GPT 4"); sizes ("LLaMA-65B", "7b") are not
    versions."""
    pattern = _VERSIONED_SPACED if spaced else _VERSIONED
    return {(f.lower(), v.lower()) for f, v in pattern.findall(text)
            if f.lower() not in NOT_FAMILIES and v[-1].lower() not in _SIZE_UNITS}


class VersionCatalogue:
    """The model families the materials name with versions, and the versions they name."""

    def __init__(self, texts: Iterable[str]) -> None:
        together: dict[str, set[str]] = defaultdict(set)
        apart: dict[str, set[str]] = defaultdict(set)
        for text in texts:
            for family, version in versioned_names(text):
                together[family].add(version)
            for family, version in versioned_names(text, spaced=True):
                apart[family].add(version)
        # A family is one the materials write with at least two versions ("GPT-3", "GPT-4");
        # its known versions include those written apart ("GPT 3.5").
        self.families = {f: frozenset(v | apart[f]) for f, v in together.items()
                         if len(v) >= MIN_VERSIONS}

    def unknown(self, question: str) -> list[str]:
        """The versions of known families that the question names and the materials don't
        ("gpt-5" when they speak of GPT-2, GPT-3 and GPT-4)."""
        return sorted(f"{family}-{version}" for family, version in versioned_names(question)
                      if family in self.families and version not in self.families[family])


class VersionIndex:
    """A `VersionCatalogue` of an index's current chunks, rebuilt when the index changes."""

    def __init__(self, store: ChromaStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._built: tuple[object, VersionCatalogue] | None = None

    def catalogue(self) -> VersionCatalogue:
        """The catalogue of the live index."""
        version = self.store.version()
        with self._lock:
            if self._built is None or self._built[0] != version:
                ids = [cid for e in self.store.manifest().values() for cid in e.chunk_ids]
                texts = (t for _, t in self.store.iter_texts(ids))
                self._built = (version, VersionCatalogue(texts))
            return self._built[1]
