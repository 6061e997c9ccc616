"""Course rules from Discord (instructors): /exam, /assignments, /hints."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import instructors_only
from bot.errors import UserFacingError
from bot.limits import EMBED_DESCRIPTION_CHARS, MESSAGE_CHARS, split_for_discord, truncate
from bot.pages import send_more_pages
from rag.course.schedule import SCHEDULE_FILE, ScheduleError, parse_until
from rag.quoting import quoted

if TYPE_CHECKING:
    from bot.client import StudyBot
    from rag.course.rules import ScheduleStatus

_CHANNEL_MENTION = re.compile(r"<#(\d+)>|\b(\d{15,21})\b")
WHERE_CHARS = 600  # the channel mentions one exam is shown with (about 25)


def parse_channels(text: str | None, here: int | None) -> list[int]:
    """Channel mentions or ids in `text`; 'all' (or 'server') means server-wide (empty)."""
    if text is None or not text.strip():
        return [here] if here is not None else []
    if text.strip().lower() in ("all", "server", "everywhere"):
        return []
    found = [int(a or b) for a, b in _CHANNEL_MENTION.findall(text)]
    if not found:
        raise UserFacingError("Give channels as mentions (#exam-room), or 'all' for the server.")
    return found


def in_server(guild: discord.Guild | None, ids: list[int]) -> list[int]:
    """`ids` when each is a channel, category or thread of the server; else UserFacingError
    naming one that is not (a role or member mention, a mistyped id: an exam there would guard
    nothing). A category stands for the channels in it (`bot.access.channel_ids`)."""
    unknown = [i for i in ids if guild is None or guild.get_channel_or_thread(i) is None]
    if unknown:
        raise UserFacingError(f"{unknown[0]} is not a channel of this server. Give channels as "
                              "mentions (#exam-room), or 'all' for the server.")
    return ids


def categories_note(guild: discord.Guild | None, ids: list[int]) -> str:
    """The sentence that tells an instructor who named a category what it covers ("" when
    none is one): Discord shows a category's mention as a bare name, which reads like one
    channel."""
    if guild is None or not any(
            isinstance(guild.get_channel(i), discord.CategoryChannel) for i in ids):
        return ""
    return (" A category covers every channel in it and their threads, including channels "
            "added to it later.")


def where(channels: frozenset[int] | tuple[int, ...], limit: int = WHERE_CHARS) -> str:
    """'server-wide' or the channel mentions: those that fit in `limit` characters, then how
    many more (an exam over a hundred channels would not fit in a message)."""
    if not channels:
        return "server-wide"
    shown = split_for_discord(" ".join(f"<#{c}>" for c in sorted(channels)), limit)[0]
    more = len(channels) - shown.count("<#")
    return f"{shown} and {more} more channel{'s' * (more != 1)}" if more else shown


def schedule_warning(status: ScheduleStatus) -> str:
    """What instructors must know when schedule.toml does not read ("" when it does)."""
    if not status.problem:
        return ""
    if status.last_good:
        windows = len(status.schedule.exams)
        held = (f"The last good schedule (saved in the data dir: {windows} exam window"
                f"{'' if windows == 1 else 's'}) is enforced until the file is mended.")
    else:
        held = ("There is no last good schedule, so scheduled exams are NOT enforced: mend the "
                "file, or start exams by hand with /exam start.")
    return f"⚠️ {SCHEDULE_FILE} cannot be read: {quoted(status.problem, 300)}. {held}"


class CourseCog(commands.Cog):
    """Exam mode, assignments and hints-only channels."""

    exam = app_commands.Group(name="exam", description="Exam mode (instructors)", guild_only=True)
    assignments = app_commands.Group(name="assignments", description="Open assignments "
                                     "(instructors)", guild_only=True)
    hints = app_commands.Group(name="hints", description="Hints-only channels (instructors)",
                               guild_only=True)

    def __init__(self, bot: StudyBot) -> None:
        self.bot = bot

    @property
    def rules(self):  # noqa: ANN201 - CourseRules, imported lazily to keep the cog thin
        """The course's rules."""
        return self.bot.services.course

    @exam.command(name="start", description="Refuse course answers and demos during an exam")
    @app_commands.describe(channels="Channel or category mentions, or 'all' (default: this "
                           "channel)",
                           until="When it ends: 90m, 2h, 1d, 16:00 or 2026-03-10 16:00")
    @instructors_only
    async def exam_start(self, interaction: discord.Interaction, channels: str | None = None,
                         until: str | None = None) -> None:
        """Start exam mode."""
        ids = in_server(interaction.guild, parse_channels(channels, interaction.channel_id))
        try:
            end = parse_until(until, self.rules.timezone, self.rules.clock()) if until else 0.0
        except ScheduleError as exc:
            raise UserFacingError(f"I can't read that end time: {exc}.") from None
        await asyncio.to_thread(self.rules.start_exam, ids, end)
        ends = f" until <t:{int(end)}:f>" if end else " until /exam end"
        covers = categories_note(interaction.guild, ids)
        await interaction.response.send_message(
            f"📝 Exam mode is on ({where(tuple(ids))}){ends}.{covers}", ephemeral=True)

    @exam.command(name="end", description="End exam mode (the one started by hand)")
    @instructors_only
    async def exam_end(self, interaction: discord.Interaction) -> None:
        """End every exam started by hand (scheduled windows end at their time)."""
        ended = await asyncio.to_thread(self.rules.end_exams)
        left = self.rules.active_exams()
        text = f"Ended {ended} exam session(s)." if ended else "No exam was started by hand."
        if left:
            text += " A scheduled exam window is still on (" + ", ".join(
                where(e.channels) for e in left) + "); edit schedule.toml to change it."
        await interaction.response.send_message(truncate(text, MESSAGE_CHARS), ephemeral=True)

    @exam.command(name="status", description="Which exams are on now")
    @instructors_only
    async def exam_status(self, interaction: discord.Interaction) -> None:
        """List the exams on now."""
        lines = [f"• {where(e.channels)}"
                 + ("" if e.until == float("inf") else f" until <t:{int(e.until)}:f>")
                 + (" (scheduled)" if e.scheduled else "") for e in self.rules.active_exams()]
        # A broken schedule.toml may be why an exam is not on: the instructor must hear of it.
        warning = schedule_warning(await asyncio.to_thread(self.rules.schedule_status))
        text = "\n".join(lines) or "No exam is on."
        await interaction.response.send_message(
            truncate(f"{warning}\n{text}" if warning else text, MESSAGE_CHARS), ephemeral=True)

    @assignments.command(name="list", description="Assignments and whether they are open")
    @instructors_only
    async def assignments_list(self, interaction: discord.Interaction) -> None:
        """Each assignment: id, title, open or closed, due date, protected item count; and each
        file that cannot be read, with what is wrong."""
        assignments = await asyncio.to_thread(self.rules.assignments)
        rows = [f"• `{a.id}` {a.title}: {'open' if self.rules.is_open(a) else 'closed'}"
                + ("" if a.due == float("inf") else f", due <t:{int(a.due)}:f>")
                + f", {len(a.protected)} protected items"
                for a in assignments]
        known = {a.id for a in assignments}
        # A file that does not read protects nothing new: the instructor must hear of it.
        rows += [f"⚠️ `{ident}` cannot be read, so "
                 + ("its last good version is in force" if ident in known
                    else "none of its items are protected")
                 + f": {quoted(problem, 300)}"
                 for ident, problem in self.rules.assignment_problems().items()]
        if not rows:
            await interaction.response.send_message(
                "No assignment files in course_materials/assignments/.", ephemeral=True)
            return
        # A semester's worth passes the 2,000 characters of a message: pages of embeds.
        pages = [[discord.Embed(description=page)] for page in
                 split_for_discord("\n".join(rows), EMBED_DESCRIPTION_CHARS)]
        await interaction.response.send_message(embeds=pages[0], ephemeral=True)
        await send_more_pages(interaction, pages[1:], ephemeral=True)

    @assignments.command(name="open", description="Open an assignment now (hint mode)")
    @instructors_only
    async def assignments_open(self, interaction: discord.Interaction, assignment: str) -> None:
        """Open an assignment by its id (file name)."""
        await self._set_open(interaction, assignment, True)

    @assignments.command(name="close", description="Close an assignment now")
    @instructors_only
    async def assignments_close(self, interaction: discord.Interaction, assignment: str) -> None:
        """Close an assignment by its id (file name)."""
        await self._set_open(interaction, assignment, False)

    async def _set_open(self, interaction: discord.Interaction, ident: str, on: bool) -> None:
        try:
            found = await asyncio.to_thread(self.rules.set_open, ident.strip(), on)
        except KeyError:
            raise UserFacingError(
                f"No assignment {quoted(ident)}; /assignments list shows the ids.") from None
        state = "open: questions about it get hints" if on else "closed"
        await interaction.response.send_message(f"{found.title} is now {state}.", ephemeral=True)

    @hints.command(name="only", description="Make a channel hints-only (or not)")
    @app_commands.describe(on="Hints only (true) or normal answers (false)",
                           channel="The channel or category (default: this channel)")
    @instructors_only
    async def hints_only(self, interaction: discord.Interaction, on: bool,
                         channel: str | None = None) -> None:
        """Mark a channel (or a category: its channels) hints-only: every answer there is a
        hint."""
        ids = in_server(interaction.guild, parse_channels(channel, interaction.channel_id))
        if len(ids) != 1:
            raise UserFacingError("Name one channel, e.g. #lab-help.")
        await asyncio.to_thread(self.rules.set_hints_only, ids[0], on)
        state = "hints only" if on else "normal answers"
        covers = categories_note(interaction.guild, ids)
        await interaction.response.send_message(f"<#{ids[0]}> now gets {state}.{covers}",
                                                ephemeral=True)
