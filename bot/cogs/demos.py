"""Teaching demos: /nexttoken, /tokenize, /attention, /fewshot.

Each command is a thin adapter: check the input (a bad one gets a private reply at once),
take one of the user's turns (the per-user rate limit; given back when the demo refuses its
input), defer, wait for a generation slot like /ask, show what is running, call the core in
`rag.demos`, send the embeds that `bot.render_demos` builds (and a PNG chart).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import students_only
from bot.render_demos import attention_embed, few_shot_embed, next_token_embeds, tokenize_embed
from rag.demos import attention as attention_demo
from rag.demos import fewshot as fewshot_demo
from rag.demos import nexttoken as nexttoken_demo
from rag.demos import plots
from rag.demos import tokenize as tokenize_demo
from rag.demos.common import local_names, pick_local_model, pick_model
from rag.llm.registry import ModelRegistry

if TYPE_CHECKING:
    from bot.answering import Turn
    from bot.client import StudyBot

# Discord's smallest upload limit for bots; an interaction may report a larger one.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
NO_MENTIONS = discord.AllowedMentions.none()


def _registry(interaction: discord.Interaction) -> ModelRegistry:
    return interaction.client.services.models  # type: ignore[attr-defined]


def _choices(names: list[str], current: str) -> list[app_commands.Choice[str]]:
    wanted = current.casefold()
    return [app_commands.Choice(name=n, value=n) for n in names if wanted in n.casefold()][:25]


async def any_model(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: every model in the registry."""
    return _choices(_registry(interaction).names(), current)


async def local_model(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: the models that run in the bot's process (weights and attention)."""
    return _choices(local_names(_registry(interaction)), current)


@asynccontextmanager
async def generating(
    bot: StudyBot, interaction: discord.Interaction, status: str, *, light: bool = False
) -> AsyncIterator[Turn]:
    """Take one of the user's turns (the light bucket for cheap demos) before anything is
    sent, defer (Discord allows 3 s; a refused defer gives the turn back), wait for a
    generation slot like /ask (a full queue, an exam started meanwhile, or a model that
    failed gives the turn back; the exam is checked again once the work is done, before
    anything is shown), then say what is running while the model works. An input the demo
    refuses once it has it (an uploaded task file that does not parse, a sentence over the
    token limit) gives the turn back too (`Answerer._slot`): the user got only the refusal."""
    bot.answerer.take(interaction.user.id, light=light)
    await bot.answerer.defer(interaction, light=light)
    recheck = bot.command_exam_recheck(interaction)
    async with bot.answerer.slot_for(interaction, light=light, recheck=recheck) as turn:
        embed = discord.Embed(description=status, colour=discord.Colour.light_grey())
        # A notice Discord refuses (a 429) must not cost the result: the result follows.
        with contextlib.suppress(discord.HTTPException):
            await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)
        yield turn


async def finish(
    interaction: discord.Interaction, embeds: list[discord.Embed], png: bytes | None, name: str
) -> None:
    """Replace the placeholder with the result (a model's text can hold a protected item of
    an open assignment: withheld), the chart attached when it fits Discord."""
    embeds = interaction.client.answerer.withheld_embeds(embeds)  # type: ignore[attr-defined]
    files: list[discord.File] = []
    limit = min(MAX_UPLOAD_BYTES, getattr(interaction, "filesize_limit", MAX_UPLOAD_BYTES))
    if png is not None and len(png) <= limit:
        files.append(discord.File(io.BytesIO(png), filename=name))
        embeds[0].set_image(url=f"attachment://{name}")
    elif png is not None:
        embeds[0].add_field(name="Chart", value="Too large to attach.", inline=False)
    await interaction.edit_original_response(
        embeds=embeds, attachments=files, allowed_mentions=NO_MENTIONS
    )


