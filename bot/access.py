"""Who may use the bot where: the course servers, allowed channels and roles, DMs, and the
instructor tools.

The bot serves only the configured course server(s). Anyone can add a public application to
their own server, and a user-installed app can be run anywhere, so a server's permissions
(Manage Server) count only inside a course server, and a DM never grants more than a student's
rights; a role allow-list is checked against the author's roles in the course server.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.errors import NotAllowed
from rag.config import DiscordSettings

log = logging.getLogger("bot")
NOT_SERVED = (
    "I only work in my course's server. If you run a course, set up your own copy of the "
    "study assistant."
)


def guild_served(settings: DiscordSettings, guild_id: int | None) -> bool:
    """Whether the bot serves a server (any, when none is configured); None is a DM."""
    served = settings.served_guilds()
    return guild_id is None or not served or guild_id in served


def channel_allowed(settings: DiscordSettings, channel: Any) -> bool:
    """Whether the bot answers in this channel (a thread counts as its parent, and a channel
    as its category)."""
    if channel is None:
        return False
    if isinstance(channel, discord.DMChannel | discord.GroupChannel):
        return settings.allow_dms
    if not settings.allowed_channels:
        return True
    return bool(channel_ids(channel) & set(settings.allowed_channels))


def category_id(channel: Any) -> int | None:
    """The category a channel (or a thread's channel) sits in; None when it has none, or when
    a thread's channel is not cached, so its category cannot be known."""
    try:
        return getattr(channel, "category_id", None)
    except discord.ClientException:  # raised by Thread.category_id without its parent
        return None


def channel_ids(channel: Any) -> set[int]:
    """A channel's id with its parent's and its category's: a thread follows its channel's
    rules, and a channel its category's. An instructor who names a category (an exam, a
    hints-only channel, the allowed channels) means every channel in it, including those made
    later, so the category is looked up at each question rather than expanded once."""
    if channel is None:
        return set()
    ids = (channel.id, getattr(channel, "parent_id", None), category_id(channel))
    return {i for i in ids if i is not None}


def is_private(channel: Any) -> bool:
    """Whether a channel is a direct message (or a group DM), outside every course channel;
    an unknown channel counts as one."""
    if isinstance(channel, discord.PartialMessageable):
        return channel.guild_id is None
    return channel is None or isinstance(channel, discord.DMChannel | discord.GroupChannel)


def roles_of(user: discord.abc.User) -> list[discord.Role]:
    """The guild roles of a member (none for a user outside a guild)."""
    return list(getattr(user, "roles", []))


def has_allowed_role(settings: DiscordSettings, member: discord.Member) -> bool:
    """Whether a member holds one of the allowed roles."""
    return any(r.id in settings.allowed_roles for r in roles_of(member))


async def course_member(
    client: discord.Client, settings: DiscordSettings, user_id: int
) -> discord.Member | None:
    """The user as a member of a course server (asking Discord when not cached), or None."""
    for guild_id in sorted(settings.served_guilds()):
        guild = client.get_guild(guild_id)
        if guild is None:
            continue
        member = guild.get_member(user_id)
        if member is None:
            try:
                member = await guild.fetch_member(user_id)
            except discord.NotFound:
                continue
            except discord.HTTPException as exc:
                log.warning("could not look up user %s in server %s: %s", user_id, guild_id, exc)
                continue
        return member
    return None


async def member_allowed(
    client: discord.Client, settings: DiscordSettings, user: discord.abc.User
) -> bool:
    """Whether a user holds an allowed role (everyone, when none are configured); outside a
    server (a DM) the roles are those the user holds in the course server."""
    if not settings.allowed_roles:
        return True
    if isinstance(user, discord.Member):
        return has_allowed_role(settings, user)
    member = await course_member(client, settings, user.id)
    return member is not None and has_allowed_role(settings, member)


def is_instructor(
    settings: DiscordSettings, user: discord.abc.User, perms: discord.Permissions
) -> bool:
    """Manage Server, or one of the configured instructor roles (by id or name)."""
    if perms.manage_guild or perms.administrator:
        return True
    wanted = {str(r).casefold() for r in settings.instructor_roles}
    return any(str(r.id) in wanted or r.name.casefold() in wanted for r in roles_of(user))


def is_ta(settings: DiscordSettings, user: discord.abc.User, perms: discord.Permissions) -> bool:
    """An instructor, or a member with the configured TA role."""
    role = settings.ta_role_id
    if role is not None and any(r.id == role for r in roles_of(user)):
        return True
    return is_instructor(settings, user, perms)


def in_ta_channel(settings: DiscordSettings, channel: Any) -> bool:
    """Whether a channel is the TA channel or one of its threads (where TAs answer)."""
    return settings.ta_channel_id is not None and settings.ta_channel_id in channel_ids(channel)


def _settings(interaction: discord.Interaction) -> DiscordSettings:
    return interaction.client.settings.discord  # type: ignore[attr-defined]


async def check_roles(interaction: discord.Interaction) -> None:
    """NotAllowed unless the user holds an allowed role (everyone, when none are set)."""
    if not await member_allowed(interaction.client, _settings(interaction), interaction.user):
        raise NotAllowed("Your roles don't include access to the study assistant.")


async def check_student(interaction: discord.Interaction, what: str) -> None:
    """NotAllowed unless the channel and the user's roles are allowed; ExamInProgress (the
    attempt logged as `what`) where an exam is on, instructors aside."""
    settings = _settings(interaction)
    if interaction.guild_id is None and not settings.allow_dms:
        raise NotAllowed("I only answer in the course server, not in direct messages.")
    if interaction.guild_id is not None and not channel_allowed(settings, interaction.channel):
        raise NotAllowed("I don't answer in this channel; please ask in a course channel.")
    await check_roles(interaction)
    if not is_instructor(settings, interaction.user, interaction.permissions):
        interaction.client.check_exam(  # type: ignore[attr-defined]
            interaction.user.id, interaction.channel, what
        )


async def student_check(interaction: discord.Interaction) -> bool:
    """App-command check: `check_student` under the command's name."""
    await check_student(interaction, interaction.command.name if interaction.command else "?")
    return True


def instructor_check(interaction: discord.Interaction) -> bool:
    """App-command check: only instructors (configured roles or Manage Server), and only
    inside a configured course server: never in a DM or in another server."""
    settings = _settings(interaction)
    if not settings.served_guilds():
        raise NotAllowed(
            "Instructor tools are off until the course server is configured "
            "(STUDY_ASSISTANT_DISCORD__GUILD_ID)."
        )
    if interaction.guild_id not in settings.served_guilds() or interaction.guild is None:
        raise NotAllowed("Instructor tools work only inside the course server.")
    if not is_instructor(settings, interaction.user, interaction.permissions):
        raise NotAllowed("Only instructors can use this command.")
    return True


def ta_check(interaction: discord.Interaction) -> bool:
    """App-command check: only TAs and instructors, and only inside a course server."""
    settings = _settings(interaction)
    if interaction.guild is None or interaction.guild_id not in settings.served_guilds():
        raise NotAllowed("TA tools work only inside the course server.")
    if not is_ta(settings, interaction.user, interaction.permissions):
        raise NotAllowed("Only TAs and instructors can use this.")
    return True


async def served_here(interaction: discord.Interaction) -> bool:
    """The command tree's first check: interactions from other servers are refused (with a
    reply) and logged; autocomplete there gets nothing."""
    if guild_served(_settings(interaction), interaction.guild_id):
        return True
    what = interaction.command.name if interaction.command else interaction.type.name
    log.warning("refused /%s from user %s in server %s, which is not a course server",
                what, interaction.user.id, interaction.guild_id)
    if interaction.type is discord.InteractionType.autocomplete:
        return False
    raise NotAllowed(NOT_SERVED)


students_only = app_commands.check(student_check)
instructors_only = app_commands.check(instructor_check)
tas_only = app_commands.check(ta_check)
