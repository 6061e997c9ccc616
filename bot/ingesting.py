"""Re-ingests inside the bot process: one at a time, on a worker thread, with progress.

Searches keep working while an ingest runs (the retriever only returns committed chunks), so
questions keep being answered. The slot stays taken until the worker thread has really
finished, whatever happens to the Discord messages (a progress edit that fails, a token that
expires) or to the command's task; progress is best effort.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import discord

from bot.errors import ReingestRunning
from bot.limits import EMBED_FIELD_VALUE_CHARS, truncate
from bot.render import rewrite_embeds
from ingest.pipeline import IngestReport, Target
from ingest.reingest import GateReport, ReingestResult, reingest
from rag.services import Services

log = logging.getLogger("bot")
T = TypeVar("T")

@dataclass
class IngestStatus:
    """What an ingest has done so far (updated from the worker thread)."""

    files_total: int = 0
    files_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    current: str = ""

    def line(self) -> str:
        """One line for the progress message."""
        if not self.files_total:
            return "Scanning the materials…"
        text = f"Files {self.files_done}/{self.files_total}"
        if self.chunks_total:
            text += f" · embedding {self.chunks_done}/{self.chunks_total} chunks"
        return text + (f" · {self.current}" if self.current else "")


class StatusProgress:
    """An `IngestProgress` that keeps an `IngestStatus` up to date."""

    def __init__(self, status: IngestStatus) -> None:
        self.status = status
        self._lock = threading.Lock()

    def files_started(self, total: int) -> None:
        """Record the number of files to process."""
        with self._lock:
            self.status.files_total = total

    def file_done(self, source: str) -> None:
        """Count a finished file."""
        with self._lock:
            self.status.files_done += 1
            self.status.current = source

    def embedding_started(self, total: int) -> None:
        """Start counting a group's chunks."""
        with self._lock:
            self.status.chunks_total, self.status.chunks_done = total, 0

    def embedded(self, n: int) -> None:
        """Count an embedded batch."""
        with self._lock:
            self.status.chunks_done += n


