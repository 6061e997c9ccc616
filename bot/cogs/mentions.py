"""The mention flow: a mention opens a thread; follow-ups in it need no mention; an edited
question is answered again."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

if TYPE_CHECKING:
    from bot.client import StudyBot


class MentionCog(commands.Cog):
    """Routes messages to the conversation handler."""

    def __init__(self, bot: StudyBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Answer mentions, thread follow-ups and (when enabled) DMs."""
        await self.bot.conversations.handle(message)

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """Answer an edited question again (raw: the edit of a message no longer cached too)."""
        await self.bot.conversations.handle_edit(payload.message)
