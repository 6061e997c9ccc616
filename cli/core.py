"""The core commands: `ingest`, `search`, `calibrate`, `ask`, `chat` and `health`."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cli.common import (
    USER_ERRORS,
    AnswerStyleOption,
    AsJson,
    Batch,
    DataDir,
    Model,
    Preview,
    console,
    fail,
    load_settings,
    out,
    read_batch,
)
from cli.health import report as health_report
from ingest.loaders import printable
from ingest.pipeline import IngestReport, resolve_targets
from ingest.reingest import GateReport, reingest
from rag.answering import gate
from rag.answering.assistant import Answer, Assistant, Finished, Retrieved, Token
from rag.index.documents import Hit
from rag.index.locking import DataDirLock
from rag.retrieval import calibration as cal
from rag.retrieval.retriever import Retriever
from rag.services import Services, build_services


def register(app: typer.Typer) -> None:
    """Add the core commands to the app."""
    for command in (ingest, search, calibrate, ask, chat, health):
        app.command()(command)


class RichIngestProgress:
    """Progress bars for files and embedding batches."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.files = progress.add_task("files", total=0, visible=False)
        self.embed = progress.add_task("embedding", total=0, visible=False)

    def files_started(self, total: int) -> None:
        """Show the files bar."""
        self.progress.update(self.files, total=total, visible=total > 0)

    def file_done(self, source: str) -> None:
        """Advance the files bar."""
        shown = escape(printable(source))
        self.progress.update(self.files, advance=1, description=f"files ({shown})")

    def embedding_started(self, total: int) -> None:
        """Start an embedding bar for one group of chunks."""
        self.progress.reset(self.embed, total=total, visible=total > 0)

    def embedded(self, n: int) -> None:
        """Advance the embedding bar by one batch."""
        self.progress.update(self.embed, advance=n)


class PlainIngestProgress:
    """One line per event, for logs (docker, CI) where progress bars would be noise."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def files_started(self, total: int) -> None:
        """Announce the work."""
        self.total = total
        print(f"ingest: {total} files to process", file=sys.stderr, flush=True)

    def file_done(self, source: str) -> None:
        """One line per finished file."""
        self.done += 1
        # A file name may hold a newline: one file must stay one log line.
        print(f"ingest: {self.done}/{self.total} {printable(source)}", file=sys.stderr, flush=True)

    def embedding_started(self, total: int) -> None:
        """Announce a group of chunks to embed."""
        if total:
            print(f"ingest: embedding {total} chunks", file=sys.stderr, flush=True)

    def embedded(self, n: int) -> None:
        """Batches are too frequent to log."""


def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders or files to ingest [default: ./course_materials]"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; change nothing.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Ingest course materials incrementally: only new and changed files are embedded."""
    settings = load_settings(data_dir)
    try:
        targets = resolve_targets(paths or [settings.materials_dir], settings.materials_dir)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    lock = DataDirLock(settings.data_dir)
    try:
        if not settings.store.host and not dry_run:
            lock.acquire()
        services = build_services(settings)
        with _progress() as progress:
            sink = RichIngestProgress(progress) if console.is_terminal else PlainIngestProgress()
            result = reingest(targets, services.store, services.embedder, settings,
                              dry_run=dry_run, progress=sink)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    finally:
        lock.release()
    _print_report(result.report)
    if not result.report.ok:
        raise fail("nothing could be ingested (see the skipped files above)")
    if result.gate is not None:
        print_gate(result.gate)
        if result.gate.held:
            raise typer.Exit(HELD_EXIT)


# `ingest` exits with this code when the gold questions held the new version back.
HELD_EXIT = 3


