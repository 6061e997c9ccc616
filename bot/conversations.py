"""The mention flow: a mention in a channel opens a thread and answers there; in the bot's
threads (and in DMs, when enabled) follow-ups need no mention and use the recent history.
Discord's reply to one of the bot's answers, pinging the bot or not, is a follow-up to that
answer: it has that answer and its question as history."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import discord

from bot import render
from bot.access import (
    NOT_SERVED,
    channel_allowed,
    guild_served,
    in_ta_channel,
    is_instructor,
    member_allowed,
)
from bot.answering import Answerer, ChannelReply, without_markup
from bot.errors import friendly_message, new_error_id
from bot.limits import MESSAGE_CHARS, thread_name, truncate
from bot.views import has_answer_buttons

if TYPE_CHECKING:
    from bot.escalating import Escalations
    from rag.config import DiscordSettings

log = logging.getLogger("bot")
# Answered messages whose edits are answered again (kept in memory: a restart forgets them).
ANSWERS_KEPT = 1000
RENAME_WAIT_S = 10.0  # the longest a thread's rename may wait for Discord's rate limit


def question_text(content: str) -> str:
    """A message's text without mentions, emoji or other Discord markup."""
    return without_markup(content)


def mentions_bot(message: discord.Message, me: discord.abc.User) -> bool:
    """Whether a message mentions the bot: by its user, or by the role Discord gives the bot in
    each server. Discord's @-autocomplete offers both under the same name, so a student who
    picks the role means the bot just the same."""
    if me in message.mentions:
        return True
    own_role = message.guild.self_role if message.guild is not None else None
    return own_role is not None and own_role in message.role_mentions


def is_our_thread(channel: object, me: discord.abc.User) -> bool:
    """Whether a channel is a thread the bot started (follow-ups there need no mention)."""
    return isinstance(channel, discord.Thread) and channel.owner_id == me.id


def finished(embed: discord.Embed) -> bool:
    """Whether an embed ends a finished answer: its footer says how the answer was made (a
    draft's footer says it is unchecked)."""
    return bool(embed.footer and embed.footer.text and embed.footer.text != render.DRAFT_LABEL)


def titled(message: discord.Message, me: discord.abc.User) -> bool:
    """Whether a message is one of the bot's titled ones: the first page of an answer (its
    title is the question), or of a demo's output, a list of passages, a TA's answer."""
    return message.author.id == me.id and bool(message.embeds and message.embeds[0].title)


def starts_answer(message: discord.Message, me: discord.abc.User) -> bool:
    """Whether a message is the first page of one of the bot's finished answers: titled with
    the question, and carrying the answer's buttons."""
    return titled(message, me) and has_answer_buttons(message)


def ends_answer(message: discord.Message, me: discord.abc.User) -> bool:
    """Whether a message is the last page of one of the bot's finished answers."""
    return message.author.id == me.id and bool(message.embeds and finished(message.embeds[-1]))


def replied_to(message: discord.Message) -> discord.Message | None:
    """The message a reply answers, as Discord sent it with the reply; None for a message that
    is no reply (or whose original is deleted or was not sent along)."""
    if message.type is not discord.MessageType.reply or message.reference is None:
        return None
    resolved = message.reference.resolved
    return resolved if isinstance(resolved, discord.Message) else None


def replies_to_bot(message: discord.Message, me: discord.abc.User) -> bool:
    """Whether a message is Discord's reply to a message of the bot's that may be a page of
    one of its answers: the first (`starts_answer`), or an untitled one, which is a later page
    only if the answer above it says so (`Conversations._answer_pages`). Not a demo's output,
    a list of passages or a TA's answer."""
    replied = replied_to(message)
    if replied is None or replied.author.id != me.id or not replied.embeds:
        return False
    return starts_answer(replied, me) or not titled(replied, me)


def history_turns(messages: list[discord.Message], me: discord.abc.User) -> list[dict[str, str]]:
    """Earlier answered questions in a thread, oldest first, as chat history.

    Each finished answer of the bot carries its question (the first page's embed title) and
    answer (the pages' descriptions, up to the page with the footer: a long answer is several
    messages); messages that got no answer are not part of the conversation.
    """
    turns: list[dict[str, str]] = []
    question, pages = "", list[str]()  # the answer being read, page by page
    for message in messages:
        if message.author.id != me.id or not message.embeds:
            continue
        first, last = message.embeds[0], message.embeds[-1]
        if first.title:
            question, pages = first.title, []  # a new answer (an unfinished one is dropped)
        elif not question:
            continue  # a draft, a queue notice or an error, not part of an answer
        pages += [e.description or "" for e in message.embeds]
        if finished(last):
            turns += [{"role": "user", "content": question},
                      {"role": "assistant", "content": "\n".join(pages)}]
            question, pages = "", []
    return turns


