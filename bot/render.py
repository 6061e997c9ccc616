"""How answers, passages, statistics and ingest reports look in Discord (embeds within limits)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import discord

from bot.limits import (
    ELLIPSIS,
    EMBED_AUTHOR_CHARS,
    EMBED_DESCRIPTION_CHARS,
    EMBED_FIELD_NAME_CHARS,
    EMBED_FIELD_VALUE_CHARS,
    EMBED_FOOTER_CHARS,
    EMBED_TITLE_CHARS,
    EMBED_TOTAL_CHARS,
    FENCE,
    embed_chars,
    pack_pages,
    split_for_discord,
    tail,
    truncate,
)
from bot.storage import Stats
from bot.usage import GapCluster, UsageReport
from rag.answering.assistant import ELSEWHERE, SOCIAL, Answer
from rag.answering.grounding import GroundingReport
from rag.index.documents import Hit

ANSWER_PAGE_CHARS = 3800  # + title 256 + sources 1024 + footer < 6,000 per message
PASSAGE_CHARS = 900
CURSOR = " ▌"
COLOUR = discord.Colour.blurple()
REFUSED_COLOUR = discord.Colour.light_grey()

HELP_TEXT = """\
**/ask** `question` `[private]` — an answer from the course materials, with its sources.
  e.g. `/ask question: What is LoRA and why does it matter?`
**/sources** `query` — the most relevant passages, without generating an answer.
  e.g. `/sources query: PagedAttention`
**Mention me** in a channel (`@study-assistant what is RAG?`) and I answer in a new thread;
in that thread, follow-up questions need no mention.
**/help** — this list.

