"""The TA loop's buttons: "Ask a TA" under an answer, "Answer the student" (a form) on an
escalation, and "Add to FAQ" under a TA's answer.

Dynamic items, like the feedback buttons: the question or answer id lives in the custom id and
everything else comes from the logs, so they keep working after a restart. So does the answer
form: its custom id names the escalation, and its submit is handled from that id alone.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.access import NOT_SERVED, guild_served
from bot.errors import NotAllowed, report_error

ANSWER_FORM_ID = "sa:answer-form"  # + ":<escalation id>": the custom id of an answer form
ANSWER_FORM = re.compile(rf"{ANSWER_FORM_ID}:(?P<eid>\d+)")
ANSWER_TEXT_ID = "sa:answer-text"


async def _served(interaction: discord.Interaction) -> bool:
    """Buttons work only in a course server (or a DM); elsewhere the click is refused."""
    settings = interaction.client.settings.discord  # type: ignore[attr-defined]
    if guild_served(settings, interaction.guild_id):
        return True
    await report_error(interaction, NotAllowed(NOT_SERVED))
    return False


class AskTAButton(discord.ui.DynamicItem[discord.ui.Button], template=r"sa:ta:(?P<qid>\d+)"):
    """Sends an answered question, with the bot's answer and sources, to the TA channel."""

    def __init__(self, question_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Ask a TA",
                emoji="🙋",
                style=discord.ButtonStyle.secondary,
                custom_id=f"sa:ta:{question_id}",
            )
        )
        self.question_id = question_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> AskTAButton:
        """Rebuild the button from its custom id."""
        return cls(int(match["qid"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Escalate (the confirmation and every refusal are private)."""
        if not await _served(interaction):
            return
        try:
            bot: Any = interaction.client
            bot.check_exam(interaction.user.id, interaction.channel, "ask_ta")
            await bot.escalations.escalate(interaction, self.question_id)
        except Exception as exc:  # noqa: BLE001 - routed to the one error policy
            await report_error(interaction, exc)


class AddToFAQButton(discord.ui.DynamicItem[discord.ui.Button], template=r"sa:faq:(?P<aid>\d+)"):
    """Writes a TA's answer to the course FAQ and ingests it (TAs and instructors only)."""

    def __init__(self, answer_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Add to FAQ",
                emoji="📌",
                style=discord.ButtonStyle.secondary,
                custom_id=f"sa:faq:{answer_id}",
            )
        )
        self.answer_id = answer_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> AddToFAQButton:
        """Rebuild the button from its custom id."""
        return cls(int(match["aid"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Add the answer to the FAQ, or refuse privately."""
        if not await _served(interaction):
            return
        try:
            bot: Any = interaction.client
            await bot.escalations.add_to_faq(interaction, self.answer_id)
        except Exception as exc:  # noqa: BLE001 - routed to the one error policy
            await report_error(interaction, exc)


class AnswerButton(discord.ui.DynamicItem[discord.ui.Button],
                   template=r"sa:answer:(?P<eid>\d+)"):
    """Opens a form for a TA's answer (an alternative to writing in the thread)."""

    def __init__(self, escalation_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Answer the student",
                emoji="✍️",
                style=discord.ButtonStyle.primary,
                custom_id=f"sa:answer:{escalation_id}",
            )
        )
        self.escalation_id = escalation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> AnswerButton:
        """Rebuild the button from its custom id."""
        return cls(int(match["eid"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Show the form to a TA; refuse anyone else privately."""
        if not await _served(interaction):
            return
        try:
            bot: Any = interaction.client
            bot.escalations.check_ta(interaction)
            form = AnswerForm(self.escalation_id)
            # send_modal keeps a form that is not finished until it is submitted, so one a TA
            # closed unsent would be kept for good; this one is handled from its custom id.
            form.stop()
            await interaction.response.send_modal(form)
        except Exception as exc:  # noqa: BLE001 - routed to the one error policy
            await report_error(interaction, exc)


class AnswerForm(discord.ui.Modal, title="Answer the student"):
    """The form for a TA's answer to one escalation: only its layout. Its custom id carries the
    escalation, so a submit is handled from the id alone (`submit_answer_form`), after a
    restart too; discord.py keeps no form object (see `AnswerButton.callback`)."""

    text: discord.ui.Label[AnswerForm] = discord.ui.Label(
        text="Your answer (the student sees it as written)",
        component=discord.ui.TextInput(style=discord.TextStyle.paragraph, min_length=1,
                                       max_length=4000, custom_id=ANSWER_TEXT_ID),
    )

    def __init__(self, escalation_id: int) -> None:
        super().__init__(custom_id=f"{ANSWER_FORM_ID}:{escalation_id}")


async def submit_answer_form(interaction: discord.Interaction) -> None:
    """Relay a submitted answer form (any other interaction is left alone)."""
    data: Any = interaction.data or {}
    match = ANSWER_FORM.fullmatch(str(data.get("custom_id", "")))
    if interaction.type is not discord.InteractionType.modal_submit or match is None:
        return
    if not await _served(interaction):
        return
    try:
        bot: Any = interaction.client
        text = submitted_text(data.get("components") or [], ANSWER_TEXT_ID)
        await bot.escalations.answer_from_form(interaction, int(match["eid"]), text)
    except Exception as exc:  # noqa: BLE001 - routed to the one error policy
        await report_error(interaction, exc)


def submitted_text(components: list[dict[str, Any]], custom_id: str) -> str:
    """The value of the text input `custom_id` in a modal submit's components (in labels or
    action rows); empty when there is none."""
    for component in components:
        if component.get("custom_id") == custom_id:
            return str(component.get("value") or "")
        inner = component.get("components") or ([component["component"]]
                                                if "component" in component else [])
        if found := submitted_text(inner, custom_id):
            return found
    return ""


def escalation_view(escalation_id: int) -> discord.ui.View:
    """The button on an escalation in the TA channel."""
    view = discord.ui.View(timeout=None)
    view.add_item(AnswerButton(escalation_id))
    return view


def faq_view(answer_id: int) -> discord.ui.View:
    """The button under a relayed TA answer."""
    view = discord.ui.View(timeout=None)
    view.add_item(AddToFAQButton(answer_id))
    return view
