"""`study-assistant report`: the usage chart (PNG), the per-day counts and the coverage gaps
(CSV) from the bot's question log, as /stats shows them."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.escalation_log import EscalationLog
from bot.storage import QuestionLog, question_log_path
from bot.usage import Embed, UsageReport, build_report, write_days_csv, write_gaps_csv
from bot.usage_chart import usage_chart
from cli.common import DataDir, console, fail, load_settings
from rag.index.embedder import EmbedderError
from rag.services import build_embedder

CHART = "usage.png"
DAYS_CSV = "usage_by_day.csv"
GAPS_CSV = "coverage_gaps.csv"

Out = Annotated[
    Path,
    typer.Option("--out", "-o", help=f"Folder to write {CHART}, {DAYS_CSV} and {GAPS_CSV} to"),
]
Days = Annotated[int, typer.Option("--days", min=1, max=365, help="The period, in days")]


def register(app: typer.Typer) -> None:
    """Add `report` to the app."""
    app.command()(report)


def report(out: Out = Path("report"), days: Days = 30, data_dir: DataDir = None) -> None:
    """Write the usage chart (PNG), per-day counts and coverage gaps (CSV) of the bot's log."""
    settings = load_settings(data_dir)
    _check_timezone(settings.course.timezone)
    now = time.time()
    since = now - days * 86400
    rows, escalated = _read_log(settings.data_dir, since, days)
    embedder = build_embedder(settings)
    try:
        with _embedding_progress(embedder.embed_documents) as embed:
            usage = build_report(rows, embed, settings, since, now, escalated)
    except EmbedderError as exc:
        raise fail(str(exc)) from None
    _write(out, usage, f"Usage over the last {days} days")


def _check_timezone(name: str) -> None:
    """Days are counted in the course's time zone: it must be a known one."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"STUDY_ASSISTANT_COURSE__TIMEZONE: unknown time zone '{name}'") from None


def _read_log(data_dir: Path, since: float, days: int) -> tuple[list[dict], list[float]]:
    """The period's questions and escalation times; a missing data dir, log or question is a
    clear error."""
    if not data_dir.is_dir():
        raise fail(f"no data dir at {data_dir}: pass the bot's with --data-dir "
                   "(or STUDY_ASSISTANT_DATA_DIR)")
    path = question_log_path(data_dir)
    if not path.exists():
        raise fail(f"no question log at {path}: the bot has not answered anything yet")
    try:
        log = QuestionLog(path)
        try:
            rows = log.usage_rows(since)
            logged = len(rows) or len(log.usage_rows())
        finally:
            log.close()
        escalations = EscalationLog(path)
        try:
            escalated = escalations.sent_since(since)
        finally:
            escalations.close()
    except sqlite3.DatabaseError as exc:
        raise fail(f"cannot read the question log at {path}: {exc}") from None
    if not logged:
        raise fail(f"the question log at {path} is empty: the bot has not answered anything yet")
    if not rows:
        raise fail(f"no questions in the last {days} days ({logged} in the log in all): "
                   "nothing to report; try a longer --days")
    return rows, escalated


@contextmanager
def _embedding_progress(embed_documents: Callable[..., np.ndarray]) -> Iterator[Embed]:
    """An `Embed` that shows its progress: a bar on a terminal, one line in a log."""
    if not console.is_terminal:

        def logged(texts: Sequence[str]) -> np.ndarray:
            print(f"report: grouping {len(texts)} distinct questions by meaning", file=sys.stderr,
                  flush=True)
            return embed_documents(texts)

        yield logged
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:

        def shown(texts: Sequence[str]) -> np.ndarray:
            task = progress.add_task("grouping distinct questions by meaning", total=len(texts))
            return embed_documents(texts, lambda n: progress.update(task, advance=n))

        yield shown


def _write(out: Path, usage: UsageReport, title: str) -> None:
    """The three files, then what they hold."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / CHART).write_bytes(usage_chart(usage, title))
        with (out / DAYS_CSV).open("w", encoding="utf-8", newline="") as fh:
            write_days_csv(usage, fh)
        with (out / GAPS_CSV).open("w", encoding="utf-8", newline="") as fh:
            write_gaps_csv(usage, fh)
    except OSError as exc:
        raise fail(f"cannot write the report to {out}: {exc}") from None
    gaps = sum(c.count for c in usage.clusters)
    console.print(f"{usage.questions} questions over {len(usage.days)} days; {gaps} not covered "
                  f"or voted 👎, in {len(usage.clusters)} groups", soft_wrap=True)
    for name in (CHART, DAYS_CSV, GAPS_CSV):
        console.print(f"wrote {escape(str(out / name))}", soft_wrap=True)
