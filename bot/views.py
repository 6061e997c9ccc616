"""The buttons under an answer: 👍 / 👎 feedback, Sources, and Ask a TA (bot/ta_views.py).

They are dynamic items: the question id lives in the custom id, so the buttons keep working
after a restart (the passages come from the question log, not from memory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.access import NOT_SERVED, check_roles, check_student, guild_served, is_instructor
from bot.errors import NotAllowed, report_error
from bot.pages import send_more_pages
from bot.ta_views import AskTAButton

if TYPE_CHECKING:
    from bot.client import StudyBot


def _bot(interaction: discord.Interaction) -> StudyBot:
    return interaction.client  # type: ignore[return-value]


async def _served(interaction: discord.Interaction) -> bool:
    """Buttons work only in a course server (or a DM); elsewhere the click is refused."""
    if guild_served(_bot(interaction).settings.discord, interaction.guild_id):
        return True
    await report_error(interaction, NotAllowed(NOT_SERVED))
    return False


@dataclass(frozen=True, slots=True)
class ShownPassages:
    """What the Sources button shows of a logged answer now: the passages that may still be
    shown, and how many of the files it cited were withdrawn from the materials since."""

    passages: tuple[dict[str, Any], ...]
    withdrawn_files: int = 0
    refused: bool = False  # the answer said the materials do not cover the question


# The custom id of an answer's 👍/👎 starts so: it tells an answer's message from the others.
VOTE_ID = "sa:vote:"


class FeedbackButton(
    discord.ui.DynamicItem[discord.ui.Button], template=VOTE_ID + r"(?P<vote>up|down):(?P<qid>\d+)"
):
    """👍 or 👎 on one answer; one vote per user, which they can change."""

    def __init__(self, question_id: int, vote: str) -> None:
        super().__init__(
            discord.ui.Button(
                emoji="👍" if vote == "up" else "👎",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{VOTE_ID}{vote}:{question_id}",
            )
        )
        self.question_id = question_id
        self.vote = vote

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> FeedbackButton:
        """Rebuild the button from its custom id."""
        return cls(int(match["qid"]), match["vote"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Record the vote and thank the user privately."""
        if not await _served(interaction):
            return
        try:
            await check_roles(interaction)
            value = 1 if self.vote == "up" else -1
            await _bot(interaction).feedback(self.question_id, interaction.user.id, value)
            await interaction.response.send_message("Thanks for the feedback!", ephemeral=True)
        except Exception as exc:  # noqa: BLE001 - routed to the one error policy
            await report_error(interaction, exc)


class SourcesButton(discord.ui.DynamicItem[discord.ui.Button], template=r"sa:src:(?P<qid>\d+)"):
    """Shows, privately, the passages an answer was built from."""

    def __init__(self, question_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Sources",
                emoji="📚",
                style=discord.ButtonStyle.primary,
                custom_id=f"sa:src:{question_id}",
            )
        )
        self.question_id = question_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> SourcesButton:
        """Rebuild the button from its custom id."""
        return cls(int(match["qid"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Send the passages as ephemeral messages (not during an exam)."""
        if not await _served(interaction):
            return
        try:
            await check_student(interaction, "sources_button")
            bot = _bot(interaction)
            instructor = interaction.guild_id is not None and is_instructor(
                bot.settings.discord, interaction.user, interaction.permissions)
            shown = await bot.passages(self.question_id, instructor)
            if shown is None:
                await interaction.response.send_message(
                    "I no longer have the passages for that answer.", ephemeral=True
                )
                return
            note = render.withdrawn_note(shown.withdrawn_files)
            if note and not shown.passages:  # not "No passages found": say why there are none
                await interaction.response.send_message(note, ephemeral=True)
                return
            title = ("Closest passages (the materials did not cover the question)"
                     if shown.refused else "Passages used for this answer")
            messages = render.passage_messages(title, shown.passages)
            await interaction.response.send_message(note or None, embeds=messages[0],
                                                    ephemeral=True)
            await send_more_pages(interaction, messages[1:], ephemeral=True)
        except Exception as exc:  # noqa: BLE001 - routed to the one error policy
            await report_error(interaction, exc)


def answer_view(question_id: int, ask_ta: bool = False) -> discord.ui.View:
    """The buttons under a finished answer ("Ask a TA" when a TA channel is configured)."""
    view = discord.ui.View(timeout=None)
    view.add_item(FeedbackButton(question_id, "up"))
    view.add_item(FeedbackButton(question_id, "down"))
    view.add_item(SourcesButton(question_id))
    if ask_ta:
        view.add_item(AskTAButton(question_id))
    return view


def has_answer_buttons(message: discord.Message) -> bool:
    """Whether a message carries a finished answer's 👍/👎 (`answer_view`): only an answer's
    first message does; a demo, a list of passages or a TA's answer has none."""
    return any(str(getattr(item, "custom_id", "")).startswith(VOTE_ID)
               for row in message.components for item in getattr(row, "children", ()))
