"""Slash commands through the real CommandTree: help, access, refusals, and what a command
costs in turns (most need no model; a scripted one answers where a question must get its
answer)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bot.limits import payload_problems
from rag.llm.base import BackendUnavailable
from tests.bot.fake_discord import (
    GUILD_ID,
    INSTRUCTOR_ROLE,
    MANAGE_GUILD_PERMISSIONS,
    Fault,
    Person,
)
from tests.bot.test_answers import IN_SCOPE, ScriptedModel, scripted_services
from tests.bot.test_threads import FailingModel

STUDENT = Person(1001, "ana")
INSTRUCTOR_BY_ROLE = Person(1002, "prof", roles=(INSTRUCTOR_ROLE,))
ADMIN = Person(1003, "admin", roles=(), permissions=MANAGE_GUILD_PERMISSIONS)


def callback(harness, token):
    """The interaction's initial response (the callback request)."""
    return next(r for r in harness.for_token(token) if r.path.endswith("/callback"))


async def test_commands_are_synced_to_the_configured_guild_at_startup(make_harness, empty_services):
    harness = await make_harness(empty_services)
    sync = [r for r in harness.fake.requests if r.method == "PUT"]
    assert [r.path for r in sync] == [f"/applications/{harness.bot.application_id}/guilds/"
                                      f"{GUILD_ID}/commands"]
    names = {c["name"] for c in sync[0].payload["__list__"]}
    assert names == {
        "ask", "sources", "help", "reingest", "upload", "stats",
        "nexttoken", "tokenize", "attention", "fewshot", "hallucination", "compare",
        "exam", "assignments", "hints", "fewshot_accuracy", "compare_accuracy", "escalations",
    }


async def test_help_lists_the_commands_privately_with_no_mentions(make_harness, empty_services):
    harness = await make_harness(empty_services)
    token = harness.command("help", STUDENT)
    await harness.settle()
    reply = callback(harness, token)
    assert reply.payload["type"] == 4 and reply.payload["data"]["flags"] & 64
    text = reply.payload["data"]["embeds"][0]["description"]
    assert "/ask" in text and "/sources" in text and "e.g." in text
    # Every command the bot registers, and no other (it once left out five of them).
    synced = next(r for r in harness.fake.requests if r.method == "PUT").payload["__list__"]
    assert set(re.findall(r"\*\*/(\w+)\*\*", text)) == {c["name"] for c in synced}
    assert reply.payload["data"]["allowed_mentions"] == {"parse": []}
    assert payload_problems(reply.message) == []


@pytest.mark.parametrize("command", ["reingest", "stats"])
async def test_students_are_refused_instructor_tools(make_harness, empty_services, command):
    harness = await make_harness(empty_services, instructor_roles=["Instructor"])
    token = harness.command(command, STUDENT)
    await harness.settle()
    reply = callback(harness, token)
    assert reply.payload["type"] == 4 and reply.payload["data"]["flags"] & 64
    assert "Only instructors" in reply.payload["data"]["content"]
    assert len(harness.for_token(token)) == 1  # refused before anything ran


async def test_students_are_refused_uploads(make_harness, empty_services, tmp_path):
    harness = await make_harness(empty_services)
    token = harness.command("upload", STUDENT, _attachment=attachment("notes.md", 10))
    await harness.settle()
    assert "Only instructors" in callback(harness, token).payload["data"]["content"]


@pytest.mark.parametrize("person", [INSTRUCTOR_BY_ROLE, ADMIN], ids=["role", "manage-server"])
async def test_instructors_get_stats(make_harness, empty_services, person):
    harness = await make_harness(empty_services, instructor_roles=["instructor"])
    token = harness.command("stats", person, days=30)
    await harness.settle()
    requests = harness.for_token(token)
    assert requests[0].payload == {"type": 5, "data": {"flags": 64}}  # private thinking
    embed = requests[-1].payload["embeds"][0]
    assert embed["title"] == "Usage over the last 30 days"
    assert {f["name"] for f in embed["fields"]} >= {"Questions", "Abstentions", "Feedback"}


