"""The model comparison demo: one question to 2–4 models of the registry, side by side.

With retrieval every model gets the same passages and the same prompt as `/ask`; without it,
the closed-book prompt of the hallucination demo. For each model: the answer, time to first
token, total time, output tokens per second, tokens in and out, a cost estimate from the
model's prices (local models cost nothing and say "local"), and, with retrieval, the share of
its claims the passages support.

Remote models (the `openai` backend) are asked concurrently; local models share the CPU, so
they run one after another. A model that fails is marked failed with a one-line reason and
the others are still shown; an overall timeout marks whatever has not finished as timed out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from rag.answering.assistant import Assistant, check_question
from rag.answering.grounding import GroundingChecker, GroundingReport
from rag.answering.prompting import resolve_citations
from rag.demos.common import DemoInputError
from rag.demos.hallucination import (
    Progress,
    closed_book_messages,
    load_weights,
    report_progress,
)
from rag.index.documents import Hit
from rag.llm.base import ChatModel, LLMError, Messages
from rag.llm.settings import ModelSpec
from rag.quoting import quoted

log = logging.getLogger(__name__)
DEFAULT_MODELS = ("smollm2", "gemma3-base")
MIN_MODELS, MAX_MODELS = 2, 4
DEFAULT_TIMEOUT_S = 300.0
NOT_COVERED = "The course materials don't cover this question, so no model was asked."


class CompareInputError(DemoInputError):
    """The models asked for cannot be compared; the message says why, for the user."""


@dataclass(frozen=True)
class ModelRun:
    """One model's answer and measurements, or why it failed."""

    model: str
    backend: str
    ok: bool
    text: str = ""
    error: str = ""
    first_token_s: float | None = None
    total_s: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None
    grounding: GroundingReport | None = None
    # When generation started and ended, in seconds after the comparison began (shows which
    # models ran at the same time).
    started_s: float | None = None
    finished_s: float | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of generation (first token included)."""
        if not self.ok or not self.total_s or not self.tokens_out:
            return None
        return self.tokens_out / self.total_s

    @property
    def cost_label(self) -> str:
        """`local`, `n/a` (failed), `unknown` (no price configured) or the cost in dollars."""
        if self.backend == "local":
            return "local"
        if not self.ok:
            return "n/a"
        return "unknown" if self.cost_usd is None else f"${self.cost_usd:.5f}"

    def as_json(self) -> dict:
        """The JSON shape of `demo compare --json`."""
        rate = self.tokens_per_s
        return {
            "model": self.model, "backend": self.backend, "ok": self.ok,
            "answer": self.text, "error": self.error,
            "first_token_s": _rounded(self.first_token_s), "total_s": _rounded(self.total_s),
            "tokens_per_s": _rounded(rate), "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out, "cost_usd": self.cost_usd, "cost": self.cost_label,
            "grounding": None if self.grounding is None else self.grounding.as_json(),
            "started_s": _rounded(self.started_s), "finished_s": _rounded(self.finished_s),
        }


@dataclass(frozen=True)
class Comparison:
    """The question, whether retrieval was on, the shared passages and each model's run."""

    question: str
    rag: bool
    passages: tuple[Hit, ...]
    runs: tuple[ModelRun, ...]
    note: str
    refused: bool = False

    @property
    def only_errors(self) -> bool:
        """Whether every model failed (a refusal is an answer, not a failure)."""
        return not self.refused and bool(self.runs) and not any(r.ok for r in self.runs)

    def as_json(self) -> dict:
        """The JSON shape of `demo compare --json`."""
        return {
            "question": self.question, "rag": self.rag, "refused": self.refused,
            "note": self.note, "passages": [h.as_json() for h in self.passages],
            "runs": [r.as_json() for r in self.runs],
        }


