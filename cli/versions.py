"""`study-assistant index ...`: the index versions a gated re-ingest makes (list, promote,
roll back) and the gold questions run against the live version."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import USER_ERRORS, DataDir, console, fail, load_settings, out
from ingest.reingest import gold_path
from rag.config import Settings
from rag.index import versions
from rag.index.locking import DataDirLock
from rag.retrieval.gold import evaluate, load_gold_set
from rag.services import Services, build_services


def register(app: typer.Typer) -> None:
    """Add the `index` group."""
    group = typer.Typer(help="Index versions: list, promote a held re-ingest, roll back.",
                        no_args_is_help=True)
    group.command("versions")(list_versions)
    for command in (promote, rollback, gold):
        group.command()(command)
    app.add_typer(group, name="index")


@contextmanager
def _writing(settings: Settings) -> Iterator[Services]:
    """Services with the data dir locked for writing (embedded mode); errors as one line."""
    lock = DataDirLock(settings.data_dir)
    try:
        if not settings.store.host:
            lock.acquire()
        yield build_services(settings)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    finally:
        lock.release()


def list_versions(data_dir: DataDir = None) -> None:
    """The index versions: which is live, which is held, when each was made."""
    settings = load_settings(data_dir)
    try:
        services = build_services(settings)
        rows, live = versions.records(services.store), services.store.live_version()
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    table = Table(title="Index versions")
    for column in ("version", "state", "files", "made", "replaced"):
        table.add_column(column)
    for r in rows:
        state = "live" if r.version == live else r.state
        made = datetime.fromtimestamp(r.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC") \
            if r.created_at else "-"
        table.add_row(r.version, state, str(r.files), made, r.replaced or "-")
    out.print(table)


def promote(
    version: Annotated[str | None, typer.Argument(help="Version [default: the held one]")] = None,
    data_dir: DataDir = None,
) -> None:
    """Make the held re-ingest (or VERSION) live although gold questions got worse."""
    with _writing(load_settings(data_dir)) as services:
        record = versions.promote(services.store, version)
    out.print(f"version {record.version} is live")


def rollback(data_dir: DataDir = None) -> None:
    """Make the version that was live before the current one live again."""
    with _writing(load_settings(data_dir)) as services:
        was, now = versions.rollback(services.store)
    out.print(f"rolled back: version {now} is live (was {was})")


def gold(data_dir: DataDir = None) -> None:
    """Run the gold questions against the live version."""
    settings = load_settings(data_dir)
    try:
        gold_set = load_gold_set(gold_path(settings), settings.retrieval.k)
        if gold_set is None:
            raise fail(f"no gold questions: {gold_path(settings)} does not exist")
        results = evaluate(gold_set, build_services(settings).retriever)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    for r in results:
        mark = "[green]pass[/]" if r.passed else "[red]fail[/]"
        rank = f"#{r.rank}" if r.rank else "source not in top k"
        missing = f"; evidence missing: {', '.join(r.missing)}" if r.missing else ""
        out.print(f"{mark} {escape(r.question)} ({rank}{escape(missing)})")
    passed = sum(r.passed for r in results)
    console.print(f"{passed}/{len(results)} gold questions pass on the live version")
