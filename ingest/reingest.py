"""The one re-ingest entry point (CLI `ingest`, the bot's /reingest and /upload, FAQ files).

Without a gold set in the materials folder it is the plain incremental ingest, in place, as it
always was. With one, a re-ingest that changes anything is gated:

1. a new index version is started beside the live one, as an in-memory copy of the live
   manifest (rag/index/versions.py), and the incremental ingest runs against it: unchanged
   files cost nothing, unchanged chunks of changed files keep their stored embeddings;
2. the gold questions run against the live version and the new one;
3. if no question got worse, the new version's record and manifest are written and the
   pointer switched to it, in one atomic write; otherwise the live version stays and the new
   one is written, held, for `promote`;
4. versions beyond `store.keep_versions` are pruned and chunks no version lists are deleted.

Searches read only the live version, so they never see the new one before step 3. A build
killed at any point leaves the live version serving; the next write drops what it left.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.pipeline import (
    IngestPlan,
    IngestProgress,
    IngestReport,
    SourceFile,
    Target,
    ingest,
    make_plan,
    pipeline_id,
    run_ingest,
    scan,
)
from rag.config import Settings
from rag.index import versions
from rag.index.chroma_store import _NO_VECTOR, ChromaStore
from rag.index.embedder import Embedder
from rag.retrieval.gold import (
    GoldChange,
    GoldResult,
    GoldSet,
    compare,
    evaluate,
    load_gold_set,
    results_from_json,
    results_json,
)
from rag.retrieval.retriever import Retriever


@dataclass
class GateReport:
    """What the gold questions decided about one re-ingest."""

    gold: Path
    live_before: str
    built: str
    live_after: str
    changes: list[GoldChange] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        """The new version was kept back: some gold question got worse."""
        return self.live_after != self.built

    @property
    def regressed(self) -> list[GoldChange]:
        """The gold questions that got worse."""
        return [c for c in self.changes if c.worse]


@dataclass
class ReingestResult:
    """An ingest report, and the gate's verdict when a gold set gated it."""

    report: IngestReport
    gate: GateReport | None = None


def gold_path(settings: Settings) -> Path:
    """Where the gold questions live: in the materials folder."""
    return Path(settings.materials_dir) / settings.ingest.gold_file


def reingest(
    targets: Sequence[Target],
    store: ChromaStore,
    embedder: Embedder,
    settings: Settings,
    *,
    dry_run: bool = False,
    progress: IngestProgress | None = None,
    now: float | None = None,
) -> ReingestResult:
    """Ingest the targets: gated by the gold set if there is one, else in place."""
    gold = load_gold_set(gold_path(settings), settings.retrieval.k, settings.ingest.gold_file)
    timezone = settings.course.timezone
    if gold is None or dry_run:
        return ReingestResult(ingest(targets, store, embedder, settings.ingest, dry_run,
                                     progress, timezone=timezone, now=now))
    files, skipped = scan(targets, settings.ingest, pipeline_id(settings.ingest, embedder.name),
                          timezone)
    now = time.time() if now is None else now
    with store.exclusive(), store.writer_lease():
        live = store.live_version()
        plan = make_plan(files, skipped, store.at(live), targets)
        if not (plan.removed or plan.to_process or store.at(live).is_dirty()):
            report = IngestReport(plan=plan, skipped=dict(plan.skipped))
        else:
            return _gated(plan, store, live, embedder, settings, gold, progress, files, now)
    report.scheduled = {f.source: f.release_at for f in files
                        if f.release_at > now and f.source not in report.skipped}
    return ReingestResult(report)


