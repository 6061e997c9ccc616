"""The hallucination demo on the real notes index with the real local model, and its CLI."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from cli.checks import register
from rag.demos.common import DemoInputError
from rag.demos.hallucination import (
    CLOSED_BOOK,
    WITH_RETRIEVAL,
    closed_book_messages,
    hallucination_demo,
)

QUESTION = "What is LoRA and why does it use low-rank matrices?"


def test_the_closed_book_prompt_is_the_bare_question():
    messages = closed_book_messages(QUESTION)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == QUESTION
    assert "passage" not in messages[0]["content"].lower()


async def test_both_answers_come_from_the_same_model_and_are_checked_against_the_same_passages(
    notes_services, checker
):
    assistant = notes_services.assistant
    demo = await hallucination_demo(assistant, checker, QUESTION)
    assert demo.model == "smollm2"
    assert (demo.closed_book.mode, demo.with_retrieval.mode) == (CLOSED_BOOK, WITH_RETRIEVAL)
    # Greedy decoding: the closed-book answer is the model's answer to the bare prompt, and
    # the grounded one is exactly what /ask answers in the generative (unverified) style.
    chat = assistant.models.get("smollm2")
    bare = await chat.complete(closed_book_messages(QUESTION), max_tokens=32, temperature=0)
    assert demo.closed_book.text == bare.text.strip()
    asked = await assistant.answer(QUESTION, style="generative")
    assert demo.with_retrieval.text == asked.text and not demo.with_retrieval.refused
    assert [h.chunk.id for h in demo.passages] == [h.chunk.id for h in asked.retrieved]
    for answer in (demo.closed_book, demo.with_retrieval):
        assert answer.grounding == checker.check(answer.text, demo.passages)
        assert answer.seconds > 0


async def test_a_question_the_notes_do_not_cover_is_answered_closed_book_only(
    notes_services, checker
):
    demo = await hallucination_demo(notes_services.assistant, checker, "Who painted the Mona Lisa?")
    assert demo.with_retrieval.refused
    assert demo.with_retrieval.grounding.claims == ()
    assert demo.closed_book.text and not demo.closed_book.refused


async def test_an_unknown_model_is_a_clear_error_before_any_generation(notes_services, checker):
    with pytest.raises(DemoInputError, match="Unknown model 'gpt-9'"):
        await hallucination_demo(notes_services.assistant, checker, QUESTION, model="gpt-9")


def test_the_cli_prints_both_answers_with_each_claims_verdict(cli_env):
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["hallucination", QUESTION])
    assert result.exit_code == 0, result.output
    assert "closed book ·" in result.stdout and "with retrieval ·" in result.stdout
    assert "Grounded:" in result.stdout
    assert "[supported]" in result.stdout or "[not found in the materials]" in result.stdout
    as_json = CliRunner().invoke(app, ["hallucination", "", "--json"])
    assert as_json.exit_code == 1 and "Please type a question" in as_json.output
    assert "Traceback" not in as_json.output


def test_the_cli_json_has_both_answers_and_the_passages(cli_env):
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["hallucination", "Who painted the Mona Lisa?", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    closed, grounded = data["answers"]
    assert (closed["mode"], grounded["mode"]) == (CLOSED_BOOK, WITH_RETRIEVAL)
    assert grounded["refused"] and grounded["grounding"]["grounded_fraction"] is None
    assert data["passages"] and data["model"] == "smollm2"
