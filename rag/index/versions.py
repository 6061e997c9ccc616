"""Index versions: built beside the live one, switched atomically, rolled back, pruned.

A version is a manifest (rag/index/chroma_store.py): the files it holds and their chunk ids,
over one chunk pool shared by all versions, so a new version reuses every stored chunk and
embedding it has in common with the live one. The live version is named by one pointer record
in `<collection>__versions`; switching is one upsert of that record, which Chroma applies
atomically, in embedded mode and on a server alike. Every process reads the pointer (the
retriever checks it about once a second), so a switch reaches a running bot without a restart,
and no search ever reads a version that is still being built: the pointer names it only once
it is complete.

Each version has a record beside the pointer: its state (`building`, `held`, `ready`), when
it was made, which version was live when it went live (what `rollback` returns to), and for a
held one the gold report that held it. A build that was killed stays `building` until the next
write drops it; its chunks are then garbage.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from rag.index.chroma_store import (
    _NO_VECTOR,
    _RESERVED,
    BASE_VERSION,
    LIVE_ID,
    ChromaStore,
    StoreError,
)

BUILDING, HELD, READY = "building", "held", "ready"
COUNTER_ID = "__next_version__"


class VersionError(StoreError):
    """A promote or rollback that cannot be done (nothing held, no previous version)."""


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """What the index knows about one version."""

    version: str
    state: str
    created_at: float
    replaced: str = ""  # the version that was live when this one went live
    note: str = ""  # for a held version: the gold report that held it (JSON)
    files: int = 0
    # The gold results measured on this version, and what they were measured for (the gold
    # set, the settings and the version's manifest token): a later gated re-ingest reuses them
    # as the "before" side while that key still holds.
    gold_key: str = ""
    gold: str = ""

    @property
    def number(self) -> int:
        """The version's number (versions are numbered in the order they were made)."""
        return int(self.version)


def records(store: ChromaStore) -> list[VersionRecord]:
    """Every registered version, oldest first (version 0 is implied while it is live)."""
    got = store.control.get(where={"kind": "version"}, include=["metadatas", "documents"])
    found = [
        VersionRecord(rid.removeprefix("v:"), str(m["state"]), float(m["created_at"]),
                      str(m.get("replaced", "")), doc or "", int(m.get("files", 0)),
                      str(m.get("gold_key", "")), str(m.get("gold", "")))
        for rid, m, doc in zip(got["ids"], got["metadatas"], got["documents"], strict=True)
    ]
    live = store.live_version()
    if live not in {r.version for r in found}:
        files = len(store.at(live).manifest())
        found.append(VersionRecord(live, READY, 0.0, files=files))
    return sorted(found, key=lambda r: r.number)


def record_of(store: ChromaStore, version: str) -> VersionRecord | None:
    """One version's record, or None if there is no such version."""
    return next((r for r in records(store) if r.version == version), None)


def record_of_registered(store: ChromaStore, version: str) -> dict[str, Any] | None:
    """The stored record of a version, if it has one (version 0 may not)."""
    got = store.control.get(ids=[f"v:{version}"], include=["metadatas"])
    return dict(got["metadatas"][0]) if got["ids"] else None


def _write(store: ChromaStore, record: VersionRecord,
           *also: tuple[str, str, dict[str, Any]]) -> None:
    """Write a version's record, and any further control records (id, document, metadata)
    after it in the same upsert: one write instead of several."""
    meta: dict[str, Any] = {"kind": "version", "state": record.state,
                            "created_at": record.created_at, "replaced": record.replaced,
                            "files": record.files, "gold_key": record.gold_key,
                            "gold": record.gold}
    rows = [(f"v:{record.version}", record.note, meta), *also]
    store.control.upsert(ids=[r[0] for r in rows], embeddings=[_NO_VECTOR] * len(rows),
                         documents=[r[1] for r in rows], metadatas=[r[2] for r in rows])


def begin(store: ChromaStore) -> str:
    """Register a new version holding a copy of the live manifest; its number.

    The copy is a few records per file (no chunk is copied). Registered as `building` first,
    so that garbage collection keeps its chunks while it is written.
    """
    number = _next_number(store)
    version = str(number)
    live = store.live_version()
    if record_of_registered(store, live) is None:  # version 0, live since before versions
        _write(store, VersionRecord(live, READY, time.time(),
                                    files=len(store.at(live).manifest())))
    # The record and the counter in one write: a number is used once it is registered.
    _write(store, VersionRecord(version, BUILDING, time.time()),
           (COUNTER_ID, "", {"next": number + 1}))
    source = store.manifest_of(live).get(include=["documents", "metadatas"])
    rows = [(i, d, m) for i, d, m in zip(source["ids"], source["documents"], source["metadatas"],
                                         strict=True) if i not in _RESERVED]
    target = store.manifest_of(version)
    for start in range(0, len(rows), store.max_batch):
        part = rows[start : start + store.max_batch]
        target.upsert(ids=[r[0] for r in part], embeddings=[_NO_VECTOR] * len(part),
                      documents=[r[1] for r in part], metadatas=[r[2] for r in part])
    return version


