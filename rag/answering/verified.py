"""Verified answers: a model's draft, cut into sentences, each judged by the grounding
checker against the retrieved passages and the wider index; only supported sentences are
shown, each citing the passage that supports it.

Unsupported sentences are dropped, not shown struck through: a student should not read an
invented sentence at all. A supported sentence must also be worded from the materials: the
checker judges meaning, which a small model's rewording can keep while its words are its own
("The passage mentions that ..."), so a sentence is shown only when at most one of its
content words (the faithfulness measure's, rag/answering/faithfulness.py), and no more than a
fifth of them, is in neither the question nor the passage it cites. Nor is a draft's last
sentence that the token limit cut off ("The default block size is"), or one that only
restates the question. `ask --json` still lists them all with their verdict and `shown:
false`, so what was dropped stays inspectable. When fewer than half of the draft's sentences
survive (or none), the answer falls back to the quote-first one with a note.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.answering.faithfulness import (
    STOP_WORDS,
    content_words,
    invented_words,
    source_stems,
    stem,
)
from rag.answering.grounding import CITATION, GroundingChecker, split_claims
from rag.answering.styles import AnswerSentence
from rag.index.documents import Hit

MIN_KEPT_SHARE = 0.5
# How many of a shown sentence's content words may come from neither the question nor its
# passage: one reworded word ("divides" for the paper's "partitions") in five or more.
MAX_UNSOURCED_WORDS = 1
MAX_UNSOURCED_SHARE = 0.2
# Verdicts of supported sentences that are not shown all the same.
REWORDED = "reworded"
UNFINISHED = "unfinished"
RESTATED = "restates_question"
# A draft that ends a sentence: its last character (citations, closing quotes and brackets
# aside).
_ENDS_SENTENCE = re.compile(r"[.!?…][\"'”’)\]]*$")
_WORD = re.compile(r"\w+")
_POINT = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)]|\|)\s*\S")
# Words a point does not end on: what it says goes on after them.
_LEADS_ON = STOP_WORDS | {"a", "an", "the", "is", "are", "was", "were", "be", "of", "to", "in",
                          "on", "for", "by", "as", "at", "or", "and", "its", "their", "our"}
# Questions a sentence of nothing but their own words can answer ("Is LoRA applied to ...?").
_YES_NO = re.compile(r"^\W*(?:is|are|was|were|does|do|did|can|could|should|will|would|has|have)"
                     r"\b", re.IGNORECASE)
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
                "removed: the course materials don't support them (or not in those words).")


def verify(
    draft: str, hits: Sequence[Hit], checker: GroundingChecker, question: str = ""
) -> Verified:
    """Judge every sentence of a draft against the passages (and the wider index, when the
    checker has a retriever); supported ones are shown when worded from the materials."""
    claims = split_claims(draft)
    report = checker.check_claims(claims, hits, wider_search=checker.retriever is not None)
    cut = _cut_off(draft, claims)
    passages = list(hits)
    sentences = []
    for check in report.claims:
        if not check.supported or check.evidence is None:
            sentences.append(AnswerSentence(check.text, None, check.verdict, shown=False))
            continue
        withheld = _withheld(check.text, check.evidence.chunk.text, question, check.text == cut)
        if withheld:
            sentences.append(AnswerSentence(check.text, None, withheld, shown=False))
        else:
            sentences.append(AnswerSentence(check.text, _number(check.evidence, passages),
                                            check.verdict))
    return Verified(tuple(sentences), tuple(passages))


def _cut_off(draft: str, claims: Sequence[str]) -> str | None:
    """The draft's last claim when the draft stops mid-sentence (the token limit cut it)."""
    text = CITATION.sub("", draft).strip()
    if not claims or not text or _ENDS_SENTENCE.search(text):
        return None
    # A list's last point needs no end mark, unless it stops on a word that leads on.
    last_line = text.splitlines()[-1]
    words = _WORD.findall(last_line.casefold())
    if _POINT.match(last_line) and words and words[-1] not in _LEADS_ON:
        return None
    last = _WORD.findall(claims[-1].casefold())
    ending = _WORD.findall(text.casefold())[-len(last):]
    return claims[-1] if last and ending == last else None


def _withheld(sentence: str, passage: str, question: str, cut_off: bool) -> str | None:
    """Why a supported sentence is not shown, or None when it is."""
    if cut_off:
        return UNFINISHED
    words = content_words(sentence)
    unsourced = invented_words(sentence, source_stems([question, passage]))
    if len(unsourced) > min(MAX_UNSOURCED_WORDS, MAX_UNSOURCED_SHARE * len(words)):
        return REWORDED
    if question and not _YES_NO.match(question) and not _beyond(sentence, question):
        return RESTATED
    return None


def _beyond(sentence: str, question: str) -> list[str]:
    """The sentence's content words and numbers that the question does not use ("6" in "The
    encoder has 6 layers.")."""
    asked = source_stems([question])
    numbers = [word for word in _WORD.findall(sentence.casefold()) if word[:1].isdigit()]
    return [word for word in [*content_words(sentence), *numbers] if stem(word) not in asked]


def _number(hit: Hit, passages: list[Hit]) -> int:
    """The 1-based number of a passage, appending it when the wider search found it."""
    for n, known in enumerate(passages, 1):
        if known.chunk.id == hit.chunk.id:
            return n
    passages.append(hit)
    return len(passages)
