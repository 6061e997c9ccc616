"""Chroma storage for chunks, and the manifest that decides which chunks are live.

Two collections: `<name>` holds chunk texts, embeddings and metadata; `<name>__manifest` holds
one record per ingested file (its hash and the ids of its chunks). A chunk is visible to search
only when the manifest lists it. Ingest writes a file's chunks first and its manifest record
last, so killing the process at any moment leaves every file either at its old version or at
its new one, never half-indexed. Unlisted chunks are garbage and are removed by the next ingest.

The same code runs against an embedded `PersistentClient` (default) or a Chroma server
(`HttpClient`) when `store.host` is configured.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import Settings
from rag.documents import Chunk

VERSION_ID = "__version__"
DIRTY_ID = "__ingest_in_progress__"
_RESERVED = {VERSION_ID, DIRTY_ID}
# Manifest records carry no meaningful vector; Chroma still wants one.
_NO_VECTOR = [1.0]


class StoreError(RuntimeError):
    """The vector store cannot be reached or used."""


class IndexMismatch(StoreError):
    """The index was built with a different embedding model than the one configured."""


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """What the index holds for one source file."""

    source: str
    file_hash: str
    chunk_ids: tuple[str, ...]
    root: str = ""
    ingested_at: float = 0.0


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk read back from the store with its embedding."""

    id: str
    chunk: Chunk
    embedding: np.ndarray


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_client(settings: Settings) -> Any:
    """Create the Chroma client: a server when `store.host` is set, else embedded."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.store.host:
        try:
            return chromadb.HttpClient(
                host=settings.store.host,
                port=settings.store.port,
                ssl=settings.store.ssl,
                settings=chroma_settings,
            )
        except Exception as exc:  # chromadb raises bare ValueError/ConnectionError here
            where = f"{settings.store.host}:{settings.store.port}"
            raise StoreError(f"Cannot reach the Chroma server at {where}: {exc}") from exc
    path = Path(settings.data_dir) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings)


class ChromaStore:
    """Chunk and manifest collections behind one small API."""

    def __init__(self, client: Any, collection: str, embedder_name: str) -> None:
        self.client = client
        self.embedder_name = embedder_name
        self.chunks = client.get_or_create_collection(
            collection,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"embedder": embedder_name},
            embedding_function=None,
        )
        self.manifest_collection = client.get_or_create_collection(
            f"{collection}__manifest", embedding_function=None
        )
        self.max_batch = int(client.get_max_batch_size())
        self._check_embedder()

    def _check_embedder(self) -> None:
        stored = (self.chunks.metadata or {}).get("embedder")
        if stored and stored != self.embedder_name:
            raise IndexMismatch(
                f"The index was built with embedder '{stored}' but '{self.embedder_name}' is "
                "configured. Re-create the index (delete the data dir or use another collection)."
            )

    # -- manifest ---------------------------------------------------------------------------

    def manifest(self) -> dict[str, ManifestEntry]:
        """Every ingested file's entry, keyed by source path."""
        got = self.manifest_collection.get(include=["documents", "metadatas"])
        entries = {}
        for rid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
            if rid in _RESERVED:
                continue
            entries[rid] = ManifestEntry(
                source=rid,
                file_hash=str(meta["file_hash"]),
                chunk_ids=tuple(json.loads(doc)),
                root=str(meta.get("root", "")),
                ingested_at=float(meta.get("ingested_at", 0.0)),
            )
        return entries

    def version(self) -> str:
        """An opaque token that changes whenever the set of live chunks changes."""
        got = self.manifest_collection.get(ids=[VERSION_ID], include=["metadatas"])
        if not got["ids"]:
            return ""
        return str(got["metadatas"][0]["version"])

    def _bump_version(self) -> None:
        self.manifest_collection.upsert(
            ids=[VERSION_ID],
            embeddings=[_NO_VECTOR],
            documents=[""],
            metadatas=[{"version": uuid.uuid4().hex}],
        )

    def commit_file(self, entry: ManifestEntry) -> None:
        """Make a file's chunks live: the single write that switches versions."""
        self.manifest_collection.upsert(
            ids=[entry.source],
            embeddings=[_NO_VECTOR],
            documents=[json.dumps(list(entry.chunk_ids))],
            metadatas=[
                {"file_hash": entry.file_hash, "root": entry.root, "ingested_at": time.time()}
            ],
        )
        self._bump_version()

    def forget_file(self, source: str) -> None:
        """Remove a file from the manifest, which hides its chunks at once."""
        self.manifest_collection.delete(ids=[source])
        self._bump_version()

    def mark_dirty(self, dirty: bool) -> None:
        """Record that an ingest is writing, so an interrupted one is cleaned up next time."""
        if dirty:
            self.manifest_collection.upsert(
                ids=[DIRTY_ID], embeddings=[_NO_VECTOR], documents=[""], metadatas=[{"t": 0}]
            )
        else:
            self.manifest_collection.delete(ids=[DIRTY_ID])

    def is_dirty(self) -> bool:
        """Whether an earlier ingest stopped before it finished."""
        return bool(self.manifest_collection.get(ids=[DIRTY_ID], include=[])["ids"])

    # -- chunks -----------------------------------------------------------------------------

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already stored (so they need no embedding)."""
        found: set[str] = set()
        for batch in _batches(list(ids), self.max_batch):
            found.update(self.chunks.get(ids=list(batch), include=[])["ids"])
        return found

    def add_chunks(self, chunks: Sequence[Chunk], embeddings: np.ndarray) -> None:
        """Store chunks with their embeddings (upsert: re-adding the same id is harmless)."""
        for start in range(0, len(chunks), self.max_batch):
            part = chunks[start : start + self.max_batch]
            self.chunks.upsert(
                ids=[c.id for c in part],
                embeddings=embeddings[start : start + self.max_batch],
                documents=[c.text for c in part],
                metadatas=[c.metadata() for c in part],
            )

    def update_metadata(self, chunks: Sequence[Chunk]) -> None:
        """Refresh offsets/pages of chunks whose text is unchanged (no re-embedding)."""
        for part in _batches(list(chunks), self.max_batch):
            self.chunks.update(ids=[c.id for c in part], metadatas=[c.metadata() for c in part])

    def delete_chunks(self, ids: Iterable[str]) -> None:
        """Delete chunks by id."""
        for part in _batches(list(ids), self.max_batch):
            self.chunks.delete(ids=list(part))

    def all_chunk_ids(self) -> set[str]:
        """Every stored chunk id, live or not."""
        ids: set[str] = set()
        offset, page = 0, 10_000
        while True:
            got = self.chunks.get(include=[], limit=page, offset=offset)["ids"]
            ids.update(got)
            if len(got) < page:
                return ids
            offset += page

    def count(self) -> int:
        """Number of stored chunks, live or not."""
        return int(self.chunks.count())

    def get_chunks(self, ids: Sequence[str]) -> list[StoredChunk]:
        """Read chunks with their embeddings, in the order of `ids` (missing ids are skipped)."""
        by_id: dict[str, StoredChunk] = {}
        for part in _batches(list(ids), self.max_batch):
            got = self.chunks.get(ids=list(part), include=["documents", "metadatas", "embeddings"])
            rows = zip(
                got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
            )
            for rid, doc, meta, emb in rows:
                by_id[rid] = StoredChunk(rid, Chunk.from_record(doc, meta), np.asarray(emb))
        return [by_id[i] for i in ids if i in by_id]

    def iter_texts(self, ids: Sequence[str]) -> Iterator[tuple[str, str]]:
        """Yield (id, text) for the given ids, in batches, without embeddings."""
        for part in _batches(list(ids), self.max_batch):
            got = self.chunks.get(ids=list(part), include=["documents"])
            yield from zip(got["ids"], got["documents"], strict=True)

    def query(self, embedding: np.ndarray, n: int) -> list[tuple[str, float]]:
        """Nearest chunks by cosine: (id, cosine similarity), best first."""
        if n <= 0:
            return []
        got = self.chunks.query(query_embeddings=[embedding], n_results=n, include=["distances"])
        return [
            (rid, 1.0 - float(d)) for rid, d in zip(got["ids"][0], got["distances"][0], strict=True)
        ]
