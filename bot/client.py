"""The bot: dependencies through the constructor, one-time work in `setup_hook`, one error
handler on the command tree, no mentions ever parsed."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import channel_ids, guild_served, is_instructor, is_private, served_here
from bot.answering import Answerer
from bot.cogs import accuracy, ask, checks, course, demos, instructor, mentions, ta
from bot.conversations import Conversations
from bot.errors import ExamInProgress, report_error
from bot.escalating import Escalations
from bot.escalation_log import EscalationLog
from bot.ingesting import Reingester
from bot.promote import PromoteButton
from bot.storage import QuestionLog, user_hash_key
from bot.ta_views import AddToFAQButton, AnswerButton, AskTAButton
from bot.views import FeedbackButton, ShownPassages, SourcesButton
from rag.config import DiscordSettings
from rag.services import Services

log = logging.getLogger("bot")
# How long close waits for start-up work still running in the background (a model load).
BACKGROUND_JOIN_S = 60.0

MESSAGE_CONTENT_HELP = (
    "Thread follow-ups and replies without a mention need the privileged Message Content "
    "intent: enable it under Bot → Privileged Gateway Intents in the Discord Developer Portal. "
    "Slash commands, mentions and DMs work without it."
)


class StudyTree(app_commands.CommandTree):
    """The command tree, with the bot's one error policy."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Friendly ephemeral replies for known errors; a logged id for the rest."""
        await report_error(interaction, error)

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Every command: only in a course server (or a DM, where the command's checks apply)."""
        return await served_here(interaction)


def bot_intents(settings: DiscordSettings) -> discord.Intents:
    """Guilds and messages (for mentions and threads); message content only if configured."""
    intents = discord.Intents.default()
    intents.message_content = settings.message_content
    intents.dm_messages = settings.allow_dms
    return intents


def _warm_demo_model(name: str, loaded: Any) -> None:
    """Load a model's transformers copy ahead of the first logits demo. Any failure is one log
    line here (a thread's traceback would reach stderr, and the bot serves on without it); the
    demo that needs the model loads it again and reports the error to its user."""
    try:
        loaded.model  # noqa: B018 - loads it
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("could not load %s for the demos: %s", name, exc)
    else:
        log.info("demo model loaded: %s", name)


def _warm_quotes(services: Services, stop: threading.Event) -> None:
    """Embed the index's quotable pieces ahead of the first quoted answers, until the bot
    closes (a failure is one log line: questions embed what they need themselves)."""
    began = time.perf_counter()
    try:
        count = services.assistant.warm_quotes(stop=stop.is_set)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("could not prepare the quotes of the index: %s", exc)
    else:
        log.info("quotes prepared: %d texts embedded in %.0f s", count,
                 time.perf_counter() - began)


class StudyBot(commands.Bot):
    """The study assistant in Discord."""

    def __init__(
        self,
        services: Services,
        questions: QuestionLog,
        *,
        warm_up: bool = True,
        **options: Any,
    ) -> None:
        settings = services.settings
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=bot_intents(settings.discord),
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=StudyTree,
            **options,
        )
        self.services = services
        self.settings = settings
        self.questions = questions
        salt = settings.discord.user_hash_salt
        key = user_hash_key(settings.data_dir, salt.get_secret_value() if salt else None)
        self.answerer = Answerer(services.assistant, services.checker, questions,
                                 settings.discord, hash_key=key,
                                 course=services.course_assistant)
        self.reingester = Reingester(services)
        # In the question log's file, beside the questions it refers to.
        self.escalation_log = EscalationLog(questions.path)
        self.escalations = Escalations(self, self.escalation_log, settings, self.reingester,
                                       self.answerer.user_hash, services.course.exam_in)
        self.conversations = Conversations(self, self.answerer, settings.discord,
                                           self.escalations)
        self.warm_up = warm_up
        # Set on close: background start-up work stops, and close waits for it.
        self.closing = threading.Event()
        self.background: list[threading.Thread] = []

    async def setup_hook(self) -> None:
        """One-time start-up: cogs, persistent buttons, intent check, the course schedule,
        command sync, warm-up."""
        cogs = (
            ask.AskCog(self),
            mentions.MentionCog(self),
            instructor.InstructorCog(self),
            demos.DemoCog(self),
            checks.ChecksCog(self),
            course.CourseCog(self),
            accuracy.AccuracyCog(self),
            ta.TACog(self),
        )
        for cog in cogs:
            await self.add_cog(cog)
        self.add_dynamic_items(FeedbackButton, SourcesButton, PromoteButton, AskTAButton,
                               AnswerButton, AddToFAQButton)
        self.check_message_content()
        # Read now, not at the first question: the copy of the last good schedule is refreshed,
        # and a schedule.toml that does not read is logged at start-up.
        await asyncio.to_thread(self.services.course.schedule_status)
        await self.sync_commands()
        if self.warm_up:
            await self.load_models()

    async def close(self) -> None:
        """Log out, let the start-up work in the background end, then close the escalation log
        (the question log is its owner's)."""
        self.closing.set()
        await super().close()
        await asyncio.to_thread(self.join_background, BACKGROUND_JOIN_S)
        self.escalation_log.close()

    def join_background(self, timeout_s: float) -> None:
        """Wait, up to timeout_s in all, for the start-up threads: the quotes' warm-up stops at
        its next batch once `closing` is set; a model load cannot be interrupted, so it is
        waited for (a thread still importing while the process goes on to other work is what
        this avoids). One still running at the deadline is logged and left to die with the
        process (the threads are daemons)."""
        deadline = time.monotonic() + timeout_s
        for thread in self.background:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s is still running at close; leaving it", thread.name)

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: messages are handled by the mention cog only."""

    async def on_guild_join(self, guild: discord.Guild) -> None:
        """Someone added the bot to a server: fine if it is a course server."""
        await self.check_guild(guild)

    async def on_guild_available(self, guild: discord.Guild) -> None:
        """A server the bot is in came online (at every connect)."""
        await self.check_guild(guild)

    async def check_guild(self, guild: discord.Guild) -> None:
        """Log a server that is not a course server, and leave it when configured to."""
        settings = self.settings.discord
        if guild_served(settings, guild.id):
            return
        leave = settings.leave_other_guilds
        log.warning("the bot is in server %s (%s), which is not a course server: %s", guild.id,
                    guild.name, "leaving it" if leave else "ignoring it (leave_other_guilds "
                    "is off)")
        if leave:
            try:
                await guild.leave()
            except discord.HTTPException as exc:
                log.warning("could not leave server %s: %s", guild.id, exc)

    def check_message_content(self) -> None:
        """Warn (and drop the intent, so the gateway accepts us) when it is not enabled."""
        if not self.intents.message_content:
            log.warning("Message Content intent disabled in the settings. %s",
                        MESSAGE_CONTENT_HELP)
            return
        flags = self.application.flags if self.application else None
        if flags is None or flags.gateway_message_content or flags.gateway_message_content_limited:
            return
        log.warning("The Message Content intent is not enabled for this application. %s",
                    MESSAGE_CONTENT_HELP)
        self._connection._intents.message_content = False

    async def sync_commands(self) -> None:
        """Sync slash commands to the course server(s) (instant), or globally when none is
        configured (then any server is served and the instructor tools are off)."""
        served = sorted(self.settings.discord.served_guilds())
        if not served:
            synced = await self.tree.sync()
            log.warning("no course server configured (discord.guild_id): serving every server "
                        "the bot is in, instructor tools off; synced %d commands globally",
                        len(synced))
            return
        for guild_id in served:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild_id)

    async def load_models(self) -> None:
        """Load the embedder and the default chat model on worker threads before serving.

        A model that generates through onnxruntime-genai also has a transformers copy for the
        demos that read logits and attention; it loads in the background once the bot serves.
        """
        services = self.services
        await asyncio.to_thread(services.embedder.embed_query, "warm up")
        chat = services.models.get()
        load = getattr(chat, "load", None)
        if load is not None:
            loaded = await load()
            if not getattr(loaded, "model_loaded", True):
                self.start_background(_warm_demo_model, "warm-demo-model", chat.name, loaded)
        log.info("models loaded: %s, %s", services.embedder.name, chat.name)
        self.start_background(_warm_quotes, "warm-quotes", services, self.closing)

    def start_background(self, target: Callable[..., None], name: str, *args: Any) -> None:
        """Run start-up work on a daemon thread that close waits for."""
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.background.append(thread)
        thread.start()

    def check_exam(self, user_id: int, channel: Any, command: str) -> None:
        """Raise ExamInProgress (and log the attempt) when an exam covers this channel; any
        exam covers a direct message."""
        private = is_private(channel)
        exam = self.services.course.exam_in(None if private else channel_ids(channel))
        where = " in the course" if private else " here"
        if exam is None:
            return
        self.questions.record_refusal(
            self.answerer.user_hash(user_id), str(getattr(channel, "id", "")), "exam", command
        )
        until = "" if exam.until == float("inf") else f" (until <t:{int(exam.until)}:f>)"
        raise ExamInProgress(
            f"📝 An exam is on{where}{until}, so I'm not answering course questions or running "
            "demos right now. Good luck — I'll be back when it ends!"
        )

    def exam_recheck(self, user: discord.abc.User, channel: Any, perms: discord.Permissions,
                     command: str) -> Callable[[], None] | None:
        """`check_exam` for this user and channel, to run again while a question waits and is
        generated; None for an instructor (exams do not apply to them)."""
        if is_instructor(self.settings.discord, user, perms):
            return None
        return lambda: self.check_exam(user.id, channel, command)

    def command_exam_recheck(self, interaction: discord.Interaction) -> Callable[[], None] | None:
        """`exam_recheck` for a slash command `students_only` let through (every command an
        exam refuses when it is asked), under the command's name: the command waits in the
        queue and works, and an exam may start meanwhile (`Answerer.slot_for` runs it)."""
        name = interaction.command.name if interaction.command else "?"
        return self.exam_recheck(interaction.user, interaction.channel, interaction.permissions,
                                 name)

    async def feedback(self, question_id: int, user_id: int, vote: int) -> bool:
        """Record a 👍/👎 from a user on a logged answer."""
        user = self.answerer.user_hash(user_id)
        return await asyncio.to_thread(self.questions.vote, question_id, user, vote)

    async def passages(self, question_id: int, instructor: bool = False) -> ShownPassages | None:
        """The passages a logged answer was built from, as students may see them now: checked
        again against the open assignments and release dates, since an assignment may have
        opened or a release been postponed after the answer (instructors also see unreleased
        ones), and against the index: a file the instructor has since withdrawn (deleted, then
        re-ingested) is left out for everyone, however old the answer, since it was withdrawn
        for a reason (a solution, a mistake) and the question log still holds its text."""
        logged = await asyncio.to_thread(self.questions.passages, question_id)
        if logged is None:
            return None
        indexed = await asyncio.to_thread(self.services.store.manifest)
        kept = [p for p in logged if p.get("source") in indexed]
        withdrawn = {str(p.get("source")) for p in logged} - {str(p["source"]) for p in kept}
        if not instructor:
            hidden = await asyncio.to_thread(self.services.retriever.unreleased_sources)
            kept = [p for p in kept if p.get("source") not in hidden]
        refused = await asyncio.to_thread(self.questions.abstained, question_id)
        return ShownPassages(self.answerer.withheld(kept), withdrawn_files=len(withdrawn),
                             refused=refused)
