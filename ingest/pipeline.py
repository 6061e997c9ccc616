"""Incremental ingest: scan → plan → load/clean/chunk → embed → store → commit.

Unchanged files (same bytes, same pipeline settings) cost a hash and nothing more; the
embedding model is not even loaded when nothing changed. A changed file's chunks whose text
is unchanged keep their stored embeddings. See rag/index/chroma_store.py for why an
interrupted run leaves the index consistent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from ingest.loaders import SkipFile, open_regular, printable
from ingest.parse_worker import ParseWorker, chunks_of, parse_outcome
from rag.config import IngestSettings
from rag.course.schedule import ASSIGNMENTS_DIR, SCHEDULE_FILE, Schedule, load_schedule
from rag.index.chroma_store import ChromaStore, ManifestEntry, variant_id
from rag.index.documents import Chunk

# Bump when cleaning or chunking changes in a way that should re-process every file.
# 4: every chunk carries release_at; 5: chunks start with their heading; 6: every chunk carries
# the fence of the code block it starts inside (metadata only: texts and vectors are reused);
# 7: a sentence a PDF page break cuts is joined on the page where it starts; 8: so is a list of
# cited things a page break cuts after a citation ("SIQA (Sap et al., 2019)," + "HellaSwag ...").
PIPELINE_VERSION = "8"
_HASH_BLOCK = 1 << 20
# Files the worker may parse ahead of the embedder.
_PARSE_AHEAD = 4


class DocumentEmbedder(Protocol):
    """What the pipeline needs from an embedder."""

    @property
    def name(self) -> str: ...

    def embed_documents(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A candidate file found by the scan."""

    source: str
    path: Path
    root: Path
    size: int
    file_hash: str
    release_at: float = 0.0


@dataclass
class IngestPlan:
    """What an ingest would do."""

    added: list[SourceFile] = field(default_factory=list)
    changed: list[SourceFile] = field(default_factory=list)
    unchanged: list[SourceFile] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # Unchanged files whose listed chunks were missing from the store: re-indexed (in changed).
    repaired: list[str] = field(default_factory=list)
    # The manifest the plan was made against (a gated re-ingest copies it into a new version).
    manifest: dict[str, ManifestEntry] = field(default_factory=dict, repr=False)

    @property
    def to_process(self) -> list[SourceFile]:
        """Files whose chunks must be (re)built."""
        return self.added + self.changed


@dataclass
class IngestReport:
    """What an ingest did."""

    plan: IngestPlan
    chunks_added: int = 0
    chunks_reused: int = 0
    chunks_removed: int = 0
    embedded: int = 0
    indexed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False
    # Files ingested (or to be) that students cannot see yet: source -> release time.
    scheduled: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """False only when there was something to ingest and none of it could be."""
        live = len(self.indexed) + len(self.plan.unchanged)
        return live > 0 or not self.skipped


class IngestProgress(Protocol):
    """Callbacks for progress bars; every method may be a no-op."""

    def files_started(self, total: int) -> None: ...
    def file_done(self, source: str) -> None: ...
    def embedding_started(self, total: int) -> None: ...
    def embedded(self, n: int) -> None: ...


class NoProgress:
    """Progress sink that shows nothing."""

    def files_started(self, total: int) -> None:
        """Ignore."""

    def file_done(self, source: str) -> None:
        """Ignore."""

    def embedding_started(self, total: int) -> None:
        """Ignore."""

    def embedded(self, n: int) -> None:
        """Ignore."""


def pipeline_id(settings: IngestSettings, embedder_name: str) -> str:
    """A short hash of everything besides a file's bytes that shapes its chunks."""
    key = f"{PIPELINE_VERSION}|{settings.chunk_chars}|{settings.chunk_overlap}|"
    key += f"{settings.min_chunk_chars}|{embedder_name}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def file_digest(path: Path, salt: str) -> str:
    """sha256 of a file's bytes, salted with the pipeline id (SkipFile if it is not a
    readable regular file)."""
    digest = hashlib.sha256(salt.encode())
    with open_regular(path) as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Target:
    """What to ingest: a whole root folder, or one file under a root."""

    root: Path
    only: Path | None = None


def resolve_targets(paths: Sequence[Path], materials_dir: Path) -> list[Target]:
    """Turn CLI paths into targets; a file keeps its path relative to the materials root."""
    targets = []
    materials = materials_dir.resolve()
    for raw in paths:
        path = raw.resolve()
        if not path.exists():
            raise FileNotFoundError(f"No such file or folder: {raw}")
        if path.is_dir():
            targets.append(Target(path))
        else:
            root = materials if path.is_relative_to(materials) else path.parent
            targets.append(Target(root, path))
    return targets


