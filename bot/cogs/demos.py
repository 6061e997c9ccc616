"""Teaching demos: /nexttoken, /tokenize, /attention, /fewshot.

Each command is a thin adapter: check the input (a bad one gets a private reply at once),
defer, show what is running, call the core in `rag.demos`, render embeds (and a PNG chart).
"""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import students_only
from bot.limits import EMBED_FIELD_VALUE_CHARS, EMBED_TITLE_CHARS, truncate
from rag.demos import attention as attention_demo
from rag.demos import fewshot as fewshot_demo
from rag.demos import nexttoken as nexttoken_demo
from rag.demos import plots
from rag.demos import tokenize as tokenize_demo
from rag.demos.common import Table, local_names, pick_local_model, pick_model, text_table

if TYPE_CHECKING:
    from bot.client import StudyBot
    from rag.llm.registry import ModelRegistry

# Discord's smallest upload limit for bots; an interaction may report a larger one.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
COLOUR = discord.Colour.teal()
NO_MENTIONS = discord.AllowedMentions.none()
FENCE = "```"
DEFUSED_FENCE = "`\u200b``"  # a zero-width space keeps user text from closing a code block
BLOCK_CHARS = 1900  # one code block in a description: two blocks and text stay under 4,096
STEPS_CHARS = 3000  # the step table's embed, beside a first embed of at most ~1,600


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


def block(text: str, limit: int = BLOCK_CHARS) -> str:
    """Text as a code block within `limit` characters (triple backticks inside defused)."""
    safe = text.replace(FENCE, DEFUSED_FENCE)
    return f"{FENCE}\n{truncate(safe, limit - 8)}\n{FENCE}"


def table_block(table: Table, limit: int = BLOCK_CHARS) -> str:
    """A table as a code block, cut at whole rows (with a note) to stay within `limit`."""
    header, rows = table
    shown = list(rows)
    while shown and len(text_table((header, shown))) > limit - 40:
        shown.pop()
    more = f"\n… {len(rows) - len(shown)} more rows" if len(shown) < len(rows) else ""
    return block(text_table((header, shown)) + more, limit)


async def start(interaction: discord.Interaction, status: str) -> None:
    """Defer (Discord allows 3 s), then say what is running while the model works."""
    await interaction.response.defer(thinking=True)
    embed = discord.Embed(description=status, colour=discord.Colour.light_grey())
    await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)


async def finish(
    interaction: discord.Interaction, embeds: list[discord.Embed], png: bytes | None, name: str
) -> None:
    """Replace the placeholder with the result, the chart attached when it fits Discord."""
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


def _embed(title: str, description: str, footer: str) -> discord.Embed:
    embed = discord.Embed(title=truncate(title, EMBED_TITLE_CHARS), description=description,
                          colour=COLOUR)
    return embed.set_footer(text=footer)


def quoted(text: str, limit: int = 300) -> str:
    """User text shown safely inside an embed: one line, markdown escaped, cut to `limit`."""
    return discord.utils.escape_markdown(truncate(" ".join(text.split()), limit))


def next_token_embeds(result: nexttoken_demo.NextTokenResult) -> list[discord.Embed]:
    """The top-k table (and the chart), then the step-by-step table when there are steps."""
    req = result.request
    footer = f"{result.model} · {result.seconds:.1f} s"
    if result.unavailable:
        return [_embed(f"Next token · {result.model}", result.unavailable, footer)]
    table = table_block(nexttoken_demo.top_table(result))
    lines = [f"**Prompt:** {quoted(req.prompt)}", table]
    if result.entropy_bits is not None and result.entropy_at_1_bits is not None:
        lines.append(f"Entropy {result.entropy_bits:.2f} bits at T={req.temperature or 1:g}, "
                     f"{result.entropy_at_1_bits:.2f} bits at T=1.")
    if not result.exact:
        lines.append("The server returns only its top tokens: p(T) is renormalised over them.")
    first = _embed(f"Next token · {result.model}", "\n".join(lines), footer)
    if req.steps == 1:
        return [first]
    more = "…" if result.continues_prompt else ""  # a base model continues the prompt
    texts = [f"**Greedy:** {more}{quoted(result.greedy_text, 350)}"]
    if result.sampled:
        texts.append(f"**Sampled** (T={req.temperature:g}, seed {req.seed}): "
                     f"{more}{quoted(result.sampled_text, 350)}")
    steps = table_block(nexttoken_demo.steps_table(result), STEPS_CHARS)
    return [first, _embed("One token at a time", "\n".join([steps, *texts]), footer)]


def tokenize_embed(result: tokenize_demo.TokenizeResult) -> discord.Embed:
    """Counts side by side, then each model's pieces and ids."""
    names = " vs ".join(t.model for t in result.tokenizations)
    counts = table_block(tokenize_demo.counts_table(result))
    description = f"**Text:** {quoted(result.text)}\n{counts}"
    embed = _embed(f"Tokens · {names}", description, "␣ = a space the token starts with")
    for t in result.tokenizations:
        ids = " ".join(str(token.id) for token in t.tokens)
        value = block(f"{tokenize_demo.pieces_line(t)}\n\nids: {ids}", EMBED_FIELD_VALUE_CHARS)
        embed.add_field(name=truncate(f"{t.model} · {t.kind} · {t.count} tokens", 256),
                        value=value, inline=False)
    return embed


def attention_embed(result: attention_demo.AttentionResult) -> discord.Embed:
    """The summary sentence and where the focus token's attention goes."""
    header, rows = attention_demo.focus_table(result)
    table = table_block((header, list(rows)[:10]))
    description = f"{quoted(result.summary(), 600)}\n{table}"
    footer = (f"{result.model} · layers 0–{result.layers - 1}, heads 0–{result.heads - 1} · "
              f"{result.seconds:.1f} s")
    title = f"Attention · {result.model} · layer {result.layer}, {result.head_label}"
    return _embed(title, description, footer)


def few_shot_embed(result: fewshot_demo.FewShotResult) -> discord.Embed:
    """Both answers side by side, and the few-shot prompt the model saw."""
    zero, few = result.zero_shot, result.few_shot
    embed = _embed(f"Zero-shot vs few-shot · {result.model}",
                   f"**Task:** {quoted(result.request.task)}\n**Input:** "
                   f"{quoted(result.request.input)}",
                   f"{result.model} · greedy decoding, first line of each answer")
    for label, shot in (("Zero-shot", zero), (f"Few-shot ({len(result.request.examples)})", few)):
        value = f"{block(shot.answer or '(nothing)', 900)}{shot.seconds:.2f} s"
        embed.add_field(name=label, value=value, inline=True)
    embed.add_field(name="Few-shot prompt", value=block(few.prompt, EMBED_FIELD_VALUE_CHARS),
                    inline=False)
    return embed


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
    ) -> None:
        """Top-k next tokens at a temperature; greedy vs sampled steps."""
        request = nexttoken_demo.NextTokenRequest.checked(prompt, top_k, temperature, steps)
        chat = pick_model(self.bot.services.models, model)
        await start(interaction, f"**{chat.name}** is computing its next-token distribution…")
        result = await nexttoken_demo.next_token(chat, request)
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
        await start(interaction, "Tokenizing…")
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
        await start(interaction, f"**{chat.name}** is reading your sentence…")
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
        await start(interaction, f"**{chat.name}** is answering zero-shot, then few-shot…")
        result = await fewshot_demo.few_shot(chat, request)
        await finish(interaction, [few_shot_embed(result)], None, "")