class Reingester:
    """Runs one ingest at a time against the bot's store; a second request is refused."""

    def __init__(self, services: Services, progress_interval_s: float = 2.0) -> None:
        self.services = services
        self.progress_interval_s = progress_interval_s
        self._claimed = False
        self._working: threading.Event | None = None  # set while a worker thread ingests

    @property
    def running(self) -> bool:
        """Whether an ingest is under way (claimed, or its worker thread still running)."""
        return self._claimed or (self._working is not None and self._working.is_set())

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Reserve the ingest slot at once (before any await), or raise ReingestRunning."""
        if self.running:
            raise ReingestRunning(
                "A re-ingest is already running; its summary will appear when it finishes. "
                "Please try again afterwards."
            )
        self._claimed = True
        try:
            yield
        finally:
            self._claimed = False

    async def run(
        self,
        targets: Sequence[Target],
        on_progress: Callable[[IngestStatus], Awaitable[None]] | None = None,
    ) -> ReingestResult:
        """Ingest the targets on a worker thread (inside `claim()`), reporting progress; gated
        by the gold questions when the materials have them (ingest/reingest.py)."""
        if not self._claimed:
            raise RuntimeError("Reingester.run() must be called inside claim()")
        status = IngestStatus()
        working = self._working = threading.Event()
        working.set()
        work = asyncio.ensure_future(asyncio.to_thread(self._ingest, list(targets), status,
                                                       working))
        while not work.done():
            await asyncio.wait({work}, timeout=self.progress_interval_s)
            if not work.done() and on_progress is not None and not await _shown(on_progress,
                                                                                 status):
                on_progress = None  # the message is gone: ingest on, silently
        return work.result()

    def _ingest(self, targets: list[Target], status: IngestStatus,
                working: threading.Event) -> ReingestResult:
        """The worker thread: ingest, then free the slot (even if the command is gone)."""
        s = self.services
        try:
            return reingest(targets, s.store, s.embedder, s.settings,
                            progress=StatusProgress(status), now=s.retriever.clock())
        finally:
            working.clear()

    async def switch(self, action: Callable[[], T]) -> T:
        """Run a promote or rollback on a worker thread, holding the ingest slot."""
        with self.claim():
            return await asyncio.to_thread(action)


async def _shown(on_progress: Callable[[IngestStatus], Awaitable[None]],
                 status: IngestStatus) -> bool:
    """Show progress; False (logged) when Discord refused, so no more is tried."""
    try:
        await on_progress(status)
    except discord.HTTPException as exc:
        log.warning("could not show re-ingest progress (%s); the ingest goes on", exc)
        return False
    return True


def report_embed(result: ReingestResult | IngestReport,
                 title: str = "Re-ingest finished") -> discord.Embed:
    """The summary: added / changed / removed / unchanged files and skipped ones with reasons;
    then the gold questions' verdict, if they gated it."""
    report = result.report if isinstance(result, ReingestResult) else result
    gate = result.gate if isinstance(result, ReingestResult) else None
    held = gate is not None and gate.held
    plan = report.plan
    colour = discord.Colour.red() if not report.ok else (
        discord.Colour.orange() if held else discord.Colour.green())
    embed = discord.Embed(title=f"{title}: held, not live" if held else title, colour=colour)
    skipped = report.skipped
    rows = [  # a new or changed file that could not be read is listed as skipped only
        ("Added", [f.source for f in plan.added if f.source not in skipped]),
        ("Changed", [f.source for f in plan.changed if f.source not in skipped]),
        ("Removed", list(plan.removed)),
    ]
    for name, items in rows:
        value = "\n".join(items) or "none"
        embed.add_field(name=f"{name} ({len(items)})", value=truncate(value, 1000), inline=False)
    embed.add_field(name="Unchanged", value=str(len(plan.unchanged)))
    reasons = "\n".join(f"{s}: {r}" for s, r in sorted(skipped.items())) or "none"
    embed.add_field(name=f"Skipped ({len(skipped)})",
                    value=truncate(reasons, EMBED_FIELD_VALUE_CHARS), inline=False)
    if report.scheduled:
        # Discord shows <t:…> in each reader's own time zone.
        lines = "\n".join(f"{s}: <t:{int(t)}:f>" for s, t in
                          sorted(report.scheduled.items(), key=lambda item: item[1]))
        embed.add_field(name=f"Scheduled, hidden from students ({len(report.scheduled)})",
                        value=truncate(lines, EMBED_FIELD_VALUE_CHARS), inline=False)
    if gate is not None:
        _add_gate(embed, gate)
    embed.set_footer(text=f"{report.chunks_added} chunks embedded · {report.chunks_reused} "
                     f"reused · {report.chunks_removed} removed · {report.seconds:.1f} s")
    # Each list fits its field, but a held re-ingest of a reorganised folder fills them all.
    return rewrite_embeds([embed], str)[0]


def _add_gate(embed: discord.Embed, gate: GateReport) -> None:
    """The gold questions' verdict, and for a held version the questions that got worse."""
    checked = f"{len(gate.changes)} checked"
    if not gate.held:
        embed.add_field(name="Gold questions", inline=False,
                        value=f"{checked}, none got worse: version {gate.built} is live "
                        f"(was {gate.live_before}).")
        return
    embed.add_field(name="Gold questions", inline=False,
                    value=f"{checked}, {len(gate.regressed)} got worse: version "
                    f"{gate.live_before} stays live; version {gate.built} is held. Promote it "
                    "with the button below or `/reingest action:promote`.")
    lines = "\n".join(f"• {c.before.question} — {c.why()}" for c in gate.regressed)
    embed.add_field(name=f"Got worse ({len(gate.regressed)})", inline=False,
                    value=truncate(lines, EMBED_FIELD_VALUE_CHARS))
