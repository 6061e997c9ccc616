"""How escalations look in Discord: the post in the TA channel, the TA's answer as the student
sees it, and the TAs' list of unanswered escalations (all within Discord's limits)."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.escalation_log import Escalation, LoggedQuestion
from bot.faq import one_line
from bot.limits import (
    EMBED_DESCRIPTION_CHARS,
    EMBED_FIELD_VALUE_CHARS,
    EMBED_TITLE_CHARS,
    THREAD_NAME_CHARS,
    split_for_discord,
    truncate,
)
from bot.render import where

QUESTION_CHARS = 1500
BOT_ANSWER_CHARS = 2500  # with the question and the fields, under 6,000 per message
RELAY_PAGE_CHARS = 3800
TA_COLOUR = discord.Colour.gold()
THREAD_NOTE = ("Everything a TA or instructor writes in this thread is sent to the student "
               "(mentions off). Discuss elsewhere.")
ASKED_TA = ("Sent to the TAs. When one of them answers, I'll post the answer where you asked "
            "(or in a DM, for a private answer).")


def thread_title(escalation_id: int, question: str) -> str:
    """The escalation thread's name: its number and the question, on one line, no pings."""
    name = f"#{escalation_id} · {discord.utils.escape_mentions(one_line(question))}"
    return truncate(name, THREAD_NAME_CHARS)


def sources_lines(sources: Sequence[dict]) -> str:
    """The answer's citations, one per line, within a field."""
    lines = [where(str(s.get("source", "")), s.get("page"), str(s.get("section", "")))
             for s in sources]
    return truncate("\n".join(lines), EMBED_FIELD_VALUE_CHARS) if lines else "none"


def escalation_post(
    escalation_id: int, logged: LoggedQuestion, user_id: int, link: str, private: bool,
) -> tuple[str, list[discord.Embed]]:
    """The message that opens an escalation: a line of text; the question, the bot's answer
    and its sources as embeds. It mentions nobody: the TA role is pinged (`ta_ping`) only once
    the escalation's thread exists."""
    content = "A student asks the TAs for help."
    asked = discord.Embed(title=f"Escalation #{escalation_id}", colour=TA_COLOUR,
                          description=truncate(logged.question, QUESTION_CHARS))
    where_asked = "privately (only the student sees that answer)" if private else "here"
    asked.add_field(name="Asked by", value=f"<@{user_id}> · [{where_asked}]({link})",
                    inline=False)
    asked.set_footer(text=THREAD_NOTE)
    label = "The bot's answer" + (" (not covered by the materials)" if logged.abstained else "")
    answer = discord.Embed(title=label, colour=discord.Colour.light_grey(),
                           description=truncate(logged.answer or "(none)", BOT_ANSWER_CHARS))
    answer.add_field(name="Sources", value=sources_lines(logged.sources), inline=False)
    return content, [asked, answer]


def ta_ping(escalation_id: int, ta_role_id: int) -> str:
    """The TA role's mention for a new escalation (the only mention the bot ever sends)."""
    return f"<@&{ta_role_id}> Escalation #{escalation_id} is waiting for a TA: answer here."


def question_edited(question: str) -> str:
    """The note in an escalation's thread when the student edits the question: the new
    text, quoted on one line (no pings, within a message's 2,000 characters)."""
    text = discord.utils.escape_mentions(truncate(one_line(question), QUESTION_CHARS))
    return ("✏️ The student edited the question, and the bot answered it again (the link above "
            f"shows the new answer). The question now reads:\n> {text}")


def relay_messages(question: str, answer: str, ta_name: str) -> list[list[discord.Embed]]:
    """A TA's answer as the student sees it: pages of embeds, labelled as a person's answer
    (not the bot's, and not from the materials)."""
    pages = split_for_discord(answer, RELAY_PAGE_CHARS) or ["(empty answer)"]
    embeds = [discord.Embed(description=page, colour=TA_COLOUR) for page in pages]
    embeds[0].title = truncate(f"A TA answered: {one_line(question)}", EMBED_TITLE_CHARS)
    embeds[-1].set_footer(text=truncate(f"Answered by {one_line(ta_name)} (course staff) · "
                                        "a person's answer, not the bot's", 200))
    return [[e] for e in embeds]


def unanswered_embed(escalations: Sequence[Escalation]) -> discord.Embed:
    """The TAs' list of open escalations, oldest first, with links to their threads."""
    embed = discord.Embed(title=f"Unanswered escalations ({len(escalations)})",
                          colour=TA_COLOUR)
    lines = []
    for e in escalations:
        thread = f"<#{e.ta_thread_id}>" if e.ta_thread_id else "(no thread)"
        lines.append(f"**#{e.id}** · <t:{int(e.created_at)}:R> · {thread}\n"
                     f"{truncate(one_line(e.question), 150)}")
    embed.description = truncate("\n".join(lines) or "None: every escalation is answered.",
                                 EMBED_DESCRIPTION_CHARS - 100)
    return embed
