"""Hint mode for open assignments: decide whether a question targets one, and compose a hint
(quotes with citations, sections to read, one guiding question) instead of a solution.

Detection (measured in docs/benchmarks.md on eval/assignment_questions.jsonl) fires on any of:
- the question names the assignment (a keyword from its file, or its title);
- it says it is graded work ("my homework", "task 2", "check my answer") and is close to a task;
- it is very close to a task's text (cosine of the embeddings);
- it is fairly close and repeats a task's specifics: a number, or code names like count_pairs;
- it is asked in the assignment's channel, or in a hints-only channel (policy, not detection).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.course.assignments import Assignment
from rag.course.protect import normalise
from rag.index.embedder import Embedder

# Words that say "this is my graded work".
_WORK = re.compile(
    r"\b(assignment|homework|hw|pset|problem set|exercise|task|part|my (?:answer|solution|code)"
    r"|check my|solve|for me|lab|answer|compute|calculate|by hand|code|implement|write)\b"
)
# Specifics: numbers of two or more characters, bracketed vectors, code names, and three or
# more words of an example the task quotes ('low lower lowest newer wider').
_NUMBER = re.compile(r"\d[\d.]+|\[[\d.,\s-]+\]")
_CODE = re.compile(r"\b[a-z]\w{2,}_\w{2,}\b|\b\w{3,}(?=\()")
_WORD = re.compile(r"[a-z0-9]+")
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Cosine thresholds of the detector (chosen on the dev half of the question set)."""

    alone: float = 0.80
    with_work_words: float = 0.45
    with_specifics: float = 0.40


@dataclass(frozen=True, slots=True)
class Target:
    """Why a question gets hint mode, and for which assignment (None: a hints-only channel)."""

    assignment: Assignment | None
    reason: str
    similarity: float = 0.0


def specifics(text: str) -> set[str]:
    """Numbers, vectors and code names of a text: the details of a task."""
    flat = text.casefold()
    numbers = {" ".join(n.replace(",", " ").split()) for n in _NUMBER.findall(flat)}
    return numbers | set(_CODE.findall(flat))


def shares_specifics(question: str, task: str) -> bool:
    """Whether a question repeats a task's numbers, code names, or 3+ words of its example."""
    if specifics(question) & specifics(task):
        return True
    asked = set(_WORD.findall(question.casefold()))
    for a, b in _QUOTED.findall(task.casefold()):
        example = set(_WORD.findall(a or b))
        if len(example) >= 3 and len(example & asked) >= 3:
            return True
    return False


class AssignmentDetector:
    """Embeds each open assignment's tasks once and compares questions with them."""

    def __init__(self, embedder: Embedder, thresholds: Thresholds | None = None) -> None:
        self.embedder = embedder
        self.thresholds = thresholds or Thresholds()
        self._vectors: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
        self._lock = threading.Lock()

    def _task_vectors(self, a: Assignment) -> np.ndarray:
        key = (a.id, a.tasks)
        with self._lock:
            if key not in self._vectors:
                self._vectors[key] = self.embedder.embed_documents([*a.tasks, a.title])
            return self._vectors[key]

    def similarity(self, question_vec: np.ndarray, a: Assignment) -> float:
        """The best cosine between a question and the assignment's tasks or title."""
        return float(np.max(self._task_vectors(a) @ question_vec))

    def target(
        self,
        question: str,
        open_assignments: Sequence[Assignment],
        channel_ids: set[int] = frozenset(),  # type: ignore[assignment]
        hints_only: bool = False,
    ) -> Target | None:
        """The assignment a question targets, or None for an ordinary answer."""
        if not open_assignments:
            return Target(None, "hints-only channel") if hints_only else None
        flat = normalise(question)
        vec = self.embedder.embed_query(question)
        scored = sorted(((self.similarity(vec, a), a) for a in open_assignments),
                        key=lambda pair: pair[0], reverse=True)
        for sim, a in scored:  # naming an assignment beats being near another one
            if any(_phrase(normalise(k), flat) for k in (*a.keywords, a.title)):
                return Target(a, "names the assignment", sim)
        for sim, a in scored:
            reason = self._reason(flat, question, sim, a, channel_ids)
            if reason:
                return Target(a, reason, sim)
        if hints_only:
            return Target(scored[0][1], "hints-only channel", scored[0][0])
        return None

    def _reason(
        self, flat: str, question: str, sim: float, a: Assignment, channel_ids: set[int]
    ) -> str:
        t = self.thresholds
        if a.channels & channel_ids:
            return "asked in the assignment's channel"
        if sim >= t.alone:
            return "close to a task"
        if sim >= t.with_work_words and _WORK.search(flat):
            return "graded-work words, near a task"
        if sim >= t.with_specifics and any(shares_specifics(question, k) for k in a.tasks):
            return "repeats a task's specifics"
        return ""


def _phrase(phrase: str, text: str) -> bool:
    return bool(phrase) and re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text) is not None
