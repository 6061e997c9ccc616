"""Chroma storage for chunks, and the manifest that decides which chunks are live.

`<name>` holds chunk texts, embeddings and metadata: one pool shared by every index version. A
version is a manifest with one record per ingested file (its hash and the ids of its chunks):
version 0's is the collection `<name>__manifest`; later versions' records live in
`<name>__versions`, beside the pointer naming the live version, one record per version and the
writer lease, with ids `m:<N>:<file>` (see `VersionManifest`). Keeping them there lets a new
version be registered, with its copy of the live manifest, in one write, and be dropped in one,
instead of creating and deleting a collection (and its vector segment) each time. Data dirs
made before that hold `<name>__manifest__v<N>` collections, still read and dropped as they
were. A chunk is visible to search only when the live version's manifest lists it; switching
versions is one atomic upsert of the pointer (see rag/index/versions.py for building, promoting,
rolling back and pruning versions). Ingest writes a file's chunks first and its manifest record
last, so killing the process at any moment leaves every file either at its old version or at
its new one, never half-indexed. Unlisted chunks are garbage and are removed by the next ingest.

The same code runs against an embedded `PersistentClient` (default) or a Chroma server
(`HttpClient`) when `store.host` is configured. Against a server, a network failure (refused,
reset, timed out, 5xx) raises `StoreUnavailable` naming host:port, and the next call simply
tries again (chromadb's HTTP client reconnects by itself). Ingests against a server are
serialised by an expiring writer lease in the manifest collection (see `WriterLease`); in
embedded mode the data-dir lock (rag/index/locking.py) does that job.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np

from rag.config import Settings, StoreSettings
from rag.index.documents import Chunk

VERSION_ID = "__version__"
DIRTY_ID = "__ingest_in_progress__"
LEASE_ID = "__writer_lease__"
LIVE_ID = "__live__"
COUNTER_ID = "__next_version__"  # the next version number (rag/index/versions.py)
BASE_VERSION = "0"
_RESERVED = {VERSION_ID, DIRTY_ID, LEASE_ID}
# Manifest records carry no meaningful vector; Chroma still wants one.
_NO_VECTOR = [1.0]
# chromadb's HTTP client never times out on its own (httpx `timeout=None`), so a hung server
# would block a search forever. Reads allow for the largest batch upsert an ingest sends.
HTTP_TIMEOUT_S = 30.0
HTTP_CONNECT_TIMEOUT_S = 5.0
# A writer lease lapses this long after its holder stops renewing it (renewed every third).
LEASE_TTL_S = 60.0

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The vector store cannot be reached or used."""


class IndexMismatch(StoreError):
    """The index was built with a different embedding model than the one configured."""


class StoreUnavailable(StoreError):
    """The Chroma server cannot be reached right now (down, restarting, hung, unreachable)."""


class StoreBusy(StoreError):
    """Another ingest holds the writer lease on the Chroma server."""


class MissingChunks(StoreError):
    """A manifest record would list chunks the store does not hold."""


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


