"""Hint mode for open assignments: decide whether a question targets one, and compose a hint
(quotes with citations, sections to read, one guiding question) instead of a solution.

Detection (measured in docs/benchmarks.md on eval/assignment_questions*.jsonl) fires on any of:
- the question names the assignment (a keyword from its file, or its title);
- it says it is graded work ("my homework", "task 2", "check my answer") and is close to a task;
- it checks the asker's own result ("I got 0.2%, is that right?") and is close to a task;
- it asks for work to be done ("solve", "compute", "write the code") and is closer to a task
  (general how-to questions use those words too);
- it is very close to a task's text (cosine of the embeddings);
- it is fairly close and repeats one of a task's details: a number, a vector, a name like k1 or
  count_pairs;
- it repeats several of a task's details (or three words of the example it quotes), whatever
  its wording: a student pasting "8 * (4096 + 4096)" or the corpus is asking about that task;
- it is asked in the assignment's channel, or in a hints-only channel (policy, not detection).
Closeness is that of the question as written or, if higher, as read with its abbreviations of a
task's words spelt out ("q proj": query projection, "attn": attention).
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
    r"\b(assignment|homework|hw|pset|problem set|exercise|task|(?:part|question|problem) \d"
    r"|my (?:answer|solution|code)|check my|lab|by hand)\b"
)
# Words that ask for work to be done: graded work uses them, but so do general how-to questions
# ("How do I compute attention in PyTorch?", "which part of the model does LoRA adapt?").
_ASKS_FOR_WORK = re.compile(
    r"\b(solve|for me|answer|compute|calculate|code|implement|write|part)\b"
)
# A student checking a result ("I got 0.2%, is that right?") says it is their result, and gives
# a value or asks to confirm it. General questions state values and ask "right?" too ("cosine
# similarity is between -1 and 1, right?"); "I got" alone is no result ("I got confused").
_RESULT = re.compile(
    r"\b(?:i (?:got|get|am getting|calculated|computed|found|did)|my (?:result|working)"
    r"|came out)\b"
)
_CONFIRM = re.compile(
    r"\b(?:(?:is|was) (?:that|this|it|mine) (?:right|correct)|am i (?:right|correct)|confirm)\b"
    r"|\b(?:right|correct)\s*\?"
)
# Details of a task's instance: bracketed vectors, numbers (single digits too: "r = 8"), names
# with a digit (k1, v2), code names (count_pairs, f(...)), and the words of a quoted example
# ('low lower lowest newer wider'). Vectors are taken out before numbers so that "[1, 0]" is one
# detail, not three. Notation without a value (d_k, q) is no detail: general questions use it.
_VECTOR = re.compile(r"\[[\d.,\s-]+\]")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w)")
_NAME = re.compile(r"\b[a-z]{1,2}\d{1,2}\b")
_CODE = re.compile(r"\b[a-z]\w{2,}_\w{2,}\b|\b\w{3,}(?=\()")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_TIMES = re.compile(r"(?<=\d)x(?=\d)")  # 4096x4096
_WORD = re.compile(r"[a-z0-9]+")
_LETTERS = re.compile(r"(?<!\w)[A-Za-z]+(?!\w)")
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")
# An abbreviation of a task's word: its first letter and some of its consonants, in order
# ("attn": attention), or at most its first half ("proj", "param", "seq"); a longer start is a
# word of its own or an inflection ("pair": pairs, "token": tokenized), read as it is.
_VOWELS = frozenset("aeiouy")
_ABBREVIATION_MIN = 3
# Three words of a quoted example are as telling as two other details.
_EXAMPLE_WORDS = 3


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Cosine thresholds of the detector (chosen looking at eval/assignment_questions.jsonl,
    eval/assignment_questions_heldout.jsonl and eval/assignment_questions_heldout2.jsonl;
    eval/assignment_questions_heldout3.jsonl is unseen)."""

    alone: float = 0.80
    # A word naming graded work, or a student checking a result, is as telling as one of the
    # task's details; a word asking for work, no more than a one-digit number.
    with_work_words: float = 0.40
    with_words_asking_for_work: float = 0.60
    with_one_detail: float = 0.40
    # One-digit numbers are common in general questions ("rank 8 or 16?"), so alone they need
    # the question to be closer to the task than another detail would.
    with_one_digit: float = 0.60
    # Two details make the target plain; the floor only keeps the question on a course topic
    # (unrelated questions of the sets above reach 0.26; those pasting details go down to 0.18).
    with_details: float = 0.15