class DemoCog(commands.Cog):
    """How language models work, shown on the course's own models."""

    def __init__(self, bot: StudyBot) -> None:
        self.bot = bot

    @app_commands.command(description="The most likely next tokens, with probabilities and a chart")
    @app_commands.describe(
        prompt="The text to continue",
        top_k=f"How many candidates to show (1–{nexttoken_demo.MAX_TOP_K})",
        temperature="0 = greedy; higher flattens the distribution (up to 5)",
        steps=f"Generate this many tokens one at a time (1–{nexttoken_demo.MAX_STEPS})",
        model="Which model (default: the bot's)",
        chat="Also show an instruct model's distribution under its chat template",
    )
    @app_commands.autocomplete(model=any_model)
    @students_only
    async def nexttoken(
        self,
        interaction: discord.Interaction,
        prompt: str,
        top_k: app_commands.Range[int, 1, nexttoken_demo.MAX_TOP_K] = 10,
        temperature: app_commands.Range[float, 0.0, nexttoken_demo.MAX_TEMPERATURE] = 1.0,
        steps: app_commands.Range[int, 1, nexttoken_demo.MAX_STEPS] = 1,
        model: str | None = None,
        chat: bool = False,
    ) -> None:
        """Top-k next tokens of the raw prompt at a temperature; greedy vs sampled steps."""
        request = nexttoken_demo.NextTokenRequest.checked(
            prompt, top_k, temperature, steps, chat=chat)
        chat_model = pick_model(self.bot.services.models, model)
        nexttoken_demo.check_chat_option(chat_model, request)
        status = f"**{chat_model.name}** is computing its next-token distribution…"
        async with generating(self.bot, interaction, status):
            result = await nexttoken_demo.next_token(chat_model, request)
        png = await asyncio.to_thread(plots.next_token_chart, result) if result.top else None
        await finish(interaction, next_token_embeds(result), png, "nexttoken.png")

    @app_commands.command(description="How each model's tokenizer cuts your text")
    @app_commands.describe(text="The text to tokenize",
                           model="One model (default: every local model, side by side)")
    @app_commands.autocomplete(model=any_model)
    @students_only
    async def tokenize(
        self, interaction: discord.Interaction, text: str, model: str | None = None
    ) -> None:
        """Pieces, ids and counts for each tokenizer."""
        tokenize_demo.check_tokenize_text(text)
        names = [pick_model(self.bot.services.models, model).name] if model else None
        async with generating(self.bot, interaction, "Tokenizing…", light=True):
            result = await tokenize_demo.tokenize(self.bot.services.models, text, names)
        await finish(interaction, [tokenize_embed(result)], None, "")

    @app_commands.command(description="A heatmap of a model's attention over a sentence")
    @app_commands.describe(
        sentence="A short sentence, e.g. The cat sat on the mat because it was soft",
        layer="Layer, from 0 (default: the middle layer)",
        head="Head, from 0 (default: the mean of all heads)",
        model="A local model (default: the bot's)",
    )
    @app_commands.autocomplete(model=local_model)
    @students_only
    async def attention(
        self,
        interaction: discord.Interaction,
        sentence: str,
        layer: app_commands.Range[int, 0, 127] | None = None,
        head: app_commands.Range[int, 0, 127] | None = None,
        model: str | None = None,
    ) -> None:
        """One layer's (or head's) attention weights as a heatmap, with a summary."""
        request = attention_demo.AttentionRequest.checked(sentence, layer, head)
        chat = pick_local_model(self.bot.services.models, model, "Attention")
        status = f"**{chat.name}** is reading your sentence…"
        async with generating(self.bot, interaction, status):
            result = await attention_demo.attention(chat, request)
        png = await asyncio.to_thread(plots.attention_heatmap, result)
        await finish(interaction, [attention_embed(result)], png, "attention.png")

    @app_commands.command(description="Zero-shot vs few-shot answers from the same model")
    @app_commands.describe(
        task="What to do, e.g. Classify the sentiment as positive or negative",
        examples="input => output; input => output",
        input="The input to answer",
        model="Which model (default: the bot's)",
    )
    @app_commands.autocomplete(model=any_model)
    @students_only
    async def fewshot(
        self,
        interaction: discord.Interaction,
        task: str,
        examples: str,
        input: str,
        model: str | None = None,
    ) -> None:
        """The same input answered without and with examples, greedy both times."""
        request = fewshot_demo.FewShotRequest.checked(task, examples, input)
        chat = pick_model(self.bot.services.models, model)
        status = f"**{chat.name}** is answering zero-shot, then few-shot…"
        async with generating(self.bot, interaction, status):
            result = await fewshot_demo.few_shot(chat, request)
        await finish(interaction, [few_shot_embed(result)], None, "")
