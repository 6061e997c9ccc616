"""TA tools: the unanswered escalations, and TA answers in escalation threads."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render_ta
from bot.access import tas_only
from bot.ta_views import submit_answer_form

if TYPE_CHECKING:
    from bot.client import StudyBot

log = logging.getLogger("bot")


class TACog(commands.Cog):
    """Escalations for the TAs."""

    def __init__(self, bot: StudyBot) -> None:
        self.bot = bot

    @app_commands.command(description="TAs: questions students sent to the TAs, unanswered")
    @app_commands.guild_only()
    @tas_only
    async def escalations(self, interaction: discord.Interaction) -> None:
        """The open escalations, oldest first, with links to their threads (privately)."""
        await interaction.response.defer(thinking=True, ephemeral=True)
        open_ = await asyncio.to_thread(self.bot.escalation_log.unanswered)
        await interaction.edit_original_response(embed=render_ta.unanswered_embed(open_))

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Relay a TA's answer written in an escalation thread."""
        try:
            await self.bot.escalations.on_message(message)
        except Exception:
            log.exception("could not handle message %s in an escalation thread", message.id)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Relay a submitted answer form: known by its custom id, so one opened before a
        restart is still handled."""
        await submit_answer_form(interaction)
