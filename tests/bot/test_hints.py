"""Hint mode in Discord: a hints-only channel answers with a marked hint, and protected items
never reach students through /ask, /sources or the passages behind the Sources button."""

from __future__ import annotations

import json

import pytest

from rag.course.protect import ProtectedGuard
from rag.services import Services
from tests.bot.fake_discord import CHANNEL_ID, OTHER_CHANNEL_ID, Person
from tests.bot.test_exam_mode import INSTRUCTOR, feed  # noqa: F401 - the fixture
from tests.bot.test_storage import entry
from tests.rag.answering.test_hints import ASSIGNMENT
from tests.rag.retrieval.test_release_dates import NOW, Clock, ingested_course

QUESTION = "hw-t: what is the goal when the model processes tokens in sequences?"


@pytest.fixture
def course(tmp_path, shared_materials, embedder) -> Services:
    services = ingested_course(tmp_path, shared_materials, embedder, Clock(NOW))
    (services.settings.materials_dir / "assignments").mkdir()
    (services.settings.materials_dir / "assignments" / "hw-t.toml").write_text(ASSIGNMENT)
    return services


async def test_a_hints_only_channel_answers_with_a_marked_hint(feed, course):  # noqa: F811
    harness = await feed(course)
    assert "hints only" in await harness.run("hints only", INSTRUCTOR, on=True)
    assert "💡 Hint" in await harness.run("ask", question="What are tokens?")
    assert "💡 Hint" not in await harness.run("ask", channel=OTHER_CHANNEL_ID,
                                              question="What is the capital of France?")


async def test_protected_items_reach_no_student_text(feed, course):  # noqa: F811
    guard = ProtectedGuard(["predict the next token given the previous ones"])
    harness = await feed(course)
    answer = await harness.run("ask", question=QUESTION)
    passages = await harness.run("sources", query=QUESTION)
    logged = harness.bot.questions.rows()[-1]  # what the Sources button shows
    assert "withheld" in passages and not guard.leaks(passages)
    assert not guard.leaks(answer) and "💡 Hint (Assignment T" in answer
    assert not guard.leaks(json.dumps(json.loads(logged["passages"])))
    assert logged["channel"] == str(CHANNEL_ID)


async def test_the_sources_button_withholds_items_of_an_assignment_opened_after_the_answer(
    make_harness, empty_services
):
    """The passages were logged before the assignment opened: the click must check them
    again against what is open now."""
    harness = await make_harness(empty_services)
    assignments = harness.bot.services.settings.materials_dir / "assignments"
    assignments.mkdir(parents=True, exist_ok=True)
    (assignments / "hw-t.toml").write_text(ASSIGNMENT.replace('opens = "2026-02-01"',
                                                              'opens = "2099-02-01"'))
    secret = "Language models predict the next token given the previous ones."
    passages = ({"source": "guides/llm-basics.md", "page": None, "section": "Tokens",
                 "text": f"{secret} Tokens are pieces of words."},)
    qid = harness.bot.questions.record(entry(passages=passages, channel=str(CHANNEL_ID)))
    harness.bot.services.course.set_open("hw-t", True)  # /assignments open hw-t, a week later
    button = {"type": 2, "style": 1, "label": "Sources", "custom_id": f"sa:src:{qid}"}
    message = harness.fake.message(
        CHANNEL_ID, {"content": "", "components": [{"type": 1, "components": [button]}]})
    token = harness.click(message, f"sa:src:{qid}", Person(1001, "ana"))
    await harness.settle()
    shown = json.dumps([r.payload for r in harness.for_token(token)])
    assert "Tokens are pieces of words" in shown  # the rest of the passage is still shown
    assert not ProtectedGuard(["predict the next token given the previous ones"]).leaks(shown)
