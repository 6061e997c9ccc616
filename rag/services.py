"""The composition root: the one place that builds the store, embedder, retriever, models,
assistant and grounding checker.

The CLI and the bot both call `build_services(settings)`; the model-only demos call
`build_models(settings)`, the usage report `build_embedder(settings)`. Nothing else constructs
these.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rag.answering.assistant import Assistant
from rag.answering.course_mode import CourseAssistant
from rag.answering.grounding import GroundingChecker
from rag.answering.hints import AssignmentDetector
from rag.config import Settings
from rag.course.rules import CourseRules
from rag.index.chroma_store import ChromaStore, make_client
from rag.index.embedder import Embedder
from rag.llm.registry import ModelRegistry
from rag.retrieval.retriever import Retriever


@dataclass
class Services:
    """Long-lived objects shared by every command of one process."""

    settings: Settings
    store: ChromaStore
    embedder: Embedder
    retriever: Retriever
    models: ModelRegistry
    assistant: Assistant
    checker: GroundingChecker
    course: CourseRules
    # The assistant under the course's rules (hint mode, protected items): what students use.
    course_assistant: CourseAssistant


def build_models(settings: Settings) -> ModelRegistry:
    """The configured chat models (they load lazily, on first use)."""
    return ModelRegistry(settings.llm, Path(settings.data_dir))


def build_embedder(settings: Settings) -> Embedder:
    """The configured embedder alone (it loads lazily), for work that needs no index."""
    return Embedder(settings.embedding)


def build_services(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    models: ModelRegistry | None = None,
    clock: Callable[[], float] = time.time,
) -> Services:
    """Open the store and wire everything (models load lazily, on first use).

    Pass an already loaded `embedder` or `models` registry to share weights between several
    indexes (tests, benchmarks); `clock` (Unix seconds) decides what is released.
    """
    embedder = embedder or build_embedder(settings)
    store = ChromaStore(make_client(settings), settings.store.collection, embedder.name,
                        settings.store.ef_search)
    retriever = Retriever(store, embedder, settings.retrieval, clock=clock)
    models = models or build_models(settings)
    checker = GroundingChecker(embedder, retriever)
    assistant = Assistant(retriever, models, settings.answer, settings.llm, checker)
    course = CourseRules(
        Path(settings.materials_dir), Path(settings.data_dir), settings.course.timezone, clock
    )
    course_assistant = CourseAssistant(assistant, course, AssignmentDetector(embedder))
    return Services(settings, store, embedder, retriever, models, assistant, checker, course,
                    course_assistant)