def variant_id(chunk: Chunk) -> str:
    """The record id of a chunk stored again with other metadata (offsets, release time)
    because an older version lists its first record."""
    meta = json.dumps(chunk.metadata(), sort_keys=True)
    return hashlib.sha256(f"{chunk.id}|{meta}".encode()).hexdigest()[:32]


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_client(settings: Settings, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
    """Create the Chroma client: a server when `store.host` is set, else embedded."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.store.host:
        where = f"{settings.store.host}:{settings.store.port}"
        try:
            client = chromadb.HttpClient(
                host=settings.store.host,
                port=settings.store.port,
                ssl=settings.store.ssl,
                settings=chroma_settings,
            )
        except Exception as exc:  # chromadb raises bare ValueError/ConnectionError here
            raise StoreUnavailable(f"Cannot reach the Chroma server at {where}: {exc}") from exc
        _limit_waits(client, httpx.Timeout(timeout_s, connect=HTTP_CONNECT_TIMEOUT_S))
        return client
    path = Path(settings.data_dir) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings)


def _limit_waits(client: Any, timeout: httpx.Timeout) -> None:
    """Give chromadb's HTTP session a timeout (it has none, and no setting for one)."""
    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = timeout
    else:  # a chromadb upgrade moved it: requests to a hung server may then wait forever
        log.warning("cannot set a timeout on chromadb's HTTP client (%r)", type(session))


def server_address(client: Any) -> str | None:
    """host:port of the Chroma server a client talks to, or None for an embedded client."""
    chroma = client.get_settings()
    if not str(chroma.chroma_api_impl).endswith("FastAPI"):
        return None
    return f"{chroma.chroma_server_host}:{chroma.chroma_server_http_port}"


def _unavailable(exc: Exception, where: str) -> StoreUnavailable | None:
    """The StoreUnavailable a network failure means, or None for any other error."""
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500:
        reason = f"it answered HTTP {exc.response.status_code}"
    elif isinstance(exc, httpx.TimeoutException):
        reason = "it did not answer in time"
    elif isinstance(exc, httpx.TransportError):
        reason = str(exc) or type(exc).__name__
    else:
        return None
    return StoreUnavailable(
        f"The Chroma server at {where} is not reachable ({reason}). Check that it is "
        "running; searches work again as soon as it is back."
    )


class _Guarded:
    """A chromadb client or collection whose network failures raise StoreUnavailable.

    One proxy instead of a try/except in every store method: any method called through it
    turns httpx transport errors and 5xx answers into one typed error naming host:port.
    """

    def __init__(self, target: Any, where: str) -> None:
        self._target = target
        self._where = where

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        return self._guard(attr)

    def _guard(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                error = _unavailable(exc, self._where)
                if error is None:
                    raise
                raise error from exc

        return call


class VersionManifest:
    """One version's manifest as records of the control collection: the collection API the
    store uses (get, upsert, delete) with ids `m:<version>:<file>` and a `manifest_of`
    metadata key, so that all of a version's records are read in one call.

    A record's document (a file's chunk ids) is kept in its metadata: Chroma indexes every
    document for full-text search, and indexing lists of hex ids made each version's copy of
    the manifest cost several times a plain write.
    """

    def __init__(self, control: Any, version: str) -> None:
        self.control, self.version = control, version
        self.prefix = f"m:{version}:"

    def rows(self, ids: Sequence[str], documents: Sequence[str],
             metadatas: Sequence[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, document, metadata) of records as stored in the control collection."""
        return [(self.prefix + i, "", {**m, "manifest_of": self.version, "doc": d})
                for i, d, m in zip(ids, documents, metadatas, strict=True)]

    def get(self, ids: Sequence[str] | None = None, include: Sequence[str] = ()) -> Any:
        """Records by id, or all of this version's, as the store wrote them."""
        wanted = list(include)
        if "documents" in wanted:
            wanted = ["metadatas", *(i for i in wanted if i not in ("documents", "metadatas"))]
        if ids is None:
            got = self.control.get(where={"manifest_of": self.version}, include=wanted)
        else:
            got = self.control.get(ids=[self.prefix + i for i in ids], include=wanted)
        got = {**got, "ids": [i.removeprefix(self.prefix) for i in got["ids"]]}
        if "documents" in include:
            got["documents"] = [str(m.get("doc", "")) for m in got["metadatas"]]
        return got

    def upsert(self, ids: Sequence[str], embeddings: Sequence[Any], documents: Sequence[str],
               metadatas: Sequence[dict[str, Any]]) -> None:
        """Write records (one atomic upsert)."""
        rows = self.rows(ids, documents, metadatas)
        self.control.upsert(ids=[r[0] for r in rows], embeddings=list(embeddings),
                            documents=[r[1] for r in rows], metadatas=[r[2] for r in rows])

    def delete(self, ids: Sequence[str]) -> None:
        """Delete records by id."""
        self.control.delete(ids=[self.prefix + i for i in ids])


class PendingManifest:
    """The manifest of a version being built: kept in memory, with the collection API the
    store uses, and written to the control collection once, by the write that registers the
    finished version (rag/index/versions.py). No other process can see it, and a build that
    is killed leaves nothing to clean up but its chunks, which no manifest lists."""

    def __init__(self, version: str, records: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self.version = version
        self.records = records  # id -> (document, metadata)
        self.stored = VersionManifest(None, version)  # how its rows are written
        # Further control records to write with it (see rag/index/versions.py).
        self.also: list[tuple[str, str, dict[str, Any]]] = []

    def get(self, ids: Sequence[str] | None = None, include: Sequence[str] = ()) -> Any:
        """Records by id, or all of them."""
        keys = list(self.records) if ids is None else [i for i in ids if i in self.records]
        got: dict[str, Any] = {"ids": keys}
        if "documents" in include:
            got["documents"] = [self.records[k][0] for k in keys]
        if "metadatas" in include:
            got["metadatas"] = [dict(self.records[k][1]) for k in keys]
        return got

    def upsert(self, ids: Sequence[str], embeddings: Sequence[Any], documents: Sequence[str],
               metadatas: Sequence[dict[str, Any]]) -> None:
        """Write records (in memory)."""
        for rid, doc, meta in zip(ids, documents, metadatas, strict=True):
            self.records[rid] = (doc, dict(meta))

    def delete(self, ids: Sequence[str]) -> None:
        """Delete records by id (in memory)."""
        for rid in ids:
            self.records.pop(rid, None)

    def rows(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every record as the control collection will store it."""
        ids = list(self.records)
        return self.stored.rows(ids, [self.records[i][0] for i in ids],
                                [self.records[i][1] for i in ids])


class ChunkCache:
    """Chunks read from the store (text, metadata, vector) by record id, the most recently
    used `size` of them; thread-safe.

    Valid for one write epoch of the index (`ChromaStore.write_epoch`): any process that
    changes what a listed record holds (a plain ingest updates metadata in place; a record
    deleted as garbage can come back with other metadata) changes the pointer, the version
    counter or the live manifest's token by the end of its write, and a new epoch empties the
    cache. This process's own writes drop the records they touch, and the epoch they leave
    is adopted while the writer lock is still held (`ChromaStore.writer_lease`), so a running
    bot's own re-ingests keep it. A search in another thread may have read a record before a
    write changed it and put it back after the write dropped it: every record the write
    touched is dropped once more when its epoch is adopted, and a search that read the old
    epoch can put nothing after that.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.epoch: Any = None
        self._chunks: OrderedDict[str, StoredChunk] = OrderedDict()
        self._touched: set[str] = set()  # by this process's write under way
        self._lock = threading.Lock()

    def get_many(self, ids: Iterable[str], epoch: Any) -> dict[str, StoredChunk]:
        """The chunks held of these ids, if `epoch` is the cache's (else it is emptied)."""
        with self._lock:
            self._enter(epoch)
            found = {i: self._chunks[i] for i in ids if i in self._chunks}
            for rid in found:
                self._chunks.move_to_end(rid)
            return found

    def put_many(self, chunks: Iterable[StoredChunk], epoch: Any) -> None:
        """Remember chunks read in `epoch`, forgetting the least recently used beyond `size`."""
        with self._lock:
            if epoch != self.epoch:
                return
            for chunk in chunks:
                self._chunks[chunk.id] = chunk
                self._chunks.move_to_end(chunk.id)
            while len(self._chunks) > self.size:
                self._chunks.popitem(last=False)

    def evict(self, ids: Iterable[str]) -> None:
        """Forget records this process is writing or deleting."""
        with self._lock:
            for rid in ids:
                self._chunks.pop(rid, None)
                self._touched.add(rid)

    def sync(self, epoch: Any, adopt: bool = False) -> None:
        """Take `epoch` as current: emptied first unless `adopt` (this process made it, under
        the writer lock, and evicted what it wrote)."""
        with self._lock:
            if adopt:
                for rid in self._touched:
                    self._chunks.pop(rid, None)
                self.epoch = epoch
            else:
                self._enter(epoch)
            self._touched.clear()

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._chunks.clear()
            self._touched.clear()
            self.epoch = None

    def _enter(self, epoch: Any) -> None:
        if epoch != self.epoch:
            self._chunks.clear()
            self.epoch = epoch


class ChromaStore:
    """Chunk and manifest collections behind one small API."""

    # One writer at a time per index inside this process (see `exclusive`). Process-wide on
    # purpose: two stores opened on the same index in one process must share the lock.
    _writers: ClassVar[dict[str, threading.RLock]] = {}
    _writers_guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, client: Any, collection: str, embedder_name: str,
                 ef_search: int = StoreSettings().ef_search) -> None:
        self.embedder_name = embedder_name
        self.server = server_address(client)
        where = self.server or str(client.get_settings().persist_directory)
        with self._writers_guard:
            self._writer = self._writers.setdefault(f"{where}/{collection}", threading.RLock())
        self.client = _Guarded(client, self.server) if self.server else client
        self.collection = collection
        self.chunks = self._wrap(
            self.client.get_or_create_collection(
                collection,
                configuration={"hnsw": {"space": "cosine", "ef_search": ef_search}},
                metadata={"embedder": embedder_name},
                embedding_function=None,
            )
        )
        self._search_wider(ef_search)
        self.control = self._wrap(
            self.client.get_or_create_collection(f"{collection}__versions",
                                                 embedding_function=None)
        )
        self.max_batch = int(self.client.get_max_batch_size())
        # Shared by every view of this store (`at`): the held lease, the collections cache and
        # the lexical indexes built last (see `lexical_indexes`).
        self._shared: dict[str, Any] = {"lease": None, "manifests": {}, "lexical": [],
                                        "legacy": self._legacy_manifests(),
                                        "chunks": ChunkCache(), "writing": False}
        self._bound: str | None = None
        self._check_embedder()

    def _search_wider(self, ef_search: int) -> None:
        """Raise an existing collection's search breadth to `ef_search` (one made before the
        setting, or with a lower one); never lowered, so processes configured differently do
        not undo each other."""
        hnsw = (getattr(self.chunks, "configuration", None) or {}).get("hnsw") or {}
        if int(hnsw.get("ef_search") or 0) < ef_search:
            self.chunks.modify(configuration={"hnsw": {"ef_search": ef_search}})

    def _wrap(self, collection: Any) -> Any:
        return _Guarded(collection, self.server) if self.server else collection

    def _check_embedder(self) -> None:
        stored = (self.chunks.metadata or {}).get("embedder")
        if stored and stored != self.embedder_name:
            raise IndexMismatch(
                f"The index was built with embedder '{stored}' but '{self.embedder_name}' is "
                "configured. Re-create the index (delete the data dir or use another collection)."
            )

    # -- versions ---------------------------------------------------------------------------

    def live_version(self) -> str:
        """The version searches use: the pointer record's (version 0 before any switch)."""
        got = self.control.get(ids=[LIVE_ID], include=["metadatas"])
        return str(got["metadatas"][0]["version"]) if got["ids"] else BASE_VERSION

    @property
    def bound_version(self) -> str:
        """The version this store reads and writes: its own if bound (`at`), else the live one."""
        return self._bound or self.live_version()

    def at(self, version: str) -> ChromaStore:
        """A view of this store bound to one version's manifest (the chunk pool is shared)."""
        view = copy.copy(self)
        view._bound = version
        return view

    def pinned(self, token: str) -> ChromaStore:
        """A view bound to the version a `version()` token was read from."""
        return self.at(token.split(":", 1)[0])

    def _legacy_manifests(self) -> set[str]:
        """Versions whose manifest is a collection of its own (made before manifests moved
        into the control collection)."""
        prefix = f"{self.collection}__manifest__v"
        names = (getattr(c, "name", c) for c in self.client.list_collections())
        return {n.removeprefix(prefix) for n in names if n.startswith(prefix)}

    def manifest_of(self, version: str) -> Any:
        """One version's manifest: version 0's collection, an old data dir's collection of its
        own, or its records in the control collection."""
        cache = self._shared["manifests"]
        if version not in cache:
            if version == BASE_VERSION or version in self._shared["legacy"]:
                name = (f"{self.collection}__manifest" if version == BASE_VERSION
                        else f"{self.collection}__manifest__v{version}")
                cache[version] = self._wrap(
                    self.client.get_or_create_collection(name, embedding_function=None))
            else:
                cache[version] = VersionManifest(self.control, version)
        return cache[version]

    def build_in_memory(self, manifest: PendingManifest) -> None:
        """Make a version's manifest the in-memory one given, for every view of this store,
        until `forget_pending`."""
        self._shared["manifests"][manifest.version] = manifest

    def pending(self, version: str) -> PendingManifest | None:
        """The in-memory manifest of a version being built in this process, if it is one."""
        found = self._shared["manifests"].get(version)
        return found if isinstance(found, PendingManifest) else None

    def forget_pending(self, version: str) -> None:
        """Stop using a version's in-memory manifest (written, or abandoned)."""
        if self.pending(version) is not None:
            del self._shared["manifests"][version]

    def drop_manifest(self, version: str, *control_ids: str) -> None:
        """Delete one version's manifest (its chunks become garbage) and the given control
        records (its version record), in one write where the manifest is in the control
        collection. Version 0's collection is emptied, not deleted."""
        manifest = self.manifest_of(version)
        if isinstance(manifest, VersionManifest):
            listed = manifest.get(include=[])["ids"]
            doomed = [*control_ids, *(manifest.prefix + i for i in listed)]
            if doomed:
                self.control.delete(ids=doomed)
            return
        if control_ids:
            self.control.delete(ids=list(control_ids))
        if version == BASE_VERSION:
            ids = manifest.get(include=[])["ids"]
            if ids:
                manifest.delete(ids=ids)
            return
        self._shared["manifests"].pop(version, None)
        self._shared["legacy"].discard(version)
        try:
            self.client.delete_collection(f"{self.collection}__manifest__v{version}")
        except Exception as exc:  # noqa: BLE001 - already gone (NotFoundError, ValueError)
            log.debug("manifest of version %s already gone: %s", version, exc)

    def known_versions(self) -> set[str]:
        """Every version with a manifest: registered ones, the live one, and this view's."""
        got = self.control.get(where={"kind": "version"}, include=[])
        live = self.live_version()
        return {rid.removeprefix("v:") for rid in got["ids"]} | {live, self._bound or live}

    def shares_chunks(self) -> bool:
        """Whether other versions may list this version's chunks (so none is edited in place)."""
        return len(self.known_versions()) > 1

    def listed_ids(self, versions: Iterable[str]) -> set[str]:
        """Every chunk id the manifests of these versions list."""
        listed: set[str] = set()
        for version in versions:
            listed.update(c for e in self.at(version).manifest().values() for c in e.chunk_ids)
        return listed

    @property
    def lexical_indexes(self) -> tuple[Any, ...]:
        """The lexical indexes retrievers over this store (any view, any version) built last,
        newest first, kept so that the next one is derived from them (rag/retrieval/lexical.py,
        `BM25Index.updated`). Any version's will do: chunk record ids name content."""
        return tuple(self._shared["lexical"])

    def keep_lexical_index(self, index: Any, keep: int = 2) -> None:
        """Remember a lexical index just built; only the `keep` newest are kept. Two, because
        a gated re-ingest may build two (the new version's, and the live one's when its gold
        results are not stored) and the next build should find the one closest to it."""
        self._shared["lexical"] = [index, *(i for i in self._shared["lexical"]
                                            if i is not index)][:keep]

    def collect_garbage(self) -> int:
        """Delete the chunks no version lists (stale, or left by an interrupted run); how many."""
        orphans = self.all_chunk_ids() - self.listed_ids(self.known_versions())
        self.delete_chunks(orphans)
        return len(orphans)

    @property
    def manifest_collection(self) -> Any:
        """The manifest of the version this store is bound to."""
        return self.manifest_of(self.bound_version)

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
        """An opaque token that changes whenever the set of live chunks changes: the version
        searched, then a token its manifest changes at every commit (see `pinned`)."""
        version = self.bound_version
        got = self.manifest_of(version).get(ids=[VERSION_ID], include=["metadatas"])
        token = str(got["metadatas"][0]["version"]) if got["ids"] else ""
        return f"{version}:{token}"

    def _bump_version(self) -> None:
        self.manifest_collection.upsert(
            ids=[VERSION_ID],
            embeddings=[_NO_VECTOR],
            documents=[""],
            metadatas=[{"version": uuid.uuid4().hex}],
        )

    def commit_file(self, entry: ManifestEntry) -> None:
        """Make a file's chunks live: the single write that switches versions. Refused
        (MissingChunks) if any chunk it lists is not stored, so the manifest never promises
        text that search cannot find."""
        self._check_lease()
        missing = set(entry.chunk_ids) - self.existing_ids(entry.chunk_ids)
        if missing:
            raise MissingChunks(
                f"Not committing {entry.source}: {len(missing)} of its {len(entry.chunk_ids)} "
                "chunks are not in the store (deleted by another writer?). The next ingest "
                "re-embeds it."
            )
        # The file's record and a new version token in one write.
        self.manifest_collection.upsert(
            ids=[entry.source, VERSION_ID],
            embeddings=[_NO_VECTOR, _NO_VECTOR],
            documents=[json.dumps(list(entry.chunk_ids)), ""],
            metadatas=[
                {"file_hash": entry.file_hash, "root": entry.root, "ingested_at": time.time()},
                {"version": uuid.uuid4().hex},
            ],
        )

    def forget_file(self, source: str) -> None:
        """Remove a file from the manifest, which hides its chunks at once."""
        self._check_lease()
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

    # -- writers ----------------------------------------------------------------------------

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this index's in-process writer lock: a second ingest in the same process
        waits (the data-dir lock and the server lease only keep other processes out)."""
        with self._writer:
            yield

    @contextmanager
    def writer_lease(self, ttl_s: float = LEASE_TTL_S) -> Iterator[None]:
        """Hold the server's writer lease while writing (embedded: the data-dir lock does).

        On entry, chunks cached before another process's writes are forgotten; on exit, still
        holding the lease, the write epoch this process's writes made is adopted (see
        ChunkCache)."""
        if self._shared["writing"]:  # held by an outer call in this process
            yield
            return
        lease = None
        if self.server is not None:
            lease = WriterLease(self, ttl_s)
            lease.acquire()
            lease.keep_renewed()
            self._shared["lease"] = lease
        self._shared["writing"] = True
        try:
            self._sync_epoch(adopt=False)
            yield
        finally:
            try:
                self._sync_epoch(adopt=True)
            finally:
                self._shared["writing"] = False
                if lease is not None:
                    self._shared["lease"] = None
                    lease.release()

    def _check_lease(self) -> None:
        """Refuse to write once our lease was lost (it lapsed and another ingest took it)."""
        lease = self._shared["lease"]
        if lease is not None and lease.lost:
            raise StoreBusy(
                f"This ingest lost its writer lease on the Chroma server at {self.server} "
                "(it lapsed and another ingest took over); stopping before writing more."
            )

    def server_time(self) -> float:
        """Seconds on the store's clock (the server's, so leases ignore client clock skew)."""
        return float(self.client.heartbeat()) / 1e9

    # -- chunks -----------------------------------------------------------------------------

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already stored (so they need no embedding)."""
        found: set[str] = set()
        for batch in _batches(list(ids), self.max_batch):
            found.update(self.chunks.get(ids=list(batch), include=[])["ids"])
        return found

    def add_chunks(self, chunks: Sequence[Chunk], embeddings: np.ndarray) -> None:
        """Store chunks with their embeddings (upsert: re-adding the same id is harmless)."""
        self._shared["chunks"].evict(c.id for c in chunks)
        for start in range(0, len(chunks), self.max_batch):
            part = chunks[start : start + self.max_batch]
            self.chunks.upsert(
                ids=[c.id for c in part],
                embeddings=embeddings[start : start + self.max_batch],
                documents=[c.text for c in part],
                metadatas=[c.metadata() for c in part],
            )

    def metadatas(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored metadata by id (missing ids are left out)."""
        found: dict[str, dict[str, Any]] = {}
        for part in _batches(list(ids), self.max_batch):
            got = self.chunks.get(ids=list(part), include=["metadatas"])
            found.update(zip(got["ids"], (dict(m) for m in got["metadatas"]), strict=True))
        return found

    def copy_as_variants(self, chunks: Sequence[Chunk]) -> None:
        """Store chunks whose text is stored under their id with other metadata as new records
        (`variant_id`), reusing the stored vectors: records other versions list stay as they
        are."""
        stored = {s.id: s.embedding for s in self.get_chunks([c.id for c in chunks])}
        self._shared["chunks"].evict(variant_id(c) for c in chunks)
        for part in _batches(list(chunks), self.max_batch):
            self.chunks.upsert(
                ids=[variant_id(c) for c in part],
                embeddings=np.stack([stored[c.id] for c in part]),
                documents=[c.text for c in part],
                metadatas=[c.metadata() for c in part],
            )

    def update_metadata(self, chunks: Sequence[Chunk]) -> None:
        """Refresh offsets/pages of chunks whose text is unchanged (no re-embedding)."""
        self._shared["chunks"].evict(c.id for c in chunks)
        for part in _batches(list(chunks), self.max_batch):
            self.chunks.update(ids=[c.id for c in part], metadatas=[c.metadata() for c in part])

    def delete_chunks(self, ids: Iterable[str]) -> None:
        """Delete chunks by id."""
        self._check_lease()
        ids = list(ids)
        self._shared["chunks"].evict(ids)
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
        """Read chunks with their embeddings, in the order of `ids` (missing ids are skipped).

        Chunks read before in the same write epoch come from memory (`ChunkCache`): searches
        read the same candidates again and again.
        """
        cache: ChunkCache = self._shared["chunks"]
        epoch = self.write_epoch()
        by_id = cache.get_many(ids, epoch)
        missing = [i for i in dict.fromkeys(ids) if i not in by_id]
        for part in _batches(missing, self.max_batch):
            got = self.chunks.get(ids=list(part), include=["documents", "metadatas", "embeddings"])
            rows = zip(
                got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
            )
            read = [StoredChunk(rid, Chunk.from_record(doc, meta), np.asarray(emb))
                    for rid, doc, meta, emb in rows]
            by_id.update((c.id, c) for c in read)
            cache.put_many(read, epoch)
        return [by_id[i] for i in ids if i in by_id]

    def write_epoch(self) -> tuple[str, str]:
        """What every write that changes a listed record changes by its end (see ChunkCache):
        the pointer and version counter records, and the live manifest's token."""
        got = self.control.get(ids=[LIVE_ID, COUNTER_ID], include=["metadatas"])
        rows = sorted(zip(got["ids"], got["metadatas"], strict=True), key=lambda r: r[0])
        live = next((str(m["version"]) for rid, m in rows if rid == LIVE_ID), BASE_VERSION)
        return json.dumps(rows, sort_keys=True), self.at(live).version()

    def _sync_epoch(self, adopt: bool) -> None:
        cache: ChunkCache = self._shared["chunks"]
        try:
            cache.sync(self.write_epoch(), adopt)
        except StoreError:
            cache.clear()

    def iter_texts(self, ids: Sequence[str]) -> Iterator[tuple[str, str]]:
        """Yield (id, text) for the given ids, in batches, without embeddings."""
        for part in _batches(list(ids), self.max_batch):
            got = self.chunks.get(ids=list(part), include=["documents"])
            yield from zip(got["ids"], got["documents"], strict=True)

    def iter_chunks(self, ids: Sequence[str]) -> Iterator[tuple[str, Chunk]]:
        """Yield (id, chunk) for the given ids, in batches, without embeddings."""
        for part in _batches(list(ids), self.max_batch):
            got = self.chunks.get(ids=list(part), include=["documents", "metadatas"])
            for rid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                yield rid, Chunk.from_record(doc, meta)

    def first_pages(self) -> Iterator[tuple[str, Chunk]]:
        """(id, chunk) of every stored chunk of a PDF's first page, any version's."""
        got = self.chunks.get(where={"page": 1}, include=["documents", "metadatas"])
        for rid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
            yield rid, Chunk.from_record(doc, meta)

    def release_times(self) -> dict[str, float]:
        """Every stored chunk with a release time (Unix seconds), by id; the rest are released."""
        got = self.chunks.get(where={"release_at": {"$gt": 0.0}}, include=["metadatas"])
        return {rid: float(m["release_at"]) for rid, m in zip(got["ids"], got["metadatas"],
                                                               strict=True)}

    def query_many(
        self, embeddings: Sequence[np.ndarray], n: int, released_at: float | None = None
    ) -> list[list[tuple[str, float]]]:
        """Each embedding's nearest chunks by cosine, in one request per batch: (id, cosine
        similarity), best first; with `released_at`, only chunks released by then (Unix
        seconds)."""
        if n <= 0:
            return [[] for _ in embeddings]
        where = None if released_at is None else {"release_at": {"$lte": released_at}}
        found: list[list[tuple[str, float]]] = []
        for part in _batches(list(embeddings), self.max_batch):
            got = self.chunks.query(
                query_embeddings=list(part), n_results=n, include=["distances"], where=where
            )
            found.extend(
                [(rid, 1.0 - float(d)) for rid, d in zip(ids, distances, strict=True)]
                for ids, distances in zip(got["ids"], got["distances"], strict=True)
            )
        return found


class WriterLease:
    """One ingest at a time per Chroma server: an expiring record in the manifest collection.

    Chroma has no transactions, but `add` never overwrites an existing id and `delete` takes a
    `where` filter; together they give create-if-absent and compare-and-delete, so exactly one
    of several racing ingests gets the lease. A holder that dies stops renewing it, and it
    lapses after `ttl_s`. Without it, one ingest's garbage collection could delete the chunks
    another has written but not yet committed.
    """

    def __init__(self, store: ChromaStore, ttl_s: float = LEASE_TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.owner = uuid.uuid4().hex
        self.holder = f"pid {os.getpid()} on {socket.gethostname()}"
        self.lost = False
        self._since: float | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease, or raise StoreBusy naming the ingest that holds it."""
        current, now = self._read(), self.store.server_time()
        if current is not None and current["owner"] != self.owner:
            if float(current["expires"]) > now:
                raise StoreBusy(self._busy_message(current, now))
            # Only that lapsed lease: never one a faster racer has just created.
            self._delete_if_owner(str(current["owner"]))
        self._claim(now)

    def renew(self) -> None:
        """Extend the lease; mark it lost (and raise StoreBusy) if another ingest took it."""
        self._delete_if_owner(self.owner)
        self._claim(self.store.server_time())

    def _claim(self, now: float) -> None:
        self._since = self._since or now
        record = {"owner": self.owner, "holder": self.holder, "since": self._since,
                  "expires": now + self.ttl_s}
        self.store.control.add(  # add never overwrites: the first writer wins
            ids=[LEASE_ID], embeddings=[_NO_VECTOR], documents=[""], metadatas=[record]
        )
        current = self._read()
        if current is None or current["owner"] != self.owner:
            self.lost = True
            raise StoreBusy(self._busy_message(current or {}, now))

    def _read(self) -> dict[str, Any] | None:
        got = self.store.control.get(ids=[LEASE_ID], include=["metadatas"])
        return dict(got["metadatas"][0]) if got["ids"] else None

    def _delete_if_owner(self, owner: str) -> None:
        self.store.control.delete(ids=[LEASE_ID], where={"owner": owner})

    def _busy_message(self, current: dict[str, Any], now: float) -> str:
        holder = current.get("holder", "another process")
        since = now - float(current.get("since", now))
        lapses = float(current.get("expires", now)) - now
        return (
            f"Another ingest ({holder}, running for {since:.0f} s) is writing to the Chroma "
            f"server at {self.store.server}. Wait for it to finish; if it was killed, its "
            f"lease lapses in {max(lapses, 0):.0f} s."
        )

    def keep_renewed(self) -> None:
        """Renew the lease every third of its lifetime on a daemon thread until released."""
        self._renewer = threading.Thread(target=self._renew_loop, name="writer-lease",
                                         daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except StoreBusy:
                log.error("the writer lease was lost; this ingest will stop at its next write")
                return
            except StoreUnavailable as exc:  # the ingest's own writes will report it
                log.warning("could not renew the writer lease: %s", exc)

    def release(self) -> None:
        """Stop renewing and delete the lease (if the server is gone, it simply lapses)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self._delete_if_owner(self.owner)
        except StoreUnavailable:
            log.warning("could not release the writer lease; it lapses in %.0f s", self.ttl_s)
