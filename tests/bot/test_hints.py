"""Hint mode in Discord: a hints-only channel answers with a marked hint, and protected items
never reach students through /ask, /sources or the passages behind the Sources button."""

from __future__ import annotations

import json

import pytest

from rag.course.protect import ProtectedGuard
from rag.services import Services
from tests.bot.fake_discord import CHANNEL_ID, OTHER_CHANNEL_ID
from tests.bot.test_exam_mode import INSTRUCTOR, feed  # noqa: F401 - the fixture
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
