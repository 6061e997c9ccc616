"""Ask a TA: escalations to a TA channel, TA answers relayed to the student, approved answers
written to the course FAQ and ingested.

The flow: the "Ask a TA" button under an answer opens a thread in the TA channel (a message and
its thread in a text channel, a post in a forum channel) and, only once that thread exists,
mentions the TA role there: the only mention the bot ever sends. What a TA (or instructor)
writes in that thread is posted where the student asked (a reply to the answer, in its channel
or thread; a DM for a private answer) with mentions off, and the escalation is answered. "Add
to FAQ" on a relayed answer writes it under `<materials>/faq/` and ingests that file through
the re-ingest slot `/reingest` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import discord

from bot import render_ta
from bot.access import channel_ids, is_ta
from bot.errors import NotAllowed, UserFacingError
from bot.escalation_log import (
    AlreadyEscalated,
    Escalation,
    EscalationLog,
    LoggedQuestion,
    TooManyEscalations,
)
from bot.faq import FaqEntry, write_faq
from bot.ingesting import Reingester, report_embed
from bot.promote import held_view
from bot.ta_views import escalation_view, faq_view
from ingest.pipeline import Target
from rag.config import Settings
from rag.course.rules import ActiveExam

log = logging.getLogger("bot")
NO_MENTIONS = discord.AllowedMentions.none()
NOT_SET_UP = ("Asking a TA isn't set up here: an instructor needs to set the TA channel "
              "(STUDY_ASSISTANT_DISCORD__TA_CHANNEL_ID).")
TEXT_PERMISSIONS = {"View Channel": "view_channel", "Send Messages": "send_messages",
                    "Embed Links": "embed_links", "Create Public Threads": "create_public_threads",
                    "Send Messages in Threads": "send_messages_in_threads"}
FORUM_PERMISSIONS = {"View Channel": "view_channel", "Create Posts": "send_messages",
                     "Embed Links": "embed_links"}


class TAUnavailable(UserFacingError):
    """The TA channel is not configured, gone, or the bot may not post there."""


def _forbidden(channel_id: int, what: str) -> TAUnavailable:
    log.warning("cannot post escalations in TA channel %s: %s", channel_id, what)
    return TAUnavailable(f"I can't post in the TA channel ({what}). Please tell an instructor; "
                         "your question is still answered as before.")


class Escalations:
    """Escalations, TA answers and FAQ entries for one bot."""

    def __init__(self, client: discord.Client, records: EscalationLog, settings: Settings,
                 reingester: Reingester, user_hash: Callable[[int], str],
                 exam_in: Callable[[set[int] | None], ActiveExam | None]) -> None:
        self.client = client
        self.exam_in = exam_in
        self.records = records
        self.settings = settings
        self.reingester = reingester
        self.user_hash = user_hash
        self.ds = settings.discord

    # -- escalating ----------------------------------------------------------------------
    async def escalate(self, interaction: discord.Interaction, question_id: int) -> None:
        """Send an answered question to the TA channel; confirm privately to the student."""
        channel = await self.ta_channel()
        logged = await asyncio.to_thread(self.records.question, question_id)
        if logged is None:
            raise UserFacingError("I no longer have that answer, so I can't send it to the TAs. "
                                  "Please ask your question again.")
        if logged.user_hash != self.user_hash(interaction.user.id):
            raise UserFacingError(
                "Only the student who asked can send this question to the TAs. Ask yours with "
                "`/ask` (or mention me), then use the Ask a TA button under its answer.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        message = interaction.message
        private = bool(message is not None and message.flags.ephemeral)
        escalation_id = await self._claim(interaction, question_id, private)
        if escalation_id is None:
            return
        link = self._link(interaction, private)
        try:
            thread = await self._open_thread(channel, escalation_id, logged, interaction.user.id,
                                             link, private)
        except BaseException:
            await asyncio.to_thread(self.records.release, escalation_id)
            raise
        await asyncio.to_thread(self.records.opened, escalation_id, channel.id, thread.id)
        if isinstance(channel, discord.TextChannel):  # a forum post pinged as it was created
            await self._ping_tas(thread, escalation_id)
        await interaction.edit_original_response(content=render_ta.ASKED_TA)

    async def _claim(self, interaction: discord.Interaction, question_id: int,
                     private: bool) -> int | None:
        """Reserve the escalation, within the user's hourly limit; None (and the student is
        told) when this answer was escalated before."""
        message = interaction.message
        try:
            return await asyncio.to_thread(
                self.records.claim, question_id, self.user_hash(interaction.user.id),
                interaction.user.id, self.ds.escalations_per_hour,
                guild_id=interaction.guild_id, channel_id=interaction.channel_id or 0,
                message_id=None if message is None else message.id, private=private)
        except AlreadyEscalated as exc:
            await interaction.edit_original_response(content=already_sent(exc.escalation))
            return None
        except TooManyEscalations as exc:
            minutes = max(1, math.ceil((exc.until - time.time()) / 60))
            asked = f"{exc.count} question" + ("s" if exc.count != 1 else "")
            raise UserFacingError(
                f"You've sent the TAs {asked} in the last hour, the most allowed per hour. "
                f"Please try again in {minutes} min.") from exc

    async def ta_channel(self) -> discord.TextChannel | discord.ForumChannel:
        """The configured TA channel, checked: TAUnavailable says what is wrong."""
        channel_id = self.ds.ta_channel_id
        if channel_id is None:
            raise TAUnavailable(NOT_SET_UP)
        channel = self.client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.client.fetch_channel(channel_id)
            except discord.NotFound as exc:
                raise _forbidden(channel_id, "it no longer exists") from exc
            except discord.Forbidden as exc:
                raise _forbidden(channel_id, "I can't see it") from exc
        if not isinstance(channel, discord.TextChannel | discord.ForumChannel):
            raise _forbidden(channel_id, "it is not a text or forum channel")
        self._check_permissions(channel)
        return channel

    def _check_permissions(self, channel: discord.TextChannel | discord.ForumChannel) -> None:
        """Raise when the bot lacks a permission it needs there (known only once the bot's
        own member is cached; otherwise Discord's refusal says so)."""
        me = channel.guild.me
        if me is None:
            return
        perms = channel.permissions_for(me)
        forum = isinstance(channel, discord.ForumChannel)
        needed = FORUM_PERMISSIONS if forum else TEXT_PERMISSIONS
        missing = [name for name, flag in needed.items() if not getattr(perms, flag)]
        if missing:
            raise _forbidden(channel.id, "missing " + ", ".join(missing))
        role = channel.guild.get_role(self.ds.ta_role_id or 0)
        if role is not None and not role.mentionable and not perms.mention_everyone:
            log.warning("the TA role %s is not mentionable and the bot lacks 'Mention All "
                        "Roles' in the TA channel: escalations will not notify the TAs", role.id)

    def _link(self, interaction: discord.Interaction, private: bool) -> str:
        """A link back to where the student asked (the channel, for a private answer)."""
        guild = interaction.guild_id or "@me"
        base = f"https://discord.com/channels/{guild}/{interaction.channel_id}"
        message = interaction.message
        return base if private or message is None else f"{base}/{message.id}"

    async def _open_thread(
        self, channel: discord.TextChannel | discord.ForumChannel, escalation_id: int,
        logged: LoggedQuestion, user_id: int, link: str, private: bool,
    ) -> discord.Thread:
        """Post the escalation and open its thread; Discord's refusals become TAUnavailable.

        A forum post's first message pings the TA role: Discord creates it and its thread in
        one request, so a refused thread pings nobody. A text channel's post pings nobody, as
        its thread is a second request that may fail; `_ping_tas` pings once it exists.
        """
        content, embeds = render_ta.escalation_post(escalation_id, logged, user_id, link,
                                                    private)
        name = render_ta.thread_title(escalation_id, logged.question)
        view = escalation_view(escalation_id)
        role = self.ds.ta_role_id
        try:
            if isinstance(channel, discord.ForumChannel):
                if role is not None:
                    content = f"{render_ta.ta_ping(escalation_id, role)}\n{content}"
                created = await channel.create_thread(name=name, content=content, embeds=embeds,
                                                      view=view, allowed_mentions=self._pings())
                return created.thread
            post = await channel.send(content, embeds=embeds, view=view,
                                      allowed_mentions=NO_MENTIONS)
            try:
                return await post.create_thread(name=name, auto_archive_duration=10080)
            except discord.HTTPException:
                # The student will press again: leave no post without a thread behind (its
                # answer button would be dead).
                with contextlib.suppress(discord.HTTPException):
                    await post.delete()
                raise
        except discord.Forbidden as exc:
            raise _forbidden(channel.id, "missing permissions") from exc
        except discord.NotFound as exc:
            raise _forbidden(channel.id, "it no longer exists") from exc

    def _pings(self) -> discord.AllowedMentions:
        """Mentions allowed in a TA ping: the TA role's, nobody else's."""
        role = self.ds.ta_role_id
        return discord.AllowedMentions(everyone=False, users=False, replied_user=False,
                                       roles=[discord.Object(role)] if role else False)

    async def _ping_tas(self, thread: discord.Thread, escalation_id: int) -> None:
        """Notify the TA role in the escalation's thread, which exists by now (a mention added
        by editing a message notifies nobody, so this is a message of its own). A failure is
        logged: the escalation stands, and `/escalations` lists it."""
        role = self.ds.ta_role_id
        if role is None:
            return
        try:
            await thread.send(render_ta.ta_ping(escalation_id, role),
                              allowed_mentions=self._pings())
        except discord.HTTPException as exc:
            log.warning("could not ping the TA role for escalation #%s: %s", escalation_id, exc)

    async def answer_replaced(self, message_id: int, question_id: int) -> None:
        """An answer message was written over with a new answer, its question having been
        edited: an open escalation raised from it now stands for the new question and answer
        (in the answer relayed to the student, `/escalations` and the FAQ), and its thread is
        told. The post above keeps what the student sent, as sent (the note says what changed;
        renaming the thread would spend one of its two renames per 10 minutes)."""
        escalation = await asyncio.to_thread(self.records.follow, message_id, question_id)
        if escalation is None or escalation.ta_thread_id is None:
            return
        thread = self.client.get_partial_messageable(escalation.ta_thread_id,
                                                     guild_id=escalation.guild_id)
        await self._tell(thread, render_ta.question_edited(escalation.question))

    # -- TA answers ------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        """A message in an escalation thread: a TA's answer is relayed to the student."""
        channel = message.channel
        if message.author.bot or message.is_system() or not isinstance(channel, discord.Thread):
            return  # a system message (the thread renamed, a pin) is Discord's, not the TA's
        if channel.parent_id != self.ds.ta_channel_id:
            return
        escalation = await asyncio.to_thread(self.records.for_thread, channel.id)
        if escalation is None:
            return
        perms = getattr(message.author, "guild_permissions", discord.Permissions.none())
        if not is_ta(self.ds, message.author, perms):
            log.info("not relayed: %s in escalation #%s holds no TA or instructor role",
                     message.author.id, escalation.id)
            return
        text = message.content.strip()
        if not text:
            await self._tell(channel, "I can't read that message, so it was not sent to the "
                             "student (text only; the bot needs the Message Content intent).")
            return
        await self.relay(escalation, text, message.author.display_name, channel)

    def check_ta(self, interaction: discord.Interaction) -> None:
        """NotAllowed unless the user is a TA or an instructor."""
        if not is_ta(self.ds, interaction.user, interaction.permissions):
            raise NotAllowed("Only TAs and instructors can use this.")

    async def answer_from_form(self, interaction: discord.Interaction, escalation_id: int,
                               text: str) -> None:
        """A TA's answer from the form on an escalation: relayed like one in the thread."""
        self.check_ta(interaction)
        escalation = await asyncio.to_thread(self.records.get, escalation_id)
        if escalation is None or escalation.ta_thread_id is None or not text.strip():
            raise UserFacingError("Nothing was sent: that escalation or answer is empty or gone.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        thread = self.client.get_partial_messageable(escalation.ta_thread_id,
                                                     guild_id=escalation.guild_id)
        sent = await self.relay(escalation, text.strip(), interaction.user.display_name, thread)
        await interaction.edit_original_response(
            content="Sent to the student." if sent else "Not delivered: see the thread.")

    async def relay(self, escalation: Escalation, text: str, ta_name: str,
                    thread: discord.abc.Messageable) -> bool:
        """Deliver a TA's answer to the student and mark the escalation answered; the thread
        is told where it went (with "Add to FAQ"), or why it could not be delivered (an exam
        where the student asked holds it: the escalation stays open)."""
        exam = await self._exam_for(escalation)
        if exam is not None:
            until = "" if exam.until == math.inf else f" (until <t:{int(exam.until)}:f>)"
            await self._tell(thread, f"⏸️ An exam is on where the student asked{until}, so "
                             f"{ta_name}'s answer was not sent. The escalation stays open: post "
                             "the answer here again once the exam is over.")
            return False
        answer_id = await asyncio.to_thread(self.records.add_answer, escalation.id, ta_name, text)
        try:
            sent = await self._deliver(escalation, text, ta_name, answer_id)
        except discord.HTTPException as exc:
            log.warning("could not relay the answer to escalation #%s: %s", escalation.id, exc)
            await self._tell(thread, f"⚠️ I could not deliver {ta_name}'s answer to the "
                             f"student (Discord said: HTTP {exc.status}). The escalation stays "
                             "open.")
            return False
        await asyncio.to_thread(self.records.mark_answered, escalation.id)
        await self._tell(thread, f"✅ Sent {ta_name}'s answer to the student: {sent.jump_url}",
                         faq_view(answer_id))
        return True

    async def _exam_for(self, escalation: Escalation) -> ActiveExam | None:
        """The exam covering where the student asked (any exam covers a DM), or None. An answer
        delivered by DM is judged as a DM: a private answer, and a question asked in a DM (no
        server), whose DM channel is no course channel an exam could name."""
        if escalation.private or escalation.guild_id is None:
            return self.exam_in(None)
        ids = {escalation.channel_id}
        channel = self.client.get_channel(escalation.channel_id)
        if channel is None:  # a thread's parent is known only from Discord
            with contextlib.suppress(discord.HTTPException):
                channel = await self.client.fetch_channel(escalation.channel_id)
        return self.exam_in(ids | channel_ids(channel))

    async def _deliver(self, escalation: Escalation, text: str, ta_name: str,
                       answer_id: int) -> discord.Message:
        """Post the answer where the student asked; return the first message."""
        pages = render_ta.relay_messages(escalation.question, text, ta_name)
        reference: discord.MessageReference | None = None
        if escalation.private:
            target: discord.abc.Messageable = await self.client.create_dm(
                discord.Object(escalation.user_id))
            note = "A TA answered the question you asked privately:"
        else:
            target = self.client.get_partial_messageable(escalation.channel_id,
                                                         guild_id=escalation.guild_id)
            note = f"<@{escalation.user_id}>, a TA answered your question:"
            if escalation.message_id:
                reference = discord.MessageReference(
                    message_id=escalation.message_id, channel_id=escalation.channel_id,
                    guild_id=escalation.guild_id, fail_if_not_exists=False)
        first = await target.send(note, embeds=pages[0], view=faq_view(answer_id),
                                  allowed_mentions=NO_MENTIONS,
                                  reference=reference)  # type: ignore[arg-type]
        for embeds in pages[1:]:
            await target.send(embeds=embeds, allowed_mentions=NO_MENTIONS)
        return first

    async def _tell(self, thread: discord.abc.Messageable, text: str,
                    view: discord.ui.View | None = None) -> None:
        """A note for the TAs in the escalation thread (best effort)."""
        try:
            if view is None:
                await thread.send(text, allowed_mentions=NO_MENTIONS)
            else:
                await thread.send(text, allowed_mentions=NO_MENTIONS, view=view)
        except discord.HTTPException as exc:
            log.warning("could not post in an escalation thread: %s", exc)

    # -- the FAQ ---------------------------------------------------------------------------
    async def add_to_faq(self, interaction: discord.Interaction, answer_id: int) -> None:
        """Write an approved TA answer under `<materials>/faq/` and ingest it (TAs only)."""
        if not is_ta(self.ds, interaction.user, interaction.permissions):
            raise NotAllowed("Only TAs and instructors can add answers to the course FAQ.")
        answer = await asyncio.to_thread(self.records.answer, answer_id)
        if answer is None:
            raise UserFacingError("I no longer have that answer.")
        materials = Path(self.settings.materials_dir).resolve()
        if answer.faq_path and (materials / answer.faq_path).exists():
            raise UserFacingError(f"That answer is in the course FAQ already, as "
                                  f"`{answer.faq_path}`. Edit or delete that file, then /reingest.")
        approver, now = interaction.user.display_name, time.time()
        entry = FaqEntry(answer.question, answer.answer, answer.ta_name, approver, now,
                         self.settings.course.timezone)
        with self.reingester.claim():
            await interaction.response.defer(ephemeral=True, thinking=True)
            path = await asyncio.to_thread(write_faq, materials, entry)
            result = await self.reingester.run([Target(materials, path)])
        source = path.relative_to(materials).as_posix()
        await asyncio.to_thread(self.records.approved, answer_id, source, approver, now)
        title = f"Added {source} to the course FAQ (approved {entry.approval_date()})"
        # With gold questions, a FAQ entry that made one worse is held like any re-ingest.
        view = held_view(result)
        embed = report_embed(result, title[:200])
        if view is None:
            await interaction.edit_original_response(embed=embed)
        else:
            await interaction.edit_original_response(embed=embed, view=view)


def already_sent(escalation: Escalation) -> str:
    """What a second press of "Ask a TA" on the same answer says."""
    state = "answered" if escalation.status == "answered" else "waiting for a TA"
    return f"This question is with the TAs already (escalation #{escalation.id}, {state})."
