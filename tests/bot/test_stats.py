"""/stats through the real command tree: the usage chart attached, the coverage gaps listed."""

from __future__ import annotations

import dataclasses
import io
import time

from PIL import Image

from bot.limits import payload_problems
from tests.bot.fake_discord import MANAGE_GUILD_PERMISSIONS, Person
from tests.bot.test_demos import uploads
from tests.bot.test_storage import entry
from tests.bot.test_usage import KV_CACHE, MIXTURE_OF_EXPERTS, plant_gaps
from tests.bot.test_usage_chart import PNG_SIGNATURE

ADMIN = Person(1003, "admin", roles=(), permissions=MANAGE_GUILD_PERMISSIONS)
PING = "@everyone <@900000000000001001> who left a **blue umbrella** in room 204?"


async def stats_reply(harness, days: int = 7) -> dict:
    """Run /stats as an instructor; return the final edit of the reply."""
    token = harness.command("stats", ADMIN, days=days)
    await harness.settle()
    return harness.for_token(token)[-1].payload


async def test_stats_attaches_the_usage_chart_as_a_png_and_keeps_the_summary(
    make_harness, empty_services
):
    harness = await make_harness(empty_services)
    plant_gaps(harness.bot.questions, time.time())
    files = uploads(harness)
    final = await stats_reply(harness)
    summary = final["embeds"][0]
    assert summary["title"] == "Usage over the last 7 days"
    assert {f["name"]: f["value"] for f in summary["fields"]}["Questions"] == "11"
    assert summary["image"]["url"] == "attachment://usage.png"
    (name, png), = files
    assert name == "usage.png" and png.startswith(PNG_SIGNATURE)
    assert Image.open(io.BytesIO(png)).size == (700, 500)


async def test_stats_lists_the_gap_groups_with_counts_and_pings_nobody(
    make_harness, empty_services
):
    harness = await make_harness(empty_services)
    plant_gaps(harness.bot.questions, time.time())
    harness.bot.questions.record(entry(PING, abstained=True))
    final = await stats_reply(harness)
    gaps = final["embeds"][1]
    lines = gaps["description"].splitlines()
    assert len(lines) == 5  # two groups of 4, three questions asked once
    assert lines[0].startswith("**4×** ") and lines[1].startswith("**4×** ")
    assert {lines[0].split("** ")[1].split(" (")[0], lines[1].split("** ")[1].split(" (")[0]} \
        <= {*KV_CACHE, *MIXTURE_OF_EXPERTS}
    for mention in ("@everyone", "<@900000000000001001>", "**blue umbrella**"):
        assert mention not in gaps["description"]
    assert final["allowed_mentions"] == {"parse": []}
    assert payload_problems(final) == []


async def test_stats_without_gaps_says_so(make_harness, empty_services):
    harness = await make_harness(empty_services)
    harness.bot.questions.record(entry("What is LoRA?"))
    final = await stats_reply(harness, days=1)
    assert final["embeds"][1]["description"].startswith("No question went unanswered")


async def test_a_second_stats_embeds_only_the_gap_questions_asked_since(
    make_harness, empty_services, counting
):
    harness = await make_harness(dataclasses.replace(empty_services, embedder=counting))
    plant_gaps(harness.bot.questions, time.time())
    await stats_reply(harness)
    assert counting.texts == 9  # ten gap questions, one asked twice
    harness.bot.questions.record(entry(PING, abstained=True))
    final = await stats_reply(harness)
    assert counting.texts == 10
    assert len(final["embeds"][1]["description"].splitlines()) == 5
