"""Hallucination checks in Discord: /hallucination and /compare.

Thin adapters: admit the question (checks and the per-user rate limit), defer, wait for a
generation slot (these commands generate like /ask does), show progress, call the core in
`rag.demos`, then render embeds within Discord's limits. Errors go to the bot's one policy.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import students_only
from bot.cogs.demos import any_model, quoted
from bot.limits import EMBED_TITLE_CHARS, pack_pages, split_for_discord, truncate
from bot.ratelimit import PositionCallback
from bot.render import queue_status, where
from rag.demos.compare import (
    DEFAULT_MODELS,
    MAX_MODELS,
    Comparison,
    ModelRun,
    choose_models,
    compare_models,
)
from rag.demos.hallucination import (
    CheckedAnswer,
    HallucinationDemo,
    Progress,
    hallucination_demo,
)
from rag.grounding import CONTRADICTED, SUPPORTED, ClaimCheck, GroundingChecker

if TYPE_CHECKING:
    from bot.client import StudyBot

COLOUR = discord.Colour.dark_gold()
STATUS_COLOUR = discord.Colour.light_grey()
NO_MENTIONS = discord.AllowedMentions.none()
ICONS = {SUPPORTED: "✅", CONTRADICTED: "❌"}
PAGE_CHARS = 3900  # under the 4,096 of a description
ANSWER_CHARS = 1000  # an answer in a field of the first embed (fields hold 1,024)
RUN_CHARS = 800  # each model's answer in /compare: four of them and the header fit 6,000
LEGEND = "✅ supported · ❔ not found in the passages · ❌ contradicted by a passage"


def claim_line(check: ClaimCheck) -> str:
    """One claim, its verdict and the passage behind it, as a Markdown line."""
    line = f"{ICONS.get(check.verdict, '❔')} {quoted(check.text, 240)}"
    if check.evidence is not None:
        c = check.evidence.chunk
        place = quoted(where(c.source, c.page, c.section), 120)
        line += f"\n  ↳ *{place}*: “{quoted(check.evidence_text, 180)}”"
    if check.missing_numbers:
        line += f" (not in the materials: {', '.join(check.missing_numbers)})"
    return line


def _answer_value(answer: CheckedAnswer) -> str:
    if answer.refused:
        return truncate("Abstained: " + answer.text, ANSWER_CHARS)
    return truncate(answer.text or "(no text)", ANSWER_CHARS)


def hallucination_messages(demo: HallucinationDemo) -> list[list[discord.Embed]]:
    """The two answers with their grounding, then every claim, in messages within limits."""
    head = discord.Embed(title=truncate(f"Closed book vs retrieval · {demo.model}",
                                        EMBED_TITLE_CHARS),
                         description=f"**Question:** {quoted(demo.question, 500)}", colour=COLOUR)
    for answer in (demo.closed_book, demo.with_retrieval):
        name = f"{answer.mode.capitalize()} · {answer.grounding.summary()}"
        head.add_field(name=truncate(name, 256), value=_answer_value(answer), inline=False)
    head.set_footer(text=f"{LEGEND} · checked against {len(demo.passages)} retrieved passages")
    pages = []
    for answer in (demo.closed_book, demo.with_retrieval):
        lines = [claim_line(c) for c in answer.grounding.claims]
        if lines:
            pages += split_for_discord(f"**{answer.mode.capitalize()}: claims**\n"
                                       + "\n".join(lines), PAGE_CHARS)
    # The first message holds the answers; claims follow, packed under the 6,000 total.
    return [[head]] + [[discord.Embed(description=p, colour=COLOUR) for p in group]
                       for group in pack_pages(pages, budget=5500)]


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def run_embed(run: ModelRun) -> discord.Embed:
    """One model's answer and measurements."""
    title = truncate(f"{run.model} ({run.backend})", EMBED_TITLE_CHARS)
    if not run.ok:
        return discord.Embed(title=title, description=f"**Failed:** {quoted(run.error, 300)}",
                             colour=discord.Colour.red())
    embed = discord.Embed(title=title, description=truncate(run.text or "(no text)", RUN_CHARS),
                          colour=COLOUR)
    rate = run.tokens_per_s
    for name, value in (
        ("First token", _seconds(run.first_token_s)),
        ("Total", _seconds(run.total_s)),
        ("Tokens/s", "—" if rate is None else f"{rate:.1f}"),
        ("Tokens in / out", f"{run.tokens_in} / {run.tokens_out}"),
        ("Cost", run.cost_label),
        ("Grounded", "—" if run.grounding is None
         else run.grounding.summary().removeprefix("Grounded: ")),
    ):
        embed.add_field(name=name, value=value, inline=True)
    return embed


