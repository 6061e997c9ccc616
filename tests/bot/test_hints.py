"""Hint mode in Discord: a hints-only channel answers with a marked hint, and protected items
never reach students through /ask, /sources or the passages behind the Sources button."""

from __future__ import annotations

import json

import pytest

from rag.course.protect import ProtectedGuard
from rag.llm.base import Completion
from rag.services import Services
from tests.bot.conftest import Harness
from tests.bot.fake_discord import CHANNEL_ID, OTHER_CHANNEL_ID, Person
from tests.bot.test_exam_mode import (  # noqa: F401 - feed is the fixture
    EXAM_ROOM,
    EXAMS_CATEGORY,
    INSTRUCTOR,
    command_payload,
    exams_category,
    feed,
    reply_text,
)
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


async def test_a_hints_only_category_answers_with_hints_in_its_channels(feed, course):  # noqa: F811
    harness = await feed(course)
    exams_category(harness)
    # The runner's `channel` is where a command is run: the command's own option goes raw.
    token = harness.feed(command_payload("hints only", INSTRUCTOR, CHANNEL_ID,
                                         {"on": True, "channel": f"<#{EXAMS_CATEGORY}>"}))
    await harness.settle()
    told = reply_text(harness, token)
    assert "now gets hints only" in told and "every channel in it" in told
    assert "💡 Hint" in await harness.run("ask", channel=EXAM_ROOM, question="What are tokens?")
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
    make_harness, course
):
    """The passages were logged before the assignment opened: the click must check them
    again against what is open now."""
    harness = await make_harness(course)
    assignments = harness.bot.services.settings.materials_dir / "assignments"
    (assignments / "hw-t.toml").write_text(ASSIGNMENT.replace('opens = "2026-02-01"',
                                                              'opens = "2099-02-01"'))
    secret = "Language models predict the next token given the previous ones."
    # A file of the index: the button leaves out the passages of files withdrawn since.
    passages = ({"source": "llm-basics.md", "page": None, "section": "Tokens",
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


class SolvingModel:
    """A chat backend that solves the assignment's task outright, as a capable served model
    would: the model is a dependency here; the course rules are under test."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def complete(self, messages, *, max_tokens, temperature, stop=None):  # type: ignore[no-untyped-def]
        return Completion(SOLUTION, 10, 10, 0.01, 0.02)

    async def stream(self, messages, *, max_tokens, temperature, stop=None):  # type: ignore[no-untyped-def]
        yield SOLUTION

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        """Nothing to close."""


SOLUTION = "Split it into the + cat + was + play + ing, then predict the next token."
AIMED_AT_T = "hw-t: how do I split 'the cat was playing' into tokens?"


async def solving_bot(make_harness, services: Services, **discord) -> Harness:
    """A bot whose models solve assignment T (open), with nothing ingested."""
    harness = await make_harness(services, **discord)
    assignments = harness.bot.services.settings.materials_dir / "assignments"
    assignments.mkdir(parents=True, exist_ok=True)
    (assignments / "hw-t.toml").write_text(ASSIGNMENT)
    harness.bot.services.course.set_open("hw-t", True)  # /assignments open hw-t
    for name in harness.bot.services.models.names():
        harness.bot.services.models._models[name] = SolvingModel(name)
    return harness


@pytest.fixture
async def solving(make_harness, empty_services):
    """A bot whose models solve assignment T (open), with nothing ingested."""
    return await solving_bot(make_harness, empty_services)


@pytest.mark.parametrize("command", ["compare", "hallucination"])
async def test_model_demos_refuse_a_question_aimed_at_an_open_assignment(solving, command):
    options = {"question": AIMED_AT_T}
    token = solving.command(command, Person(1001, "ana"), **options)
    await solving.settle()
    shown = json.dumps([r.payload for r in solving.for_token(token)])
    assert "Assignment T" in shown and "/ask" in shown
    assert "play + ing" not in shown


@pytest.mark.parametrize("command", ["compare", "hallucination"])
async def test_a_question_refused_for_an_open_assignment_costs_no_turn(
    make_harness, empty_services, command
):
    """One turn a minute: the refusal gives it back, so the same question asked again is
    refused for the assignment again, not for asking too quickly."""
    harness = await solving_bot(make_harness, empty_services, rate_burst=1, rate_per_minute=1)
    for _ in range(2):
        shown = await harness.shown_for(command, Person(1001, "ana"), question=AIMED_AT_T)
        assert "Assignment T" in shown and "try again" not in shown


async def test_a_demo_answer_holding_a_protected_item_is_withheld(solving):
    """A question the detector does not tie to the assignment still gets no solution text."""
    token = solving.command("compare", Person(1001, "ana"), rag=False,
                            question="What are tokens made of?")
    await solving.settle()
    shown = json.dumps([r.payload for r in solving.for_token(token)])
    assert "withheld" in shown
    assert not ProtectedGuard(["play + ing"]).leaks(shown)
