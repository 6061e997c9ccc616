"""Verified answers: a model's draft, cut into sentences, each judged by the grounding
checker against the retrieved passages and the wider index; only supported sentences are
shown, each citing the passage that supports it.

Unsupported sentences are dropped, not shown struck through: a student should not read an
invented sentence at all. `ask --json` still lists them with their verdict and
`shown: false`, so what was dropped stays inspectable. When fewer than half of the draft's
sentences survive (or none), the answer falls back to the quote-first one with a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rag.answering.grounding import GroundingChecker, split_claims
from rag.answering.styles import AnswerSentence
from rag.index.documents import Hit

MIN_KEPT_SHARE = 0.5
FALLBACK_NOTE = (
    "The model's answer could not be verified against the course materials, so this answer "
    "quotes them instead."
)


@dataclass(frozen=True, slots=True)
class Verified:
    """The checked draft: every sentence with its verdict, and the passages cited (the
    retrieved ones, then any the wider search found)."""

    sentences: tuple[AnswerSentence, ...]
    passages: tuple[Hit, ...]

    @property
    def kept(self) -> tuple[AnswerSentence, ...]:
        """The sentences shown."""
        return tuple(s for s in self.sentences if s.shown)

    @property
    def too_little(self) -> bool:
        """Whether so little survived that the answer should fall back to quotes."""
        return not self.kept or len(self.kept) < MIN_KEPT_SHARE * len(self.sentences)

    @property
    def text(self) -> str:
        """The shown sentences, each followed by its citation."""
        return " ".join(f"{s.text} [{s.citation}]" for s in self.kept)

    def note(self) -> str:
        """What the student is told about dropped sentences ("" when none were)."""
        dropped = len(self.sentences) - len(self.kept)
        if not dropped:
            return ""
        return (f"{dropped} of {len(self.sentences)} sentences of the model's answer were "
                "removed: the course materials don't support them.")


def verify(draft: str, hits: Sequence[Hit], checker: GroundingChecker) -> Verified:
    """Judge every sentence of a draft against the passages (and the wider index, when the
    checker has a retriever)."""
    claims = split_claims(draft)
    report = checker.check_claims(claims, hits, wider_search=checker.retriever is not None)
    passages = list(hits)
    sentences = []
    for check in report.claims:
        if check.supported and check.evidence is not None:
            sentences.append(AnswerSentence(check.text, _number(check.evidence, passages),
                                            check.verdict))
        else:
            sentences.append(AnswerSentence(check.text, None, check.verdict, shown=False))
    return Verified(tuple(sentences), tuple(passages))


def _number(hit: Hit, passages: list[Hit]) -> int:
    """The 1-based number of a passage, appending it when the wider search found it."""
    for n, known in enumerate(passages, 1):
        if known.chunk.id == hit.chunk.id:
            return n
    passages.append(hit)
    return len(passages)