def compare_messages(result: Comparison) -> list[list[discord.Embed]]:
    """A header (question, mode, how the models ran) and one embed per model: one message."""
    mode = "with retrieval" if result.rag else "closed book"
    head = discord.Embed(title=f"Compare · {mode}",
                         description=f"**Question:** {quoted(result.question, 500)}\n"
                                     f"{truncate(result.note, 400)}", colour=COLOUR)
    if result.refused:  # the abstention gate: no model was asked
        return [[head]]
    return [[head, *(run_embed(r) for r in result.runs)]]


def parse_models(text: str | None) -> list[str] | None:
    """`smollm2, gemma3-base` → the names (None: the defaults)."""
    names = [n for n in re.split(r"[,\s]+", text or "") if n]
    return names or None


class ChecksCog(commands.Cog):
    """Closed-book vs grounded answers, and models side by side."""

    def __init__(self, bot: StudyBot) -> None:
        self.bot = bot
        services = bot.services
        self.checker = GroundingChecker(services.embedder, services.retriever)

    @app_commands.command(description="Closed-book vs grounded answer, each claim checked")
    @app_commands.describe(question="Your question", model="Which model (default: the bot's)")
    @app_commands.autocomplete(model=any_model)
    @students_only
    async def hallucination(
        self, interaction: discord.Interaction, question: str, model: str | None = None
    ) -> None:
        """Answer closed-book and with retrieval; show each claim's verdict and evidence."""
        question = self.bot.answerer.admit(interaction.user.id, question)
        await self._start(interaction, "Waiting for a free slot…")
        async with self.bot.answerer.queue.slot(self._queue_progress(interaction)):
            demo = await hallucination_demo(self.bot.services.assistant, self.checker, question,
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
        question = self.bot.answerer.admit(interaction.user.id, question)
        await self._start(interaction, "Waiting for a free slot…")
        async with self.bot.answerer.queue.slot(self._queue_progress(interaction)):
            result = await compare_models(self.bot.services.assistant, self.checker, question,
                                          names, rag=rag, progress=self._progress(interaction))
        await self._send(interaction, compare_messages(result))

    async def _start(self, interaction: discord.Interaction, status: str) -> None:
        await interaction.response.defer(thinking=True)
        await self._status(interaction, status)

    async def _status(self, interaction: discord.Interaction, status: str) -> None:
        embed = discord.Embed(description=truncate(status, 300), colour=STATUS_COLOUR)
        await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)

    def _progress(self, interaction: discord.Interaction) -> Progress:
        async def progress(status: str) -> None:
            # A missed progress note must not cost the result.
            with contextlib.suppress(discord.HTTPException):
                await self._status(interaction, status)
        return progress

    def _queue_progress(self, interaction: discord.Interaction) -> PositionCallback:
        show = self._progress(interaction)

        async def waiting(place: int) -> None:
            await show(queue_status(place))
        return waiting

    async def _send(self, interaction: discord.Interaction,
                    messages: list[list[discord.Embed]]) -> None:
        await interaction.edit_original_response(embeds=messages[0], allowed_mentions=NO_MENTIONS)
        for embeds in messages[1:]:
            await interaction.followup.send(embeds=embeds, allowed_mentions=NO_MENTIONS)
