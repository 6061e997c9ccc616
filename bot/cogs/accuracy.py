"""Measured demos in Discord: /fewshot_accuracy (zero-shot vs few-shot, as a number) and
/compare_accuracy (key facts in each model's answers to course questions, closed book and with
retrieval, beside time and cost).

Thin adapter: check the input, then (through `bot.cogs.demos.generating`) take one of the
user's turns, defer and wait for a generation slot like /ask (the run generates many
answers); show progress, call the core in `rag.demos`, send the embed that `bot.render_demos`
builds with the chart attached.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import students_only
from bot.cogs.checks import parse_models
from bot.cogs.demos import finish, generating
from bot.render_demos import compare_accuracy_embed, fewshot_accuracy_embed
from rag.demos import compare_accuracy as compare_demo
from rag.demos import fewshot_accuracy as accuracy_demo
from rag.demos import plots
from rag.demos.common import DemoInputError, pick_model
from rag.demos.hallucination import Progress

if TYPE_CHECKING:
    from bot.client import StudyBot

NO_MENTIONS = discord.AllowedMentions.none()
TASKS = [app_commands.Choice(name=n, value=n) for n in accuracy_demo.BUILT_IN]


def status_updates(interaction: discord.Interaction) -> Progress:
    """Show each progress note in the placeholder; a missed note must not cost the result."""

    async def show(status: str) -> None:
        embed = discord.Embed(description=status[:300], colour=discord.Colour.light_grey())
        with contextlib.suppress(discord.HTTPException):
            await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)

    return show


class AccuracyCog(commands.Cog):
    """Zero-shot vs few-shot as a measured accuracy, base and instruct side by side."""

    def __init__(self, bot: StudyBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="fewshot_accuracy",
        description="Accuracy with 0, 1, 2 and 4 examples on a small labelled task, per model",
    )
    @app_commands.describe(
        task="A built-in task (default: sentiment)",
        file='Your own task: JSONL lines {"input": "…", "label": "…"} (6–40 items)',
        models="Up to 4 model names, comma-separated (default: gemma3-base, smollm2)",
    )
    @app_commands.choices(task=TASKS)
    @students_only
    async def fewshot_accuracy(
        self, interaction: discord.Interaction, task: str = "sentiment",
        file: discord.Attachment | None = None, models: str | None = None,
    ) -> None:
        """Score every item at every k with every model; a table and a bar chart."""
        registry = self.bot.services.models
        names = accuracy_demo.check_models(parse_models(models), registry.names())
        if file is not None and file.size > accuracy_demo.MAX_FILE_BYTES:
            raise DemoInputError(f"The task file is {file.size:,} bytes; the limit is "
                                 f"{accuracy_demo.MAX_FILE_BYTES:,}.")
        async with generating(self.bot, interaction, "Reading the task…"):
            labelled = (accuracy_demo.parse_task(file.filename, await file.read()) if file
                        else accuracy_demo.built_in_task(task))
            result = await accuracy_demo.fewshot_accuracy(
                [pick_model(registry, n) for n in names], labelled,
                progress=status_updates(interaction))
        png = await asyncio.to_thread(plots.accuracy_chart, result)
        await finish(interaction, [fewshot_accuracy_embed(result)], png, "accuracy.png")

    @app_commands.command(
        name="compare_accuracy",
        description="Key facts in each model's answers to course questions, with and without "
                    "retrieval, beside time and cost",
    )
    @app_commands.describe(
        models=f"Up to {compare_demo.MAX_MODELS} model names, comma-separated "
               f"(default: {', '.join(compare_demo.DEFAULT_MODELS)})",
        questions="Ask only the first N built-in questions (default: all)",
    )
    @students_only
    async def compare_accuracy(
        self, interaction: discord.Interaction, models: str | None = None,
        questions: app_commands.Range[int, 1, 20] | None = None,
    ) -> None:
        """Every model answers every question closed book and with retrieval."""
        names = compare_demo.check_models(parse_models(models), self.bot.services.models.names())
        asked = compare_demo.built_in_questions()[:questions]
        async with generating(self.bot, interaction, "Asking the course questions…") as turn:
            result = await compare_demo.compare_accuracy(
                self.bot.services.assistant, names, asked, progress=status_updates(interaction))
            turn.only_errors = result.only_errors  # every model failed: the turn is given back
        await finish(interaction, [compare_accuracy_embed(result)], None, "")
