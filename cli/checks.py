"""`study-assistant demo hallucination` and `demo compare`: the grounding demos on the command
line. `register(app)` adds both commands to a Typer app (the `demo` group).

Rich tables on a terminal, plain text otherwise (logs, pipes), JSON with `--json`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.common import AsJson, DataDir, load_settings, out, reported
from cli.demos import to_stderr
from rag.answering.grounding import VERDICT_LABELS, ClaimCheck, GroundingReport
from rag.demos import compare_accuracy as accuracy
from rag.demos.common import text_table
from rag.demos.compare import DEFAULT_TIMEOUT_S, Comparison, ModelRun, compare_models
from rag.demos.hallucination import CheckedAnswer, HallucinationDemo, hallucination_demo
from rag.services import Services, build_services

T = TypeVar("T")
QUOTE_CHARS = 160


def register(app: typer.Typer) -> None:
    """Add the `hallucination` and `compare` commands to a Typer app."""
    app.command("hallucination")(hallucination)
    app.command("compare")(compare)
    app.command("compare-accuracy")(compare_accuracy_command)


def hallucination(
    question: Annotated[str, typer.Argument(help="The question to answer both ways")],
    model: Annotated[
        str | None, typer.Option("--model", help="A model from the registry [default: the default]")
    ] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Answer closed-book and with retrieval, and check each answer's claims."""
    demo = _run(data_dir, lambda s: hallucination_demo(s.assistant, s.checker, question, model))
    if as_json:
        out.print_json(data=demo.as_json())
    else:
        print_hallucination(demo)


def compare(
    question: Annotated[str, typer.Argument(help="The question every model answers")],
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="A model to compare (2–4; repeat the option) "
                     "[default: smollm2 and gemma3-base]"),
    ] = None,
    rag: Annotated[bool, typer.Option("--rag/--no-rag", help="Answer from the materials")] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Overall limit in seconds")
    ] = DEFAULT_TIMEOUT_S,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Ask 2–4 models the same question; answers, latency, tokens, cost and grounding."""
    result = _run(data_dir, lambda s: compare_models(
        s.assistant, s.checker, question, models, rag=rag, timeout_s=timeout))
    if as_json:
        out.print_json(data=result.as_json())
    else:
        print_comparison(result)


def compare_accuracy_command(
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="A model to measure (1–4; repeat the option) "
                     "[default: smollm2 and gemma3-base]"),
    ] = None,
    questions: Annotated[
        int | None, typer.Option("--questions", min=1, help="Ask only the first N questions")
    ] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Key-fact rate on course questions, closed book and with retrieval, with time and cost."""
    asked = accuracy.built_in_questions()[:questions]

    async def work(services: Services) -> accuracy.AccuracyComparison:
        names = accuracy.check_models(models, services.models.names())
        return await accuracy.compare_accuracy(services.assistant, names, asked,
                                               progress=to_stderr)

    result = _run(data_dir, work)
    if as_json:
        out.print_json(data=result.as_json())
        return
    print(f"Key facts in the answers · {len(asked)} course questions\n"
          f"{text_table(accuracy.accuracy_table(result))}\n", flush=True)
    print(f"{len(result.runs)} answers in {result.seconds:.0f} s; a key fact counts when one of "
          "the question's key-fact strings appears in the answer text.", flush=True)


def _run(data_dir: Path | None, work: Callable[[Services], Awaitable[T]]) -> T:
    """Build the services, run the demo, close the model clients; user errors in one line."""

    async def run(services: Services) -> T:
        try:
            return await work(services)
        finally:
            await services.models.aclose()

    with reported():
        return asyncio.run(run(build_services(load_settings(data_dir))))


def claim_line(check: ClaimCheck) -> tuple[str, str, str]:
    """(verdict, claim, evidence) as plain strings."""
    evidence = ""
    if check.evidence is not None:
        c = check.evidence.chunk
        where = c.source + (f", p. {c.page}" if c.page else "") + (f" · {c.section}" if c.section
                                                                   else "")
        quote = check.evidence_text
        quote = quote if len(quote) <= QUOTE_CHARS else quote[: QUOTE_CHARS - 1] + "…"
        evidence = f'{where}: "{quote}"'
    if check.missing_numbers:
        evidence += f" (numbers not in the materials: {', '.join(check.missing_numbers)})"
    return VERDICT_LABELS[check.verdict], check.text, evidence.strip()


def grounded_label(report: GroundingReport | None) -> str:
    """`67% of 6 claims`, `no checkable claims` or `—` (not checked)."""
    if report is None:
        return "—"
    return report.summary().removeprefix("Grounded: ")


def print_hallucination(demo: HallucinationDemo) -> None:
    """Both answers with their grounding, as rich tables on a terminal, else plain text."""
    console = out
    console.print(f"Question: {demo.question}  (model {demo.model})", markup=False)
    for answer in (demo.closed_book, demo.with_retrieval):
        _print_answer(console, answer)


def _print_answer(console: Console, answer: CheckedAnswer) -> None:
    state = " (abstained: not covered)" if answer.refused else ""
    head = f"\n{answer.mode}{state} · {answer.seconds:.1f} s · {answer.grounding.summary()}"
    console.print(head, markup=False, style="bold" if console.is_terminal else None)
    console.print(answer.text, markup=False, highlight=False)
    rows = [claim_line(c) for c in answer.grounding.claims]
    if not rows:
        return
    if console.is_terminal:
        table = Table("verdict", "claim", "evidence", show_lines=True)
        for verdict, claim, evidence in rows:
            table.add_row(escape(verdict), escape(claim), escape(evidence))
        console.print(table)
        return
    for verdict, claim, evidence in rows:
        console.print(f"  [{verdict}] {claim}" + (f"\n      ↳ {evidence}" if evidence else ""),
                      markup=False, highlight=False)


def run_cells(run: ModelRun) -> list[str]:
    """A model's measurements, formatted, in `METRICS` order."""
    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} s"

    rate = run.tokens_per_s
    return [
        "ok" if run.ok else f"failed: {run.error}",
        seconds(run.first_token_s),
        seconds(run.total_s),
        "—" if rate is None else f"{rate:.1f}",
        f"{run.tokens_in} / {run.tokens_out}" if run.ok else "—",
        run.cost_label,
        grounded_label(run.grounding),
    ]


METRICS = ("status", "first token", "total", "tokens/s", "tokens in / out", "cost", "grounded")


def print_comparison(result: Comparison) -> None:
    """The models side by side: a table of measurements, then each answer."""
    console = out
    mode = "with retrieval" if result.rag else "closed book"
    console.print(f"Question: {result.question}  ({mode})", markup=False)
    if result.refused:
        console.print(result.note, markup=False)
        return
    cells = [run_cells(r) for r in result.runs]
    if console.is_terminal:
        table = Table("", *(escape(r.model) for r in result.runs), show_lines=True)
        for i, metric in enumerate(METRICS):
            table.add_row(metric, *(escape(c[i]) for c in cells))
        table.add_row("answer", *(escape(r.text or r.error) for r in result.runs))
        console.print(table)
    else:
        width = max(len(m) for m in METRICS)
        for run, row in zip(result.runs, cells, strict=True):
            console.print(f"\n== {run.model} ({run.backend})", markup=False)
            for metric, cell in zip(METRICS, row, strict=True):
                console.print(f"  {metric:<{width}}  {cell}", markup=False, highlight=False)
            if run.text:
                console.print(run.text, markup=False, highlight=False)
    console.print(f"\n{result.note}", markup=False)
