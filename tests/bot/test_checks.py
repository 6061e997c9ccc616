"""/hallucination and /compare through the real command tree, and the grounding badge on /ask,
with the real index of the course guides and the real local models."""

from __future__ import annotations

import dataclasses
import logging
import re

from bot.limits import payload_problems
from bot.render_demos import run_embed
from rag.answering.assistant import Assistant
from rag.demos.compare import NOT_COVERED, ModelRun
from rag.services import Services
from tests.bot.conftest import Harness
from tests.bot.fake_discord import Person

STUDENT = Person(1001, "ana")
IN_SCOPE = "What is a Transformer, in simple terms?"


def assert_safe(harness: Harness) -> None:
    """Every message the bot sent parses no mentions and fits Discord's limits."""
    for r in harness.fake.sent_messages():
        assert r.message.get("allowed_mentions") == {"parse": []}, r.path
        assert payload_problems(r.message) == [], r.path


def with_badge(services: Services) -> Services:
    """The same index and models, with the grounding badge switched on."""
    answer = services.settings.answer.model_copy(update={"grounding_badge": True})
    settings = services.settings.model_copy(update={"answer": answer})
    assistant = Assistant(services.retriever, services.models, answer, settings.llm)
    return dataclasses.replace(services, settings=settings, assistant=assistant)


async def test_the_commands_are_synced_with_their_options(make_harness, guides_services):
    harness = await make_harness(guides_services)
    synced = [r for r in harness.fake.requests if r.path.endswith("/commands")][-1]
    commands = {c["name"]: c for c in synced.payload["__list__"]}
    assert [o["name"] for o in commands["hallucination"]["options"]] == ["question", "model"]
    assert commands["hallucination"]["options"][1]["autocomplete"]
    assert [o["name"] for o in commands["compare"]["options"]] == ["question", "models", "rag"]


# These demos generate twice and check every claim; the first to run in a test session also
# converts its models. settle() is a hang detector, not a speed check (docs/benchmarks.md has
# the timings), so they get longer than the default on a busy two-core machine.
DEMO_TIMEOUT_S = 300.0


async def test_hallucination_shows_progress_then_both_answers_and_each_claim(
    make_harness, guides_services
):
    harness = await make_harness(guides_services)
    token = harness.command("hallucination", STUDENT, question=IN_SCOPE)
    await harness.settle(timeout=DEMO_TIMEOUT_S)
    requests = harness.for_token(token)
    assert requests[0].payload == {"type": 5}
    statuses = [r.payload["embeds"][0]["description"] for r in requests[1:]
                if r.method == "PATCH" and "title" not in r.payload["embeds"][0]]
    assert any("closed-book" in s for s in statuses)
    assert any("Checking each claim" in s for s in statuses)
    final = harness.fake.originals[token]["embeds"][0]
    assert final["title"] == "Closed book vs retrieval · smollm2"
    fields = [f["name"] for f in final["fields"]]
    assert fields[0].startswith("Closed book · Grounded") and fields[1].startswith(
        "With retrieval · Grounded")
    claims = " ".join(e["description"] for r in requests if r.method == "POST"
                      and r.message for e in r.message.get("embeds", []))
    assert "claims**" in claims and ("✅" in claims or "❔" in claims or "❌" in claims)
    assert_safe(harness)


async def test_compare_shows_each_model_side_by_side(make_harness, guides_services):
    harness = await make_harness(guides_services)
    token = harness.command("compare", STUDENT, question=IN_SCOPE,
                            models="smollm2, gemma3-base")
    await harness.settle(timeout=DEMO_TIMEOUT_S)
    head, *runs = harness.fake.originals[token]["embeds"]
    assert head["title"] == "Compare · with retrieval" and "one after another" in head[
        "description"]
    assert [r["title"] for r in runs] == ["smollm2 (local)", "gemma3-base (local)"]
    for run in runs:
        values = {f["name"]: f["value"] for f in run["fields"]}
        assert values["Cost"] == "local" and values["Grounded"] != "—"
        assert values["First token"].endswith(" s") and " / " in values["Tokens in / out"]
    assert_safe(harness)


async def test_a_bad_model_list_gets_a_private_reply_before_any_work(
    make_harness, guides_services
):
    harness = await make_harness(guides_services)
    token = harness.command("compare", STUDENT, question=IN_SCOPE, models="smollm2")
    await harness.settle()
    (reply,) = harness.for_token(token)
    assert reply.payload["type"] == 4 and reply.payload["data"]["flags"] & 64
    assert "2 to 4 models" in reply.payload["data"]["content"]
    assert harness.bot.questions.rows() == []


async def test_the_grounding_badge_shows_on_ask_only_when_enabled(make_harness, guides_services):
    footers = []
    for services in (guides_services, with_badge(guides_services)):
        harness = await make_harness(services)
        token = harness.command("ask", STUDENT, question=IN_SCOPE)
        await harness.settle()
        footers.append(harness.fake.originals[token]["embeds"][-1]["footer"]["text"])
        assert_safe(harness)
    plain, badged = footers
    assert plain.startswith("smollm2 · ") and "Grounded" not in plain
    assert badged.startswith("smollm2 · ") and " · Grounded: " in badged
    assert badged.endswith(("claims", "claim", "no checkable claims"))


def test_a_failed_model_in_compare_shows_no_address_or_server_words(caplog):
    error = ("http://10.0.0.5:8000/v1/chat/completions answered HTTP 400: model "
             "/srv/weights/internal-7b is not loaded")
    with caplog.at_level(logging.WARNING, logger="bot"):
        embed = run_embed(ModelRun("vllm", "openai", False, error=error))
    assert "10.0.0.5" not in embed.description and "internal-7b" not in embed.description
    assert "could not answer" in embed.description and error in caplog.text
    refused = run_embed(ModelRun("smollm2", "local", False, error=NOT_COVERED))
    assert NOT_COVERED in refused.description  # the gate's own words stay


async def test_compare_accuracy_shows_progress_key_facts_time_and_cost(
    make_harness, guides_services
):
    harness = await make_harness(guides_services, rate_burst=1, rate_per_minute=1)
    token = harness.command("compare_accuracy", STUDENT, models="smollm2", questions=1)
    again = harness.command("compare_accuracy", STUDENT, models="smollm2", questions=1)
    await harness.settle(timeout=600)
    refused = harness.for_token(again)
    assert len(refused) == 1 and refused[0].payload["data"]["flags"] & 64  # rate-limited
    requests = harness.for_token(token)
    statuses = [r.payload["embeds"][0]["description"] for r in requests[1:-1]]
    assert "Question 1/1: smollm2…" in statuses
    final = requests[-1].payload["embeds"][0]
    assert final["title"] == "Key facts · 1 course questions"
    assert re.search(r"smollm2 +local +[01]/1 \(\d+%\) +[01]/1 \(\d+%\) +[\d.]+ s +local",
                     final["description"])
    (field,) = final["fields"]
    assert field["name"] == "smollm2 · closed book, with retrieval"
    assert field["value"].endswith("What does LoRA stand for?")
    assert_safe(harness)
