"""Release dates in Discord: /sources hides unreleased material from students, instructors may
preview it privately, and /reingest's summary lists what is scheduled."""

from __future__ import annotations

import json
import shutil

import pytest

from rag.services import Services, build_services
from tests.bot.fake_discord import MANAGE_GUILD_PERMISSIONS, Person
from tests.bot.test_commands import callback
from tests.conftest import make_settings, run
from tests.rag.retrieval.test_release_dates import (
    NOW,
    QUESTION,
    TOMORROW,
    WEEK7,
    Clock,
    ingested_course,
)

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


async def answered_from_week7(make_harness, tmp_path, shared_materials, embedder):
    """An answer built from week 7's note (and the guide), released by mistake. The harness,
    the answer's message and its question id."""
    root = tmp_path / "materials"
    (root / "week7").mkdir(parents=True)
    shutil.copy(shared_materials / "guides" / "llm-basics.md", root / "llm-basics.md")
    (root / "week7" / "quorvex.md").write_text(WEEK7)
    services = build_services(make_settings(tmp_path / "data", materials_dir=root),
                              embedder=embedder, clock=Clock(NOW))
    services.retriever.refresh_interval_s = 0.0
    assert run(root, services, now=NOW).ok
    harness = await make_harness(services)
    token = harness.command("ask", STUDENT, question=QUESTION)
    await harness.settle()
    answer = harness.fake.originals[token]
    assert "week7/quorvex.md" in json.dumps(answer)
    return harness, answer, harness.bot.questions.rows()[-1]["id"]


async def answered_then_postponed(make_harness, tmp_path, shared_materials, embedder):
    """`answered_from_week7`; then the note's release is postponed to tomorrow and
    re-ingested."""
    harness, answer, qid = await answered_from_week7(make_harness, tmp_path, shared_materials,
                                                     embedder)
    root = harness.bot.services.settings.materials_dir
    (root / "schedule.toml").write_text(f'[[release]]\npath = "week7/*"\nat = "{TOMORROW}"\n')
    assert run(root, services=harness.bot.services, now=NOW).ok
    return harness, answer, qid


async def test_the_sources_button_hides_material_whose_release_was_postponed(
    make_harness, tmp_path, shared_materials, embedder
):
    harness, answer, qid = await answered_then_postponed(make_harness, tmp_path,
                                                         shared_materials, embedder)
    click = harness.click(answer, f"sa:src:{qid}", STUDENT)
    await harness.settle()
    shown = json.dumps(callback(harness, click).payload["data"]["embeds"])
    assert "llm-basics.md" in shown and "week7/quorvex.md" not in shown


async def test_the_sources_button_shows_an_instructor_material_whose_release_was_postponed(
    make_harness, tmp_path, shared_materials, embedder
):
    harness, answer, qid = await answered_then_postponed(make_harness, tmp_path,
                                                         shared_materials, embedder)
    click = harness.click(answer, f"sa:src:{qid}", INSTRUCTOR)
    await harness.settle()
    assert "week7/quorvex.md" in json.dumps(callback(harness, click).payload["data"]["embeds"])


async def test_the_sources_button_leaves_out_a_file_withdrawn_since_and_says_so(
    make_harness, tmp_path, shared_materials, embedder
):
    """The instructor deleted week 7's note and re-ingested: the question log still holds its
    passages, and no one may see them under an old answer any more."""
    harness, answer, qid = await answered_from_week7(make_harness, tmp_path, shared_materials,
                                                     embedder)
    (harness.bot.services.settings.materials_dir / "week7" / "quorvex.md").unlink()
    reingest = harness.command("reingest", INSTRUCTOR)
    await harness.settle()
    assert "Removed (1)" in json.dumps(harness.for_token(reingest)[-1].payload)
    for person in (STUDENT, INSTRUCTOR):
        click = harness.click(answer, f"sa:src:{qid}", person)
        await harness.settle()
        data = callback(harness, click).payload["data"]
        shown = json.dumps(data["embeds"])
        assert "llm-basics.md" in shown and "quorvex" not in shown.lower(), person.name
        assert "withdrawn from the course materials" in data["content"], person.name
        assert "quorvex" not in data["content"].lower()