@pytest.mark.parametrize(
    ("question", "says"),
    [("🤔🤔🤔", "written in words"), ("x " * 600, "characters long")],
    ids=["emoji", "too-long"],
)
async def test_an_invalid_question_gets_a_private_reply_and_no_defer(
    make_harness, empty_services, question, says
):
    harness = await make_harness(empty_services, max_question_chars=500)
    token = harness.command("ask", STUDENT, question=question)
    await harness.settle()
    requests = harness.for_token(token)
    assert len(requests) == 1 and requests[0].payload["type"] == 4
    assert says in requests[0].payload["data"]["content"]
    assert requests[0].payload["data"]["flags"] & 64


async def test_questions_outside_the_allowed_channels_are_refused(make_harness, empty_services):
    harness = await make_harness(empty_services, allowed_channels=[123])
    token = harness.command("ask", STUDENT, question="What is LoRA?")
    await harness.settle()
    assert "don't answer in this channel" in callback(harness, token).payload["data"]["content"]


async def test_users_without_an_allowed_role_are_refused(make_harness, empty_services):
    harness = await make_harness(empty_services, allowed_roles=[42])
    token = harness.command("sources", STUDENT, query="LoRA")
    await harness.settle()
    assert "roles" in callback(harness, token).payload["data"]["content"]


async def test_an_unexpected_error_is_logged_with_an_id_the_user_sees(
    make_harness, empty_services, caplog
):
    harness = await make_harness(empty_services)
    harness.bot.questions.close()  # the log's database is gone: an error nobody planned for
    with caplog.at_level(logging.ERROR, logger="bot"):
        token = harness.command("stats", ADMIN)
        await harness.settle()
    shown = harness.for_token(token)[-1].payload["content"]
    error_id = shown.split("`")[1]
    record = next(r for r in caplog.records if error_id in r.getMessage())
    assert record.exc_info is not None and "closed database" in str(record.exc_info[1])


def attachment(name: str, size: int, content_type: str = "text/markdown") -> dict:
    """A resolved attachment as an interaction carries it."""
    from tests.bot.fake_discord import snowflake

    att_id = snowflake()
    return {"id": att_id, "filename": name, "size": size, "content_type": content_type,
            "url": f"https://cdn.discordapp.com/attachments/1/{att_id}/{name}",
            "proxy_url": f"https://media.discordapp.net/attachments/1/{att_id}/{name}"}


async def test_slash_commands_in_dms_are_refused_when_dms_are_off(make_harness, empty_services):
    from tests.bot.fake_discord import dm_interaction_payload

    harness = await make_harness(empty_services, allow_dms=False)
    token = harness.feed(dm_interaction_payload("ask", {"question": "What is LoRA?"}, STUDENT))
    await harness.settle()
    assert "direct messages" in callback(harness, token).payload["data"]["content"]


async def test_a_missing_message_content_intent_is_warned_about_and_dropped(
    make_harness, empty_services, caplog
):
    with caplog.at_level(logging.WARNING, logger="bot"):
        harness = await make_harness(empty_services, app_flags=0)
    assert any("Message Content intent is not enabled" in r.getMessage() for r in caplog.records)
    assert "Developer Portal" in caplog.text
    assert not harness.bot.intents.message_content  # so the gateway does not refuse the login


async def test_messages_that_do_not_mention_the_bot_are_ignored(make_harness, empty_services):
    from tests.bot.fake_discord import CHANNEL_ID

    harness = await make_harness(empty_services)
    before = len(harness.fake.requests)
    harness.post("What is LoRA?", STUDENT, CHANNEL_ID, mention=False)
    await harness.settle()
    assert len(harness.fake.requests) == before


async def test_asking_before_anything_is_ingested_gets_a_friendly_reply(
    make_harness, empty_services
):
    harness = await make_harness(empty_services)
    token = harness.command("ask", STUDENT, question="What is LoRA?")
    await harness.settle()
    requests = harness.for_token(token)
    assert requests[0].payload == {"type": 5}
    assert "No course materials have been ingested yet" in requests[-1].payload["content"]
    assert harness.bot.answerer.queue.active == 0  # the generation slot was given back


DEMOS = {"nexttoken": {"prompt": "The capital of France is"},
         "attention": {"sentence": "The cat sat on the mat"},
         "fewshot": {"task": "Sentiment", "examples": "good => positive", "input": "bad"}}


