"""Our retriever and answer pipeline as LangChain components, for course staff who build with
LangChain.

`CourseRetriever` is a LangChain `BaseRetriever` over our hybrid search (dense + BM25, MMR,
calibrated scores); `answer_runnable` is the whole answer pipeline (abstention gate,
generation, grounding checks, citations) as a `Runnable`. Both run our code unchanged; nothing
in the bot, the CLI or the answer path imports this module, so LangChain stays out of the hot
path. See "Using it from LangChain" in the README.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda

from rag.answering.assistant import Assistant, InvalidQuestion
from rag.index.documents import Hit
from rag.retrieval.retriever import Retriever

AnswerInput = str | Mapping[str, Any]


def hit_to_document(hit: Hit) -> Document:
    """A LangChain `Document`: the passage text, with where it comes from and its scores."""
    chunk = hit.chunk
    metadata: dict[str, Any] = {
        "source": chunk.source,
        "page": chunk.page,
        "section": chunk.section,
        "start": chunk.start,
        "end": chunk.end,
        "score": hit.score,  # calibrated: the estimated probability that it is relevant
        "dense": hit.dense,
        "bm25": hit.bm25,
    }
    return Document(page_content=chunk.text, metadata=metadata, id=chunk.id)


class CourseRetriever(BaseRetriever):
    """The course materials' hybrid search as a LangChain retriever."""

    retriever: Retriever
    # None: what the bot's answers get (`retrieval.k`, then BM25's best when fusion left it
    # out); a number: exactly that many documents.
    k: int | None = None

    def _search(self, query: str) -> list[Hit]:
        return self.retriever.search(
            query, self.k, lexical_extra=None if self.k is None else 0)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [hit_to_document(hit) for hit in self._search(query)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = await asyncio.to_thread(self._search, query)
        return [hit_to_document(hit) for hit in hits]


def answer_runnable(assistant: Assistant, model: str | None = None) -> Runnable[AnswerInput, dict]:
    """The answer pipeline as a Runnable.

    Input: a question, or `{"question": ..., "history": [{"role", "content"}...], "model": ...}`.
    Output: the answer as `study-assistant ask --json` prints it (`answer`, `refused`,
    `citations`, `retrieved`, ...). Only the finished, checked answer is returned: the draft that
    streams before the grounding checks is never handed on. Inside a running event loop (a
    notebook, an async app) use `ainvoke`/`abatch`.
    """

    async def answer(inputs: AnswerInput) -> dict:
        question, history, chosen = _parse(inputs, model)
        result = await assistant.answer(question, history=history, model=chosen)
        return result.as_json()

    def answer_blocking(inputs: AnswerInput) -> dict:
        return asyncio.run(answer(inputs))

    return RunnableLambda(answer_blocking, afunc=answer, name="course_answer")


def _parse(
    inputs: AnswerInput, model: str | None
) -> tuple[str, Sequence[dict[str, str]], str | None]:
    """(question, history, model) from a Runnable input."""
    if isinstance(inputs, str):
        return inputs, (), model
    question = inputs.get("question")
    if not isinstance(question, str):
        raise InvalidQuestion('Give a question: a string, or a mapping with a "question" string.')
    return question, inputs.get("history") or (), inputs.get("model") or model
