"""Who may use the bot where: only the course server, instructor rights only there, and role
allow-lists that a direct message cannot get around."""

from __future__ import annotations

import json
import logging

import pytest

from bot.access import NOT_SERVED
from tests.bot.fake_discord import (
    CHANNEL_ID,
    MANAGE_GUILD_PERMISSIONS,
    STRANGER_CHANNEL_ID,
    STRANGER_GUILD_ID,
    STUDENT_ROLE,
    Person,
    button_payload,
    dm_interaction_payload,
    elsewhere,
    guild_payload,
    interaction_payload,
    message_payload,
)
from tests.bot.test_commands import callback
from tests.bot.test_exam_mode import EXAM_ROOM, EXAMS_CATEGORY, exams_category
from tests.bot.test_storage import entry

STUDENT = Person(1001, "ana")
# Manage Server in the stranger's own server: the review's attacker.
STRANGER = Person(6001, "mallory", roles=(), permissions=MANAGE_GUILD_PERMISSIONS)


def stranger_server() -> dict:
    """GUILD_CREATE of a server the course did not configure (someone added the bot there)."""
    payload = guild_payload(guild_id=STRANGER_GUILD_ID,
                            channel_ids=(STRANGER_CHANNEL_ID, STRANGER_CHANNEL_ID + 1))
    payload.pop("unavailable")  # a server just joined, not one coming back online
    return payload


@pytest.mark.parametrize("command", ["stats", "reingest", "sources"])
async def test_commands_from_another_server_are_refused_and_logged(
    make_harness, empty_services, caplog, command
):
    harness = await make_harness(empty_services)
    harness.bot._connection._add_guild_from_data(stranger_server())
    options = {"query": "LoRA"} if command == "sources" else {}
    with caplog.at_level(logging.WARNING, logger="bot"):
        token = harness.feed(elsewhere(interaction_payload(command, options, STRANGER)))
        await harness.settle()
    requests = harness.for_token(token)
    assert len(requests) == 1 and requests[0].payload["data"]["flags"] & 64
    assert requests[0].payload["data"]["content"] == NOT_SERVED
    assert f"server {STRANGER_GUILD_ID}, which is not a course server" in caplog.text


async def test_a_mention_in_another_server_gets_a_short_reply_and_no_answer(
    make_harness, empty_services
):
    harness = await make_harness(empty_services)
    harness.bot._connection._add_guild_from_data(stranger_server())
    me = {"id": str(harness.bot.user.id), "username": "study-assistant", "discriminator": "0",
          "avatar": None, "bot": True}
    payload = elsewhere(message_payload("<@x> What is LoRA?", STRANGER, mentions=[me]))
    harness.fake.install(harness.bot)
    harness.bot._connection.parse_message_create(payload)
    await harness.settle()
    sent = harness.in_channel(STRANGER_CHANNEL_ID)
    assert [r.payload["content"] for r in sent] == [NOT_SERVED]
    assert not any(r.path.endswith("/threads") for r in harness.fake.requests)


async def test_the_bot_leaves_other_servers_when_configured(make_harness, empty_services):
    harness = await make_harness(empty_services, leave_other_guilds=True)
    harness.bot._connection.parse_guild_create(stranger_server())
    harness.bot._connection.parse_guild_create(guild_payload())  # the course server: stays
    await harness.settle()
    assert harness.fake.left_guilds == [STRANGER_GUILD_ID]


async def test_other_servers_are_only_logged_by_default(make_harness, empty_services, caplog):
    harness = await make_harness(empty_services)
    with caplog.at_level(logging.WARNING, logger="bot"):
        harness.bot._connection.parse_guild_create(stranger_server())
        await harness.settle()
    assert harness.fake.left_guilds == []
    assert f"server {STRANGER_GUILD_ID}" in caplog.text


async def test_without_a_configured_server_the_instructor_tools_are_off(
    make_harness, empty_services
):
    harness = await make_harness(empty_services, guild_id=None)
    admin = Person(1003, "admin", roles=(), permissions=MANAGE_GUILD_PERMISSIONS)
    token = harness.command("stats", admin)
    await harness.settle()
    assert "Instructor tools are off" in callback(harness, token).payload["data"]["content"]


