"""Instructor tools: /reingest, /upload, /stats (configured roles or Manage Server); every
reply is private to the instructor who asked."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render, uploads, usage, usage_chart
from bot.access import instructors_only
from bot.ingesting import IngestStatus, report_embed
from bot.promote import held_view
from ingest.pipeline import Target
from rag.index import versions

if TYPE_CHECKING:
    from bot.client import StudyBot

log = logging.getLogger("bot")
CHART = "usage.png"
ACTIONS = [
    app_commands.Choice(name="re-ingest what changed (default)", value="run"),
    app_commands.Choice(name="promote the held re-ingest", value="promote"),
    app_commands.Choice(name="roll back to the previous version", value="rollback"),
]


class InstructorCog(commands.Cog):
    """Keeping the materials up to date, and seeing how the bot is used."""

    def __init__(self, bot: StudyBot) -> None:
        self.bot = bot
        # /stats re-reads the log each time; only questions asked since the last call are
        # embedded again (the cap of grouped questions, twice over, is kept).
        self.gap_vectors = usage.RememberedEmbeddings(
            bot.services.embedder.embed_documents, 2 * bot.settings.stats.max_gap_questions
        )

    async def _progress(self, interaction: discord.Interaction, status: IngestStatus) -> None:
        embed = discord.Embed(title="Re-ingesting…", description=status.line())
        await interaction.edit_original_response(embed=embed)

    async def _summary(self, interaction: discord.Interaction, embed: discord.Embed,
                       view: discord.ui.View | None = None) -> None:
        """The summary replaces the private progress message; when that cannot be edited any
        more (an ingest that outlived the 15-minute interaction token, a deleted message), it is
        sent to the instructor by DM: it names unreleased files and gold questions, so it never
        goes to the channel."""
        try:
            await interaction.edit_original_response(embed=embed, view=view)
        except discord.HTTPException as exc:
            log.warning("could not edit the re-ingest reply (%s); sending it by DM", exc)
            await interaction.user.send(
                "The ingest finished:", embed=embed,
                allowed_mentions=discord.AllowedMentions.none(),
                view=view if view is not None else discord.utils.MISSING,
            )

    @app_commands.command(description="Re-read the course materials (only what changed)")
    @app_commands.describe(action="Re-ingest (default), promote a held re-ingest, or roll back")
    @app_commands.choices(action=ACTIONS)
    @app_commands.guild_only()
    @instructors_only
    async def reingest(
        self, interaction: discord.Interaction, action: app_commands.Choice[str] | None = None
    ) -> None:
        """Incremental ingest of the materials folder, with progress and a summary (gated by
        the gold questions, if any); or promote the held version, or roll back."""
        if action is not None and action.value != "run":
            await self._switch(interaction, action.value)
            return
        target = Target(Path(self.bot.settings.materials_dir).resolve())
        with self.bot.reingester.claim():
            # Private: the summary names unreleased files, assignments and gold questions.
            await interaction.response.defer(thinking=True, ephemeral=True)
            result = await self.bot.reingester.run(
                [target], lambda status: self._progress(interaction, status)
            )
        await self._summary(interaction, report_embed(result), held_view(result))

    async def _switch(self, interaction: discord.Interaction, action: str) -> None:
        """Promote the held version or roll back, and say which version is live now."""
        store = self.bot.services.store
        await interaction.response.defer(thinking=True, ephemeral=True)
        if action == "promote":
            record = await self.bot.reingester.switch(lambda: versions.promote(store))
            text = f"Version {record.version} is live (promoted although gold questions got worse)."
        else:
            was, now = await self.bot.reingester.switch(lambda: versions.rollback(store))
            text = f"Rolled back: version {now} is live (was {was})."
        await interaction.edit_original_response(content=text)

    @app_commands.command(description="Add a PDF, Markdown or text file to the materials")
    @app_commands.describe(file="The file", overwrite="Replace a file of the same name")
    @app_commands.guild_only()
    @instructors_only
    async def upload(
        self, interaction: discord.Interaction, file: discord.Attachment, overwrite: bool = False
    ) -> None:
        """Check, save under the materials folder, and ingest one file; a file ingest could not
        read (a corrupt PDF) is not kept: removed, or the version it replaced put back."""
        settings = self.bot.settings
        max_bytes = int(settings.discord.upload_max_mb * uploads.MEGABYTE)
        name = uploads.check_type_and_size(file.filename, file.size, max_bytes)
        folder = settings.discord.upload_folder
        path = uploads.destination(settings.materials_dir, folder, name, overwrite)
        with self.bot.reingester.claim():
            await interaction.response.defer(thinking=True, ephemeral=True)
            try:
                data = await file.read()
            except discord.HTTPException as exc:  # not a reply Discord refused: the download
                raise uploads.UploadRejected(
                    f"I could not download the file from Discord (HTTP {exc.status}). "
                    "Please upload it again.") from exc
            uploads.check_content(name, data)
            previous = await asyncio.to_thread(uploads.replace_file, path, data)
            root = Path(settings.materials_dir).resolve()
            result = await self.bot.reingester.run([Target(root, path)])
            added = path.relative_to(root).as_posix() not in result.report.skipped
            if not added:
                await asyncio.to_thread(uploads.undo_upload, path, previous)
        source = path.relative_to(root).as_posix()
        same = any(f.source == source for f in result.report.plan.unchanged)
        title = (f"Unchanged: {folder}/{name} is the file already there" if added and same
                 else f"Added {folder}/{name}" if added else f"Not added: {folder}/{name}")
        summary = report_embed(result, title)
        await self._summary(interaction, summary, held_view(result))

    @app_commands.command(description="Questions, feedback, latency, a chart and coverage gaps")
    @app_commands.describe(days="The period, in days (default 7)")
    @app_commands.guild_only()
    @instructors_only
    async def stats(
        self, interaction: discord.Interaction, days: app_commands.Range[int, 1, 365] = 7
    ) -> None:
        """Usage statistics from the question log, a chart of them per day, and the groups of
        questions the materials did not serve; the counting, grouping and drawing run in a
        worker thread."""
        await interaction.response.defer(thinking=True, ephemeral=True)
        settings, now = self.bot.settings, time.time()
        since = now - days * 86400
        stats = await asyncio.to_thread(self.bot.questions.stats, since)
        report = await asyncio.to_thread(self._usage, since, now)
        png = await asyncio.to_thread(usage_chart.usage_chart, report,
                                      f"Usage over the last {days} days")
        summary = render.stats_embed(stats, days).set_image(url=f"attachment://{CHART}")
        await interaction.edit_original_response(
            embeds=[summary, render.gaps_embed(report, settings.stats.gap_groups)],
            attachments=[discord.File(io.BytesIO(png), filename=CHART)],
            allowed_mentions=discord.AllowedMentions.none(),
        )

    def _usage(self, since: float, now: float) -> usage.UsageReport:
        """The period's usage report (in a worker thread: SQLite, the embedder)."""
        escalated = self.bot.escalation_log.sent_since(since)
        return usage.report_from_log(self.bot.questions, self.gap_vectors, self.bot.settings,
                                     since, now, escalated)
