"""Hallucination checks in Discord: /hallucination and /compare.

Thin adapters: admit the question (checks, the per-user rate limit, and the refusal of one
aimed at an open assignment, which gives the turn back), defer, wait for a generation slot
(these commands generate like /ask does; a full queue, or an exam started meanwhile, gives
the turn back), show progress, call the core in `rag.demos`, then send the embeds that
`bot.render_demos` builds. Errors go to the bot's one policy.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import students_only
from bot.cogs.demos import any_model
from bot.limits import truncate
from bot.pages import send_more_pages
from bot.render_demos import compare_messages, hallucination_messages
from rag.demos.common import pick_model
from rag.demos.compare import DEFAULT_MODELS, MAX_MODELS, choose_models, compare_models
from rag.demos.hallucination import Progress, hallucination_demo

if TYPE_CHECKING:
    from bot.client import StudyBot

STATUS_COLOUR = discord.Colour.light_grey()
NO_MENTIONS = discord.AllowedMentions.none()


def parse_models(text: str | None) -> list[str] | None:
    """`smollm2, gemma3-base` → the names (None: the defaults)."""
    names = [n for n in re.split(r"[,\s]+", text or "") if n]
    return names or None


class ChecksCog(commands.Cog):
    """Closed-book vs grounded answers, and models side by side."""

    def __init__(self, bot: StudyBot) -> None:
        self.bot = bot

    @app_commands.command(description="Closed-book vs grounded answer, each claim checked")
    @app_commands.describe(question="Your question", model="Which model (default: the bot's)")
    @app_commands.autocomplete(model=any_model)
    @students_only
    async def hallucination(
        self, interaction: discord.Interaction, question: str, model: str | None = None
    ) -> None:
        """Answer closed-book and with retrieval; show each claim's verdict and evidence."""
        pick_model(self.bot.services.models, model)  # refused privately, before the defer
        question = await self.bot.answerer.admit_for_models(interaction.user.id, question,
                                                            interaction.channel)
        recheck = self.bot.command_exam_recheck(interaction)  # as /ask: an exam may start
        await self._start(interaction, "Waiting for a free slot…")
        async with self.bot.answerer.slot_for(interaction, recheck=recheck):
            services = self.bot.services
            demo = await hallucination_demo(services.assistant, services.checker, question,
                                            model, self._progress(interaction))
        await self._send(interaction, hallucination_messages(demo))

    @app_commands.command(description="The same question to 2–4 models, side by side")
    @app_commands.describe(
        question="Your question",
        models=f"Up to {MAX_MODELS} model names, comma-separated "
               f"(default: {', '.join(DEFAULT_MODELS)})",
        rag="Answer from the course materials (default: yes)",
    )
    @students_only
    async def compare(
        self, interaction: discord.Interaction, question: str, models: str | None = None,
        rag: bool = True,
    ) -> None:
        """Answers, latency, tokens, cost and grounding of each model."""
        names = choose_models(parse_models(models), self.bot.services.models.names())
        question = await self.bot.answerer.admit_for_models(interaction.user.id, question,
                                                            interaction.channel)
        recheck = self.bot.command_exam_recheck(interaction)
        await self._start(interaction, "Waiting for a free slot…")
        async with self.bot.answerer.slot_for(interaction, recheck=recheck) as turn:
            services = self.bot.services
            result = await compare_models(services.assistant, services.checker, question,
                                          names, rag=rag, progress=self._progress(interaction))
            turn.only_errors = result.only_errors  # every model failed: the turn is given back
        await self._send(interaction, compare_messages(result))

    async def _start(self, interaction: discord.Interaction, status: str) -> None:
        await self.bot.answerer.defer(interaction)  # a refused defer gives the turn back
        await self._progress(interaction)(status)  # a refused notice must not cost the result

    async def _status(self, interaction: discord.Interaction, status: str) -> None:
        embed = discord.Embed(description=truncate(status, 300), colour=STATUS_COLOUR)
        await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)

    def _progress(self, interaction: discord.Interaction) -> Progress:
        async def progress(status: str) -> None:
            # A missed progress note must not cost the result.
            with contextlib.suppress(discord.HTTPException):
                await self._status(interaction, status)
        return progress

    async def _send(self, interaction: discord.Interaction,
                    messages: list[list[discord.Embed]]) -> None:
        messages = [self.bot.answerer.withheld_embeds(m) for m in messages]
        await interaction.edit_original_response(embeds=messages[0], allowed_mentions=NO_MENTIONS)
        await send_more_pages(interaction, messages[1:])
