"""Student commands: /ask, /sources, /help."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.access import instructor_check, students_only
from bot.answering import InteractionReply, without_markup
from bot.pages import send_more_pages
from rag.answering.assistant import check_question

if TYPE_CHECKING:
    from bot.client import StudyBot


class AskCog(commands.Cog):
    """Questions and searches."""

    def __init__(self, bot: StudyBot) -> None:
        self.bot = bot

    @app_commands.command(description="Ask a question about the course materials")
    @app_commands.describe(question="Your question", private="Only you see the answer")
    @students_only
    async def ask(
        self, interaction: discord.Interaction, question: str, private: bool = False
    ) -> None:
        """Answer from the materials, streamed, with sources and feedback buttons."""
        question = self.bot.answerer.admit(interaction.user.id, question)
        await self.bot.answerer.defer(interaction, ephemeral=private)
        await self.bot.answerer.answer(
            question,
            InteractionReply(interaction, ephemeral=private),
            user_id=interaction.user.id,
            channel=interaction.channel,
            still_allowed=self.bot.command_exam_recheck(interaction),
        )

    @app_commands.command(description="The most relevant passages, without an answer")
    @app_commands.describe(
        query="What to look for",
        private="Only you see the passages",
        preview="Instructors: include material not yet released (shown only to you)",
    )
    @students_only
    async def sources(
        self,
        interaction: discord.Interaction,
        query: str,
        private: bool = False,
        preview: bool = False,
    ) -> None:
        """Search the materials and show the top passages."""
        query = check_question(without_markup(query), self.bot.settings.discord.max_question_chars)
        if preview:
            instructor_check(interaction)  # raises NotAllowed for students
            private = True
        self.bot.answerer.take(interaction.user.id, light=True)
        await self.bot.answerer.defer(interaction, light=True, ephemeral=private)
        search = self.bot.services.retriever.search
        recheck = self.bot.command_exam_recheck(interaction)  # an exam may start as it waits
        async with self.bot.answerer.slot_for(interaction, light=True, recheck=recheck):
            hits = await asyncio.to_thread(search, query, None, preview=preview)
        passages = list(self.bot.answerer.withheld(render.passage_dict(h) for h in hits))
        messages = render.passage_messages(f"Passages for: {query}", passages)
        await interaction.edit_original_response(embeds=messages[0])
        await send_more_pages(interaction, messages[1:], ephemeral=private)

    @app_commands.command(name="help", description="What I can do, with examples")
    async def help_command(self, interaction: discord.Interaction) -> None:
        """The commands, privately."""
        await interaction.response.send_message(embed=render.help_embed(), ephemeral=True)
