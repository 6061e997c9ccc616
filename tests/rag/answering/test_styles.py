"""Answer styles over the real index of the shipped materials, with the real embedder.

Quote-first answers need no model call. The verified style is tested with a backend that
returns a fixed paragraph with invented sentences: the verifier is the code under test.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rag.answering.assistant import FELL_BACK, Assistant
from rag.answering.styles import QUOTED
from rag.answering.verified import (
    FALLBACK_NOTE,
    RESTATED,
    REWORDED,
    UNFINISHED,
    _cut_off,
    _withheld,
    verify,
)
from rag.config import AnswerSettings
from rag.llm.base import Completion
from rag.llm.registry import ModelRegistry
from rag.llm.settings import LLMSettings, ModelSpec
from rag.services import Services

QUESTIONS = [
    "What is PagedAttention?",
    "What forms of hallucination are there?",
    "What are the trade-offs of a smaller versus a larger vocabulary?",
    "Why does LoRA initialise B to zero?",
    "What is continuous batching?",
]


def squash(text: str) -> str:
    """Text with Markdown emphasis, code ticks, table pipes, list markers and a paper's
    bracketed references to its bibliography ("[30]", quoted as "[ref 30]") dropped and
    whitespace collapsed: what "verbatim" is compared after."""
    text = re.sub(r"(?m)^\s*(?:[-*+•]|\d{1,2}[.)])\s+", " ", text)
    text = re.sub(r"[;,]?\s*\[(?:ref )?\d+(?:,\s*\d+)*\]", "", text)
    return " ".join(re.sub(r"[*`]", "", text).replace("|", " ").split())


async def test_every_quoted_sentence_is_verbatim_in_the_passage_it_cites(full_index: Services):
    for question in QUESTIONS:
        answer = await full_index.assistant.answer(question, style="extractive")
        assert answer.style == "extractive" and not answer.refused, question
        assert answer.sentences, question
        for sentence in answer.sentences:
            assert sentence.verdict == QUOTED and sentence.citation is not None
            passage = answer.retrieved[sentence.citation - 1].chunk.text
            assert squash(sentence.text) in squash(passage), (question, sentence.text)


async def test_a_quoted_papers_references_are_not_shown_as_citations(full_index: Services):
    # The attention paper's "[3]" and "[9]" were quoted, beside the answer's own [3] and [5].
    for question in ("Why divide by sqrt(d_k) in scaled dot-product attention?",
                     "How do positional encodings work?"):
        answer = await full_index.assistant.answer(question, style="extractive")
        assert any(s.citation and answer.retrieved[s.citation - 1].chunk.page
                   for s in answer.sentences), question
        for sentence in answer.sentences:
            assert not re.search(r"\[\d+(?:,\s*\d+)*\]", sentence.text), sentence.text
        cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer.text)}
        assert cited <= set(range(1, len(answer.retrieved) + 1)), answer.text


async def test_an_answer_to_a_number_question_contains_the_number(full_index: Services):
    answer = await full_index.assistant.answer(
        "How many tokens does the released LLaMA tokenizer have?", style="extractive"
    )
    assert "32,000" in answer.text


async def test_a_misspelt_question_is_quoted_as_its_spelling_is(full_index: Services):
    typo = await full_index.assistant.answer("chain of thougth prompting", style="extractive")
    spelt = await full_index.assistant.answer("chain of thought prompting", style="extractive")
    assert not typo.refused and typo.text == spelt.text
    assert typo.question == "chain of thougth prompting"


async def test_a_command_is_quoted_as_the_code_block_the_materials_give(full_index: Services):
    answer = await full_index.assistant.answer(
        "How do I start a vLLM server that speaks the OpenAI API?", style="extractive"
    )
    lines = answer.text.splitlines()
    fences = [n for n, line in enumerate(lines) if line == "```"]
    # The command's block is whole, under its citation; the one block that may follow is the
    # client code that talks to the server, under its own.
    assert len(fences) in (2, 4), answer.text
    assert "vllm serve mistralai/Mistral-7B-Instruct-v0.3" in lines[fences[0]:fences[1]]
    assert re.search(r"\[\d\]:?$", lines[fences[0] - 1]), answer.text
    if len(fences) == 4:
        assert any("OpenAI(base_url=" in line for line in lines[fences[2]:fences[3]])
        assert re.search(r"\[\d\]:?$", lines[fences[2] - 1]), answer.text


async def test_the_packaged_model_answers_with_quotes_by_default(full_index: Services):
    answer = await full_index.assistant.answer("What is the KV cache?")
    assert answer.style == "extractive" and answer.made == "quoted from the materials"
    assert re.search(r"\[\d\]$", answer.text.splitlines()[0])


class FixedModel:
    """A chat backend that always writes the same paragraph (it is made to invent)."""

    def __init__(self, name: str, paragraph: str) -> None:
        self.name = name
        self.paragraph = paragraph

    async def stream(self, messages, **kwargs) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
        for word in self.paragraph.split(" "):
            yield word + " "

    async def complete(self, messages, **kwargs) -> Completion:  # type: ignore[no-untyped-def]
        return Completion(self.paragraph, 0, 0, None, 0.0)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        return None


class FixedRegistry(ModelRegistry):
    """A registry whose one served model is a `FixedModel`."""

    def __init__(self, paragraph: str) -> None:
        spec = ModelSpec(name="served", backend="openai", model="x", base_url="http://127.0.0.1:9")
        super().__init__(LLMSettings(default="served", models={"served": spec}), Path("."))
        self.model = FixedModel("served", paragraph)

    def get(self, name: str | None = None) -> FixedModel:  # type: ignore[override]
        return self.model


def verifying(services: Services, paragraph: str) -> Assistant:
    """An Assistant whose served model writes `paragraph`, checked by the real verifier."""
    registry = FixedRegistry(paragraph)
    return Assistant(services.retriever, registry, AnswerSettings(), registry.settings,
                     services.checker)


TRUE_1 = ("PagedAttention divides the KV cache of each sequence into fixed-size blocks that "
          "do not need to be contiguous in memory.")
TRUE_2 = "PagedAttention is inspired by virtual memory and paging in operating systems."
INVENTED = ("PagedAttention was designed by Graphene Labs in 1987 for the LambdaNet multicast "
            "packet scheduler.")


async def test_a_served_model_gets_verified_answers_and_invented_sentences_are_removed(
    full_index: Services,
):
    answer = await verifying(full_index, f"{TRUE_1} {INVENTED} {TRUE_2}").answer(
        "What is PagedAttention?"
    )
    assert answer.style == "verified" and answer.made == "generated and verified"
    shown = {s.text for s in answer.sentences if s.shown}
    assert shown == {TRUE_1, TRUE_2}
    assert "Graphene" not in answer.text and "1987" not in answer.text
    assert "1 of 3 sentences" in answer.note
    assert all(s.citation is not None for s in answer.sentences if s.shown)
    assert all(s.citation is None for s in answer.sentences if not s.shown)


async def test_a_verified_answer_falls_back_to_quotes_when_nothing_survives(
    full_index: Services,
):
    answer = await verifying(full_index, INVENTED).answer("What is PagedAttention?")
    assert answer.style == "extractive" and answer.reason == FELL_BACK
    assert answer.note == FALLBACK_NOTE
    assert "Graphene" not in answer.text
    dropped = [s for s in answer.sentences if not s.shown]
    assert [s.text for s in dropped] == [INVENTED]


REWORDED_1 = ("The passage mentions that PagedAttention divides the KV cache of each sequence "
              "into fixed-size blocks.")


async def test_a_supported_sentence_in_words_the_materials_do_not_use_is_not_shown(
    full_index: Services,
):
    answer = await verifying(full_index, f"{TRUE_1} {REWORDED_1} {TRUE_2}").answer(
        "What is PagedAttention?"
    )
    verdicts = {s.text: (s.verdict, s.shown) for s in answer.sentences}
    assert verdicts[REWORDED_1] == (REWORDED, False)
    assert verdicts[TRUE_1] == ("supported", True) and verdicts[TRUE_2] == ("supported", True)
    assert "passage mentions" not in answer.text


async def test_a_draft_cut_off_mid_sentence_loses_its_last_sentence(full_index: Services):
    cut = "PagedAttention divides the KV cache of each sequence into fixed-size"
    hits = full_index.retriever.search("What is PagedAttention?")
    checked = await asyncio.to_thread(verify, f"{TRUE_1} {TRUE_2} {cut}", hits,
                                      full_index.checker, "What is PagedAttention?")
    assert [(s.verdict, s.shown) for s in checked.sentences] == [
        ("supported", True), ("supported", True), (UNFINISHED, False)]
    finished = await asyncio.to_thread(verify, f"{TRUE_1} {TRUE_2} {cut} blocks.", hits,
                                       full_index.checker, "What is PagedAttention?")
    assert all(s.shown for s in finished.sentences)


async def test_a_sentence_that_only_restates_the_question_is_not_shown(full_index: Services):
    question = "Why does PagedAttention divide the KV cache of each sequence into blocks?"
    echo = "PagedAttention divides the KV cache of each sequence into blocks."
    hits = full_index.retriever.search(question)
    checked = await asyncio.to_thread(verify, f"{echo} {TRUE_2}", hits, full_index.checker,
                                      question)
    assert [(s.text, s.verdict, s.shown) for s in checked.sentences][0] == (
        echo, RESTATED, False)
    # Asked whether it does, saying that it does is an answer.
    asked = "Does PagedAttention divide the KV cache of each sequence into blocks?"
    checked = await asyncio.to_thread(verify, echo, hits, full_index.checker, asked)
    assert [(s.verdict, s.shown) for s in checked.sentences] == [("supported", True)]


def test_a_lists_last_point_needs_no_end_mark_unless_it_stops_mid_way() -> None:
    claims = ["LoRA freezes the pretrained weights.", "Uses far less GPU memory"]
    assert _cut_off("LoRA freezes the pretrained weights.\n- Uses far less GPU memory",
                    claims) is None
    assert _cut_off("LoRA freezes the pretrained weights. Uses far less GPU memory",
                    claims) == claims[1]
    stopped = ["LoRA freezes the pretrained weights.", "Uses far less memory than the"]
    assert _cut_off("LoRA freezes the pretrained weights.\n- Uses far less memory than the",
                    stopped) == stopped[1]
    assert _cut_off("LoRA freezes the pretrained weights. [1]", claims[:1]) is None


def test_an_answer_in_the_questions_words_plus_a_number_is_no_restatement() -> None:
    question = "How many layers does the Transformer encoder stack have?"
    passage = "The encoder is composed of a stack of N = 6 identical layers."
    assert _withheld("The Transformer encoder stack has 6 layers.", passage, question,
                     False) is None
    assert _withheld("The Transformer encoder stack has layers.", passage, question,
                     False) == RESTATED


async def test_an_unknown_style_is_a_clear_error(full_index: Services):
    with pytest.raises(ValueError, match="Unknown answer style 'poetic'"):
        await full_index.assistant.answer("What is LoRA?", style="poetic")
