"""The store's memory of chunks read (real embedder, real embedded Chroma): reused while no
process has changed the index, dropped as soon as another has."""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.pipeline import Target, ingest
from rag.index.chroma_store import ChunkCache, StoredChunk
from rag.index.documents import Chunk
from rag.services import build_services
from tests.ingest.test_reingest import NOTES, gated_settings, ingested


class SpyGets:
    """A Chroma collection, counting the `get`s made of it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.gets = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.gets += 1
        return self.inner.get(*args, **kwargs)


def same(a: list[StoredChunk], b: list[StoredChunk]) -> bool:
    return [(s.id, s.chunk) for s in a] == [(s.id, s.chunk) for s in b] and all(
        np.array_equal(x.embedding, y.embedding) for x, y in zip(a, b, strict=True))


def test_chunks_are_read_once_until_another_process_changes_the_index(tmp_path, embedder):
    settings = gated_settings(tmp_path)
    settings.ingest.gold_file = "none.toml"  # plain ingests, in place
    store = ingested(settings, embedder).store
    ids = sorted(store.all_chunk_ids())
    first = store.get_chunks(ids)
    spy = SpyGets(store.chunks)
    store.chunks = spy
    assert same(store.get_chunks(ids), first) and spy.gets == 0  # all from memory
    # Another process edits a record in place, as a plain ingest does, and commits.
    other = build_services(settings, embedder=embedder).store
    meta = other.metadatas([ids[0]])[ids[0]]
    other.chunks.update(ids=[ids[0]], metadatas=[{**meta, "start": 999}])
    entry = next(e for e in other.manifest().values() if ids[0] in e.chunk_ids)
    other.commit_file(entry)  # a new token for the live version
    (fresh,) = store.get_chunks([ids[0]])
    assert fresh.chunk.start == 999 and spy.gets == 1
    assert np.array_equal(fresh.embedding, first[0].embedding)


def test_this_processs_own_ingest_keeps_what_it_did_not_touch(tmp_path, embedder):
    settings = gated_settings(tmp_path)
    services = ingested(settings, embedder)
    store = services.store
    ids = sorted(store.all_chunk_ids())
    first = store.get_chunks(ids)
    (settings.materials_dir / "notes.md").write_text(NOTES)
    ingest([Target(settings.materials_dir)], store, embedder, settings.ingest)
    spy = SpyGets(store.chunks)
    store.chunks = spy
    assert same(store.get_chunks(ids), first) and spy.gets == 0
    added = sorted(store.all_chunk_ids() - set(ids))
    assert added and [c.chunk.source for c in store.get_chunks(added)] == ["notes.md"]


def test_the_chunk_cache_forgets_the_least_recently_used_and_other_epochs():
    def chunk(text: str) -> StoredChunk:
        return StoredChunk(text, Chunk(text, "a.md", None, "", 0, len(text)), np.ones(2))

    cache = ChunkCache(size=2)
    assert cache.get_many(["a"], 1) == {}
    cache.put_many([chunk("a"), chunk("b")], 1)
    assert set(cache.get_many(["a"], 1)) == {"a"}  # a is now the most recent
    cache.put_many([chunk("c")], 1)
    assert set(cache.get_many(["a", "b", "c"], 1)) == {"a", "c"}
    cache.put_many([chunk("d")], 0)  # read in an epoch that is over: not kept
    assert cache.get_many(["a", "c", "d"], 2) == {}  # a new epoch starts empty


def test_a_search_that_read_a_record_before_this_processs_write_cannot_keep_it():
    def chunk(text: str) -> StoredChunk:
        return StoredChunk("a", Chunk(text, "a.md", None, "", 0, len(text)), np.ones(2))

    cache = ChunkCache()
    cache.sync(1)  # a write starts in epoch 1
    cache.evict(["a"])  # it rewrites record a ...
    cache.put_many([chunk("old")], 1)  # ... which a search read just before, and puts now
    cache.sync(2, adopt=True)  # the write commits (epoch 2) and adopts it
    assert cache.get_many(["a"], 2) == {}
    cache.put_many([chunk("late")], 1)  # read in epoch 1, put after the adoption
    assert cache.get_many(["a"], 2) == {}
