"""The model comparison on the real notes index: local models, a real `transformers serve` on
loopback (the session's shared server), a dead endpoint, timeouts, the CLI."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.checks import register
from rag.answering.assistant import Assistant
from rag.answering.faithfulness import has_key_fact
from rag.demos.compare import (
    NOT_COVERED,
    CompareInputError,
    ModelRun,
    choose_models,
    compare_models,
    cost_usd,
)
from rag.demos.compare_accuracy import accuracy_table, built_in_questions, compare_accuracy
from rag.llm.registry import ModelRegistry
from rag.llm.settings import LLMSettings, ModelSpec
from rag.services import Services
from tests.conftest import REPO
from tests.rag.demos.conftest import CHECKS_LLM
from tests.rag.llm.conftest import Served, free_port

QUESTION = "What is PagedAttention and why does vLLM use it?"
PRICE_IN, PRICE_OUT = 2.0, 8.0  # dollars per million tokens, for the served model


@pytest.fixture
def server(served: Served) -> Served:
    """The session's real OpenAI-compatible server (SmolLM2 under `transformers serve`)."""
    return served


def with_served(services: Services, served: Served) -> Services:
    """The notes services with the server registered as model `served` (sharing the loader)."""
    spec = ModelSpec(name="served", backend="openai", model=served.model,
                     base_url=served.base_url, price_in_per_mtok=PRICE_IN,
                     price_out_per_mtok=PRICE_OUT)
    # Validated, so the built-in local models are merged in beside it.
    llm = LLMSettings.model_validate({**CHECKS_LLM.model_dump(exclude={"models"}),
                                      "models": {"served": spec}})
    models = ModelRegistry(llm, Path(services.settings.data_dir), loader=services.models.loader)
    assistant = Assistant(services.retriever, models, services.settings.answer, llm)
    return dataclasses.replace(services, models=models, assistant=assistant)


def test_bad_model_lists_are_rejected_with_a_reason():
    known = ["smollm2", "gemma3-base", "served"]
    assert choose_models(None, known) == ["smollm2", "gemma3-base"]
    for models, reason in (
        (["smollm2"], "2 to 4 models"),
        (["smollm2", "gpt-9"], "Unknown model 'gpt-9'"),
        (["smollm2", "smollm2"], "only once"),
        (["smollm2", "gemma3-base", "served", "a", "b"], "Unknown model 'a'"),
    ):
        with pytest.raises(CompareInputError, match=reason):
            choose_models(models, known)
    with pytest.raises(CompareInputError, match="2 to 4 models"):
        choose_models(["a", "b", "c", "d", "e"], list("abcde"))


async def test_local_models_answer_one_after_another_with_grounding(notes_services, checker):
    result = await compare_models(notes_services.assistant, checker, QUESTION)
    smol, gemma = result.runs
    assert (smol.model, gemma.model) == ("smollm2", "gemma3-base")
    assert smol.ok and gemma.ok, (smol.error, gemma.error)
    assert smol.finished_s <= gemma.started_s  # the CPU is shared: one at a time
    assert "one after another" in result.note
    for run in result.runs:
        assert run.cost_label == "local" and run.cost_usd is None
        assert 0 < run.tokens_out <= CHECKS_LLM.max_new_tokens and run.tokens_in > 100
        assert run.first_token_s is not None and 0 < run.first_token_s <= run.total_s
        assert run.tokens_per_s == pytest.approx(run.tokens_out / run.total_s)
        assert run.grounding == checker.check(run.text, result.passages)


async def test_a_served_model_runs_beside_the_local_one_and_is_priced(
    notes_services, checker, server
):
    services = with_served(notes_services, server)
    try:
        result = await compare_models(services.assistant, checker, QUESTION,
                                      ["smollm2", "served"])
    finally:
        await services.models.aclose()
    local, remote = result.runs
    assert local.ok and remote.ok, (local.error, remote.error)
    assert remote.backend == "openai" and remote.text
    assert remote.cost_usd == pytest.approx(
        (remote.tokens_in * PRICE_IN + remote.tokens_out * PRICE_OUT) / 1e6)
    assert remote.cost_label.startswith("$") and remote.tokens_in > 100
    assert remote.grounding is not None and local.grounding is not None
    # Concurrent: each started before the other finished.
    assert remote.started_s < local.finished_s and local.started_s < remote.finished_s
    assert "ran concurrently" in result.note


