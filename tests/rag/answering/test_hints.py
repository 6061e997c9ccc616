"""Hint mode on a real index with the real embedder: detection, the hint's shape, no
protected item in any text, and the guarded draft stream."""

from __future__ import annotations

import numpy as np
import pytest

from rag.answering.assistant import Answer, Finished, Token
from rag.answering.course_mode import HINT, guarded
from rag.answering.hints import (
    AssignmentDetector,
    Thresholds,
    shared_details,
    spell_out_abbreviations,
)
from rag.course.assignments import Assignment
from rag.course.protect import ProtectedGuard
from rag.services import Services
from tests.rag.retrieval.test_release_dates import NOW, Clock, ingested_course

ASSIGNMENT = """
title = "Assignment T: tokens by hand"
opens = "2026-02-01"
due = "2026-04-01"
keywords = ["hw-t"]
tasks = [
  "Split 'the cat was playing' into tokens by hand; what does the model predict from them?",
]
protected = ["predict the next token given the previous ones", "play + ing"]
"""


COSINE_TASK = ("Two sentences have the embeddings u = [3, 1] and w = [2, 5]. Compute their cosine "
               "similarity by hand and say whether the sentences are close in meaning.")


@pytest.fixture(scope="module")
def course(tmp_path_factory, shared_materials, embedder) -> Services:
    services = ingested_course(tmp_path_factory.mktemp("hints"), shared_materials, embedder,
                               Clock(NOW))
    folder = services.settings.materials_dir / "assignments"
    folder.mkdir()
    (folder / "hw-t.toml").write_text(ASSIGNMENT)
    return services


async def test_a_question_naming_the_assignment_gets_a_hint_with_quotes_and_a_question(course):
    answer = await course.course_assistant.answer("For hw-t, what are tokens?")
    assert answer.reason == HINT and answer.text.startswith("💡 Hint (Assignment T")
    assert "\n> " in answer.text and any(f"[{n}]" in answer.text for n in range(1, 6))
    assert "Read: llm-basics.md" in answer.text and "Guiding question:" in answer.text
    assert answer.citations


async def test_no_protected_item_appears_even_when_the_best_passage_holds_one(course):
    question = "hw-t: what is the goal when the model processes tokens in sequences?"
    assert any("predict the next token" in h.chunk.text for h in
               course.retriever.search(question, 5))
    answer = await course.course_assistant.answer(question)
    assert not course.course_assistant.guard().leaks(answer.text)


def test_a_general_concept_question_is_answered_normally(course):
    assert course.course_assistant.target("What is a token in a language model?", set()) is None


def test_two_pasted_details_get_hint_mode_however_far_the_wording_is(embedder):
    hw = Assignment("hw-e", "Homework E: embeddings by hand", 0, 1e12, (COSINE_TASK,))
    detector = AssignmentDetector(embedder)
    pasted = detector.target("[3,1] and [2,5]: 11 over what?", [hw])
    assert pasted is not None and pasted.similarity < Thresholds().with_one_detail
    assert detector.target("what is the norm of [3, 1]", [hw]) is None
    assert detector.target("What does cosine similarity measure?", [hw]) is None


def test_a_student_checking_their_own_result_near_a_task_gets_hint_mode(embedder):
    hw = Assignment("hw-e", "Homework E: embeddings by hand", 0, 1e12, (COSINE_TASK,))
    detector = AssignmentDetector(embedder)
    check = detector.target("I got 0.6 for the cosine of the two sentences, is that right?", [hw])
    assert check is not None and check.reason == "checks a result, near a task"
    # a value and "right?" without a result of one's own, or "I got" without a result: general
    assert detector.target("Cosine similarity is between -1 and 1, is that right?", [hw]) is None
    assert detector.target("I got confused by cosine similarity, what does it measure?",
                           [hw]) is None


