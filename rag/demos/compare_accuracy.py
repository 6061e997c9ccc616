"""Local vs hosted, measured: each model's key-fact rate on course questions, closed book and
with retrieval, beside its time and cost.

The questions and their key facts are written from our own study notes
(`rag/demos/tasks/course_questions.jsonl`, each naming its note). An answer has the key fact
when one of the question's key-fact strings appears in its text (`has_key_fact` of the
faithfulness measure: NFKC, lower case, `*` removed, whitespace collapsed). Every model gets
the prompts of `/compare`: the closed-book instruction, or the `/ask` prompt with the passages
retrieved for the question (the same passages for every model; the abstention gate is not
applied, so every model is measured on every question). Models run one after another.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from rag.answering.assistant import Assistant
from rag.answering.faithfulness import has_key_fact
from rag.demos.common import DemoInputError, Table
from rag.demos.compare import MAX_MODELS, ModelRun, _Runner
from rag.demos.hallucination import Progress, report_progress
from rag.index.documents import Hit

DEFAULT_MODELS = ("smollm2", "gemma3-base")


@dataclass(frozen=True)
class CourseQuestion:
    """A question, the strings one of which a right answer contains, and the note behind it."""

    question: str
    key_facts: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class QuestionRun:
    """One model's answer to one question, closed book or with retrieval."""

    question: int
    rag: bool
    run: ModelRun
    key_fact: bool | None  # None: the model failed, so there is no answer to check


@dataclass(frozen=True)
class AccuracyComparison:
    """Every model's answers to every question both ways, and how long it all took."""

    questions: tuple[CourseQuestion, ...]
    models: tuple[str, ...]
    backends: tuple[str, ...]
    runs: tuple[QuestionRun, ...]
    seconds: float

    @property
    def only_errors(self) -> bool:
        """Whether every model failed every question."""
        return bool(self.runs) and not any(r.run.ok for r in self.runs)

    def of(self, model: str, rag: bool | None = None) -> list[QuestionRun]:
        """One model's runs (one mode, or both)."""
        return [r for r in self.runs
                if r.run.model == model and (rag is None or r.rag == rag)]

    def key_facts(self, model: str, rag: bool) -> tuple[int, int]:
        """(answers with the key fact, answers) for one model and mode."""
        checked = [r.key_fact for r in self.of(model, rag) if r.key_fact is not None]
        return sum(checked), len(checked)

    def mean_seconds(self, model: str) -> float | None:
        """The mean total time of the model's answers."""
        times = [r.run.total_s for r in self.of(model) if r.run.total_s is not None]
        return sum(times) / len(times) if times else None

    def cost_label(self, model: str) -> str:
        """`local`, `unknown` (no price, or a failed answer), or the total in dollars."""
        runs = self.of(model)
        if runs and runs[0].run.backend == "local":
            return "local"
        costs = [r.run.cost_usd for r in runs]
        if not costs or any(c is None for c in costs):
            return "unknown"
        return f"${sum(c for c in costs if c is not None):.4f}"

    def as_json(self) -> dict:
        """The `demo compare-accuracy --json` shape: per-model figures and every answer."""
        return {
            "seconds": round(self.seconds, 2),
            "models": [self._summary(m, b) for m, b in zip(self.models, self.backends,
                                                            strict=True)],
            "answers": [{"question": self.questions[r.question].question, "rag": r.rag,
                         "key_facts": list(self.questions[r.question].key_facts),
                         "key_fact": r.key_fact, **r.run.as_json()} for r in self.runs],
        }

    def _summary(self, model: str, backend: str) -> dict:
        closed, grounded = self.key_facts(model, False), self.key_facts(model, True)
        mean = self.mean_seconds(model)
        return {"model": model, "backend": backend,
                "closed_book": {"key_facts": closed[0], "answers": closed[1]},
                "with_retrieval": {"key_facts": grounded[0], "answers": grounded[1]},
                "mean_s": None if mean is None else round(mean, 2),
                "cost": self.cost_label(model)}


def built_in_questions() -> tuple[CourseQuestion, ...]:
    """The course questions with key facts, written from our notes."""
    text = resources.files("rag.demos").joinpath("tasks", "course_questions.jsonl").read_text(
        "utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return tuple(CourseQuestion(r["question"], tuple(r["key_facts"]), r["source"]) for r in rows)


def check_models(names: Sequence[str] | None, known: Sequence[str]) -> tuple[str, ...]:
    """1–4 distinct registry models (default: the two packaged ones)."""
    chosen = tuple(dict.fromkeys(n.strip() for n in (names or DEFAULT_MODELS) if n.strip()))
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise DemoInputError(f"Unknown model {', '.join(map(repr, unknown))}; known: "
                             f"{', '.join(known)}.")
    if not 1 <= len(chosen) <= MAX_MODELS:
        raise DemoInputError(f"Compare 1 to {MAX_MODELS} models (got {len(chosen)}).")
    return chosen


async def compare_accuracy(
    assistant: Assistant,
    models: Sequence[str],
    questions: Sequence[CourseQuestion],
    *,
    progress: Progress | None = None,
) -> AccuracyComparison:
    """Ask every model every question closed book and with retrieval; check the key facts."""
    started, runs = time.perf_counter(), []
    for number, q in enumerate(questions):
        passages = tuple(await asyncio.to_thread(
            assistant.retriever.search, q.question, assistant.settings.k))
        for name in models:
            await report_progress(progress, f"Question {number + 1}/{len(questions)}: {name}…")
            for rag in (False, True):
                run = await _answer(assistant, name, q.question, passages if rag else (), rag)
                checked = has_key_fact(run.text, q.key_facts) if run.ok else None
                runs.append(QuestionRun(number, rag, run, checked))
    backends = tuple(assistant.llm.models[n].backend for n in models)
    return AccuracyComparison(tuple(questions), tuple(models), backends, tuple(runs),
                              time.perf_counter() - started)


async def _answer(
    assistant: Assistant, name: str, question: str, passages: tuple[Hit, ...], rag: bool
) -> ModelRun:
    """One answer through the comparison demo's runner (its prompts, timing and pricing)."""
    runner = _Runner(assistant, question, passages, rag, None)
    await runner.run_one(name)
    return runner.results[name]


def accuracy_table(result: AccuracyComparison) -> Table:
    """Models down: key-fact rate both ways, mean time per answer, cost."""
    header = ("model", "backend", "key facts, closed book", "key facts, with retrieval",
              "mean time", "cost")
    rows = []
    for model, backend in zip(result.models, result.backends, strict=True):
        cells = [_rate(*result.key_facts(model, rag)) for rag in (False, True)]
        mean = result.mean_seconds(model)
        rows.append((model, backend, *cells, "—" if mean is None else f"{mean:.1f} s",
                     result.cost_label(model)))
    return header, rows


def _rate(hits: int, total: int) -> str:
    return f"{hits}/{total} ({hits / total:.0%})" if total else "—"
