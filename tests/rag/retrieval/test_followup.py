"""Follow-up questions made searchable without a model: detection, carried terms, checks."""

import pytest

from rag.retrieval.followup import (
    acceptable_rewrite,
    asks_anew,
    key_terms,
    needs_context,
    standalone_query,
)


@pytest.mark.parametrize(
    "question",
    [
        "and how much memory does it save?",
        "what about top-k?",
        "how big was it?",
        "why does that work?",
        "and top-k?",
        "how is sentencepiece different?",
    ],
)
def test_questions_that_lean_on_the_conversation_are_follow_ups(question: str) -> None:
    assert needs_context(question)


@pytest.mark.parametrize(
    "question",
    [
        "How many layers does the base Transformer have?",
        "What training data did LLaMA use for pretraining?",
    ],
)
def test_questions_that_name_their_topic_stand_alone(question: str) -> None:
    assert not needs_context(question)


@pytest.mark.parametrize(
    ("question", "anew"),
    [
        ("what is BPE?", True),
        ("whats perplexity", True),
        ("explain top-p sampling", True),
        ("what is a reward model?", True),
        ("what is the formula?", False),
        ("what are they?", False),
        ("what is that?", False),
        ("explain more", False),
        ("what is an example?", False),
        ("what about BPE?", False),
        ("how much memory?", False),
    ],
)
def test_a_short_question_may_ask_what_a_new_subject_is(question: str, anew: bool) -> None:
    assert asks_anew(question) is anew


def test_key_terms_keep_the_students_spelling_and_drop_question_words() -> None:
    assert key_terms("What is PagedAttention in vLLM?") == "PagedAttention vLLM"
    assert key_terms("Explain the Transformer's base model.") == "Transformer base model"


def test_a_follow_up_carries_the_previous_questions_key_terms() -> None:
    query = standalone_query("and how much memory does it save?", ["What is QLoRA?"])
    assert query == "QLoRA: and how much memory does it save?"


def test_a_follow_up_of_a_follow_up_carries_both_earlier_questions() -> None:
    earlier = ["What is PagedAttention?", "how does it share memory?"]
    query = standalone_query("and what does it cost?", earlier)
    assert query.startswith("PagedAttention share memory")


def test_a_standalone_question_or_a_first_question_is_searched_as_asked() -> None:
    question = "How many layers does the base Transformer have?"
    assert standalone_query(question, ["What is QLoRA?"]) == question
    assert standalone_query("and top-k?", []) == "and top-k?"


@pytest.mark.parametrize(
    ("rewrite", "ok"),
    [
        ("How much memory does QLoRA save?", True),
        ("What does QLoRA reduce memory usage to", True),
        ("The answer lies within the context of dynamic caches.", False),
        ("How much memory does it save?", False),  # the reference was not resolved
        ("Rewritten question: how much memory does QLoRA save?", False),
        ("How much memory does QLoRA save?\nIt saves a lot.", False),
        ("", False),
    ],
)
def test_only_a_short_resolved_question_is_an_acceptable_rewrite(rewrite: str, ok: bool) -> None:
    earlier = ["What is QLoRA?"]
    assert acceptable_rewrite(rewrite, "and how much memory does it save?", earlier) is ok
