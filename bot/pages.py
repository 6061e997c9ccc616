"""A reply's further pages (`/sources`, the Sources button, `/compare`): follow-up messages
sent like an answer's, waiting out Discord's 429s and 5xx."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import discord

from bot.limits import retry_after_s

log = logging.getLogger("bot")
NO_MENTIONS = discord.AllowedMentions.none()
PAGE_TRIES = 3  # attempts at each page (after the wait Discord asked for, or a pause)


async def send_more_pages(interaction: discord.Interaction, pages: Sequence[list[discord.Embed]],
                          *, ephemeral: bool = False) -> None:
    """Send a reply's further pages as follow-ups, each waiting out 429s and 5xx like an
    answer does. A page Discord still refuses ends the reply there (logged): the pages
    already shown stay, rather than an error replacing them."""
    for n, embeds in enumerate(pages, 2):
        for attempt in range(1, PAGE_TRIES + 1):
            try:
                await interaction.followup.send(embeds=embeds, ephemeral=ephemeral,
                                                allowed_mentions=NO_MENTIONS)
                break
            except discord.HTTPException as exc:
                if attempt < PAGE_TRIES and (exc.status == 429 or exc.status >= 500):
                    await asyncio.sleep(retry_after_s(exc) if exc.status == 429 else attempt)
                    continue
                log.warning("page %d of a reply was not sent (%s); the reply ends there", n, exc)
                return