async def test_key_fact_rates_of_a_local_and_a_served_model_with_time_and_cost(
    notes_services, server
):
    services = with_served(notes_services, server)
    questions = built_in_questions()[:1]
    try:
        result = await compare_accuracy(services.assistant, ["smollm2", "served"], questions)
    finally:
        await services.models.aclose()
    assert [(r.run.model, r.question, r.rag) for r in result.runs] == [
        (m, 0, rag) for m in ("smollm2", "served") for rag in (False, True)]
    for r in result.runs:
        assert r.run.ok and r.run.text, r.run.error
        assert r.key_fact == has_key_fact(r.run.text, questions[r.question].key_facts)
    summary = {m["model"]: m for m in result.as_json()["models"]}
    for model in ("smollm2", "served"):
        hits = sum(bool(r.key_fact) for r in result.of(model, rag=True))
        assert summary[model]["with_retrieval"] == {"key_facts": hits, "answers": 1}
    served_cost = sum(r.run.cost_usd for r in result.of("served"))
    assert summary["served"]["cost"] == f"${served_cost:.4f}"
    assert summary["smollm2"]["cost"] == "local"
    header, rows = accuracy_table(result)
    assert header[2:4] == ("key facts, closed book", "key facts, with retrieval")
    assert [row[:2] for row in rows] == [("smollm2", "local"), ("served", "openai")]


def test_a_served_model_without_a_price_costs_unknown_never_a_guess():
    spec = ModelSpec(name="hosted", backend="openai", model="m", base_url="http://x/v1")
    assert cost_usd(spec, 1000, 100) is None
    run = ModelRun("hosted", "openai", True, "text", tokens_in=1000, tokens_out=100)
    assert run.cost_label == "unknown"
    priced = spec.model_copy(update={"price_in_per_mtok": 2.0, "price_out_per_mtok": 8.0})
    assert cost_usd(priced, 1000, 100) == pytest.approx(0.0028)


def test_the_course_questions_key_facts_come_from_our_own_notes():
    for q in built_in_questions():
        note = (REPO / "course_materials" / q.source).read_text(encoding="utf-8")
        assert has_key_fact(note, q.key_facts), q.question


async def test_a_dead_endpoint_is_marked_failed_and_the_local_model_still_answers(
    notes_services, checker, server
):
    # An endpoint nothing listens on (the session's server stays up for other tests; a
    # server killed mid-stream is tests/rag/llm/test_openai_compat.py's).
    gone = dataclasses.replace(server, base_url=f"http://127.0.0.1:{free_port()}/v1")
    services = with_served(notes_services, gone)
    started = time.perf_counter()
    try:
        result = await compare_models(services.assistant, checker, QUESTION,
                                      ["served", "smollm2"])
    finally:
        await services.models.aclose()
    dead, local = result.runs
    assert not dead.ok and "Cannot connect" in dead.error and "\n" not in dead.error
    assert dead.grounding is None and dead.cost_label == "n/a"
    assert local.ok and local.text and local.grounding is not None
    assert time.perf_counter() - started < 60


async def test_the_overall_timeout_marks_unfinished_models_failed(notes_services, checker):
    await notes_services.models.get("smollm2").load()  # only generation is raced
    started = time.perf_counter()
    result = await compare_models(notes_services.assistant, checker, QUESTION,
                                  ["smollm2", "gemma3-base"], timeout_s=0.3)
    assert time.perf_counter() - started < 5
    assert [r.ok for r in result.runs] == [False, False]
    assert all("timed out" in r.error and "0.3 s" in r.error for r in result.runs)


async def test_with_retrieval_a_question_outside_the_notes_asks_no_model(notes_services, checker):
    result = await compare_models(notes_services.assistant, checker,
                                  "Who painted the Mona Lisa?")
    assert result.refused and result.note == NOT_COVERED
    assert all(not r.ok and r.started_s is None for r in result.runs)


def test_the_cli_compares_closed_book_as_json(cli_env):
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["compare", "What is a token?", "--no-rag", "--json",
                                      "-m", "smollm2", "-m", "gemma3-base"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert not data["rag"] and [r["model"] for r in data["runs"]] == ["smollm2", "gemma3-base"]
    assert all(r["ok"] and r["cost"] == "local" and r["grounding"] is None for r in data["runs"])
    bad = CliRunner().invoke(app, ["compare", "What is a token?", "-m", "smollm2"])
    assert bad.exit_code == 1 and "2 to 4 models" in bad.output