@dataclass
class Answered:
    """A message the bot answered: the text it answered, and the reply that holds the answer."""

    text: str
    reply: ChannelReply
    latest: str = ""  # the text of the latest edit seen (an older one still waiting is dropped)
    writing: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while an answer is written


class Conversations:
    """Decides whether a message is for the bot, and answers it in the right place."""

    def __init__(self, client: discord.Client, answerer: Answerer, settings: DiscordSettings,
                 escalations: Escalations | None = None):
        self.client = client
        self.answerer = answerer
        self.settings = settings
        self.escalations = escalations  # told when an escalated answer is replaced
        self._no_threads: set[int] = set()  # channels where a missing permission was logged
        self._answered: OrderedDict[int, Answered] = OrderedDict()  # by the question's id

    async def handle_edit(self, message: discord.Message) -> None:
        """An edit of a message the bot answered: once its text has changed (an embed unfurled
        from a link changes none), it is handled as a new message answered in place of the
        earlier answer, after that answer is finished; of quick edits, the latest only."""
        earlier = self._answered.get(message.id)
        if earlier is None:
            return  # never answered (the bot's own messages, other bots', the rest)
        text = question_text(message.content)
        earlier.latest = text
        async with earlier.writing:
            if text == earlier.text or text != earlier.latest:
                return
            earlier.text = text  # once per text, even when refused (an exam, a rate limit)
            await self.handle(message, earlier)

    async def handle(self, message: discord.Message, earlier: Answered | None = None) -> None:
        """Answer a mention, a follow-up in one of our threads, a reply to one of our answers,
        or a DM (an edited one over its `earlier` answer); ignore the rest."""
        me = self.client.user
        if me is None or message.author.bot or message.author.id == me.id:
            return
        if message.is_system():
            return  # Discord's own notice (a thread renamed, someone added), written as a member
        channel = message.channel
        dm = isinstance(channel, discord.DMChannel)
        mentioned = mentions_bot(message, me)
        addressed = mentioned or dm or is_our_thread(channel, me)
        if not (addressed or replies_to_bot(message, me)):
            return
        if in_ta_channel(self.settings, channel):
            return  # TAs answer escalations there (bot/escalating.py), not the bot
        if not mentioned and not question_text(message.content):
            return  # a sticker, an image, or any message without the Message Content intent
        if not guild_served(self.settings, message.guild.id if message.guild else None):
            await self._not_served(message)
            return
        if not channel_allowed(self.settings, channel) or not await member_allowed(
            self.client, self.settings, message.author
        ):
            return
        try:
            await self._answer(message, me, dm, earlier, addressed)
        except Exception as exc:  # noqa: BLE001 - routed to the one error policy
            await self._report(message, exc)

    async def _answer(self, message: discord.Message, me: discord.abc.User, dm: bool,
                      earlier: Answered | None, addressed: bool) -> None:
        """Admit the question, then answer it where it belongs: for an edit, over the earlier
        answer; otherwise in a new thread or the conversation's channel. A reply that does not
        ping the bot (not `addressed`) is a question only if it replies to one of its answers."""
        replied = None if addressed else await self._replied_answer(message, me)
        if not addressed and replied is None:
            return  # it replies to a later page of something else (a list of passages)
        if not self._instructor(message.author):  # a DM too: any exam covers it
            self.client.check_exam(message.author.id, message.channel, "mention")  # type: ignore[attr-defined]
        text = question_text(message.content)
        question = self.answerer.admit(message.author.id, text)
        history = await self._context(message, me, dm) if replied is None else replied
        if earlier is not None:
            await self._answer_again(message, earlier, question, history, me)
            return
        reply = await self._place(message, question)
        answered = self._remember(message.id, text, reply)
        async with answered.writing:  # an edit meanwhile waits for this answer
            await self._write(message, question, reply, history)

    async def _answer_again(self, message: discord.Message, earlier: Answered, question: str,
                            history: list[dict[str, str]], me: discord.abc.User) -> None:
        """An edited question's answer, written over its earlier one; then the thread opened
        for the question takes its new name, and an open escalation of the earlier answer
        follows the new one."""
        await self._withdraw_pages(earlier.reply)
        replaced = earlier.reply.message
        earlier.reply = earlier.reply.again()
        question_id = await self._write(message, question, earlier.reply, history)
        await self._rename_thread(message, earlier.reply, question, me)
        if self.escalations is not None and replaced is not None and question_id is not None:
            await self.escalations.answer_replaced(replaced.id, question_id)

    async def _write(self, message: discord.Message, question: str, reply: ChannelReply,
                     history: list[dict[str, str]]) -> int | None:
        """Answer into the reply; return the answer's id in the question log. A failure is
        said there, in place of its unchecked draft (None)."""
        try:
            perms = getattr(message.author, "guild_permissions", None) or discord.Permissions.none()
            return await self.answerer.answer(
                question, reply, user_id=message.author.id,
                channel=message.channel, history=history,
                still_allowed=self.client.exam_recheck(  # type: ignore[attr-defined]
                    message.author, message.channel, perms, "mention"),
            )
        except Exception as exc:
            if not await self._report_in(reply, message, exc):
                raise
            return None

    async def _context(self, message: discord.Message, me: discord.abc.User,
                       dm: bool) -> list[dict[str, str]]:
        """A question's history: its conversation's in one of our threads or a DM; elsewhere
        the answer it replies to (a reply follows up on it, like a message in its thread)."""
        if dm or is_our_thread(message.channel, me):
            return await self._history(message, me)
        return await self._replied_answer(message, me) or []

    async def _place(self, message: discord.Message, question: str) -> ChannelReply:
        """Where a new question is answered: a new thread for one asked in a text channel; its
        own channel (a thread, a DM) otherwise."""
        if isinstance(message.channel, discord.TextChannel):
            return await self._thread_or_reply(message, question)
        return ChannelReply(message.channel)

    def _remember(self, message_id: int, text: str, reply: ChannelReply) -> Answered:
        """Keep where a message is answered, for its edits (the latest ANSWERS_KEPT)."""
        answered = self._answered[message_id] = Answered(text, reply)
        while len(self._answered) > ANSWERS_KEPT:
            self._answered.popitem(last=False)
        return answered

    async def _rename_thread(self, message: discord.Message, reply: ChannelReply,
                             question: str, me: discord.abc.User) -> None:
        """Name the thread the bot opened for a question after its edited text, by the rule
        a new thread is named by. Only that thread: one started from the question (it has the
        question's id) by the bot, not a thread the question was asked in. A refusal is logged;
        the answer stands."""
        thread, name = reply.channel, thread_name(question)
        if not (isinstance(thread, discord.Thread) and thread.id == message.id
                and is_our_thread(thread, me)) or thread.name == name:
            return
        try:
            # Discord allows two renames of a channel per 10 minutes, and discord.py would
            # wait out the limit, holding up the next edit of the question meanwhile.
            reply.channel = await asyncio.wait_for(thread.edit(name=name), RENAME_WAIT_S)
        except (discord.HTTPException, TimeoutError) as exc:
            log.warning("could not rename thread %s after its question was edited (%s)",
                        thread.id, str(exc) or "Discord's rate limit")

    async def _withdraw_pages(self, reply: ChannelReply) -> None:
        """Delete an earlier answer's further pages (its first message is written over)."""
        for page in reply.pages:
            with contextlib.suppress(discord.HTTPException):
                await page.delete()

    async def _history(
        self, message: discord.Message, me: discord.abc.User
    ) -> list[dict[str, str]]:
        """The conversation so far; if Discord will not show it, the question alone."""
        limit = self.settings.history_messages
        try:
            earlier = [m async for m in message.channel.history(limit=limit, before=message)]
        except discord.HTTPException as exc:
            log.warning("could not read the history of channel %s (%s); answering without it",
                        message.channel.id, exc)
            return []
        return history_turns(list(reversed(earlier)), me)

    async def _replied_answer(
        self, message: discord.Message, me: discord.abc.User
    ) -> list[dict[str, str]] | None:
        """The bot's answer a message replies to, with its question, as history (empty if
        Discord will not show the answer's other pages); None for a message that replies to
        no answer of the bot's."""
        replied = replied_to(message)
        if replied is None or replied.author.id != me.id:
            return None
        try:
            pages = await self._answer_pages(replied, me)
        except discord.HTTPException as exc:
            log.warning("could not read the answer message %s replies to (%s); answering "
                        "without it", message.id, exc)
            return []
        return history_turns(pages, me) if pages else None

    async def _answer_pages(
        self, page: discord.Message, me: discord.abc.User
    ) -> list[discord.Message]:
        """The messages of the answer one page belongs to, oldest first: a long answer is
        several, the first titled with the question (and with the answer's buttons), the last
        with the footer; none when the page belongs to no answer."""
        limit = self.settings.history_messages
        pages = [page]
        if not titled(page, me):  # a later page: its first is the nearest titled one above
            earlier = [m async for m in page.channel.history(limit=limit, before=page)]
            first = next((i for i, m in enumerate(earlier) if titled(m, me)), None)
            if first is None:
                return []
            pages = earlier[first::-1] + pages
        if not starts_answer(pages[0], me) or any(ends_answer(m, me) for m in pages[:-1]):
            return []  # a list of passages, a TA's answer, or an answer that ended above
        if not ends_answer(page, me):
            later = [m async for m in page.channel.history(limit=limit, after=page,
                                                           oldest_first=True)]
            last = next((i for i, m in enumerate(later) if ends_answer(m, me)), None)
            pages += later[: last + 1] if last is not None else later
        return pages

    async def _thread_or_reply(self, message: discord.Message, question: str) -> ChannelReply:
        """A new thread for the answer; when Discord refuses one (a missing permission, 403,
        or any other error), a reply to the question in the channel."""
        try:
            thread = await message.create_thread(name=thread_name(question),
                                                 auto_archive_duration=1440)
        except discord.Forbidden as exc:
            self._log_missing_thread_permission(message, exc)
            return ChannelReply(message.channel, reference=message)
        except discord.HTTPException as exc:
            log.warning("could not create a thread for message %s (%s); answering in the "
                        "channel", message.id, exc)
            return ChannelReply(message.channel, reference=message)
        return ChannelReply(thread)

    def _log_missing_thread_permission(self, message: discord.Message, error: Exception) -> None:
        """Say once per channel which permission the bot lacks there."""
        channel = message.channel
        if channel.id in self._no_threads:
            return
        self._no_threads.add(channel.id)
        me = message.guild.me if message.guild else None
        perms = channel.permissions_for(me) if me is not None else None  # type: ignore[union-attr]
        needed = {"Create Public Threads": "create_public_threads",
                  "Send Messages in Threads": "send_messages_in_threads"}
        missing = [name for name, flag in needed.items()
                   if perms is None or not getattr(perms, flag)]
        log.warning("cannot create a thread in channel %s (%s): the bot lacks %s there; "
                    "answering mentions in the channel as replies until it has them",
                    channel.id, error, " / ".join(missing) or "a permission")

    async def _not_served(self, message: discord.Message) -> None:
        """A mention in a server that is not a course server: say so, log it, answer nothing."""
        log.warning("ignored a message from user %s in server %s, which is not a course server",
                    message.author.id, message.guild.id if message.guild else None)
        try:
            await message.reply(NOT_SERVED)
        except discord.HTTPException:
            log.warning("could not reply in server %s", message.guild.id if message.guild else None)

    def _instructor(self, author: discord.abc.User) -> bool:
        perms = getattr(author, "guild_permissions", None) or discord.Permissions.none()
        return is_instructor(self.settings, author, perms)

    async def _report_in(self, reply: ChannelReply, message: discord.Message,
                         error: Exception) -> bool:
        """Replace the placeholder or the half-written draft with what went wrong; False when
        there is none (or the answer was already shown, or Discord refuses the edit)."""
        shown = reply.message
        if shown is None or any(finished(e) for e in shown.embeds):
            return False
        embed = discord.Embed(description=self._error_text(message, error),
                              colour=discord.Colour.light_grey())
        try:
            await reply.show([embed])
        except discord.HTTPException:
            return False
        return True

    def _error_text(self, message: discord.Message, error: Exception) -> str:
        """What the asker reads about an error (a reply, or in place of the placeholder): cut
        to one message, as `report_error` cuts a command's (a known error's text may quote a
        long value)."""
        text = friendly_message(error)
        if text is None:
            error_id = new_error_id()
            log.error("unexpected error %s answering message %s", error_id, message.id,
                      exc_info=error)
            text = f"Something went wrong on my side (error id `{error_id}`)."
        return truncate(text, MESSAGE_CHARS)

    async def _report(self, message: discord.Message, error: Exception) -> None:
        text = self._error_text(message, error)
        try:
            await message.reply(text)  # the client-wide AllowedMentions.none() covers the author
        except discord.HTTPException:
            log.warning("could not deliver an error reply to message %s", message.id)
