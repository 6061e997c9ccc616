"""Embeds for the teaching demos and the grounding checks, within Discord's limits.

Pure functions from the demos' results (`rag.demos`) to `discord.Embed`s; the cogs in
`bot.cogs.demos` and `bot.cogs.checks` only defer, call the core and send what these build.
"""

from __future__ import annotations

import logging
import re

import discord

from bot.limits import (
    EMBED_FIELD_VALUE_CHARS,
    EMBED_TITLE_CHARS,
    pack_pages,
    split_for_discord,
    truncate,
)
from bot.render import where
from rag.answering.grounding import CONTRADICTED, SUPPORTED, ClaimCheck
from rag.demos import attention as attention_demo
from rag.demos import compare_accuracy
from rag.demos import fewshot as fewshot_demo
from rag.demos import fewshot_accuracy as accuracy_demo
from rag.demos import nexttoken as nexttoken_demo
from rag.demos import tokenize as tokenize_demo
from rag.demos.common import Table, text_table
from rag.demos.compare import NOT_COVERED, Comparison, ModelRun
from rag.demos.hallucination import CheckedAnswer, HallucinationDemo

COLOUR = discord.Colour.teal()
FENCE = "```"
# A zero-width space after each backtick that another follows keeps user text (and a model's)
# from closing a code block: no two backticks stay side by side, so no run of three or more.
_BACKTICK_RUN = re.compile(r"`(?=`)")
BLOCK_CHARS = 1900  # one code block in a description: two blocks and text stay under 4,096
STEPS_CHARS = 3000  # the step table's embed, beside a first embed of at most ~1,600
VIEW_CHARS = 1400  # each table when three next-token embeds share the 6,000 total
CHECK_COLOUR = discord.Colour.dark_gold()
ICONS = {SUPPORTED: "✅", CONTRADICTED: "❌"}
PAGE_CHARS = 3900  # under the 4,096 of a description
ANSWER_CHARS = 1000  # an answer in a field of the first embed (fields hold 1,024)
RUN_CHARS = 800  # each model's answer in /compare: four of them and the header fit 6,000
LEGEND = "✅ supported · ❔ not found in the passages · ❌ contradicted by a passage"

log = logging.getLogger("bot")


def block(text: str, limit: int = BLOCK_CHARS) -> str:
    """Text as a code block within `limit` characters (runs of backticks inside defused)."""
    safe = _BACKTICK_RUN.sub("`\u200b", text)
    return f"{FENCE}\n{truncate(safe, limit - 8)}\n{FENCE}"


def table_block(table: Table, limit: int = BLOCK_CHARS) -> str:
    """A table as a code block, cut at whole rows (with a note) to stay within `limit`."""
    header, rows = table
    shown = list(rows)
    while shown and len(text_table((header, shown))) > limit - 40:
        shown.pop()
    more = f"\n… {len(rows) - len(shown)} more rows" if len(shown) < len(rows) else ""
    return block(text_table((header, shown)) + more, limit)


def _embed(title: str, description: str, footer: str) -> discord.Embed:
    embed = discord.Embed(title=truncate(title, EMBED_TITLE_CHARS), description=description,
                          colour=COLOUR)
    return embed.set_footer(text=footer)


def quoted(text: str, limit: int = 300) -> str:
    """User text shown safely inside an embed: one line, markdown escaped, cut to `limit`."""
    return discord.utils.escape_markdown(truncate(" ".join(text.split()), limit))


def next_token_embeds(result: nexttoken_demo.NextTokenResult) -> list[discord.Embed]:
    """The top-k table (and the chart); the chat-template view beside the raw one when asked
    for; then the step-by-step table when there are steps. Together within 6,000 characters."""
    req = result.request
    footer = f"{result.model} · {result.seconds:.1f} s"
    if result.unavailable:
        return [_embed(f"Next token · {result.model}", result.unavailable, footer)]
    chat = result.chat_view
    table = table_block(nexttoken_demo.top_table(result), VIEW_CHARS if chat else BLOCK_CHARS)
    lines = [f"**Prompt:** {quoted(req.prompt)} (raw text, no chat template)", table]
    if result.entropy_bits is not None and result.entropy_at_1_bits is not None:
        lines.append(f"Entropy {result.entropy_bits:.2f} bits at T={req.temperature or 1:g}, "
                     f"{result.entropy_at_1_bits:.2f} bits at T=1.")
    if not result.exact:
        lines.append("The server returns only its top tokens: p(T) is renormalised over them.")
    embeds = [_embed(f"Next token · {result.model}", "\n".join(lines), footer)]
    if chat is not None:
        embeds.append(chat_view_embed(result, chat, footer))
    if req.steps > 1:
        embeds.append(steps_embed(result, VIEW_CHARS if chat else STEPS_CHARS, footer))
    return embeds


