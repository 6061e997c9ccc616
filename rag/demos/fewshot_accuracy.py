"""Zero-shot versus few-shot as a number: accuracy on a small labelled task for k = 0, 1, 2, 4.

Every item is answered by every model with k examples taken from the *other* items
(leave-one-out), greedily, first line only, with the prompts of the few-shot demo (a plain
completion prompt for a base model, chat turns for an instruct model). An answer is right when
it equals the label after `normalise_label`. The k examples cycle through the labels, starting
at a different label for each item, so no k favours one label across the task.

Built-in tasks live in `rag/demos/tasks/*.jsonl`; a user's task has the same shape: an
optional first line `{"instruction": "..."}`, then one `{"input": ..., "label": ...}` a line.
"""

from __future__ import annotations

import json
import string
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from rag.demos.common import DemoInputError, Table
from rag.demos.fewshot import Example, FewShotRequest, build_messages, settled
from rag.demos.hallucination import Progress, report_progress
from rag.llm.base import ChatModel
from rag.quoting import quoted

BUILT_IN = ("sentiment", "topics")
KS = (0, 1, 2, 4)
DEFAULT_MODELS = ("gemma3-base", "smollm2")  # base beside instruct: the lesson of the demo
MAX_MODELS = 4
MAX_ITEMS = 40
MIN_ITEMS = 6
MAX_LABELS = 8
MAX_FILE_BYTES = 64 * 1024
MAX_INPUT_CHARS = 300
MAX_LABEL_CHARS = 40
MAX_ANSWER_TOKENS = 8
STRIP = string.punctuation + string.whitespace + "“”‘’«»"


@dataclass(frozen=True)
class LabelledItem:
    """One input and its correct label."""

    input: str
    label: str


