"""Index versions: built beside the live one, switched atomically, rolled back, pruned.

A version is a manifest (rag/index/chroma_store.py): the files it holds and their chunk ids,
over one chunk pool shared by all versions, so a new version reuses every stored chunk and
embedding it has in common with the live one. The live version is named by one pointer record
in `<collection>__versions`; switching is one upsert of that record, which Chroma applies
atomically, in embedded mode and on a server alike. Every process reads the pointer (the
retriever checks it about once a second), so a switch reaches a running bot without a restart,
and no search ever reads a version that is still being built: the pointer names it only once
it is complete.

Each version has a record beside the pointer: its state (`held`, `ready`), when it was made,
which version was live when it went live (what `rollback` returns to), and for a held one the
gold report that held it. A version being built exists only in the memory of the process
building it (its manifest is a `PendingManifest`); its record and manifest are written
together, in the write that makes it live (`switch`) or holds it (`hold`). A build that is
killed leaves only chunks that no manifest lists: garbage, which the next write deletes.
(Versions left `building` by older releases, which registered them first, are dropped by the
next build.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from rag.index.chroma_store import (
    _NO_VECTOR,
    COUNTER_ID,
    LIVE_ID,
    ChromaStore,
    ManifestEntry,
    PendingManifest,
    StoreError,
)

BUILDING, HELD, READY = "building", "held", "ready"


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


def _row(record: VersionRecord) -> tuple[str, str, dict[str, Any]]:
    """A version's record as stored: (id, document, metadata)."""
    meta: dict[str, Any] = {"kind": "version", "state": record.state,
                            "created_at": record.created_at, "replaced": record.replaced,
                            "files": record.files, "gold_key": record.gold_key,
                            "gold": record.gold}
    return f"v:{record.version}", record.note, meta


def _write(store: ChromaStore, record: VersionRecord,
           *also: tuple[str, str, dict[str, Any]]) -> None:
    """Write a version's record, and any further control records (id, document, metadata)
    after it in the same upsert: one write instead of several."""
    _upsert(store, [_row(record), *also])