def answering(guides_services, llm_cache_dir):
    """The guides' index with a scripted model that answers at once: a question there gets
    its answer, and so spends its turn (one that got only an error would not)."""
    model = ScriptedModel("A transformer maps tokens to vectors.")
    return scripted_services(guides_services, llm_cache_dir, model)


@pytest.mark.parametrize("demo", sorted(DEMOS))
async def test_demos_share_the_per_user_rate_limit_with_ask(
    make_harness, guides_services, llm_cache_dir, demo
):
    harness = await make_harness(answering(guides_services, llm_cache_dir), rate_burst=1,
                                 rate_per_minute=1)
    harness.command("ask", STUDENT, question=IN_SCOPE)  # answered: spends the user's one turn
    await harness.settle()
    # The packaged model: /attention needs a local one, which the scripted model is not.
    token = harness.command(demo, STUDENT, **DEMOS[demo], model="smollm2")
    await harness.settle()
    refusal = harness.for_token(token)
    assert len(refusal) == 1 and refusal[0].payload["data"]["flags"] & 64
    assert "try again in" in refusal[0].payload["data"]["content"]


async def test_cheap_commands_have_a_lighter_bucket_of_their_own(
    make_harness, guides_services, llm_cache_dir
):
    harness = await make_harness(answering(guides_services, llm_cache_dir), rate_burst=1,
                                 rate_per_minute=1)
    for _ in range(3):  # three times the burst of /ask, each showing passages: spent
        harness.command("sources", STUDENT, query="LoRA")
    await harness.settle()
    sources = harness.command("sources", STUDENT, query="LoRA")
    tokenize = harness.command("tokenize", STUDENT, text="LoRA")
    await harness.settle()
    for token in (sources, tokenize):
        assert "try again in" in callback(harness, token).payload["data"]["content"]
    ask = harness.command("ask", STUDENT, question="What is LoRA?")
    await harness.settle()
    assert harness.for_token(ask)[0].payload == {"type": 5}  # /ask's own bucket is untouched


REFUSED_DEFER = Fault("POST", r"/interactions/\d+/[^/]+/callback", 404, 10062)  # expired
TURNS = {"ask": {"question": "What is LoRA?"}, "sources": {"query": "LoRA"},
         "tokenize": {"text": "LoRA"}, "hallucination": {"question": "What is LoRA?"},
         "compare": {"question": "What is LoRA?"}}


@pytest.mark.parametrize("command", sorted(TURNS))
async def test_a_turn_whose_defer_discord_refused_is_given_back(
    make_harness, empty_services, command
):
    """Discord refusing the defer (the interaction expired: 404 Unknown interaction) means the
    student got nothing, so the turn is theirs again: every try reaches Discord, none is
    told "try again in" (one more than the light bucket's burst of 3)."""
    harness = await make_harness(empty_services, rate_burst=1, rate_per_minute=1)
    harness.fake.faults.append(REFUSED_DEFER)
    for _ in range(4):
        token = harness.command(command, STUDENT, **TURNS[command])
        await harness.settle()
        assert callback(harness, token).payload.get("type") == 5  # a defer, not a refusal


QUEUED = {**TURNS, "nexttoken": DEMOS["nexttoken"]}


@pytest.mark.parametrize("command", sorted(QUEUED))
async def test_a_command_refused_for_a_full_queue_costs_no_turn(
    make_harness, empty_services, command
):
    """One turn a minute (three for the cheap commands): a command told that the queue is full
    got nothing else, so its turn is given back, to the bucket it came from, and every try
    is told about the queue again, never that the student asks too quickly."""
    harness = await make_harness(empty_services, rate_burst=1, rate_per_minute=1,
                                 max_concurrent=1, max_waiting=0)
    async with harness.bot.answerer.queue.slot():  # an answer is generating; none may wait
        for _ in range(4):
            shown = await harness.shown_for(command, STUDENT, **QUEUED[command])
            assert "a lot of questions" in shown and "asking quickly" not in shown


@asynccontextmanager
async def model_down(harness) -> AsyncIterator[None]:
    """The scripted model's server is down for as long as the block runs."""
    models = harness.bot.services.models._models
    kept = models["scripted"]
    models["scripted"] = FailingModel(BackendUnavailable("connection refused"))
    try:
        yield
    finally:
        models["scripted"] = kept