def cost_usd(spec: ModelSpec, tokens_in: int, tokens_out: int) -> float | None:
    """The cost from the model's prices; None for a local model or when a price is unknown."""
    if spec.backend == "local" or spec.price_in_per_mtok is None or spec.price_out_per_mtok is None:
        return None
    return (tokens_in * spec.price_in_per_mtok + tokens_out * spec.price_out_per_mtok) / 1e6


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def one_line(error: BaseException) -> str:
    """An error as one short line for a table cell."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def choose_models(requested: Sequence[str] | None, known: Sequence[str]) -> list[str]:
    """The models to compare: 2–4 distinct names of the registry (default: the packaged pair)."""
    names = [n.strip() for n in (requested or DEFAULT_MODELS) if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CompareInputError(
            f"Unknown model {', '.join(quoted(n) for n in unknown[:3])}; "
            f"known: {', '.join(known)}."
        )
    if len(set(names)) != len(names):
        raise CompareInputError("Each model can be compared only once; remove the repeats.")
    if not MIN_MODELS <= len(names) <= MAX_MODELS:
        raise CompareInputError(
            f"Compare {MIN_MODELS} to {MAX_MODELS} models at once (got {len(names)})."
        )
    return names


def schedule_note(names: Sequence[str], backends: Mapping[str, str]) -> str:
    """How the models were run, said plainly."""
    local = [n for n in names if backends[n] == "local"]
    remote = [n for n in names if backends[n] != "local"]
    parts = []
    if len(local) > 1:
        parts.append(f"local models ({', '.join(local)}) share the CPU, so they ran one "
                     "after another")
    if remote:
        parts.append(f"remote models ({', '.join(remote)}) ran concurrently"
                     + (" with the local ones" if local else ""))
    text = "; ".join(parts) or "one model at a time"
    return text[0].upper() + text[1:] + "."


class _Runner:
    """Runs the comparison: one instance per call, collecting results as models finish."""

    def __init__(self, assistant: Assistant, question: str, passages: tuple[Hit, ...],
                 rag: bool, progress: Progress | None) -> None:
        self.assistant = assistant
        self.question = question
        self.passages = passages
        self.rag = rag
        self.progress = progress
        self.results: dict[str, ModelRun] = {}
        self.began = time.perf_counter()

    async def run_all(self, names: Sequence[str], timeout_s: float) -> None:
        """Remote models concurrently, local ones in sequence, all under one deadline."""
        specs = self.assistant.llm.models
        local = [n for n in names if specs[n].backend == "local"]
        tasks = [asyncio.create_task(self.run_one(n)) for n in names if n not in local]
        tasks.append(asyncio.create_task(self.run_in_turn(local)))
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for name in names:
            if name not in self.results:
                reason = f"timed out: no answer within the overall {timeout_s:g} s"
                self.results[name] = ModelRun(name, specs[name].backend, False, error=reason)

    async def run_in_turn(self, names: Sequence[str]) -> None:
        """Local models one after another (they share the CPU)."""
        for name in names:
            await self.run_one(name)

    async def run_one(self, name: str) -> None:
        """Ask one model; record its answer or its failure."""
        spec = self.assistant.llm.models[name]
        try:
            chat = self.assistant.models.get(name)
            await report_progress(self.progress, f"Asking {name}…")
            await load_weights(chat)  # a local model's first load is not part of its latency
            started = time.perf_counter() - self.began
            run = await self.measure(chat)
            finished = time.perf_counter() - self.began
            self.results[name] = replace(run, started_s=started, finished_s=finished)
        except LLMError as exc:
            self.results[name] = ModelRun(name, spec.backend, False, error=one_line(exc))
        except Exception as exc:  # a bug or an unwrapped error: one model, not the comparison
            log.exception("model %s failed unexpectedly in a comparison", name)
            error = f"unexpected {type(exc).__name__}: {one_line(exc)}"
            self.results[name] = ModelRun(name, spec.backend, False, error=error)

    async def measure(self, chat: ChatModel) -> ModelRun:
        """Generate with the model and time it; the cost comes from its ModelSpec prices."""
        spec = self.assistant.llm.models[chat.name]
        messages, used = await asyncio.to_thread(self.prompt, chat)
        done = await chat.complete(
            messages, max_tokens=self.assistant.llm.max_new_tokens,
            temperature=self.assistant.llm.temperature,
        )
        text = resolve_citations(done.text, used)[0] if self.rag else done.text.strip()
        cost = cost_usd(spec, done.tokens_in, done.tokens_out)
        return ModelRun(chat.name, spec.backend, True, text, "", done.time_to_first_token_s,
                        done.total_s, done.tokens_in, done.tokens_out, cost)

    def prompt(self, chat: ChatModel) -> tuple[Messages, list[Hit]]:
        """The `/ask` prompt (same passages, trimmed to this model's window), or closed-book."""
        if not self.rag:
            return closed_book_messages(self.question), []
        # The pipeline's own prompt builder, so a comparison sees exactly what /ask sends.
        return self.assistant._prompt(self.question, self.passages, [], chat)


async def compare_models(
    assistant: Assistant,
    checker: GroundingChecker,
    question: str,
    models: Sequence[str] | None = None,
    *,
    rag: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Progress | None = None,
) -> Comparison:
    """Ask 2–4 models the same question and measure each answer side by side."""
    question = check_question(question, assistant.settings.max_question_chars)
    names = choose_models(models, assistant.models.names())
    backends = {n: assistant.llm.models[n].backend for n in names}
    passages: tuple[Hit, ...] = ()
    if rag:
        passages = tuple(await asyncio.to_thread(
            assistant.retriever.search, question, assistant.settings.k))
        if not await asyncio.to_thread(assistant.covers, question, passages):
            refusals = tuple(ModelRun(n, backends[n], False, error=NOT_COVERED) for n in names)
            return Comparison(question, rag, passages, refusals, NOT_COVERED, refused=True)
    runner = _Runner(assistant, question, passages, rag, progress)
    await runner.run_all(names, timeout_s)
    runs = [runner.results[n] for n in names]
    if rag:
        await report_progress(progress, "Checking each answer's claims against the passages…")
        runs = [await _with_grounding(checker, r, passages) for r in runs]
    return Comparison(question, rag, passages, tuple(runs), schedule_note(names, backends))


async def _with_grounding(
    checker: GroundingChecker, run: ModelRun, passages: Sequence[Hit]
) -> ModelRun:
    if not run.ok:
        return run
    report = await asyncio.to_thread(checker.check, run.text, passages)
    return replace(run, grounding=report)
