"""The bot's one error policy: typed errors become friendly ephemeral replies; anything
unexpected is logged with a traceback and an id the user can quote."""

from __future__ import annotations

import logging
import secrets

import discord
from discord import app_commands

from bot.limits import MESSAGE_CHARS, truncate
from bot.ratelimit import QueueFull, RateLimited
from rag.answering.assistant import InvalidQuestion
from rag.course.schedule import ScheduleError
from rag.index.chroma_store import StoreBusy, StoreUnavailable
from rag.index.locking import DataDirBusy
from rag.index.versions import VersionError
from rag.llm.base import BackendTimeout, BackendUnavailable, LLMError, PromptTooLong
from rag.retrieval.gold import GoldSetError
from rag.retrieval.retriever import NothingIngested

log = logging.getLogger("bot")


class UserFacingError(Exception):
    """An error whose message is written for the user (upload rejected, not allowed…)."""


class NotAllowed(app_commands.CheckFailure):
    """The user, channel or role may not use this command; the message says why."""


class ExamInProgress(NotAllowed):
    """An exam is on in this channel: course answers and demos wait until it ends."""


class ReingestRunning(UserFacingError):
    """A re-ingest is already under way."""


def friendly_message(error: BaseException) -> str | None:
    """The reply for a known error, or None when the error is unexpected."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, RateLimited):
        return error.user_message()
    if isinstance(error, QueueFull):
        return "I'm answering a lot of questions right now. Please try again in a minute."
    if isinstance(error, InvalidQuestion | UserFacingError | NotAllowed | GoldSetError
                  | VersionError):
        return str(error)
    if isinstance(error, DataDirBusy | StoreBusy):
        # Their words name the data folder or the Chroma server: for the log, not Discord.
        log.warning("an ingest is already writing: %s", error)
        return ("Another ingest is writing to the course index right now, so this one did not "
                "start. Please try again when it has finished.")
    if isinstance(error, ScheduleError):
        return f"The course schedule has a problem: {error}"
    if isinstance(error, StoreUnavailable):
        log.warning("the store is unavailable: %s", error)
        return (
            "The course materials index is not reachable right now, so I can't search it. "
            "Please try again in a minute."
        )
    if isinstance(error, NothingIngested):
        return "No course materials have been ingested yet. An instructor can run /reingest."
    if isinstance(error, LLMError):
        return model_failure(error)
    if isinstance(error, discord.HTTPException):
        log.warning("Discord refused a request: %s", error)
        return (
            f"Discord did not accept my reply (HTTP {error.status}), so your answer may be "
            "incomplete. Please try again in a minute."
        )
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Please try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    return None


def model_failure(error: LLMError) -> str:
    """What a student reads when the model failed: never its address or the server's words
    (those go to the log, for the operator)."""
    log.warning("the language model failed: %s: %s", type(error).__name__, error)
    if isinstance(error, BackendUnavailable | BackendTimeout):
        return (
            "The language model is not reachable right now, so I can't answer. "
            "Please try again in a few minutes (searching with /sources still works)."
        )
    if isinstance(error, PromptTooLong):
        return "That question is too long for the language model. Please ask a shorter one."
    return (
        "The language model could not answer this one. Please try again in a minute or "
        "rephrase the question; if it keeps happening, tell an instructor."
    )


def new_error_id() -> str:
    """A short id that links what the user sees to the log line."""
    return secrets.token_hex(4)


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Reply to the user about an error (ephemeral when possible) and log unexpected ones."""
    message = friendly_message(error)
    if message is None:
        error_id = new_error_id()
        original = getattr(error, "original", error)
        command = interaction.command.name if interaction.command else interaction.type.name
        trace = (type(original), original, original.__traceback__)
        log.error("unexpected error %s in %s", error_id, command, exc_info=trace)
        message = (
            f"Something went wrong on my side (error id `{error_id}`). Please tell an "
            "instructor the id if it keeps happening."
        )
    # A message that quotes what the user typed must still fit, or Discord refuses it.
    await reply_privately(interaction, truncate(message, MESSAGE_CHARS))


async def reply_privately(interaction: discord.Interaction, message: str) -> None:
    """An ephemeral reply: the first response, an edit of a private placeholder, or (after a
    public defer) an ephemeral follow-up in place of the public placeholder, which is deleted
    so the channel sees neither the error nor a draft that stopped."""
    none = discord.AllowedMentions.none()
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True,
                                                    allowed_mentions=none)
            return
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            if await _private_placeholder(interaction):
                await interaction.edit_original_response(content=message, embeds=[],
                                                         attachments=[], view=None,
                                                         allowed_mentions=none)
                return
            await interaction.delete_original_response()
        # Otherwise the original is public, or (a button's silent defer) another message.
        await interaction.followup.send(message, ephemeral=True, allowed_mentions=none)
    except discord.HTTPException:
        log.warning("could not deliver an error reply for interaction %s", interaction.id)


async def _private_placeholder(interaction: discord.Interaction) -> bool:
    """Whether the deferred response is ephemeral (discord.py does not keep that)."""
    original = await interaction.original_response()
    return original.flags.ephemeral