async def test_a_direct_message_never_grants_instructor_rights(make_harness, empty_services):
    harness = await make_harness(empty_services, allow_dms=True)
    token = harness.feed(dm_interaction_payload("stats", {}, STRANGER))
    await harness.settle()
    assert "only inside the course server" in callback(harness, token).payload["data"]["content"]


async def test_a_role_allow_list_is_not_bypassed_from_a_direct_message(
    make_harness, empty_services
):
    harness = await make_harness(empty_services, allow_dms=True, allowed_roles=[STUDENT_ROLE])
    outsider = harness.feed(dm_interaction_payload("sources", {"query": "LoRA"}, STRANGER))
    await harness.settle()
    assert "roles" in callback(harness, outsider).payload["data"]["content"]

    harness.fake.members[STUDENT.id] = STUDENT.member()  # a student of the course server
    student = harness.feed(dm_interaction_payload("sources", {"query": "LoRA"}, STUDENT))
    await harness.settle()
    assert "ingested" in harness.for_token(student)[-1].payload["content"]  # past the check


async def test_a_direct_message_from_an_outsider_is_ignored_under_a_role_allow_list(
    make_harness, empty_services
):
    harness = await make_harness(empty_services, allow_dms=True, allowed_roles=[STUDENT_ROLE])
    dm_channel = 920000000000000009
    payload = message_payload("What is LoRA?", STRANGER, dm_channel)
    for key in ("guild_id", "member"):
        payload.pop(key)
    harness.fake.install(harness.bot)
    harness.bot._connection.parse_message_create(payload)
    await harness.settle()
    assert harness.in_channel(dm_channel) == []
    assert CHANNEL_ID not in harness.fake.messages


@pytest.mark.parametrize("custom_id", ["sa:src:1", "sa:vote:up:1"])
async def test_answer_buttons_are_refused_in_another_server(
    make_harness, empty_services, custom_id
):
    harness = await make_harness(empty_services)
    harness.bot._connection._add_guild_from_data(stranger_server())
    harness.bot.questions.record(entry())  # question 1, asked in the course server
    button = {"type": 2, "style": 2, "label": "x", "custom_id": custom_id}
    message = harness.fake.message(STRANGER_CHANNEL_ID, {
        "content": "an old answer", "components": [{"type": 1, "components": [button]}]})
    token = harness.feed(elsewhere(button_payload(message, custom_id, STRANGER)))
    await harness.settle()
    assert callback(harness, token).payload["data"]["content"] == NOT_SERVED
    assert harness.bot.questions.rows()[0]["up"] == 0


@pytest.mark.parametrize("custom_id", ["sa:src:1", "sa:vote:up:1"])
async def test_answer_buttons_are_refused_to_a_member_without_an_allowed_role(
    make_harness, empty_services, custom_id
):
    """A public answer's buttons are visible to the whole channel, guests included."""
    harness = await make_harness(empty_services, allowed_roles=[STUDENT_ROLE])
    harness.bot.questions.record(entry(passages=({"source": "notes/x.md", "page": None,
                                                  "section": "S", "text": "A passage."},)))
    button = {"type": 2, "style": 2, "label": "x", "custom_id": custom_id}
    message = harness.fake.message(CHANNEL_ID, {
        "content": "an answer", "components": [{"type": 1, "components": [button]}]})
    guest = Person(1500, "guest", roles=())
    token = harness.click(message, custom_id, guest)
    await harness.settle()
    assert "roles" in callback(harness, token).payload["data"]["content"]
    assert harness.bot.questions.rows()[0]["up"] == 0
    token = harness.click(message, custom_id, STUDENT)
    await harness.settle()
    assert "roles" not in json.dumps([r.payload for r in harness.for_token(token)])


async def test_an_allowed_category_admits_the_channels_in_it_and_no_others(
    make_harness, empty_services
):
    harness = await make_harness(empty_services, allowed_channels=[EXAMS_CATEGORY])
    exams_category(harness)
    inside = harness.feed(interaction_payload("sources", {"query": "LoRA"}, STUDENT, EXAM_ROOM))
    outside = harness.command("sources", STUDENT, query="LoRA")
    await harness.settle()
    # Inside, the command runs (and finds the index empty); outside, it is refused.
    assert "No course materials" in json.dumps([r.payload for r in harness.for_token(inside)])
    assert "don't answer in this channel" in callback(harness, outside).payload["data"]["content"]