@dataclass(frozen=True, slots=True)
class Target:
    """Why a question gets hint mode, and for which assignment (None: a hints-only channel)."""

    assignment: Assignment | None
    reason: str
    similarity: float = 0.0


def details(text: str) -> set[str]:
    """Vectors, numbers, names with a digit and code names of a text: the details of a task."""
    flat = _TIMES.sub(" x ", _THOUSANDS.sub("", text.casefold()))
    vectors = {" ".join(v.replace(",", " ").split()) for v in _VECTOR.findall(flat)}
    rest = _VECTOR.sub(" ", flat)
    return vectors | set(_NUMBER.findall(rest)) | set(_NAME.findall(rest)) | set(
        _CODE.findall(rest))


def shared_details(question: str, task: str) -> tuple[int, bool]:
    """How many of a task's details a question repeats (a quoted example's words count 2), and
    whether those are all one-digit numbers ("rank 8", "GPT-2": weak on their own)."""
    shared = details(question) & details(task)
    count = len(shared)
    asked = set(_WORD.findall(question.casefold()))
    for a, b in _QUOTED.findall(task.casefold()):
        if len(set(_WORD.findall(a or b)) & asked) >= _EXAMPLE_WORDS:
            count += 2
    return count, count == len(shared) and all(len(d) == 1 for d in shared)


def checks_a_result(question: str) -> bool:
    """Whether a question checks the asker's own result: "I got", and a value or "right?"."""
    flat = normalise(question)
    return bool(_RESULT.search(flat)) and bool(_CONFIRM.search(flat) or details(flat))


def abbreviates(short: str, word: str) -> bool:
    """Whether `short` is an abbreviation of `word`: at most its first half, or consonants."""
    if len(short) < _ABBREVIATION_MIN or len(word) <= len(short) or short[0] != word[0]:
        return False
    if word.startswith(short):
        return 2 * len(short) <= len(word)
    rest = iter(word[1:])
    return not _VOWELS & set(short[1:]) and all(letter in rest for letter in short[1:])


def spell_out_abbreviations(question: str, tasks: Sequence[str]) -> str:
    """The question with each abbreviation of a task's word ("q proj", "attn") spelt out."""
    vocabulary = {w for task in tasks for w in _LETTERS.findall(task.casefold())}

    def spelt_out(match: re.Match[str]) -> str:
        short = match.group(0).casefold()
        if short in vocabulary:
            return match.group(0)
        words = sorted(w for w in vocabulary if abbreviates(short, w))
        return min(words, key=len) if words else match.group(0)

    return _LETTERS.sub(spelt_out, question)


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

    def closeness(self, question: str, question_vec: np.ndarray, a: Assignment) -> float:
        """The similarity of the question as written or, if higher, as read with its
        abbreviations of the assignment's words spelt out: "attn" is as close as "attention"."""
        sim = self.similarity(question_vec, a)
        spelt_out = spell_out_abbreviations(question, (*a.tasks, a.title))
        if spelt_out == question:
            return sim
        return max(sim, self.similarity(self.embedder.embed_query(spelt_out), a))

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
        scored = sorted(((self.closeness(question, vec, a), a) for a in open_assignments),
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
        if sim >= t.with_work_words and checks_a_result(flat):
            return "checks a result, near a task"
        if sim >= t.with_words_asking_for_work and _ASKS_FOR_WORK.search(flat):
            return "asks for work, near a task"
        # the most details; on a tie, the task where they are not all one-digit numbers
        shared, small = max((shared_details(question, k) for k in a.tasks),
                            key=lambda pair: (pair[0], not pair[1]))
        if shared >= 2 and sim >= t.with_details:
            return "repeats a task's details"
        if shared == 1 and sim >= (t.with_one_digit if small else t.with_one_detail):
            return "repeats a task's detail"
        return ""


def _phrase(phrase: str, text: str) -> bool:
    return bool(phrase) and re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text) is not None
