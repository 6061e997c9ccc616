"""Release dates in Discord: /sources hides unreleased material from students, instructors may
preview it privately, and /reingest's summary lists what is scheduled."""

from __future__ import annotations

import pytest

from rag.services import Services
from tests.bot.fake_discord import MANAGE_GUILD_PERMISSIONS, Person
from tests.bot.test_commands import callback
from tests.rag.retrieval.test_release_dates import NOW, QUESTION, Clock, ingested_course

STUDENT = Person(1001, "ana")
INSTRUCTOR = Person(2001, "prof", roles=(), permissions=MANAGE_GUILD_PERMISSIONS)


@pytest.fixture
def course(tmp_path, shared_materials, embedder) -> Services:
    return ingested_course(tmp_path, shared_materials, embedder, Clock(NOW))


def shown_sources(harness, token: str) -> str:
    embeds = [e for r in harness.for_token(token) for e in r.payload.get("embeds") or []]
    return " ".join(str(e) for e in embeds)


async def test_students_do_not_see_unreleased_material_and_cannot_preview_it(
    make_harness, course
):
    harness = await make_harness(course)
    search = harness.command("sources", STUDENT, query=QUESTION)
    preview = harness.command("sources", STUDENT, query=QUESTION, preview=True)
    await harness.settle()
    assert "llm-basics.md" in shown_sources(harness, search)
    assert "week7/" not in shown_sources(harness, search)
    refusal = callback(harness, preview).payload["data"]
    assert refusal["flags"] & 64 and "Only instructors" in refusal["content"]


async def test_an_instructor_previews_it_privately(make_harness, course):
    harness = await make_harness(course)
    token = harness.command("sources", INSTRUCTOR, query=QUESTION, preview=True)
    await harness.settle()
    assert callback(harness, token).payload["data"]["flags"] & 64
    assert "week7/quorvex.md" in shown_sources(harness, token)


async def test_the_reingest_summary_lists_scheduled_files(make_harness, course):
    (course.settings.materials_dir / "week7" / "more.md").write_text("# More\n\nMore Quorvex.\n")
    harness = await make_harness(course)
    token = harness.command("reingest", INSTRUCTOR)
    await harness.settle()
    fields = {f["name"]: f["value"] for f in harness.for_token(token)[-1].payload["embeds"][0]
              ["fields"]}
    scheduled = fields["Scheduled, hidden from students (2)"]
    assert "week7/more.md: <t:" in scheduled and "week7/quorvex.md" in scheduled
