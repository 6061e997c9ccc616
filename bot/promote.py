"""The "Promote anyway" button under a re-ingest that the gold questions held back.

A dynamic item: the version lives in the custom id, so the button works after a restart, and
only for instructors (the same check as the instructor commands).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.access import instructor_check
from bot.errors import report_error
from ingest.reingest import ReingestResult
from rag.index import versions

if TYPE_CHECKING:
    from bot.client import StudyBot


class PromoteButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"sa:promote:(?P<version>\d+)"
):
    """Makes one held index version live."""

    def __init__(self, version: str) -> None:
        super().__init__(
            discord.ui.Button(label=f"Promote version {version} anyway",
                              style=discord.ButtonStyle.danger,
                              custom_id=f"sa:promote:{version}")
        )
        self.version = version

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> PromoteButton:
        """Rebuild the button from its custom id."""
        return cls(match["version"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Instructors only: switch to the held version, and say so privately; a button whose
        version is no longer the held one says what is live now and changes nothing."""
        try:
            instructor_check(interaction)
            bot: StudyBot = interaction.client  # type: ignore[assignment]
            await interaction.response.defer(ephemeral=True, thinking=True)
            store = bot.services.store
            await bot.reingester.switch(
                lambda: versions.promote(store, self.version, held_only=True))
            await interaction.followup.send(f"Version {self.version} is live (promoted by "
                                            f"{interaction.user.mention}).", ephemeral=True,
                                            allowed_mentions=discord.AllowedMentions.none())
        except Exception as exc:  # noqa: BLE001 - routed to the one error policy
            await report_error(interaction, exc)


def held_view(result: ReingestResult) -> discord.ui.View | None:
    """The promote button for a held re-ingest; None otherwise."""
    if result.gate is None or not result.gate.held:
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(PromoteButton(result.gate.built))
    return view
