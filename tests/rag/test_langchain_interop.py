"""Our retriever and answer pipeline used as LangChain components, on the real course index
with the real local model."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda

from rag.answering.assistant import Assistant
from rag.langchain_interop import CourseRetriever, answer_runnable
from rag.llm.registry import ModelRegistry
from rag.llm.settings import LLMSettings
from rag.services import Services

IN_SCOPE = "What is LoRA and why does it reduce the number of trainable parameters?"
OUT_OF_SCOPE = "What is the best recipe for banana bread?"


@pytest.fixture(scope="module")
def assistant(full_index: Services, llm_cache_dir: Path) -> Assistant:
    """Our assistant over the full index, greedy and short, with the packaged model."""
    llm = LLMSettings(max_new_tokens=32, temperature=0.0)
    registry = ModelRegistry(llm, llm_cache_dir)
    return Assistant(full_index.retriever, registry, full_index.settings.answer, llm)


def test_the_retriever_returns_our_passages_as_documents(full_index: Services) -> None:
    docs = CourseRetriever(retriever=full_index.retriever, k=4).invoke(IN_SCOPE)
    hits = full_index.retriever.search(IN_SCOPE, 4, lexical_extra=0)  # k given: exactly k
    assert [d.page_content for d in docs] == [h.chunk.text for h in hits]
    assert [d.id for d in docs] == [h.chunk.id for h in hits]
    first = docs[0].metadata
    assert (first["source"], first["page"], first["section"]) == (
        hits[0].chunk.source,
        hits[0].chunk.page,
        hits[0].chunk.section,
    )
    assert first["score"] == pytest.approx(hits[0].score)


async def test_the_retriever_runs_in_an_async_lcel_chain(full_index: Services) -> None:
    def cite(docs: list[Document]) -> list[str]:
        return [f"{d.metadata['source']} p.{d.metadata['page']}" for d in docs]

    chain = CourseRetriever(retriever=full_index.retriever, k=3) | RunnableLambda(cite)
    cited = await chain.ainvoke(IN_SCOPE)
    assert len(cited) == 3
    assert any("lora" in c.lower() for c in cited), cited


async def test_the_answer_runnable_answers_with_citations_to_retrieved_passages(
    assistant: Assistant,
) -> None:
    answer = await answer_runnable(assistant).ainvoke({"question": IN_SCOPE})
    assert not answer["refused"] and answer["answer"]
    retrieved = {r["source"] for r in answer["retrieved"]}
    assert answer["citations"] and {c["source"] for c in answer["citations"]} <= retrieved


def test_the_answer_runnable_batches_synchronously_and_abstains(assistant: Assistant) -> None:
    answers = answer_runnable(assistant).batch([OUT_OF_SCOPE, {"question": OUT_OF_SCOPE}])
    assert [a["refused"] for a in answers] == [True, True]
    assert all("don't cover" in a["answer"] for a in answers)
