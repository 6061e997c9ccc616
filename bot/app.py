"""Starting the bot: the token, the data-dir lock, the services, and discord.py's runner."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import discord

from bot.client import StudyBot
from bot.storage import QuestionLog, question_log_path
from rag.config import Settings
from rag.index.locking import DataDirLock
from rag.services import build_services


class MissingToken(RuntimeError):
    """No bot token in the environment."""


def discord_token(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The bot token: STUDY_ASSISTANT_DISCORD__TOKEN (settings) or DISCORD_TOKEN."""
    if settings.discord.token is not None and settings.discord.token.get_secret_value():
        return settings.discord.token.get_secret_value()
    token = (os.environ if environ is None else environ).get("DISCORD_TOKEN", "").strip()
    if not token:
        raise MissingToken(
            "No Discord bot token: set DISCORD_TOKEN (or STUDY_ASSISTANT_DISCORD__TOKEN) to the "
            "token from the Developer Portal (Bot → Reset Token)."
        )
    return token


def run_bot(settings: Settings) -> None:
    """Run the bot until interrupted; it holds the data-dir lock the whole time."""
    token = discord_token(settings)
    lock = DataDirLock(settings.data_dir)
    if not settings.store.host:
        lock.acquire()  # the bot writes (re-ingests, uploads): one writer per data dir
    discord.utils.setup_logging(level=logging.INFO)
    questions = QuestionLog(question_log_path(settings.data_dir))
    try:
        bot = StudyBot(build_services(settings), questions)
        bot.run(token, log_handler=None)  # logging is set up above; the token is never logged
    finally:
        questions.close()
        lock.release()
