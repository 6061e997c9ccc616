"""Answering in Discord, shared by `/ask` and the mention/thread flow.

Admission (question checks, per-user rate limit) is instant and happens before anything is
sent; then the answer waits for a generation slot, streams into the reply with throttled
edits, and finishes with the answer, its sources, the buttons, and a row in the log.

Writes stay within Discord's per-channel rate across every answer in a channel
(`ChannelPacer`): drafts are skipped when the channel is busy, the final answer waits its
turn. A 429 or a Discord 5xx on the final answer is waited out and retried, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import discord

from bot import render
from bot.access import channel_ids
from bot.errors import NotAllowed
from bot.limits import ChannelPacer, EditThrottle, retry_after_s
from bot.ratelimit import GenerationQueue, PositionCallback, TokenBucket
from bot.storage import LoggedAnswer, QuestionLog, hash_user
from bot.views import answer_view
from rag.answering.assistant import (
    SOCIAL,
    Answer,
    AnswerEvent,
    Assistant,
    Finished,
    Retrieved,
    Token,
    check_question,
)
from rag.answering.course_mode import CourseAssistant
from rag.answering.grounding import GroundingChecker, GroundingReport
from rag.config import DiscordSettings

log = logging.getLogger("bot")


# What Discord writes into a message for a user, role or channel mention, a custom emoji, a
# timestamp or a command mention, and the @everyone / @here pings: none of it is part of the
# question (searched, "<#9000…>" made a covered question look off-topic), and a command
# mention reads as the command's name.
_DISCORD_MARKUP = re.compile(
    r"<(?:@[!&]?\d+|#\d+|a?:\w+:\d+|t:-?\d+(?::[tTdDfFR])?|/(?P<command>[\w -]{1,100}):\d+)>"
    r"|(?<![\w.])@(?:everyone|here)\b")


def without_markup(text: str) -> str:
    """A message's text without Discord's mention, emoji and timestamp markup (a command
    mention kept as "/name"), its whitespace collapsed."""
    cleaned = _DISCORD_MARKUP.sub(
        lambda found: f" /{found['command']} " if found["command"] else " ", text)
    return " ".join(cleaned.split())


@dataclass
class Turn:
    """The turn a command in `Answerer._slot` spent: its work sets `only_errors` when what it
    will show is nothing but errors, and the turn is then given back."""

    only_errors: bool = False

NO_MENTIONS = discord.AllowedMentions.none()
LIGHT_FACTOR = 3
DELIVERY_TRIES = 5  # attempts at the final answer (each after the wait Discord asked for)
SAME_PLACE_TRIES = 3  # then a message that keeps failing (429, 5xx) is sent elsewhere


class Reply(Protocol):
    """Where an answer is shown: the first message is edited as it grows; `more` adds one."""

    @property
    def channel_id(self) -> int:
        """The channel written to (for the per-channel rate)."""
        ...

    async def begin(self, question: str) -> None:
        """Show that the question was received (before any waiting or searching)."""
        ...

    async def show(self, embeds: list[discord.Embed], view: discord.ui.View | None = None) -> None:
        """Replace the first message's embeds (and buttons)."""
        ...

    async def more(self, embeds: list[discord.Embed]) -> None:
        """Send a further message (a long answer's next page)."""
        ...

    async def switch(self, error: discord.HTTPException) -> bool:
        """After the message can no longer be written (expired, deleted): carry on somewhere
        else, once; False when there is nowhere else."""
        ...