def _upsert(store: ChromaStore, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    store.control.upsert(ids=[r[0] for r in rows], embeddings=[_NO_VECTOR] * len(rows),
                         documents=[r[1] for r in rows], metadatas=[r[2] for r in rows])


def begin(store: ChromaStore, live: str,
          manifest: dict[str, ManifestEntry] | None = None) -> VersionRecord:
    """Start a new version holding a copy of the live manifest; its record (not stored yet).

    First drops what earlier builds left: held versions this build replaces, and versions an
    older release of this code left `building`. The new version's manifest is kept in memory
    (`PendingManifest`) while it is built and written by `switch` or `hold`, in the same
    upsert as its record: nothing is written to start a version, and a build that is killed
    leaves only chunks no manifest lists, which the next write collects. `live` is the live
    version as the caller, holding the writer lock, just read it; `manifest` its manifest, if
    the caller has read it already.
    """
    known = _registered(store)
    unfinished = {r.version for r in known if r.state in (BUILDING, HELD) and r.version != live}
    for version in sorted(unfinished, key=int):
        _drop(store, version)
    known = [r for r in known if r.version not in unfinished]
    if manifest is None:
        manifest = store.at(live).manifest()
    number = _next_number(store, {int(live), *(r.number for r in known)})
    record = VersionRecord(str(number), BUILDING, time.time())
    # Rows of this number from a write of more than one batch that was killed part-way.
    store.drop_manifest(record.version)
    pending = PendingManifest(record.version, {
        source: (json.dumps(list(e.chunk_ids)),
                 {"file_hash": e.file_hash, "root": e.root, "ingested_at": e.ingested_at})
        for source, e in manifest.items()})
    if live not in {r.version for r in known}:  # version 0, live since before versions
        pending.also.append(_row(VersionRecord(live, READY, time.time(), files=len(manifest))))
    store.build_in_memory(pending)
    return record


def _finish(store: ChromaStore, record: VersionRecord,
            *also: tuple[str, str, dict[str, Any]]) -> None:
    """Write a version's record (and `also`, as in `_write`), with its manifest if it was
    built in memory: one upsert, unless the manifest is larger than the store's batch
    limit; then the manifest's rows go first and the record last, which is what makes the
    version exist."""
    pending = store.pending(record.version)
    if pending is None:
        _write(store, record, *also)
        return
    head = [*pending.also, _row(record), (COUNTER_ID, "", {"next": record.number + 1}), *also]
    rows = pending.rows()
    while len(rows) + len(head) > store.max_batch:
        part, rows = rows[: store.max_batch], rows[store.max_batch :]
        _upsert(store, part)
    _upsert(store, [*rows, *head])
    store.forget_pending(record.version)


def abandon(store: ChromaStore, record: VersionRecord) -> None:
    """Forget a version whose build failed (its chunks are garbage for the next write)."""
    store.forget_pending(record.version)


def _next_number(store: ChromaStore, numbers: set[int]) -> int:
    """A version number never used before, past the `numbers` of the versions there are (a
    dropped version's number is not reused once the counter past it is written, with the
    version's record: see `begin`)."""
    got = store.control.get(ids=[COUNTER_ID], include=["metadatas"])
    used = int(got["metadatas"][0]["next"]) if got["ids"] else 0
    return max(used, max(numbers) + 1)


def switch(store: ChromaStore, record: VersionRecord, gold_key: str = "", gold: str = "") -> None:
    """Make a version live: one write of its own record (which keeps the gold results measured
    on it, if given), its manifest if it was just built, and, in the same upsert, the pointer
    record. The pointer is read again here, where the switch is decided: the version it names
    is the one replaced."""
    live = store.live_version()
    files = len(store.at(record.version).manifest())
    replaced = live if live != record.version else record.replaced
    _finish(store, VersionRecord(record.version, READY, record.created_at, replaced, "", files,
                                 gold_key or record.gold_key, gold or record.gold),
            (LIVE_ID, "", {"kind": "pointer", "version": record.version,
                           "switched_at": time.time()}))


def hold(store: ChromaStore, version: str, note: str) -> None:
    """Keep a finished version that the gold set held back, with the report that held it."""
    files = len(store.at(version).manifest())
    _finish(store, VersionRecord(version, HELD, time.time(), note=note, files=files))


def held(store: ChromaStore, live: str | None = None) -> VersionRecord | None:
    """The version waiting to be promoted, if any (the newest held one; `live` as in
    `records`)."""
    waiting = [r for r in records(store, live) if r.state == HELD]
    return waiting[-1] if waiting else None


def promote(store: ChromaStore, version: str | None = None, *,
            held_only: bool = False) -> VersionRecord:
    """Make the held version (or the given one) live although the gold set held it; with
    `held_only`, only while the given one is still the held version (a button made for it
    may be older than a later re-ingest, promote or rollback)."""
    with store.exclusive(), store.writer_lease():
        live = store.live_version()
        if held_only and version is not None:
            _check_still_held(store, version, live)
        record = held(store, live) if version is None else record_of(store, version, live)
        if record is None:
            raise VersionError("No re-ingest is waiting to be promoted." if version is None
                               else f"There is no index version {version}.")
        if record.state == BUILDING:
            raise VersionError(f"Version {record.version} was never finished; re-ingest "
                               "instead.")
        switch(store, record)
        return record


def _check_still_held(store: ChromaStore, version: str, live: str) -> None:
    """VersionError, saying what is live and held now, unless `version` is the held one."""
    waiting = held(store, live)
    if waiting is not None and waiting.version == version:
        return
    now = f"version {live} is live now"
    if waiting is not None:
        now += f", and version {waiting.version} is held"
    raise VersionError(f"Version {version} is no longer the held re-ingest, so nothing was "
                       f"changed: {now}.")


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
    """Delete a version: its record and its manifest."""
    store.drop_manifest(version, f"v:{version}")


def report_json(rows: list[dict[str, Any]]) -> str:
    """A gold report as stored with a held version."""
    return json.dumps(rows, ensure_ascii=False)