def _gated(
    plan: IngestPlan,
    store: ChromaStore,
    live: str,
    embedder: Embedder,
    settings: Settings,
    gold: GoldSet,
    progress: IngestProgress | None,
    files: list[SourceFile],
    now: float,
) -> ReingestResult:
    """Build a new version, run the gold set on both, switch or hold, prune.

    `live` is the live version as read under the writer lock, which the caller holds: no
    other writer can move the pointer until it is released, so it is not read again before
    the switch (which reads it once more, as the step that decides).
    """
    began = time.perf_counter()
    built = versions.begin(store, live, plan.manifest)
    try:
        report = run_ingest(plan, store.at(built.version), embedder, settings.ingest, progress,
                            building=True)
        report.scheduled = {f.source: f.release_at for f in files
                            if f.release_at > now and f.source not in report.skipped}
        after = _evaluate(gold, store.at(built.version), embedder, settings)
        changes = compare(_live_results(gold, store, live, embedder, settings), after)
        gate = GateReport(gold.path, live, built.version, live, changes)
        if gate.regressed:
            versions.hold(store, built.version,
                          versions.report_json([c.as_json() for c in changes]))
        else:
            key = _gold_key(gold, store.at(built.version), embedder, settings)
            versions.switch(store, built, key, results_json(after))
            gate.live_after = built.version
    finally:  # written by hold or switch, or abandoned: its chunks are then garbage
        versions.abandon(store, built)
    gate.pruned = versions.prune(store, settings.store.keep_versions, gate.live_after)
    report.chunks_removed += store.collect_garbage()
    gate.seconds = time.perf_counter() - began
    return ReingestResult(report, gate)


def _gold_key(gold: GoldSet, store: ChromaStore, embedder: Embedder, settings: Settings) -> str:
    """What gold results depend on: the set, the retrieval settings, the embedder, and the
    version's manifest token (an in-place ingest changes it)."""
    used = json.dumps([gold.digest, gold.k, settings.retrieval.model_dump(), embedder.name])
    return f"{hashlib.sha256(used.encode()).hexdigest()[:16]}|{store.version()}"


def _live_results(
    gold: GoldSet, store: ChromaStore, live: str, embedder: Embedder, settings: Settings
) -> list[GoldResult]:
    """The live version's gold results: those stored when it went live if they still hold
    (same set, settings and manifest), else measured now."""
    view = store.at(live)
    record = versions.record_of(store, live, live)
    if record is not None and record.gold and record.gold_key == _gold_key(gold, view, embedder,
                                                                           settings):
        return results_from_json(record.gold)
    return _evaluate(gold, view, embedder, settings)


def _evaluate(
    gold: GoldSet, store: ChromaStore, embedder: Embedder, settings: Settings
) -> list[GoldResult]:
    """The gold results of one version, through a retriever pinned to it."""
    cached = StoredQueryVectors(embedder, store)
    return evaluate(gold, Retriever(store, cached, settings.retrieval))  # type: ignore[arg-type]


class StoredQueryVectors:
    """An embedder whose query vectors are kept in the index's control collection: the gold
    questions are the same from one re-ingest to the next, so each is embedded once (same
    text, same model: the same vector). Only the latest set's vectors are kept."""

    def __init__(self, embedder: Embedder, store: ChromaStore) -> None:
        self.embedder, self.store, self.name = embedder, store, embedder.name

    def _key(self, text: str) -> str:
        return "gq:" + hashlib.sha256(f"{self.name}\x1f{text}".encode()).hexdigest()[:24]

    def holds_word(self, word: str) -> bool:
        """The embedder's answer (typo correction leaves the words it holds whole alone)."""
        return self.embedder.holds_word(word)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Stored vectors where there are some; the rest embedded in one batch and stored."""
        if not texts:
            return self.embedder.embed_queries(texts)
        keys = [self._key(t) for t in texts]
        # Every stored vector in one read: those of this set, and stale ones to delete.
        got = self.store.control.get(where={"kind": "gold_vector"}, include=["documents"])
        stored = dict(zip(got["ids"], got["documents"], strict=True))
        known = {k: json.loads(stored[k]) for k in keys if k in stored}
        missing = [t for t, k in zip(texts, keys, strict=True) if k not in known]
        if missing:
            fresh = self.embedder.embed_queries(missing)
            new = {self._key(t): v.tolist() for t, v in zip(missing, fresh, strict=True)}
            self.store.control.upsert(
                ids=list(new), embeddings=[_NO_VECTOR] * len(new),
                documents=[json.dumps(v) for v in new.values()],
                metadatas=[{"kind": "gold_vector"}] * len(new))
            known.update(new)
        stale = set(stored) - set(keys)
        if stale:
            self.store.control.delete(ids=sorted(stale))
        return np.asarray([known[k] for k in keys], dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """One query (not cached: only the gold set's batch is)."""
        return self.embedder.embed_query(text)