def print_gate(gate: GateReport) -> None:
    """The gold questions' verdict: the version switched to, or the questions that regressed."""
    checked = f"{len(gate.changes)} gold questions ({gate.gold.name})"
    if not gate.held:
        console.print(f"[green]live[/]: version {gate.built} (was {gate.live_before}); "
                      f"{checked}: none got worse · {gate.seconds:.1f} s")
    else:
        console.print(f"[bold yellow]held[/]: version {gate.built} is NOT live; version "
                      f"{gate.live_before} stays. {len(gate.regressed)} of {checked} got worse:")
        for change in gate.regressed:
            console.print(f"  - {escape(change.before.question)}: {escape(change.why())}")
        console.print(f"Promote it anyway: study-assistant index promote {gate.built}")
    if gate.pruned:
        console.print(f"[dim]pruned versions: {', '.join(gate.pruned)}[/]")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _print_report(report: IngestReport) -> None:
    plan = report.plan
    title = "Ingest plan (dry run: nothing changed)" if report.dry_run else "Ingest summary"
    table = Table(title=title, show_header=True)
    table.add_column("files", style="bold")
    table.add_column("count", justify="right")
    table.add_column("which")
    rows = [
        ("added", [f.source for f in plan.added]),
        ("changed", [f.source for f in plan.changed]),
        ("removed", plan.removed),
        ("unchanged", [f.source for f in plan.unchanged]),
    ]
    for name, items in rows:
        table.add_row(name, str(len(items)), _shorten(items))
    console.print(table)
    if not report.dry_run:
        console.print(
            f"chunks: {report.chunks_added} embedded and added, {report.chunks_reused} reused, "
            f"{report.chunks_removed} removed · {report.seconds:.1f} s"
        )
    for source, reason in sorted(report.skipped.items()):
        console.print(f"[yellow]skipped[/] {escape(printable(source))}: {escape(reason)}")
    for source, at in sorted(report.scheduled.items(), key=lambda item: item[1]):
        console.print(f"[cyan]scheduled[/] {escape(source)}: hidden from students until {when(at)}")