Demos of how LLMs work: **/nexttoken** `prompt` (the next-token distribution, step by step),
**/tokenize** `text`, **/attention** `sentence` (a heatmap), **/fewshot** `task examples input`,
**/hallucination** `question` (closed-book vs grounded, claim by claim), **/compare** `question`
(models side by side), **/fewshot_accuracy** `[task]` (accuracy with 0, 1, 2 and 4 examples),
**/compare_accuracy** `[models]` (key facts in each model's answers, with and without retrieval).

Instructors: **/reingest** (re-read the materials), **/upload** `file` (add a PDF, Markdown or
text file), **/stats** `[days]` (questions, abstentions, feedback, latency, a chart per day, and
the groups of questions the materials did not cover), **/exam** `start|end|status` (exam mode),
**/assignments** `list|open|close` (protected assignments), **/hints** `only` (hints-only
channels).
TAs: **/escalations** (questions students sent to the TAs, not yet answered)."""


def where(source: str, page: int | None, section: str) -> str:
    """`papers/lora.pdf, p. 4 · Method`: where a passage comes from."""
    text = source + (f", p. {page}" if page else "")
    return text + (f" · {section}" if section else "")


def passage_dict(hit: Hit) -> dict[str, Any]:
    """What the log keeps of a retrieved passage (for the Sources button)."""
    c = hit.chunk
    return {
        "source": c.source,
        "page": c.page,
        "section": c.section,
        "score": round(hit.score, 3),
        "text": c.text[:PASSAGE_CHARS],
        "fence": c.fence,
    }


def sources_field(answer: Answer) -> str:
    """The citations of an answer, one per line, within an embed field."""
    lines = [f"[{c.number}] {where(c.source, c.page, c.section)}" for c in answer.citations]
    if not lines and answer.refused and answer.retrieved:
        lines = ["Nearest: " + where(h.chunk.source, h.chunk.page, h.chunk.section)
                 for h in answer.retrieved[:3]]
    return truncate("\n".join(lines), EMBED_FIELD_VALUE_CHARS) if lines else ""


def footer(answer: Answer) -> str:
    """`smollm2 · quoted from the materials · 0.4 s`: the model, how the answer was made
    (quoted, generated and verified, generated and unverified) and its time; a refusal says
    the model was not called."""
    seconds = answer.timings.get("total_ms", 0.0) / 1000
    if answer.refused:  # not covered, declined, or a reply to thanks: no model was called
        return f"{answer.made} · {seconds:.1f} s"
    return f"{answer.model} · {answer.made} · {seconds:.1f} s"


def answer_body(answer: Answer) -> str:
    """The answer's text as shown: quoted answers as Discord block quotes, then any note
    (sentences removed by the verifier, a fallback to quotes) in italics."""
    text = answer.text
    if answer.style == "extractive" and not answer.refused:
        text = "\n".join(f"> {line}" for line in text.splitlines())
    if not answer.note:
        return text
    # Where an answer comes from, when not from the document asked about, is read first.
    if answer.reason == ELSEWHERE:
        return f"*{answer.note}*\n\n{text}"
    return f"{text}\n\n*{answer.note}*"


def answer_messages(
    answer: Answer, grounding: GroundingReport | None = None
) -> list[list[discord.Embed]]:
    """The finished answer as messages of embeds: text pages, then sources and footer (with
    the grounding badge when the answer was checked)."""
    pages = split_for_discord(answer_body(answer), ANSWER_PAGE_CHARS) or ["(no text)"]
    colour = REFUSED_COLOUR if answer.refused and answer.reason != SOCIAL else COLOUR
    embeds = [discord.Embed(description=page, colour=colour) for page in pages]
    embeds[0].title = truncate(answer.question, EMBED_TITLE_CHARS)
    field = sources_field(answer)
    if field:
        embeds[-1].add_field(name="Sources", value=field, inline=False)
    badge = f" · {grounding.summary()}" if grounding is not None else ""
    embeds[-1].set_footer(text=footer(answer) + badge)
    return [[e] for e in embeds]


DRAFT_LABEL = "Draft: not yet checked against the course materials"


def draft_embed(question: str, text: str, unverified_draft: bool = False) -> discord.Embed:
    """The answer while it streams, with a cursor; a draft that will be verified says so
    (the checked text replaces it)."""
    body = tail(text, ANSWER_PAGE_CHARS) + CURSOR if text else "Thinking…"
    embed = discord.Embed(title=truncate(question, EMBED_TITLE_CHARS), description=body,
                          colour=REFUSED_COLOUR if unverified_draft else COLOUR)
    return embed.set_footer(text=DRAFT_LABEL) if unverified_draft else embed


def status_embed(question: str, status: str) -> discord.Embed:
    """A placeholder while the question waits or its passages are searched."""
    return discord.Embed(title=truncate(question, EMBED_TITLE_CHARS), description=status,
                         colour=REFUSED_COLOUR)


def queue_status(place: int) -> str:
    """What a user waiting for a generation slot sees."""
    return f"You're #{place} in the queue; your answer starts as soon as a slot is free."


def passage_messages(
    title: str, passages: Sequence[Mapping[str, Any]]
) -> list[list[discord.Embed]]:
    """Passages as embeds, packed into messages within the embed limits."""
    if not passages:
        return [[discord.Embed(title=truncate(title, EMBED_TITLE_CHARS),
                               description="No passages found.")]]
    bodies = []
    for rank, p in enumerate(passages, 1):
        head = f"**{rank}. {where(p['source'], p.get('page'), p.get('section', ''))}**"
        score = f" (relevance {p['score']:.2f})" if p.get("score") is not None else ""
        text = passage_text(str(p.get("text", "")), str(p.get("fence") or ""))
        # Cut where a code block can be closed (the cut-off passage ends with one open).
        pieces = split_for_discord(f"{head}{score}\n{text}", PASSAGE_CHARS + 300)
        bodies.append(pieces[0] + (f"\n{ELLIPSIS}" if len(pieces) > 1 else ""))
    messages = [[discord.Embed(description=b, colour=COLOUR) for b in group]
                for group in pack_pages(bodies, budget=5500)]
    messages[0][0].title = truncate(title, EMBED_TITLE_CHARS)
    return messages


def withdrawn_note(files: int) -> str:
    """What the Sources button says of the files an answer cited that were withdrawn from the
    materials since ("" for none). The file is not named: its name may be what the instructor
    withdrew it for."""
    if not files:
        return ""
    which = "A file" if files == 1 else f"{files} files"
    has, its = ("has", "its") if files == 1 else ("have", "their")
    return (f"🗑️ {which} this answer cited {has} since been withdrawn from the course "
            f"materials, so {its} passages are no longer shown.")


def passage_text(text: str, fence: str = "") -> str:
    """A passage as shown: prose on one line (a PDF's line breaks would waste the embed),
    each code block on lines of its own, as written, and closed. `fence` is the line that
    opened the block a passage cut from a long one starts inside: it is code from its start."""
    parts: list[str] = []
    prose: list[str] = []
    # The lines of the code block being read. Discord has no ~~~ blocks: shown as prose.
    code = [_code_opener(fence)] if fence.startswith(FENCE) else None
    for line in text.splitlines():
        if line.strip().startswith(FENCE):
            if code is None:
                parts.append(" ".join(" ".join(prose).split()))
                prose, code = [], [line.strip()]
            else:
                parts.append("\n".join([*code, line.strip()]))
                code = None
        elif code is not None:
            code.append(line)
        else:
            prose.append(_IMAGES.sub(" ", line))
    parts.append("\n".join([*code, FENCE]) if code is not None
                 else " ".join(" ".join(prose).split()))
    return "\n".join(part for part in parts if part)


# An image in a guide's prose, as HTML or Markdown: an embed cannot show it, and its tag read
# as raw text ('<img width="1490" src="https://...">').
_IMAGES = re.compile(r"<img\b[^>]*>|!\[[^\]]*\]\([^)]*\)", re.IGNORECASE)


def _code_opener(fence: str) -> str:
    """The fence that reopens a block for Discord: ``` and the block's language, if named."""
    info = fence.lstrip("`").split()
    return FENCE + (info[0] if info else "")


def help_embed() -> discord.Embed:
    """The commands, with examples."""
    return discord.Embed(title="Study assistant", description=HELP_TEXT, colour=COLOUR)


def stats_embed(stats: Stats, days: float) -> discord.Embed:
    """Usage over the period."""
    embed = discord.Embed(title=f"Usage over the last {days:g} days", colour=COLOUR)
    rate = stats.abstained / stats.questions if stats.questions else 0.0
    embed.add_field(name="Questions", value=str(stats.questions))
    embed.add_field(name="Abstentions", value=f"{stats.abstained} ({rate:.0%})")
    embed.add_field(name="Feedback", value=f"👍 {stats.up} · 👎 {stats.down}")
    lat = stats.latency_ms
    embed.add_field(
        name="Latency (answered)",
        value=f"p50 {lat.get('p50', 0) / 1000:.1f} s · p90 {lat.get('p90', 0) / 1000:.1f} s · "
        f"p99 {lat.get('p99', 0) / 1000:.1f} s",
        inline=False,
    )
    exam = stats.refusals.get("exam", 0)
    embed.add_field(name="Refused during exams", value=f"{exam} attempts")
    top = "\n".join(f"{n}× {s}" for s, n in stats.top_sources) or "none yet"
    embed.add_field(name="Top sources", value=truncate(top, EMBED_FIELD_VALUE_CHARS), inline=False)
    return embed


GAP_QUESTION_CHARS = 180
# The gap list shares a message with the stats embed (at most ~1,400 characters).
GAP_LIST_CHARS = 3000


def student_text(text: str, limit: int) -> str:
    """A student's words shown inside an embed: one line, cut to `limit`, markdown and
    mentions neutralised (nothing pings from an embed, and nothing should look like it does)."""
    line = truncate(" ".join(text.split()), limit)
    return discord.utils.escape_mentions(discord.utils.escape_markdown(line))


def gaps_embed(report: UsageReport, top: int) -> discord.Embed:
    """The largest groups of questions the materials did not serve (abstained on or voted 👎),
    each as its most central question and a count: what to add to the materials."""
    embed = discord.Embed(title="Coverage gaps: not covered, or 👎", colour=REFUSED_COLOUR)
    if not report.clusters:
        embed.description = "No question went unanswered or got a 👎 in this period."
        return embed
    lines: list[str] = []
    for c in report.clusters[:top]:
        line = f"**{c.count}×** {student_text(c.representative, GAP_QUESTION_CHARS)} ({_why(c)})"
        if sum(len(x) + 1 for x in lines) + len(line) > GAP_LIST_CHARS:
            break  # escaped student text can double in length: stay well inside 6,000 in all
        lines.append(line)
    embed.description = "\n".join(lines)
    capped = (f" (the latest {report.grouped} of {report.gap_questions})"
              if report.grouped < report.gap_questions else "")
    embed.set_footer(text=f"{report.grouped} such questions{capped} in {len(report.clusters)} "
                     "groups of similar ones; each shown by its most typical question. "
                     "study-assistant report lists every group.")
    return embed


def _why(cluster: GapCluster) -> str:
    """`3 not covered, 1 👎`: why a group's questions count as gaps."""
    parts = [f"{cluster.abstained} not covered" if cluster.abstained else "",
             f"{cluster.down_voted} 👎" if cluster.down_voted else ""]
    return ", ".join(p for p in parts if p)


_EMBED_TEXT_LIMITS = {"title": EMBED_TITLE_CHARS, "description": EMBED_DESCRIPTION_CHARS}


def rewrite_embeds(embeds: Sequence[discord.Embed], change: Callable[[str], str]
                   ) -> list[discord.Embed]:
    """The embeds of one message with `change` applied to every text a reader sees (title,
    description, field names and values, footer, author), cut back to Discord's limits where a
    text grew, the longest texts first when the message's total passes 6,000."""
    dicts: list[dict[str, Any]] = [dict(e.to_dict()) for e in embeds]
    texts: list[tuple[dict[str, Any], str, int]] = []  # (holder, key, limit)
    for d in dicts:
        texts += [(d, key, limit) for key, limit in _EMBED_TEXT_LIMITS.items() if d.get(key)]
        for part, key, limit in (("footer", "text", EMBED_FOOTER_CHARS),
                                 ("author", "name", EMBED_AUTHOR_CHARS)):
            if (d.get(part) or {}).get(key):
                texts.append((d[part], key, limit))
        for f in d.get("fields") or []:
            texts += [(f, "name", EMBED_FIELD_NAME_CHARS), (f, "value", EMBED_FIELD_VALUE_CHARS)]
    for holder, key, limit in texts:
        holder[key] = truncate(change(holder[key]), limit)
    over = sum(embed_chars(d) for d in dicts) - EMBED_TOTAL_CHARS
    for holder, key, _ in sorted(texts, key=lambda t: -len(t[0][t[1]])):
        if over <= 0:
            break
        keep = max(len(ELLIPSIS) + 1, len(holder[key]) - over)
        over -= len(holder[key]) - len(truncate(holder[key], keep))
        holder[key] = truncate(holder[key], keep)
    return [discord.Embed.from_dict(d) for d in dicts]