class InteractionReply:
    """The deferred response of a slash command; once its token has expired (15 minutes) or
    its message is gone, a message in the channel (a DM for a private answer) takes over."""

    def __init__(self, interaction: discord.Interaction, ephemeral: bool = False) -> None:
        self.interaction = interaction
        self.ephemeral = ephemeral
        self.fallback: ChannelReply | None = None

    @property
    def channel_id(self) -> int:
        """The channel written to."""
        if self.fallback is not None:
            return self.fallback.channel_id
        return self.interaction.channel_id or 0

    async def begin(self, question: str) -> None:
        """Nothing to do: the deferred response already shows "thinking"."""

    async def show(self, embeds: list[discord.Embed], view: discord.ui.View | None = None) -> None:
        """Edit the original response."""
        if self.fallback is not None:
            await self.fallback.show(embeds, view)
            return
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        await self.interaction.edit_original_response(content=None, embeds=embeds, **extra)

    async def more(self, embeds: list[discord.Embed]) -> None:
        """A follow-up message."""
        if self.fallback is not None:
            await self.fallback.more(embeds)
            return
        await self.interaction.followup.send(embeds=embeds, ephemeral=self.ephemeral)

    async def switch(self, error: discord.HTTPException) -> bool:
        """The token expired (401), the response is gone (404, 403) or keeps failing: post in
        the channel, naming the student without pinging anyone; a private answer goes to their
        DMs."""
        if self.fallback is not None:
            return False
        user = self.interaction.user
        log.warning("the reply to /%s could not be edited (%s); sending the answer as a %s",
                    self.interaction.command.name if self.interaction.command else "?", error,
                    "direct message" if self.ephemeral else "channel message")
        if self.ephemeral:
            self.fallback = ChannelReply(await user.create_dm())
        elif self.interaction.channel is not None:
            note = f"{user.mention}, here is the answer to your question:"
            self.fallback = ChannelReply(self.interaction.channel, note)  # type: ignore[arg-type]
        return self.fallback is not None