def when(at: float) -> str:
    """A release time for people: UTC, to the minute."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _shorten(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(escape(printable(item)) for item in items[:limit])
    return shown + (f" … (+{len(items) - limit})" if len(items) > limit else "")


def search(
    question: Annotated[str | None, typer.Argument(help="The question to search for")] = None,
    k: Annotated[int, typer.Option(
        "--k", min=1, max=50,
        help="How many passages (then BM25's best, when fusion left it out)")] = 5,
    as_json: AsJson = False,
    batch: Batch = None,
    preview: Preview = False,
    data_dir: DataDir = None,
) -> None:
    """Search the course materials (no generation): the top passages with their sources."""
    if (question is None) == (batch is None):
        raise fail("give either a QUESTION or --batch FILE")
    if question is not None and not question.strip():
        raise fail("the question is empty")
    settings = load_settings(data_dir)
    try:
        services = build_services(settings)
        if batch is not None:
            _search_batch(services.retriever, batch, k, preview)
            return
        hits = services.retriever.search(question or "", k, preview=preview)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    if as_json:
        out.print_json(data={"question": question, "results": [h.as_json() for h in hits]})
    else:
        _print_hits(hits)


def _search_batch(retriever: Retriever, batch: Path, k: int, preview: bool) -> None:
    """One JSON object per input line; bad lines get an `error` field instead of stopping."""
    try:
        for number, row in read_batch(batch):
            question = row.get("question") if isinstance(row, dict) else None
            if not isinstance(question, str) or not question.strip():
                print(json.dumps({"line": number, "error": "no 'question' field"}))
                continue
            hits = retriever.search(question, k, preview=preview)
            record = {"question": question, "results": [h.as_json() for h in hits]}
            print(json.dumps(record, ensure_ascii=False), flush=True)
    except (OSError, json.JSONDecodeError) as exc:
        raise fail(f"cannot read {batch}: {exc}") from None


def _print_hits(hits: list[Hit]) -> None:
    for rank, hit in enumerate(hits, 1):
        c = hit.chunk
        where = c.source + (f", p. {c.page}" if c.page else "")
        section = f" · {c.section}" if c.section else ""
        out.print(
            f"[bold]{rank}. {escape(where)}[/]{escape(section)}  [dim](score {hit.score:.2f})[/]"
        )
        text = " ".join(c.text.split())
        out.print(f"   {text[:400]}{'…' if len(text) > 400 else ''}\n", markup=False)


def calibrate(
    fit_set: Annotated[Path, typer.Argument(help="JSONL questions to fit on")],
    check_set: Annotated[
        Path | None, typer.Option("--check", help="Held-out JSONL questions to evaluate on")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=20)] = 5,
    max_in_abstain: Annotated[
        float,
        typer.Option(
            "--max-in-abstain",
            min=0.0,
            max=0.5,
            help="Most in-scope fit questions the gate may refuse, as a fraction (lower "
            "refuses fewer covered questions and answers more off-topic ones)",
        ),
    ] = gate.MAX_IN_ABSTAIN,
    data_dir: DataDir = None,
) -> None:
    """Fit the relevance scores and the abstention gate on labelled questions; report both."""
    settings = load_settings(data_dir)
    services = build_services(settings)
    fit_rows = cal.label_hits(services.retriever, cal.load_questions(fit_set), k)
    retrieval = cal.apply(cal.fit(fit_rows, settings.retrieval), settings.retrieval)
    weights, threshold = gate.fit_gate(gate.question_evidence(fit_rows), max_in_abstain)
    answer = settings.answer.model_copy(
        update={
            "gate_cosine": float(weights[0]),
            "gate_agreement": float(weights[1]),
            "gate_coverage": float(weights[2]),
            "gate_intercept": float(weights[3]),
            "abstain_below": threshold,
        }
    )
    out.print(f"fitted on {fit_set} ({len(fit_rows)} hits):")
    for key in ("calibration_slope", "calibration_lexical", "calibration_intercept"):
        out.print(f"  STUDY_ASSISTANT_RETRIEVAL__{key.upper()}={getattr(retrieval, key):.3f}")
    for key in ("gate_cosine", "gate_agreement", "gate_coverage", "gate_intercept",
                "abstain_below"):
        out.print(f"  STUDY_ASSISTANT_ANSWER__{key.upper()}={getattr(answer, key):.3f}")
    sets = [("fit", fit_rows)]
    if check_set is not None:
        check_rows = cal.label_hits(services.retriever, cal.load_questions(check_set), k)
        sets.append(("held out", check_rows))
    for name, rows in sets:
        _print_calibration(name, rows, retrieval, answer)


def _print_calibration(name: str, rows, retrieval, answer) -> None:  # type: ignore[no-untyped-def]
    rel = cal.reliability(rows, retrieval)
    out.print(f"\n{name}: passage scores, Brier {rel['brier']:.3f}")
    out.print("  predicted bin | hits | mean predicted | observed relevant")
    for lo, hi, n, pred, obs in rel["bins"]:
        out.print(f"  {lo:.1f}–{hi:.1f}       | {n:4d} | {pred:.2f}           | {obs:.2f}")
    evidence = gate.question_evidence(rows)
    gated = {e.question_id: (e.in_scope, gate.gate_probability(e, answer)) for e in evidence}
    inside = sorted(p for i, p in gated.values() if i)
    outside = sorted(p for i, p in gated.values() if not i)
    t = answer.abstain_below
    out.print(
        f"  gate: in scope abstained {sum(p < t for p in inside)}/{len(inside)}, "
        f"out of scope abstained {sum(p < t for p in outside)}/{len(outside)}"
    )
    out.print("  P(covered), in scope: " + " ".join(f"{p:.2f}" for p in inside))
    out.print("  P(covered), out of scope: " + " ".join(f"{p:.2f}" for p in outside))
    passed = [q for q, (i, p) in gated.items() if not i and p >= t]
    missed = [q for q, (i, p) in gated.items() if i and p < t]
    out.print(
        f"  out of scope answered: {passed or 'none'}; in scope abstained: {missed or 'none'}"
    )


def _print_sources(answer: Answer) -> None:
    """Citations after an answer; for a refusal, the nearest passages instead."""
    if answer.citations:
        out.print("\n[bold]Sources[/]")
        for c in sorted(answer.citations, key=lambda c: c.number):
            where = c.source + (f", p. {c.page}" if c.page else "")
            section = f" · {c.section}" if c.section else ""
            out.print(f"  [{c.number}] {escape(where)}{escape(section)}")
    timing = answer.timings.get("total_ms", 0.0) / 1000
    if answer.note:
        out.print(f"[dim]{escape(answer.note)}[/]")
    out.print(f"[dim]{answer.model} · {answer.made} · {timing:.1f} s[/]")


async def _stream_answer(
    assistant: Assistant,
    question: str,
    history: list[dict[str, str]],
    model: str | None,
    preview: bool = False,
    style: str | None = None,
) -> Answer | None:
    """Print an answer as it streams; return the finished Answer."""
    answer = None
    streamed: list[str] = []
    async for event in assistant.stream(
        question, history=history, model=model, preview=preview, style=style
    ):
        if isinstance(event, Retrieved) and event.style == "verified":
            out.print("[dim]Draft, not yet checked against the materials:[/]")
        elif isinstance(event, Token):
            streamed.append(event.text)
            out.print(event.text, end="", markup=False, highlight=False)
        elif isinstance(event, Finished):
            answer = event.answer
    if streamed:
        out.print()
    if answer is not None and answer.text != "".join(streamed).strip():
        # A refusal or a quoted answer never streams, and the final text can differ from the
        # draft (unsupported sentences or invented citations dropped): show the final version.
        if streamed:
            out.print("\n[dim]Checked answer:[/]")
        out.print(answer.text, markup=False, highlight=False)
    return answer


def ask(
    question: Annotated[str | None, typer.Argument(help="Your question")] = None,
    model: Model = None,
    as_json: AsJson = False,
    batch: Batch = None,
    preview: Preview = False,
    style: AnswerStyleOption = None,
    data_dir: DataDir = None,
) -> None:
    """Ask a question: an answer grounded in the course materials, with its sources."""
    if (question is None) == (batch is None):
        raise fail("give either a QUESTION or --batch FILE")
    try:
        services = build_services(load_settings(data_dir))
        if batch is not None:
            asyncio.run(_ask_batch(services.assistant, batch, model, preview, style))
        elif as_json:
            answer = asyncio.run(
                services.assistant.answer(question or "", model=model, preview=preview,
                                          style=style)
            )
            out.print_json(data=_answer_json(services, answer))
        else:
            answer = asyncio.run(
                _stream_answer(services.assistant, question or "", [], model, preview, style)
            )
            _print_sources(answer)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None


def _answer_json(services: Services, answer: Answer) -> dict:
    """`ask --json`'s answer, with a `grounding` field when the grounding badge is enabled
    (null for a refusal: it makes no claims to check)."""
    data = answer.as_json()
    if services.settings.answer.grounding_badge:
        report = None if answer.refused else services.checker.check(answer.text, answer.retrieved)
        data["grounding"] = None if report is None else report.as_json()
    return data


async def _ask_batch(
    assistant: Assistant,
    batch: Path,
    model: str | None,
    preview: bool = False,
    style: str | None = None,
) -> None:
    """One JSON answer per input line; a bad line gets an `error` field and the rest go on."""
    try:
        rows = list(read_batch(batch))
    except (OSError, json.JSONDecodeError) as exc:
        raise fail(f"cannot read {batch}: {exc}") from None
    for number, row in rows:
        question = row.get("question") if isinstance(row, dict) else None
        if not isinstance(question, str):
            print(json.dumps({"line": number, "error": "no 'question' field"}), flush=True)
            continue
        try:
            answer = await assistant.answer(question, model=model, preview=preview, style=style)
        except USER_ERRORS as exc:
            print(json.dumps({"line": number, "question": question, "error": str(exc)}), flush=True)
            continue
        print(json.dumps(answer.as_json(), ensure_ascii=False), flush=True)


CHAT_HELP = """Commands:
  /help            this list
  /model [NAME]    show the models, or switch to NAME
  /sources         the passages behind the last answer
  /clear           forget the conversation (follow-ups use it)
  /quit            leave (Ctrl-D works too)