@dataclass(frozen=True)
class LabelledTask:
    """A named instruction and its labelled items."""

    name: str
    instruction: str
    items: tuple[LabelledItem, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """The distinct labels, in order of first appearance."""
        return tuple(dict.fromkeys(i.label for i in self.items))


@dataclass(frozen=True)
class ItemResult:
    """One model's answer to one item with k examples."""

    model: str
    k: int
    item: int  # index into the task's items
    answer: str
    correct: bool
    seconds: float
    examples: tuple[int, ...]  # the items shown as examples, in prompt order


@dataclass(frozen=True)
class AccuracyResult:
    """Every model's answer to every item at every k, and how long it took."""

    task: LabelledTask
    models: tuple[str, ...]
    ks: tuple[int, ...]
    results: tuple[ItemResult, ...]
    seconds: float

    def cell(self, model: str, k: int) -> tuple[int, int]:
        """(right, answered) for one model at one k."""
        runs = [r for r in self.results if r.model == model and r.k == k]
        return sum(r.correct for r in runs), len(runs)

    def accuracy(self, model: str, k: int) -> float:
        """The share of items answered right by `model` with `k` examples."""
        right, total = self.cell(model, k)
        return right / total if total else 0.0

    def as_json(self) -> dict:
        """The `demo fewshot-accuracy --json` shape: the summary and every answer."""
        items = self.task.items
        return {
            "task": self.task.name, "instruction": self.task.instruction,
            "labels": list(self.task.labels), "models": list(self.models), "ks": list(self.ks),
            "seconds": round(self.seconds, 2),
            "accuracy": [{"model": m, "k": k, "right": self.cell(m, k)[0],
                          "total": self.cell(m, k)[1], "accuracy": round(self.accuracy(m, k), 4)}
                         for m in self.models for k in self.ks],
            "items": [{"model": r.model, "k": r.k, "item": r.item, "input": items[r.item].input,
                       "label": items[r.item].label, "answer": r.answer, "correct": r.correct,
                       "seconds": round(r.seconds, 3), "examples": list(r.examples)}
                      for r in self.results],
        }


def normalise_label(text: str) -> str:
    """How answers and labels are compared: NFKC, case-folded, `*` and surrounding
    punctuation and quotes stripped, inner whitespace collapsed (`**Positive.**` → `positive`)."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("*", "")
    return " ".join(text.strip(STRIP).split())


def is_correct(answer: str, label: str) -> bool:
    """Exact match after normalisation."""
    return normalise_label(answer) == normalise_label(label)


def built_in_task(name: str) -> LabelledTask:
    """One of the built-in tasks, by name."""
    if name not in BUILT_IN:
        raise DemoInputError(
            f"Unknown task {quoted(name)}; built-in tasks: {', '.join(BUILT_IN)}.")
    text = resources.files("rag.demos").joinpath("tasks", f"{name}.jsonl").read_text("utf-8")
    return parse_task(name, text.encode())


def parse_task(name: str, data: bytes) -> LabelledTask:
    """A user's JSONL task, checked, or a `DemoInputError` naming the first bad line."""
    if len(data) > MAX_FILE_BYTES:
        raise DemoInputError(f"The task file is {len(data):,} bytes; the limit is "
                             f"{MAX_FILE_BYTES:,}.")
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DemoInputError("The task file is not UTF-8 text.") from exc
    rows = [(n, _json_line(n, line)) for n, line in enumerate(lines, 1) if line.strip()]
    instruction = ""
    if rows and "instruction" in rows[0][1]:
        instruction = _text(rows[0][1], "instruction", rows[0][0], MAX_INPUT_CHARS)
        rows = rows[1:]
    items = tuple(LabelledItem(_text(row, "input", n, MAX_INPUT_CHARS),
                               _text(row, "label", n, MAX_LABEL_CHARS)) for n, row in rows)
    task = LabelledTask(name, instruction, items)
    _check_size(task)
    if not instruction:
        return LabelledTask(name, f"Answer with one of: {', '.join(task.labels)}.", items)
    return task


def _json_line(number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise DemoInputError(f"Line {number} of the task file is not JSON: {line[:60]!r}") from exc
    if not isinstance(row, dict):
        raise DemoInputError(f'Line {number} should be an object like {{"input": "…", '
                             '"label": "…"}.')
    return row


def _text(row: dict, key: str, number: int, limit: int) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DemoInputError(f"Line {number} has no text for \"{key}\".")
    if len(value) > limit:
        raise DemoInputError(f"Line {number}: \"{key}\" is {len(value)} characters; the limit "
                             f"is {limit}.")
    return " ".join(value.split())


def _check_size(task: LabelledTask) -> None:
    n = len(task.items)
    if not MIN_ITEMS <= n <= MAX_ITEMS:
        raise DemoInputError(f"A task needs {MIN_ITEMS} to {MAX_ITEMS} labelled items "
                             f"(got {n}).")
    if not 2 <= len(task.labels) <= MAX_LABELS:
        raise DemoInputError(f"A task needs 2 to {MAX_LABELS} different labels "
                             f"(got {len(task.labels)}).")
    if n - 1 < max(KS):
        raise DemoInputError(f"A task needs at least {max(KS) + 1} items for k = {max(KS)}.")


def choose_examples(task: LabelledTask, item: int, k: int) -> tuple[int, ...]:
    """k other items for `item`, cycling through the labels from a label that depends on it."""
    labels = task.labels
    pools = {label: [i for i, x in enumerate(task.items) if x.label == label and i != item]
             for label in labels}
    chosen: list[int] = []
    turn = item % len(labels)
    while len(chosen) < k and any(pools.values()):
        pool = pools[labels[turn % len(labels)]]
        if pool:
            chosen.append(pool.pop(0))
        turn += 1
    return tuple(chosen)


def check_models(names: Sequence[str] | None, known: Sequence[str]) -> tuple[str, ...]:
    """1–4 distinct known model names (default: the base and the instruct model)."""
    chosen = tuple(dict.fromkeys(names or DEFAULT_MODELS))
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise DemoInputError(f"Unknown model {', '.join(map(repr, unknown))}; known: "
                             f"{', '.join(known)}.")
    if len(chosen) > MAX_MODELS:
        raise DemoInputError(f"Compare at most {MAX_MODELS} models (got {len(chosen)}).")
    return chosen


def check_ks(ks: Sequence[int] | None) -> tuple[int, ...]:
    """The k values asked for (default 0, 1, 2, 4), each from 0 to 4."""
    chosen = tuple(sorted(set(ks or KS)))
    if any(k not in range(max(KS) + 1) for k in chosen):
        raise DemoInputError(f"k must be between 0 and {max(KS)} (got {list(chosen)}).")
    return chosen


async def fewshot_accuracy(
    models: Sequence[ChatModel],
    task: LabelledTask,
    ks: Sequence[int] = KS,
    *,
    limit: int | None = None,
    progress: Progress | None = None,
) -> AccuracyResult:
    """Answer every item (the first `limit`) with every model at every k, and score it."""
    items = range(min(limit or len(task.items), len(task.items)))
    total = len(models) * len(ks) * len(items)
    await report_progress(progress, f"Scoring {total} answers ({len(models)} models × "
                          f"{len(ks)} k × {len(items)} items)…")
    started, results = time.perf_counter(), []
    for chat in models:
        await settled(chat)  # loads a local model: its first load is not an answer's time
        for k in ks:
            results += [await answer_item(chat, task, i, k) for i in items]
            await report_progress(progress, progress_line(chat.name, k, len(results), total,
                                                          time.perf_counter() - started))
    return AccuracyResult(task, tuple(c.name for c in models), tuple(ks), tuple(results),
                          time.perf_counter() - started)


def progress_line(model: str, k: int, done: int, total: int, elapsed: float) -> str:
    """`gemma3-base, k=2 done: 36/96 answers in 20 s, about 33 s left`."""
    left = elapsed / done * (total - done) if done else 0.0
    return (f"{model}, k={k} done: {done}/{total} answers in {elapsed:.0f} s"
            + (f", about {left:.0f} s left" if done < total else ""))


async def answer_item(chat: ChatModel, task: LabelledTask, item: int, k: int) -> ItemResult:
    """One greedy answer to one item with k leave-one-out examples."""
    shown = choose_examples(task, item, k)
    examples = tuple(Example(task.items[i].input, task.items[i].label) for i in shown)
    request = FewShotRequest(task.instruction, examples, task.items[item].input)
    base = not getattr(getattr(chat, "spec", None), "chat_template", True)
    done = await chat.complete(build_messages(request, examples, base),
                               max_tokens=MAX_ANSWER_TOKENS, temperature=0.0, stop=["\n"])
    await settled(chat)
    answer = done.text.strip()
    return ItemResult(chat.name, k, item, answer, is_correct(answer, task.items[item].label),
                      done.total_s, shown)


def accuracy_table(result: AccuracyResult) -> Table:
    """Models down, k across: `9/12 (75%)` per cell."""
    header = ("model", *(f"k={k}" for k in result.ks))
    rows = []
    for model in result.models:
        cells = []
        for k in result.ks:
            right, total = result.cell(model, k)
            cells.append(f"{right}/{total} ({right / total:.0%})" if total else "—")
        rows.append((model, *cells))
    return header, rows


def chance(result: AccuracyResult) -> float:
    """The accuracy of guessing a label at random."""
    return 1 / len(result.task.labels)