def _next_number(store: ChromaStore) -> int:
    """A version number never used before (a dropped version's number is not reused once
    the counter past it is written, with the version's record: see `begin`)."""
    got = store.control.get(ids=[COUNTER_ID], include=["metadatas"])
    used = int(got["metadatas"][0]["next"]) if got["ids"] else 0
    return max(used, max(r.number for r in records(store)) + 1)


def switch(store: ChromaStore, version: str, gold_key: str = "", gold: str = "") -> None:
    """Make `version` live: one write of its own record (which keeps the gold results measured
    on it, if given) and, after it in the same upsert, the pointer record."""
    record = record_of(store, version)
    if record is None:
        raise VersionError(f"There is no index version {version}.")
    live = store.live_version()
    files = len(store.at(version).manifest())
    replaced = live if live != version else record.replaced
    _write(store, VersionRecord(version, READY, record.created_at, replaced, "", files,
                                gold_key or record.gold_key, gold or record.gold),
           (LIVE_ID, "", {"kind": "pointer", "version": version, "switched_at": time.time()}))


def hold(store: ChromaStore, version: str, note: str) -> None:
    """Keep a finished version that the gold set held back, with the report that held it."""
    files = len(store.at(version).manifest())
    _write(store, VersionRecord(version, HELD, time.time(), note=note, files=files))


def held(store: ChromaStore) -> VersionRecord | None:
    """The version waiting to be promoted, if any (the newest held one)."""
    waiting = [r for r in records(store) if r.state == HELD]
    return waiting[-1] if waiting else None


def promote(store: ChromaStore, version: str | None = None) -> VersionRecord:
    """Make the held version (or the given one) live although the gold set held it."""
    with store.exclusive(), store.writer_lease():
        record = held(store) if version is None else record_of(store, version)
        if record is None:
            raise VersionError("No re-ingest is waiting to be promoted." if version is None
                               else f"There is no index version {version}.")
        if record.state == BUILDING:
            raise VersionError(f"Version {record.version} was never finished; re-ingest "
                               "instead.")
        switch(store, record.version)
        return record


def rollback(store: ChromaStore) -> tuple[str, str]:
    """Make the version that was live before the current one live again: (from, to)."""
    with store.exclusive(), store.writer_lease():
        live = store.live_version()
        record = record_of(store, live)
        target = record.replaced if record else ""
        if not target or record_of(store, target) is None:
            raise VersionError(f"Version {live} is live and there is no earlier version to "
                               "roll back to (it was pruned, or there never was one).")
        store.control.upsert(ids=[LIVE_ID], embeddings=[_NO_VECTOR], documents=[""],
                             metadatas=[{"kind": "pointer", "version": target,
                                         "switched_at": time.time()}])
        return live, target


def discard_unfinished(store: ChromaStore) -> list[str]:
    """Drop versions a killed build left, and held ones a new build replaces."""
    dropped = [r.version for r in records(store) if r.state in (BUILDING, HELD)
               and r.version != store.live_version()]
    for version in dropped:
        _drop(store, version)
    return dropped


def prune(store: ChromaStore, keep: int) -> list[str]:
    """Drop finished versions beyond the `keep` newest (never the live or a held one)."""
    live = store.live_version()
    finished = [r.version for r in records(store) if r.state == READY and r.version != live]
    old = finished[: max(0, len(finished) - (keep - 1))]
    for version in old:
        _drop(store, version)
    return old


def _drop(store: ChromaStore, version: str) -> None:
    store.control.delete(ids=[f"v:{version}"])
    if version == BASE_VERSION:  # its collection also holds no control records: just empty it
        collection = store.manifest_of(version)
        ids = collection.get(include=[])["ids"]
        if ids:
            collection.delete(ids=ids)
        return
    store.drop_manifest(version)


def report_json(rows: list[dict[str, Any]]) -> str:
    """A gold report as stored with a held version."""
    return json.dumps(rows, ensure_ascii=False)
