"""The composition root: the one place that builds the store, embedder and retriever.

The CLI and the bot both call `build_services(settings)`; nothing else constructs these.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.config import Settings
from rag.embedder import Embedder
from rag.retrieval import Retriever
from rag.store import ChromaStore, make_client


@dataclass
class Services:
    """Long-lived objects shared by every command of one process."""

    settings: Settings
    store: ChromaStore
    embedder: Embedder
    retriever: Retriever


def build_services(settings: Settings, *, embedder: Embedder | None = None) -> Services:
    """Open the store and wire the embedder and retriever (models load lazily, on first use).

    Pass an already loaded `embedder` to share its weights between several indexes.
    """
    embedder = embedder or Embedder(settings.embedding)
    store = ChromaStore(make_client(settings), settings.store.collection, embedder.name)
    retriever = Retriever(store, embedder, settings.retrieval)
    return Services(settings=settings, store=store, embedder=embedder, retriever=retriever)