class FixedCosineEmbedder:
    """Stands in for the embedder in tests of the detector's rules alone: every task text has
    one direction, and each question is at the cosine the test gives it (0 if not given)."""

    name = "fixed-cosine"

    def __init__(self, cosines: dict[str, float]) -> None:
        self.cosines = cosines

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return np.tile([1.0, 0.0], (len(texts), 1))

    def embed_query(self, text: str) -> np.ndarray:
        cosine = self.cosines.get(text, 0.0)
        return np.array([cosine, (1 - cosine**2) ** 0.5])


ATTENTION_HW = Assignment("hw-a", "Homework A", 0, 1e12, ("Compute the attention output.",))


def test_a_word_naming_graded_work_needs_only_a_fair_closeness_to_a_task():
    question = "how do I start task 1?"
    detector = AssignmentDetector(FixedCosineEmbedder({question: 0.42}))
    target = detector.target(question, [ATTENTION_HW])
    assert target is not None and target.reason == "graded-work words, near a task"


def test_a_word_asking_for_work_needs_the_question_closer_to_a_task():
    fair, close = "How do I compute attention in PyTorch?", "How do I compute the attention?"
    detector = AssignmentDetector(FixedCosineEmbedder({fair: 0.55, close: 0.62}))
    assert detector.target(fair, [ATTENTION_HW]) is None
    target = detector.target(close, [ATTENTION_HW])
    assert target is not None and target.reason == "asks for work, near a task"


HEADS_TASK = ("A decoder layer has a 512 x 512 key projection matrix and 8 attention heads. "
              "Compute the dimension of each head and the number of weights in the key projection.")


def test_abbreviations_of_a_tasks_words_are_spelt_out_and_other_words_kept():
    spelt = spell_out_abbreviations("attn head dim, num of weight in the k proj, per dec?",
                                    [HEADS_TASK])
    # "weight" is an inflection of "weights", not an abbreviation; "k" is too short to tell
    assert spelt == "attention head dimension, number of weight in the k projection, per decoder?"


def test_an_abbreviated_question_is_as_close_to_a_task_as_a_spelt_out_one(embedder):
    hw = Assignment("hw-k", "Homework K: heads by hand", 0, 1e12, (HEADS_TASK,))
    detector = AssignmentDetector(embedder)
    question = "homework: how many weights in k proj"
    as_written = detector.similarity(embedder.embed_query(question), hw)
    assert as_written < Thresholds().with_work_words
    target = detector.target(question, [hw])
    assert target is not None and target.similarity >= Thresholds().with_work_words


def test_a_vector_counts_once_and_a_one_digit_number_alone_is_weak():
    task = "Given q = [1, 0] and k1 = [1, 0] with d_k = 2, and LoRA rank r = 8 on 4096 x 4096."
    assert shared_details("is q·k1 = [1,0]·[1,0] here?", task) == (2, False)
    assert shared_details("8 * (4096 + 4096) params?", task) == (2, False)
    assert shared_details("is rank 8 enough?", task) == (1, True)
    assert shared_details("why divide by sqrt(d_k)?", task)[0] == 0


def test_a_closed_assignment_gets_no_hint_mode(course):
    rules = course.course
    rules.set_open("hw-t", False)
    try:
        assert course.course_assistant.target("For hw-t, what are tokens?", set()) is None
    finally:
        rules.set_open("hw-t", True)
    with pytest.raises(KeyError):
        rules.set_open("nope", True)


async def test_the_draft_never_shows_any_part_of_a_protected_item():
    async def events():
        for piece in ["The answer ", "is 65", ",536 and ", "more text follows here ", "."]:
            yield Token(piece)

    seen = [e.text async for e in guarded(events(), ProtectedGuard(["65,536"]))
            if isinstance(e, Token)]
    assert "65" not in "".join(seen)


async def test_a_final_answer_holding_an_item_is_withheld():
    async def events():
        yield Finished(Answer("q", "Tokens matter. It is play + ing here.", False, (), (), "m"))

    final = [e async for e in guarded(events(), ProtectedGuard(["play + ing"]))][0]
    assert "play + ing" not in final.answer.text and final.answer.text.startswith("Tokens")
