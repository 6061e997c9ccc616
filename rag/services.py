"""The composition root: the one place that builds the store, embedder and retriever.

The CLI and the bot both call `build_services(settings)`; nothing else constructs these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rag.assistant import Assistant
from rag.config import Settings
from rag.embedder import Embedder
from rag.llm.registry import ModelRegistry
from rag.retrieval import Retriever
from rag.store import ChromaStore, make_client


@dataclass
class Services:
    """Long-lived objects shared by every command of one process."""

    settings: Settings
    store: ChromaStore
    embedder: Embedder
    retriever: Retriever
    models: ModelRegistry
    assistant: Assistant


def build_services(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    models: ModelRegistry | None = None,
) -> Services:
    """Open the store and wire everything (models load lazily, on first use).

    Pass an already loaded `embedder` or `models` registry to share weights between several
    indexes (tests, benchmarks).
    """
    embedder = embedder or Embedder(settings.embedding)
    store = ChromaStore(make_client(settings), settings.store.collection, embedder.name)
    retriever = Retriever(store, embedder, settings.retrieval)
    models = models or ModelRegistry(settings.llm, Path(settings.data_dir))
    assistant = Assistant(retriever, models, settings.answer, settings.llm)
    return Services(settings, store, embedder, retriever, models, assistant)