def chat_view_embed(
    result: nexttoken_demo.NextTokenResult, chat: nexttoken_demo.NextTokenResult, footer: str
) -> discord.Embed:
    """The raw and chat-template distributions side by side, and why they differ."""
    if chat.unavailable:
        return _embed("Under the chat template", quoted(chat.unavailable, 600), footer)
    table = table_block(nexttoken_demo.views_table(result), VIEW_CHARS)
    text = (f"{table}\n{quoted(result.why, 500)}\n"
            f"**Greedy reply under the template:** {quoted(chat.greedy_text, 300)}")
    return _embed("Raw text vs chat template (p at T=1)", text, footer)


def steps_embed(result: nexttoken_demo.NextTokenResult, limit: int, footer: str) -> discord.Embed:
    """Each generated token of the raw continuation, greedy beside sampled."""
    req = result.request
    texts = [f"**Greedy:** …{quoted(result.greedy_text, 350)}"]
    if result.sampled:
        texts.append(f"**Sampled** (T={req.temperature:g}, seed {req.seed}): "
                     f"…{quoted(result.sampled_text, 350)}")
    steps = table_block(nexttoken_demo.steps_table(result), limit)
    return _embed("One token at a time", "\n".join([steps, *texts]), footer)


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


def fewshot_accuracy_embed(result: accuracy_demo.AccuracyResult) -> discord.Embed:
    """The accuracy table (models × k), the task, chance and time; one item's answers."""
    table = table_block(accuracy_demo.accuracy_table(result))
    description = (f"**Task:** {quoted(result.task.instruction)}\n{table}\n"
                   f"Chance: {accuracy_demo.chance(result):.0%} · exact label match after "
                   "normalisation · examples are other items of the task")
    embed = _embed(f"Few-shot accuracy · {result.task.name}", description,
                   f"{len(result.results)} greedy answers in {result.seconds:.0f} s")
    first = result.task.items[0]
    lines = [f"**Input:** {quoted(first.input, 200)} → **{quoted(first.label, 40)}**"]
    for r in (r for r in result.results if r.item == 0):
        mark = "✅" if r.correct else "❌"
        lines.append(f"{mark} {r.model}, k={r.k}: {quoted(r.answer or '(nothing)', 60)}")
    embed.add_field(name="What the models said (first item)",
                    value=truncate("\n".join(lines), EMBED_FIELD_VALUE_CHARS), inline=False)
    return embed


def compare_accuracy_embed(result: compare_accuracy.AccuracyComparison) -> discord.Embed:
    """Key-fact rates both ways, mean time and cost per model; each question's hits."""
    table = table_block(compare_accuracy.accuracy_table(result))
    description = (f"{table}\nA key fact counts when one of the question's key-fact strings "
                   "appears in the answer. Cost: *local* runs here; *unknown* has no price set.")
    embed = discord.Embed(title=f"Key facts · {len(result.questions)} course questions",
                          description=truncate(description, PAGE_CHARS), colour=CHECK_COLOUR)
    marks = {True: "✅", False: "❌", None: "⚠️"}
    for model in result.models[:4]:
        lines = []
        for number, q in enumerate(result.questions):
            runs = {r.rag: r.key_fact for r in result.of(model) if r.question == number}
            pair = marks[runs.get(False)] + marks[runs.get(True)]
            lines.append(f"{pair} {quoted(q.question, 70)}")
        embed.add_field(name=truncate(f"{model} · closed book, with retrieval", 256),
                        value=truncate("\n".join(lines), EMBED_FIELD_VALUE_CHARS), inline=False)
    return embed.set_footer(text=f"{len(result.runs)} answers in {result.seconds:.0f} s · "
                                 "models ran one after another")


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
    head = discord.Embed(
        title=truncate(f"Closed book vs retrieval · {demo.model}", EMBED_TITLE_CHARS),
        description=f"**Question:** {quoted(demo.question, 500)}",
        colour=CHECK_COLOUR,
    )
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
    return [[head]] + [[discord.Embed(description=p, colour=CHECK_COLOUR) for p in group]
                       for group in pack_pages(pages, budget=5500)]


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def failure_shown(run: ModelRun) -> str:
    """Why a model gave no answer, as a student may read it: the gate's refusal or a timeout
    as they are; a backend's error (its address, the server's words) only in the log."""
    if run.error == NOT_COVERED or run.error.startswith("timed out"):
        return run.error
    log.warning("/compare: model %s failed: %s", run.model, run.error)
    return "This model could not answer right now; the details are in the bot's log."


def run_embed(run: ModelRun) -> discord.Embed:
    """One model's answer and measurements."""
    title = truncate(f"{run.model} ({run.backend})", EMBED_TITLE_CHARS)
    if not run.ok:
        description = f"**Failed:** {quoted(failure_shown(run), 300)}"
        return discord.Embed(title=title, description=description, colour=discord.Colour.red())
    embed = discord.Embed(title=title, description=truncate(run.text or "(no text)", RUN_CHARS),
                          colour=CHECK_COLOUR)
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
                                     f"{truncate(result.note, 400)}", colour=CHECK_COLOUR)
    if result.refused:  # the abstention gate: no model was asked
        return [[head]]
    return [[head, *(run_embed(r) for r in result.runs)]]
