"""The store's memory of chunk vectors (real embedder, real embedded Chroma)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rag.index.chroma_store import VectorCache
from rag.services import build_services
from tests.ingest.test_reingest import gated_settings, ingested


class SpyGets:
    """A Chroma collection, recording what each `get` asks it to include."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.includes = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.includes.append(sorted(kwargs.get("include", [])))
        return self.inner.get(*args, **kwargs)


def test_vectors_are_read_once_and_metadata_every_time(tmp_path, embedder):
    settings = gated_settings(tmp_path)
    store = ingested(settings, embedder).store
    ids = sorted(store.all_chunk_ids())
    first = store.get_chunks(ids)
    spy = SpyGets(store.chunks)
    store.chunks = spy
    second = store.get_chunks(ids)
    assert spy.includes == [["documents", "metadatas"]]  # no vectors read again
    assert [(s.id, s.chunk) for s in second] == [(s.id, s.chunk) for s in first]
    assert all(np.array_equal(a.embedding, b.embedding) for a, b in zip(first, second, strict=True))
    # Metadata another writer changes in place is read fresh; the vector stays right.
    other = build_services(settings, embedder=embedder).store
    meta = other.metadatas([ids[0]])[ids[0]]
    other.chunks.update(ids=[ids[0]], metadatas=[{**meta, "start": 999}])
    (third,) = store.get_chunks([ids[0]])
    assert third.chunk.start == 999 and np.array_equal(third.embedding, first[0].embedding)


def test_the_vector_cache_forgets_the_least_recently_used():
    cache = VectorCache(size=2)
    cache.put_many([("a", np.ones(2)), ("b", np.zeros(2))])
    assert set(cache.get_many(["a"])) == {"a"}  # a is now the most recent
    cache.put_many([("c", np.ones(2))])
    assert set(cache.get_many(["a", "b", "c"])) == {"a", "c"}