GIVEN_BACK = {"full queue": (lambda h: h.bot.answerer.queue.slot(), "a lot of questions"),
              "model down": (model_down, "not reachable")}


@pytest.mark.parametrize("refusal", sorted(GIVEN_BACK))
async def test_a_turn_given_back_is_given_back_once(
    make_harness, guides_services, llm_cache_dir, refusal
):
    """Two turns a minute: one spent on a question that got its answer, one taken and given
    back (the queue was full, or the model failed); so one more question is answered, and the
    next is told to wait (a turn given back twice would let it run too)."""
    harness = await make_harness(answering(guides_services, llm_cache_dir), rate_burst=2,
                                 rate_per_minute=1, max_concurrent=1, max_waiting=0)
    during, says = GIVEN_BACK[refusal]

    async def ask() -> str:
        token = harness.command("ask", STUDENT, question=IN_SCOPE)
        await harness.settle()
        return json.dumps([r.payload for r in harness.for_token(token)])

    assert "transformer maps" in await ask()
    async with during(harness):
        assert says in await ask()
    assert "transformer maps" in await ask()
    assert "asking quickly" in await ask()


NOTHING_INGESTED = {c: TURNS[c] for c in ("ask", "sources", "compare")}


@pytest.mark.parametrize("command", sorted(NOTHING_INGESTED))
async def test_a_command_that_found_nothing_ingested_costs_no_turn(
    make_harness, empty_services, command
):
    """One turn a minute (three for /sources): a command that could only say that no course
    materials are ingested yet gave the student nothing else, so its turn is given back and
    every try says so again, never that the student asks too quickly."""
    harness = await make_harness(empty_services, rate_burst=1, rate_per_minute=1)
    for _ in range(4):
        shown = await harness.shown_for(command, STUDENT, **NOTHING_INGESTED[command])
        assert "No course materials" in shown and "asking quickly" not in shown


async def test_sources_waits_for_a_generation_slot_and_shows_its_place(
    make_harness, empty_services
):
    harness = await make_harness(empty_services, max_concurrent=1)
    async with harness.bot.answerer.queue.slot():  # an answer is generating
        token = harness.command("sources", STUDENT, query="LoRA")
        for _ in range(50):
            await asyncio.sleep(0.02)
        shown = [r.payload for r in harness.for_token(token)[1:]]
        assert [p["embeds"][0]["description"][:16] for p in shown] == ["You're #1 in the"]
    await harness.settle()
    assert "No course materials" in harness.for_token(token)[-1].payload["content"]


async def test_a_command_an_unexpected_error_stopped_costs_no_turn(make_harness, empty_services):
    """One turn a minute (three for /sources): a command stopped by an error nobody planned
    for (a bug) showed only the error's id, so the next try runs at once, not told to wait."""
    harness = await make_harness(empty_services, rate_burst=1, rate_per_minute=1)

    def broken(*args, **kwargs):
        raise RuntimeError("an error nobody planned for")

    harness.bot.services.retriever.search = broken
    for command, options in [("sources", {"query": "LoRA"})] * 4 + [
            ("ask", {"question": "What is LoRA?"})] * 2:
        # One after the other: each ends before the next is asked.
        shown = await harness.shown_for(command, STUDENT, **options)
        assert "Something went wrong" in shown and "asking quickly" not in shown, command


async def test_an_error_after_a_public_defer_is_told_privately_and_the_placeholder_removed(
    make_harness, empty_services
):
    harness = await make_harness(empty_services)

    def broken(*args, **kwargs):
        raise RuntimeError("an error nobody planned for")

    harness.bot.services.retriever.search = broken
    token = harness.command("sources", STUDENT, query="What is LoRA?")
    await harness.settle()
    assert callback(harness, token).payload == {"type": 5}  # a public "thinking…"
    deleted, told = harness.for_token(token)[-2:]
    assert deleted.method == "DELETE" and deleted.path.endswith("/messages/@original")
    assert told.method == "POST" and told.payload["flags"] & 64
    assert "Something went wrong" in told.payload["content"]