def scan(
    targets: Iterable[Target], settings: IngestSettings, salt: str, timezone: str = "UTC"
) -> tuple[list[SourceFile], dict[str, str]]:
    """Find ingestible files; return them and the ones skipped, each with a reason.

    Each root's `schedule.toml` gives the files' release times. A release time is part of the
    file's hash, so moving it re-plans the file, which then only updates chunk metadata.
    """
    found: dict[str, SourceFile] = {}
    skipped: dict[str, str] = {}
    for target in targets:
        root = target.root.resolve()
        schedule = load_schedule(root, timezone)
        paths = [target.only] if target.only else _walk(root, root, skipped)
        for path in paths:
            if _hidden(path, root):
                continue
            source = path.relative_to(root).as_posix()
            try:
                reason = _scan_reason(path, root, settings)
                if reason is None and source not in found:
                    found[source] = _source_file(path, root, source, salt, schedule)
            except SkipFile as exc:
                reason = str(exc)
            if reason:
                skipped[source] = reason
            elif found[source].path != path:
                skipped[source] = f"duplicate of {found[source].path}"
    return list(found.values()), skipped


def _walk(folder: Path, root: Path, skipped: dict[str, str]) -> list[Path]:
    """Every non-hidden entry under `folder` that is not a folder, in sorted order.

    Symlinked folders are not followed (a loop, or a way out of the root): they are listed
    as skipped with that reason, as are folders that cannot be read.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped[folder.relative_to(root).as_posix() + "/"] = f"folder not readable: {exc.strerror}"
        return []
    paths: list[Path] = []
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue
        try:
            subfolder = entry.is_dir(follow_symlinks=False)
            linked_folder = not subfolder and entry.is_symlink() and path.is_dir()
        except OSError:  # gone since the listing; the next run will not see it either
            continue
        if subfolder:
            paths.extend(_walk(path, root, skipped))
        elif linked_folder:
            skipped[path.relative_to(root).as_posix() + "/"] = "symlinked folder (not followed)"
        else:
            paths.append(path)
    return paths


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _source_file(
    path: Path, root: Path, source: str, salt: str, schedule: Schedule
) -> SourceFile:
    """Hash a candidate file (SkipFile if it is not a readable regular file)."""
    release = schedule.release_at(source)
    if release:
        salt = f"{salt}|release={release}"
    digest = file_digest(path, salt)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SkipFile("deleted during the scan") from exc
    return SourceFile(source, path, root, size, digest, release)


def _scan_reason(path: Path, root: Path, settings: IngestSettings) -> str | None:
    """Reasons to skip a file that can be told without reading it."""
    if is_protected(path.relative_to(root).as_posix()):
        return "an assignment file (instructor-only: used for hints, never indexed)"
    if path.parent == root and path.name == SCHEDULE_FILE:
        return "the course schedule (release dates and exams; read, not indexed)"
    if path.parent == root and path.name == settings.gold_file:
        return "the gold questions (they gate re-ingests; read, not indexed)"
    if path.suffix.lower() not in settings.extensions:
        return f"unsupported file type '{printable(path.suffix or path.name)}'"
    try:
        resolved = path.resolve(strict=True)
    except OSError:
        return "broken link" if path.is_symlink() else "deleted during the scan"
    if not resolved.is_relative_to(root):
        return "outside the materials root (symlink)"
    if path.name.lower() == "readme.md" and path.parent == root:
        return "the materials README (instructions, not course content)"
    return None


def is_protected(source: str) -> bool:
    """Whether a path under the materials root is instructor-only (an assignment file)."""
    return source == ASSIGNMENTS_DIR or source.startswith(ASSIGNMENTS_DIR + "/")


def make_plan(
    files: list[SourceFile], skipped: dict[str, str], store: ChromaStore, targets: Iterable[Target]
) -> IngestPlan:
    """Compare scanned files with the manifest; a file whose listed chunks are not all in
    the store counts as changed (and is listed as repaired), whatever its bytes."""
    manifest = store.manifest()
    stored = store.existing_ids([c for e in manifest.values() for c in e.chunk_ids])
    plan = IngestPlan(skipped=dict(skipped), manifest=manifest)
    for f in files:
        entry = manifest.get(f.source)
        if entry is None:
            plan.added.append(f)
        elif entry.file_hash != f.file_hash:
            plan.changed.append(f)
        elif not stored.issuperset(entry.chunk_ids):
            plan.changed.append(f)
            plan.repaired.append(f.source)
        else:
            plan.unchanged.append(f)
    scanned = {f.source for f in files} | set(skipped)
    # Single-file targets never remove anything.
    root_names = {str(t.root.resolve()) for t in targets if t.only is None}
    # Only files ingested from these same roots can be "deleted": ingesting one folder never
    # removes what another folder contributed. A file that is now skipped keeps its old chunks.
    plan.removed = sorted(
        s for s, e in manifest.items()
        if e.root in root_names and (s not in scanned or is_protected(s))
    )
    return plan


def build_chunks(f: SourceFile, settings: IngestSettings) -> list[Chunk]:
    """Load, clean and chunk one file in this process (raises SkipFile)."""
    return chunks_of(f.path, f.root, settings)


def run_ingest(
    plan: IngestPlan,
    store: ChromaStore,
    embedder: DocumentEmbedder,
    settings: IngestSettings,
    progress: IngestProgress | None = None,
    *,
    building: bool = False,
) -> IngestReport:
    """Carry out a plan: remove deleted files, (re)index new and changed ones, clean up.

    `building`: the store is bound to a new version that is not live yet (ingest/reingest.py).
    Its `building` record already marks it unfinished (a killed build is dropped, never
    repaired), so no dirty marker is written, and the caller collects the garbage once it has
    switched and pruned.
    """
    progress = progress or NoProgress()
    report = IngestReport(plan=plan, skipped=dict(plan.skipped))
    began = time.perf_counter()
    if not (plan.removed or plan.to_process or store.is_dirty()):
        report.seconds = time.perf_counter() - began
        return report
    # One ingest at a time: in this process (exclusive), against a Chroma server (the lease;
    # embedded mode: the data-dir lock keeps other processes out).
    with store.exclusive(), store.writer_lease():
        if not building:
            store.mark_dirty(True)
        # A version being built is a copy of the live one's manifest: it shares its chunks.
        shared = building or store.shares_chunks()
        for source in plan.removed:
            store.forget_file(source)
        progress.files_started(len(plan.to_process))
        for group in _groups(plan.to_process, settings, report, progress):
            _index_group(group, store, embedder, shared, report, progress)
        # Replaced and removed files' chunks, and any an interrupted run left: whatever no
        # version lists (older versions, kept for rollback, keep theirs).
        if not building:
            report.chunks_removed += store.collect_garbage()
            store.mark_dirty(False)
    report.seconds = time.perf_counter() - began
    return report


def _groups(
    files: list[SourceFile],
    settings: IngestSettings,
    report: IngestReport,
    progress: IngestProgress,
) -> Iterator[list[tuple[SourceFile, list[Chunk]]]]:
    """Yield files with their chunks, grouped by about `group_chunks` chunks."""
    group: list[tuple[SourceFile, list[Chunk]]] = []
    size = 0
    for f, outcome in _parsed(files, settings):
        if isinstance(outcome, SkipFile):
            report.skipped[f.source] = str(outcome)
            progress.file_done(f.source)
            continue
        if f.release_at:
            outcome = [replace(c, release_at=f.release_at) for c in outcome]
        group.append((f, outcome))
        size += len(outcome)
        if size >= settings.group_chunks:
            yield group
            group, size = [], 0
    if group:
        yield group


def _parsed(
    files: list[SourceFile], settings: IngestSettings
) -> Iterator[tuple[SourceFile, list[Chunk] | SkipFile]]:
    """Parse files in order: PDFs, and any run of several files, in a worker process.

    The worker bounds each file's CPU time and memory (ingest/parse_worker.py), and parses
    ahead while this process embeds: PDF text extraction is pure Python and, for a paper,
    takes as long as embedding it. A single text file is parsed here, cheaply.
    """
    if len(files) < 2 and not any(f.path.suffix.lower() == ".pdf" for f in files):
        for f in files:
            yield f, parse_outcome(f.path, f.root, settings)
        return
    with ParseWorker(settings) as worker:
        yield from _parse_ahead(files, worker)


def _parse_ahead(
    files: list[SourceFile], worker: ParseWorker
) -> Iterator[tuple[SourceFile, list[Chunk] | SkipFile]]:
    """Yield each file's outcome while a thread keeps the worker busy on the next ones."""
    ready: queue.Queue[tuple[SourceFile, list[Chunk] | SkipFile] | Exception] = queue.Queue(
        _PARSE_AHEAD
    )
    stop = threading.Event()

    def produce() -> None:
        try:
            for f in files:
                outcome = worker.parse(f.path, f.root)
                if not _offer(ready, (f, outcome), stop):
                    return
        except Exception as exc:  # handed to the consumer, which raises it
            _offer(ready, exc, stop)

    thread = threading.Thread(target=produce, name="parse-ahead", daemon=True)
    thread.start()
    try:
        for _ in files:
            item = ready.get()
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        worker.shutdown()  # stops a file being parsed for nothing
        thread.join()


