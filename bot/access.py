"""Who may use the bot where: allowed channels and roles, DMs, and the instructor tools."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.errors import NotAllowed
from rag.config import DiscordSettings


def channel_allowed(settings: DiscordSettings, channel: Any) -> bool:
    """Whether the bot answers in this channel (a thread counts as its parent)."""
    if channel is None:
        return False
    if isinstance(channel, discord.DMChannel | discord.GroupChannel):
        return settings.allow_dms
    if not settings.allowed_channels:
        return True
    ids = {channel.id, getattr(channel, "parent_id", None)}
    return bool(ids & set(settings.allowed_channels))


def roles_of(user: discord.abc.User) -> list[discord.Role]:
    """The guild roles of a member (none for a user outside a guild)."""
    return list(getattr(user, "roles", []))


def member_allowed(settings: DiscordSettings, user: discord.abc.User) -> bool:
    """Whether a user holds one of the allowed roles (everyone, when none are configured)."""
    if not settings.allowed_roles or not isinstance(user, discord.Member):
        return True
    return any(r.id in settings.allowed_roles for r in roles_of(user))


def is_instructor(
    settings: DiscordSettings, user: discord.abc.User, perms: discord.Permissions
) -> bool:
    """Manage Server, or one of the configured instructor roles (by id or name)."""
    if perms.manage_guild or perms.administrator:
        return True
    wanted = {str(r).casefold() for r in settings.instructor_roles}
    return any(str(r.id) in wanted or r.name.casefold() in wanted for r in roles_of(user))


def _settings(interaction: discord.Interaction) -> DiscordSettings:
    return interaction.client.settings.discord  # type: ignore[attr-defined]


def student_check(interaction: discord.Interaction) -> bool:
    """App-command check: the channel and the user's roles are allowed."""
    settings = _settings(interaction)
    if interaction.guild is None and not settings.allow_dms:
        raise NotAllowed("I only answer in the course server, not in direct messages.")
    if interaction.guild is not None and not channel_allowed(settings, interaction.channel):
        raise NotAllowed("I don't answer in this channel; please ask in a course channel.")
    if not member_allowed(settings, interaction.user):
        raise NotAllowed("Your roles don't include access to the study assistant.")
    return True


def instructor_check(interaction: discord.Interaction) -> bool:
    """App-command check: only instructors (configured roles or Manage Server)."""
    if interaction.guild is None:
        raise NotAllowed("Instructor tools work only inside the course server.")
    if not is_instructor(_settings(interaction), interaction.user, interaction.permissions):
        raise NotAllowed("Only instructors can use this command.")
    return True


students_only = app_commands.check(student_check)
instructors_only = app_commands.check(instructor_check)
