"""The hallucination demo: one question answered by the same model closed-book (a plain
instruction, no passages) and with retrieval (the normal answer pipeline), and each answer's
claims checked against the passages retrieved for the question.

Self-consistency (sampling several answers and measuring agreement) is left out: on the CPU
each extra sample costs a full generation, so it is not cheap enough for a chat command.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rag.answering.assistant import Assistant, check_question
from rag.answering.grounding import GroundingChecker, GroundingReport
from rag.demos.common import pick_model
from rag.index.documents import Hit
from rag.llm.base import ChatModel, Messages

CLOSED_BOOK = "closed book"
WITH_RETRIEVAL = "with retrieval"
CLOSED_BOOK_PROMPT = (
    "You are a helpful assistant for a course on large language models. "
    "Answer the question in a few sentences."
)

Progress = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class CheckedAnswer:
    """One way of answering, its text, time and grounding report."""

    mode: str
    text: str
    refused: bool
    seconds: float
    grounding: GroundingReport

    def as_json(self) -> dict:
        """The JSON shape of the demo."""
        return {
            "mode": self.mode,
            "answer": self.text,
            "refused": self.refused,
            "seconds": round(self.seconds, 2),
            "grounding": self.grounding.as_json(),
        }


@dataclass(frozen=True)
class HallucinationDemo:
    """The question, the passages both answers were checked against, and both answers."""

    question: str
    model: str
    passages: tuple[Hit, ...]
    closed_book: CheckedAnswer
    with_retrieval: CheckedAnswer

    def as_json(self) -> dict:
        """The `demo hallucination --json` shape."""
        return {
            "question": self.question,
            "model": self.model,
            "passages": [h.as_json() for h in self.passages],
            "answers": [self.closed_book.as_json(), self.with_retrieval.as_json()],
        }


def closed_book_messages(question: str) -> Messages:
    """A plain instruction prompt: the model answers from its weights alone."""
    return [
        {"role": "system", "content": CLOSED_BOOK_PROMPT},
        {"role": "user", "content": question},
    ]


async def report_progress(progress: Progress | None, status: str) -> None:
    """Tell the caller what is happening now, if it listens."""
    if progress is not None:
        await progress(status)


async def load_weights(chat: ChatModel) -> None:
    """Load a local model's weights now, so that its first load is not timed as an answer."""
    load = getattr(chat, "load", None)
    if load is not None:
        await load()


async def answer_closed_book(assistant: Assistant, chat: ChatModel, question: str) -> str:
    """The model's answer without any passages, with the pipeline's generation settings."""
    done = await chat.complete(
        closed_book_messages(question),
        max_tokens=assistant.llm.max_new_tokens,
        temperature=assistant.llm.temperature,
    )
    return done.text.strip()


async def hallucination_demo(
    assistant: Assistant,
    checker: GroundingChecker,
    question: str,
    model: str | None = None,
    progress: Progress | None = None,
) -> HallucinationDemo:
    """Answer closed-book and with retrieval, then check both against the same passages."""
    question = check_question(question, assistant.settings.max_question_chars)
    chat = pick_model(assistant.models, model)
    await report_progress(progress, f"Answering closed-book with {chat.name}…")
    await load_weights(chat)
    started = time.perf_counter()
    closed_text = await answer_closed_book(assistant, chat, question)
    closed_s = time.perf_counter() - started
    await report_progress(progress, f"Answering with the course materials ({chat.name})…")
    # The demo shows what the model itself writes with the passages: generated, unverified.
    answer = await assistant.answer(question, model=chat.name, style="generative")
    passages = answer.retrieved or tuple(
        await asyncio.to_thread(assistant.retriever.search, question, assistant.settings.k)
    )
    await report_progress(progress, "Checking each claim against the passages…")
    closed = await asyncio.to_thread(checker.check, closed_text, passages)
    grounded = GroundingReport(()) if answer.refused else await asyncio.to_thread(
        checker.check, answer.text, passages
    )
    rag_s = answer.timings.get("total_ms", 0.0) / 1000
    return HallucinationDemo(
        question,
        chat.name,
        tuple(passages),
        CheckedAnswer(CLOSED_BOOK, closed_text, False, closed_s, closed),
        CheckedAnswer(WITH_RETRIEVAL, answer.text, answer.refused, rag_s, grounded),
    )