def _offer(ready: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put `item` on the queue unless the consumer has stopped; whether it was put."""
    while not stop.is_set():
        with contextlib.suppress(queue.Full):
            ready.put(item, timeout=0.2)
            return True
    return False


def _index_group(
    group: list[tuple[SourceFile, list[Chunk]]],
    store: ChromaStore,
    embedder: DocumentEmbedder,
    shared: bool,
    report: IngestReport,
    progress: IngestProgress,
) -> None:
    """Embed what is new in a group of files, store it, then commit each file.

    With `shared`, other versions may list the stored chunks, so a reused chunk whose offsets
    or release time changed is stored again as a variant record (its vector copied) instead
    of being edited in place.
    """
    all_chunks = [c for _, chunks in group for c in chunks]
    existing = store.existing_ids([c.id for c in all_chunks] + [variant_id(c) for c in all_chunks])
    fresh = [c for c in all_chunks if c.id not in existing and variant_id(c) not in existing]
    progress.embedding_started(len(fresh))
    vectors = embedder.embed_documents(
        [c.embedding_text() for c in fresh], on_batch=progress.embedded
    )
    report.embedded += len(fresh)
    row = {c.id: i for i, c in enumerate(fresh)}
    for f, chunks in group:
        new = [c for c in chunks if c.id in row]
        store.add_chunks(new, vectors[[row[c.id] for c in new]])
        record = _reuse(store, [c for c in chunks if c.id not in row], existing, shared)
        entry = ManifestEntry(f.source, f.file_hash,
                              tuple(record.get(c.id, c.id) for c in chunks), str(f.root))
        store.commit_file(entry)
        report.chunks_added += len(new)
        report.chunks_reused += len(chunks) - len(new)
        report.indexed[f.source] = len(chunks)
        progress.file_done(f.source)


def _reuse(
    store: ChromaStore, reused: list[Chunk], existing: set[str], shared: bool
) -> dict[str, str]:
    """Bring reused chunks' metadata up to date; the record id of each that is not its id."""
    if not shared:
        store.update_metadata([c for c in reused if c.id in existing])
        return {c.id: variant_id(c) for c in reused if c.id not in existing}
    wanted = {c.id: c.metadata() for c in reused}
    stored = store.metadatas([c.id for c in reused if c.id in existing])
    same = {cid for cid, meta in stored.items() if meta == wanted[cid]}
    copies = [c for c in reused if c.id not in same and variant_id(c) not in existing]
    store.copy_as_variants(copies)
    return {c.id: variant_id(c) for c in reused if c.id not in same}


def ingest(
    targets: Sequence[Target],
    store: ChromaStore,
    embedder: DocumentEmbedder,
    settings: IngestSettings,
    dry_run: bool = False,
    progress: IngestProgress | None = None,
    *,
    timezone: str = "UTC",
    now: float | None = None,
) -> IngestReport:
    """Scan the targets, plan against the manifest, and (unless dry_run) carry the plan out.

    `timezone` is the course's, for release times the schedule writes without an offset;
    `now` decides which files the report lists as scheduled (not yet released).
    """
    files, skipped = scan(targets, settings, pipeline_id(settings, embedder.name), timezone)
    now = time.time() if now is None else now
    scheduled = {f.source: f.release_at for f in files if f.release_at > now}
    with store.exclusive():  # plan against the manifest the run will start from
        plan = make_plan(files, skipped, store, targets)
        if dry_run:
            return IngestReport(plan=plan, skipped=dict(plan.skipped), dry_run=True,
                                scheduled=scheduled)
        report = run_ingest(plan, store, embedder, settings, progress)
    report.scheduled = {s: t for s, t in scheduled.items() if s not in report.skipped}
    return report