Anything else is a question; follow-ups can refer to earlier answers."""


def chat(
    model: Model = None,
    data_dir: DataDir = None,
) -> None:
    """A conversation in the terminal: streamed answers, sources, follow-ups."""
    try:
        services = build_services(load_settings(data_dir))
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    console.print("study-assistant chat · /help for commands · /quit to leave")
    asyncio.run(_chat_loop(services, model))


async def _chat_loop(services: Services, model: str | None) -> None:
    history: list[dict[str, str]] = []
    last = None
    while True:
        try:
            line = await asyncio.to_thread(input, "\nyou> ")
        except (EOFError, KeyboardInterrupt):
            return
        line = line.strip()
        if line in ("/quit", "/exit"):
            return
        if line.startswith("/"):
            model = _chat_command(line, services, model, last)
            if line == "/clear":
                history.clear()
            continue
        try:
            last = await _stream_answer(services.assistant, line, history, model)
        except USER_ERRORS as exc:
            console.print(f"[yellow]{escape(str(exc))}[/]")
            continue
        _print_sources(last)
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": last.text}]


def health(data_dir: DataDir = None) -> None:
    """Check that the store and the default model's server answer; exit 1 if not."""
    if code := health_report(load_settings(data_dir)):
        raise typer.Exit(code)


def _chat_command(
    line: str, services: Services, model: str | None, last: Answer | None
) -> str | None:
    """Handle a /command; return the (possibly new) model name."""
    name, _, arg = line.partition(" ")
    if name == "/model":
        names = services.models.names()
        if not arg:
            current = model or services.settings.llm.default
            out.print("models: " + ", ".join(f"*{n}" if n == current else n for n in names))
        elif arg in names:
            out.print(f"now answering with {arg}")
            return arg
        else:
            out.print(f"unknown model '{escape(arg)}'; known: {', '.join(names)}")
    elif name == "/sources":
        _print_hits(last.retrieved if last else [])
    elif name == "/clear":
        out.print("conversation cleared")
    else:
        out.print(CHAT_HELP, markup=False)
    return model
