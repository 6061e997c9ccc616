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


def records(store: ChromaStore, live: str | None = None) -> list[VersionRecord]:
    """Every registered version, oldest first (version 0 is implied while it is live).

    `live`: the live version as the caller just read it (a writer holding the lock), so the
    pointer is not read again.
    """
    found = _registered(store)
    live = store.live_version() if live is None else live
    if live not in {r.version for r in found}:
        files = len(store.at(live).manifest())
        found.append(VersionRecord(live, READY, 0.0, files=files))
    return sorted(found, key=lambda r: r.number)


def _registered(store: ChromaStore) -> list[VersionRecord]:
    """The versions with a stored record, in no particular order."""
    got = store.control.get(where={"kind": "version"}, include=["metadatas", "documents"])
    return [
        VersionRecord(rid.removeprefix("v:"), str(m["state"]), float(m["created_at"]),
                      str(m.get("replaced", "")), doc or "", int(m.get("files", 0)),
                      str(m.get("gold_key", "")), str(m.get("gold", "")))
        for rid, m, doc in zip(got["ids"], got["metadatas"], got["documents"], strict=True)
    ]


def record_of(store: ChromaStore, version: str, live: str | None = None) -> VersionRecord | None:
    """One version's record, or None if there is no such version (`live` as in `records`)."""
    return next((r for r in records(store, live) if r.version == version), None)


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


def begin(store: ChromaStore, live: str) -> VersionRecord:
    """Register a new version holding a copy of the live manifest; its record.

    First drops what earlier builds left: versions a killed build left `building`, and held
    ones this build replaces. The copy is a few records per file (no chunk is copied).
    Registered as `building` first, so that garbage collection keeps its chunks while it is
    written. `live` is the live version as the caller, holding the writer lock, just read it.
    """
    known = _registered(store)
    unfinished = {r.version for r in known if r.state in (BUILDING, HELD) and r.version != live}
    for version in sorted(unfinished, key=int):
        _drop(store, version)
    known = [r for r in known if r.version not in unfinished]
    if live not in {r.version for r in known}:  # version 0, live since before versions
        _write(store, VersionRecord(live, READY, time.time(),
                                    files=len(store.at(live).manifest())))
    number = _next_number(store, {int(live), *(r.number for r in known)})
    record = VersionRecord(str(number), BUILDING, time.time())
    # The record and the counter in one write: a number is used once it is registered.
    _write(store, record, (COUNTER_ID, "", {"next": number + 1}))
    source = store.manifest_of(live).get(include=["documents", "metadatas"])
    rows = [(i, d, m) for i, d, m in zip(source["ids"], source["documents"], source["metadatas"],
                                         strict=True) if i not in _RESERVED]
    target = store.manifest_of(record.version)
    for start in range(0, len(rows), store.max_batch):
        part = rows[start : start + store.max_batch]
        target.upsert(ids=[r[0] for r in part], embeddings=[_NO_VECTOR] * len(part),
                      documents=[r[1] for r in part], metadatas=[r[2] for r in part])
    return record


def _next_number(store: ChromaStore, numbers: set[int]) -> int:
    """A version number never used before, past the `numbers` of the versions there are (a
    dropped version's number is not reused once the counter past it is written, with the
    version's record: see `begin`)."""
    got = store.control.get(ids=[COUNTER_ID], include=["metadatas"])
    used = int(got["metadatas"][0]["next"]) if got["ids"] else 0
    return max(used, max(numbers) + 1)


def switch(store: ChromaStore, record: VersionRecord, gold_key: str = "", gold: str = "") -> None:
    """Make a version live: one write of its own record (which keeps the gold results measured
    on it, if given) and, after it in the same upsert, the pointer record. The pointer is read
    again here, where the switch is decided: the version it names is the one replaced."""
    live = store.live_version()
    files = len(store.at(record.version).manifest())
    replaced = live if live != record.version else record.replaced
    _write(store, VersionRecord(record.version, READY, record.created_at, replaced, "", files,
                                gold_key or record.gold_key, gold or record.gold),
           (LIVE_ID, "", {"kind": "pointer", "version": record.version,
                          "switched_at": time.time()}))


def hold(store: ChromaStore, version: str, note: str) -> None:
    """Keep a finished version that the gold set held back, with the report that held it."""
    files = len(store.at(version).manifest())
    _write(store, VersionRecord(version, HELD, time.time(), note=note, files=files))


def held(store: ChromaStore, live: str | None = None) -> VersionRecord | None:
    """The version waiting to be promoted, if any (the newest held one; `live` as in
    `records`)."""
    waiting = [r for r in records(store, live) if r.state == HELD]
    return waiting[-1] if waiting else None


def promote(store: ChromaStore, version: str | None = None) -> VersionRecord:
    """Make the held version (or the given one) live although the gold set held it."""
    with store.exclusive(), store.writer_lease():
        live = store.live_version()
        record = held(store, live) if version is None else record_of(store, version, live)
        if record is None:
            raise VersionError("No re-ingest is waiting to be promoted." if version is None
                               else f"There is no index version {version}.")
        if record.state == BUILDING:
            raise VersionError(f"Version {record.version} was never finished; re-ingest "
                               "instead.")
        switch(store, record)
        return record


def rollback(store: ChromaStore) -> tuple[str, str]:
    """Make the version that was live before the current one live again: (from, to)."""
    with store.exclusive(), store.writer_lease():
        live = store.live_version()
        known = {r.version: r for r in records(store, live)}
        target = known[live].replaced
        if not target or target not in known:
            raise VersionError(f"Version {live} is live and there is no earlier version to "
                               "roll back to (it was pruned, or there never was one).")
        store.control.upsert(ids=[LIVE_ID], embeddings=[_NO_VECTOR], documents=[""],
                             metadatas=[{"kind": "pointer", "version": target,
                                         "switched_at": time.time()}])
        return live, target


def prune(store: ChromaStore, keep: int, live: str | None = None) -> list[str]:
    """Drop finished versions beyond the `keep` newest (never the live or a held one; `live`
    as in `records`)."""
    live = store.live_version() if live is None else live
    finished = [r.version for r in records(store, live) if r.state == READY and r.version != live]
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