class ChannelReply:
    """A message the bot posts (in a thread, channel or DM) and then edits."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        note: str | None = None,
        reference: discord.Message | None = None,
    ) -> None:
        self.channel = channel
        self.note = note  # text above the first message's embeds
        self.reference = reference  # the first message replies to this one (no ping)
        self.message: discord.Message | None = None
        self.pages: list[discord.Message] = []  # the further messages `more` sent
        self._resent = False
        self._stale_view = False  # the first message still has an earlier answer's buttons

    @property
    def channel_id(self) -> int:
        """The channel (thread, DM) the answer is posted in."""
        return int(getattr(self.channel, "id", 0))

    async def begin(self, question: str) -> None:
        """Post a placeholder that the answer will replace."""
        await self.show([render.status_embed(question, "Searching the course materials…")])

    async def show(self, embeds: list[discord.Embed], view: discord.ui.View | None = None) -> None:
        """Send the first message, or edit it; mentions are never parsed."""
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        if self._stale_view:
            extra["view"] = view  # None clears them: they are for the answer being replaced
        if self.message is None:
            if self.reference is not None:  # sent even if the question was deleted meanwhile
                extra["reference"] = self.reference.to_reference(fail_if_not_exists=False)
            self.message = await self.channel.send(
                self.note, embeds=embeds, allowed_mentions=NO_MENTIONS, **extra
            )
        else:
            self.message = await self.message.edit(
                embeds=embeds, allowed_mentions=NO_MENTIONS, **extra
            )
        self._stale_view = False

    async def more(self, embeds: list[discord.Embed]) -> None:
        """Another message in the same channel."""
        self.pages.append(await self.channel.send(embeds=embeds, allowed_mentions=NO_MENTIONS))

    def again(self) -> ChannelReply:
        """A reply that writes a new answer over this one's: its first message is edited (its
        buttons cleared until the new answer's); its further pages are the caller's to
        delete."""
        reply = ChannelReply(self.channel, self.note, self.reference)
        reply.message, reply._stale_view = self.message, self.message is not None
        return reply

    async def switch(self, error: discord.HTTPException) -> bool:
        """Our message can no longer be edited (deleted, or edits keep failing): post a new
        one instead, once."""
        if self.message is None or self._resent:
            return False
        self.message, self._resent = None, True
        return True


def course_channel(channel: object) -> int | None:
    """The channel a question is logged under: a thread counts as its parent channel (a
    thread's own id is the id of the message that started it)."""
    if isinstance(channel, discord.Thread):
        return channel.parent_id
    return getattr(channel, "id", None)


class Answerer:
    """Admits questions, queues them, streams answers into replies and logs them."""

    def __init__(
        self,
        assistant: Assistant,
        checker: GroundingChecker,
        questions: QuestionLog,
        settings: DiscordSettings,
        hash_key: bytes | None = None,
        course: CourseAssistant | None = None,
    ):
        self.assistant = assistant
        # Course rules (hint mode, protected items); None answers with the plain assistant.
        self.course = course
        self.checker = checker
        self.questions = questions
        self.settings = settings
        # Without the site's key (a benchmark), pseudonyms hold for this process only.
        self.hash_key = hash_key or secrets.token_bytes(32)
        self.limiter = TokenBucket(settings.rate_burst, settings.rate_per_minute)
        # Cheap commands (/sources, /tokenize) share a bucket LIGHT_FACTOR times as large.
        self.light_limiter = TokenBucket(settings.rate_burst * LIGHT_FACTOR,
                                         settings.rate_per_minute * LIGHT_FACTOR)
        self.queue = GenerationQueue(settings.max_concurrent, settings.max_waiting)
        self.pacer = ChannelPacer(settings.channel_writes, settings.channel_window_s)

    def admit(self, user_id: int, question: str) -> str:
        """The normalised question (Discord's markup left out), or InvalidQuestion /
        RateLimited (checked in that order)."""
        question = check_question(without_markup(question), self.settings.max_question_chars)
        self.limiter.take(user_id)
        return question

    async def admit_for_models(self, user_id: int, question: str, channel: Any) -> str:
        """`admit` for a demo that shows models' full answers (/hallucination, /compare): a
        question that targets an open assignment, or one in a hints-only channel, is refused
        (NotAllowed) and its turn given back. The turn is taken first, so a user who is out of
        turns is stopped before the question is embedded to look for the assignment."""
        question = self.admit(user_id, question)
        try:
            await self.refuse_assignment_question(question, channel)
        except NotAllowed:
            self.give_back(user_id)
            raise
        return question

    def take(self, user_id: int, *, light: bool = False) -> None:
        """Spend one of a user's turns (RateLimited when none is left)."""
        (self.light_limiter if light else self.limiter).take(user_id)

    def give_back(self, user_id: int, *, light: bool = False) -> None:
        """Return a turn `take` spent on a command the user got nothing from but a refusal."""
        (self.light_limiter if light else self.limiter).give_back(user_id)

    async def defer(
        self, interaction: discord.Interaction, *, light: bool = False, ephemeral: bool = False
    ) -> None:
        """Defer a command that took one of the user's turns ("thinking…"). When Discord
        refuses (the interaction expired, a 404 or any HTTP error) the user gets nothing from
        it, so the turn is given back before the error goes on to the error policy."""
        try:
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        except discord.HTTPException:
            self.give_back(interaction.user.id, light=light)
            raise

    @asynccontextmanager
    async def slot_for(
        self,
        interaction: discord.Interaction,
        *,
        light: bool = False,
        recheck: Callable[[], None] | None = None,
    ) -> AsyncIterator[Turn]:
        """`_slot` for a command that took one of the user's turns (from the light bucket
        when `light`); while it waits, the deferred reply shows the place in the queue (best
        effort)."""
        async def waiting(place: int) -> None:
            embed = discord.Embed(description=render.queue_status(place),
                                  colour=discord.Colour.light_grey())
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(embed=embed,
                                                         allowed_mentions=NO_MENTIONS)

        async with self._slot(interaction.user.id, waiting, light=light,
                              recheck=recheck) as turn:
            yield turn

    @asynccontextmanager
    async def _slot(
        self,
        user_id: int,
        waiting: PositionCallback,
        *,
        light: bool = False,
        recheck: Callable[[], None] | None = None,
    ) -> AsyncIterator[Turn]:
        """A generation slot for work a user spent a turn on. `recheck` raises
        (ExamInProgress) when the work may no longer be shown: it runs once the slot is taken
        and again once the work is done (the work may run it meanwhile too).
        A user refused here got nothing but the refusal, so the turn is given back: when the
        queue is full (QueueFull), when an exam started while the work waited or ran, and
        when the work failed with only an error to show: the model was unreachable, timed out
        or answered with an error (any LLMError, a prompt too long for it included), the
        course index's Chroma server could not be reached (StoreUnavailable), no course
        materials are ingested yet (NothingIngested), a demo refused its input once it read it
        (DemoInputError), or an error nobody planned for (a bug: the user is shown its id and
        nothing else). So is a result that is only errors, which the work marks on the `Turn`
        it is given (`/compare` when every model failed). This is the one place that does it,
        and the block ends before the work's result is shown, so a turn is never given back
        twice, nor for a result the user got."""
        check = recheck or (lambda: None)
        turn = Turn()
        try:
            async with self.queue.slot(waiting):
                check()
                yield turn
            check()
        except Exception:  # QueueFull, ExamInProgress, LLMError, StoreUnavailable, ...
            self.give_back(user_id, light=light)
            raise
        if turn.only_errors:
            self.give_back(user_id, light=light)

    def user_hash(self, user_id: int) -> str:
        """The pseudonym stored in the log."""
        return hash_user(user_id, self.hash_key)

    async def answer(
        self,
        question: str,
        reply: Reply,
        *,
        user_id: int,
        channel: Any,
        history: Sequence[dict[str, str]] = (),
        still_allowed: Callable[[], None] | None = None,
    ) -> int:
        """Wait for a slot, stream the answer into `reply`, finish it and log it; return its
        id in the question log. `channel` is where it was asked: its channel's and category's
        rules apply (hints only), and it is logged under its channel (`course_channel`).
        `still_allowed` raises (ExamInProgress) when the question may no longer be answered:
        an exam may start while it waits in the queue or is generated, so it is checked again
        once the slot is taken, before each draft is shown (the generation ends there), and
        before the answer is logged and shown. A question refused there or for a full queue, or
        one the model or an empty index failed, gets its turn back (`_slot`)."""
        recheck = still_allowed or (lambda: None)

        async def waiting(place: int) -> None:
            embed = render.status_embed(question, render.queue_status(place))
            await self._draft(reply, [embed])  # a missed notice must not cost the answer

        await self._deliver(reply, lambda: reply.begin(question))
        async with self._slot(user_id, waiting, recheck=recheck):
            answer = await self._stream(question, reply, history, channel_ids(channel), recheck)
            grounding = await self._grounding(answer)
        question_id = await asyncio.to_thread(
            self.questions.record, self._logged(answer, user_id, course_channel(channel))
        )
        messages = render.answer_messages(answer, grounding)
        await self._deliver(reply, lambda: reply.show(messages[0], view=self._view(question_id)))
        for embeds in messages[1:]:
            await self._deliver(reply, lambda e=embeds: reply.more(e))  # type: ignore[misc]
        return question_id

    def _view(self, question_id: int) -> discord.ui.View:
        """The answer's buttons; "Ask a TA" only where a TA channel is configured."""
        return answer_view(question_id, ask_ta=self.settings.ta_channel_id is not None)

    async def _draft(self, reply: Reply, embeds: list[discord.Embed]) -> None:
        """Show something that may be skipped: only when the channel has room; a 429 quiets
        the channel for as long as Discord asked."""
        if not self.pacer.try_take(reply.channel_id):
            return
        try:
            await reply.show(embeds)
        except discord.HTTPException as exc:
            if exc.status == 429:
                self.pacer.hold(reply.channel_id, retry_after_s(exc))
            log.info("a draft edit was not shown: %s", exc)

    async def _deliver(self, reply: Reply, send: Callable[[], Awaitable[None]]) -> None:
        """Send what must arrive, within the channel's rate, waiting out 429s and 5xx."""
        for attempt in range(1, DELIVERY_TRIES + 1):
            await self.pacer.take(reply.channel_id)
            try:
                await send()
                return
            except (discord.HTTPException, discord.RateLimited) as exc:
                if attempt == DELIVERY_TRIES or not await self._retryable(reply, exc, attempt):
                    raise
                log.warning("Discord refused an answer message (%s); trying again", exc)

    async def _retryable(self, reply: Reply, error: Exception, attempt: int) -> bool:
        """Whether a failed send is worth repeating: after the wait Discord asked for (429),
        after a pause (5xx), or, when that keeps failing or cannot help (expired token,
        deleted message), in another place."""
        status = getattr(error, "status", 429)
        if status == 429 and attempt < SAME_PLACE_TRIES:
            self.pacer.hold(reply.channel_id, retry_after_s(error))
            return True
        if status >= 500 and attempt < SAME_PLACE_TRIES:
            self.pacer.hold(reply.channel_id, float(attempt))
            return True
        if not isinstance(error, discord.HTTPException):
            return False
        try:
            return await reply.switch(error)
        except discord.HTTPException as exc:
            log.warning("no other place to send the answer: %s", exc)
            return False

    async def _stream(
        self,
        question: str,
        reply: Reply,
        history: Sequence[dict[str, str]],
        channels: set[int] | None = None,
        recheck: Callable[[], None] = lambda: None,
    ) -> Answer:
        """Consume the answer stream; edits run beside it, at most one in flight, each
        after `recheck` (which raises when the answer may no longer be shown)."""
        throttle = EditThrottle(self.settings.edit_interval_s)
        draft: list[str] = []
        editing: asyncio.Task[None] | None = None
        verifying = False
        try:
            async for event in self._events(question, history, channels or set()):
                if isinstance(event, Retrieved):
                    # A verified answer's draft is labelled until the checked text replaces it.
                    verifying = event.style == "verified"
                elif isinstance(event, Token):
                    draft.append(event.text)
                    idle = editing is None or editing.done()
                    if idle and throttle.ready():
                        recheck()
                        embed = render.draft_embed(question, "".join(draft), verifying)
                        editing = asyncio.create_task(self._draft(reply, [embed]))
                elif isinstance(event, Finished):
                    return event.answer
        finally:
            if editing is not None:
                await asyncio.gather(editing, return_exceptions=True)
        raise RuntimeError("the answer stream ended without an answer")

    def _events(
        self, question: str, history: Sequence[dict[str, str]], channels: set[int]
    ) -> AsyncIterator[AnswerEvent]:
        if self.course is None:
            return self.assistant.stream(question, history=history)
        return self.course.stream(question, history=history, channel_ids=channels)

    async def refuse_assignment_question(self, question: str, channel: Any) -> None:
        """Raise NotAllowed when a demo would answer in full a question that gets a hint from
        /ask (it targets an open assignment, or the channel is hints only)."""
        if self.course is None:
            return
        target = await asyncio.to_thread(self.course.target, question, channel_ids(channel))
        if target is None:
            return
        what = (f"**{target.assignment.title}**, which is open" if target.assignment
                else "a question in a hints-only channel")
        raise NotAllowed(
            f"💡 This looks like {what}, so I won't run models on it here: their full answers "
            "could solve it for you. Ask with `/ask` for a hint from the course materials."
        )

    def withheld_embeds(self, embeds: Sequence[discord.Embed]) -> list[discord.Embed]:
        """Embeds as students may see them: every sentence holding a protected item of an
        open assignment withheld (a model's answer in a demo can hold one)."""
        guard = self.course.guard() if self.course is not None else None
        if not guard:
            return list(embeds)
        return render.rewrite_embeds(embeds, guard.withhold)

    def withheld(self, passages: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
        """Passages as students may see them: sentences holding a protected item withheld."""
        guard = self.course.guard() if self.course is not None else None
        if not guard:
            return tuple(passages)
        return tuple({**p, "text": guard.withhold(str(p.get("text", "")))} for p in passages)

    async def _grounding(self, answer: Answer) -> GroundingReport | None:
        """The grounding check behind the badge, when enabled (never for a refusal); a failed
        check costs the badge, not the answer."""
        if not self.assistant.settings.grounding_badge or answer.refused:
            return None
        try:
            return await asyncio.to_thread(self.checker.check, answer.text, answer.retrieved)
        except Exception:
            log.exception("the grounding check failed; the answer is shown without its badge")
            return None

    def _logged(self, answer: Answer, user_id: int, channel_id: int | None) -> LoggedAnswer:
        return LoggedAnswer(
            user_hash=self.user_hash(user_id),
            channel=str(channel_id or ""),
            question=answer.question,
            answer=answer.text,
            sources=tuple(c.as_json() for c in answer.citations),
            passages=self.withheld(render.passage_dict(h) for h in answer.retrieved),
            model=answer.model,
            latency_ms=answer.timings.get("total_ms", 0.0),
            abstained=answer.refused and answer.reason != SOCIAL,  # "thanks!" is no gap
        )
