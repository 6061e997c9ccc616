"""Hybrid retrieval: dense (Chroma, cosine) + lexical (BM25) fused by reciprocal rank, then
maximal marginal relevance so the top k are not k slices of one paragraph.

The question is first prepared (`rag.retrieval.query.analyse`): abbreviations expanded and
misspelt words corrected against the index's vocabulary (words the embedder's vocabulary
holds whole are real words, left as they are). The lexical index sees each chunk with
its folder, file name and heading path, so questions that name a document or section find it.

Scores are calibrated: a logistic model of the evidence (dense cosine and lexical coverage)
maps each hit to an estimated probability that it is relevant to the question. The model's
coefficients are fitted by `study-assistant calibrate` (see docs/calibration.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from rag.config import RetrievalSettings
from rag.index.chroma_store import ChromaStore, StoredChunk
from rag.index.documents import Chunk, Hit
from rag.index.embedder import Embedder
from rag.retrieval.lexical import BM25Index
from rag.retrieval.query import Query, analyse
from rag.retrieval.references import named_sources, self_names, without_named_documents


class NothingIngested(RuntimeError):
    """Search was asked of an empty index."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A fused candidate before diversity selection."""

    stored: StoredChunk
    fused: float
    cosine: float
    bm25: float
    coverage: float
    dense_rank: int | None
    lexical_rank: int | None


@dataclass(frozen=True, slots=True)
class _Fusion:
    """One query's dense and lexical candidates fused by reciprocal rank, best first."""

    order: list[str]
    fused: dict[str, float]
    dense_rank: dict[str, int]
    lexical_rank: dict[str, int]
    bm25: dict[str, float]
    coverage: dict[str, float]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    version: str
    live: frozenset[str]
    bm25: BM25Index
    # Live chunks with a release time (Unix seconds); every other live chunk is released.
    release: dict[str, float]
    # Each file's live chunks, by source path.
    documents: dict[str, frozenset[str]]
    # The names papers give what they present, from their first pages (`self_names`).
    aliases: dict[str, tuple[frozenset[str], ...]]

    def visible(self, now: float | None) -> frozenset[str]:
        """The live chunks released at `now` (all of them when `now` is None: a preview)."""
        if now is None or not self.release:
            return self.live
        return self.live - {cid for cid, at in self.release.items() if at > now}


def calibrated_score(cosine: float, coverage: float, settings: RetrievalSettings) -> float:
    """Estimated probability that a passage is relevant, from its cosine similarity to the
    question and the share of the question's terms it contains (see BM25Index.coverage)."""
    z = (
        settings.calibration_slope * cosine
        + settings.calibration_lexical * coverage
        + settings.calibration_intercept
    )
    return 1.0 / (1.0 + math.exp(-z))


class Retriever:
    """Searches the live chunks of a store; safe to share between threads."""

    def __init__(
        self,
        store: ChromaStore,
        embedder: Embedder,
        settings: RetrievalSettings,
        refresh_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.refresh_interval_s = refresh_interval_s
        # Release dates are checked against this clock at every search (tests move it).
        self.clock = clock
        self._snapshot: _Snapshot | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def _current(self) -> _Snapshot:
        """The live-chunk snapshot, rebuilt when an ingest has changed the index.

        Only the first build makes searches wait. Later, one search checks the version (and
        rebuilds, which takes seconds on a large index) while concurrent searches keep using
        the previous snapshot, which is a consistent, older version of the index.
        """
        snap = self._snapshot
        if snap is not None and time.monotonic() - self._checked_at < self.refresh_interval_s:
            return snap
        if snap is not None and not self._lock.acquire(blocking=False):
            return snap
        if snap is None:
            self._lock.acquire()
        try:
            version = self.store.version()
            if self._snapshot is None or self._snapshot.version != version:
                self._snapshot = self._build(version)
            self._checked_at = time.monotonic()
            return self._snapshot
        finally:
            self._lock.release()

    def _build(self, version: str) -> _Snapshot:
        """The snapshot of the version the token names (read through a view pinned to it, so
        a switch in between cannot mix two versions)."""
        manifest = self.store.pinned(version).manifest()
        ids = [cid for e in manifest.values() for cid in e.chunk_ids]
        # Derived from the recent lexical index over this store that shares most chunks with
        # this version (the live version's, in a running bot): only chunks it lacks are read
        # back and tokenised. The first build in a process reads and tokenises them all.
        previous = max(self.store.lexical_indexes, key=lambda index: index.holds(ids),
                       default=BM25Index([], []))
        bm25 = previous.updated(ids, self._lexical_texts)
        self.store.keep_lexical_index(bm25)
        live = frozenset(bm25.ids)
        release = {cid: at for cid, at in self.store.release_times().items() if cid in live}
        documents = {source: frozenset(e.chunk_ids) & live for source, e in manifest.items()}
        aliases: dict[str, list[frozenset[str]]] = {}
        for cid, chunk in self.store.first_pages():
            if cid in live:
                aliases.setdefault(chunk.source, []).extend(self_names(chunk.text))
        named = {source: tuple(dict.fromkeys(names)) for source, names in aliases.items()}
        return _Snapshot(version, live, bm25, release, documents, named)

    def _lexical_texts(self, ids: list[str]) -> Iterator[tuple[str, str]]:
        """(id, lexical text) of stored chunks (ids not stored are left out)."""
        for cid, chunk in self.store.iter_chunks(ids):
            yield cid, chunk.lexical_text()

    def unreleased(self) -> frozenset[str]:
        """The live chunks whose release time has not come."""
        snap = self._current()
        return snap.live - snap.visible(self.clock())

    def unreleased_sources(self) -> frozenset[str]:
        """The files with a live chunk whose release time has not come."""
        snap = self._current()
        hidden = snap.live - snap.visible(self.clock())
        return frozenset(source for source, ids in snap.documents.items() if ids & hidden)

    def names_only_unreleased(self, query: str) -> bool:
        """Whether the query names documents (`names_documents`) none of which is released
        yet: searched as if it named none, it would be answered from other documents."""
        snap = self._current()
        if not self.settings.named_documents:
            return False
        named = named_sources(query, snap.documents, snap.aliases)
        visible = snap.visible(self.clock())
        return bool(named) and not any(snap.documents[source] & visible for source in named)

    def live_count(self) -> int:
        """How many chunks search can return."""
        return len(self._current().live)

    def search(
        self, query: str, k: int | None = None, *, preview: bool = False,
        lexical_extra: int | None = None, named_documents: bool | None = None,
        scored_without_names: bool = False,
    ) -> list[Hit]:
        """The k best released passages for a query, diverse, with calibrated scores, then
        the lexical retriever's best `lexical_extra` (default: the setting) that fusion left
        out; 0 for exactly k.

        `preview` (instructors only) also returns material whose release time has not come.
        A query that names a document ("the LLaMA paper", "the week 6 guide":
        `rag.retrieval.references.named_sources`) searches within it, while it has visible
        passages (`named_documents`, default: the setting; `search_many` alike). Its hits are
        scored against the whole query, or with `scored_without_names` against the query
        without the names, as they were ranked.
        """
        snap, visible, released_at = self._scope(preview)
        if not visible:
            return []
        return self._ranked([query], snap, visible, released_at, k, lexical_extra,
                            named_documents, scored_without_names)[0]

    def title_page(
        self, query: str, hits: Sequence[Hit], *, preview: bool = False
    ) -> Hit | None:
        """The first passage of the paper a query names ("the LoRA paper", or by a name the
        paper gives itself), else of the first paper among `hits`: where its title and
        authors are. None when neither names a paper, or its first page is not visible."""
        snap, visible, _ = self._scope(preview)
        named = sorted(source for source in named_sources(query, snap.documents, snap.aliases)
                       if source.casefold().endswith(".pdf"))
        found = [hit.chunk.source for hit in hits if hit.chunk.source.casefold().endswith(".pdf")]
        if not (named or found):
            return None
        source = (named or found)[0]
        opening = self._opening(source, snap.documents.get(source, frozenset()) & visible)
        return self._scored(query, opening[0]) if opening else None

    def opening(self, query: str, *, preview: bool = False) -> Hit | None:
        """The passage that opens the document a query names: a paper's first after its
        title and authors (its abstract), any other file's first. None when the query names
        no document, or none of its passages is visible."""
        snap, visible, _ = self._scope(preview)
        for source in sorted(named_sources(query, snap.documents, snap.aliases)):
            opening = self._opening(source, snap.documents.get(source, frozenset()) & visible)
            if source.casefold().endswith(".pdf"):
                opening = opening[1:]
            if opening:
                return self._scored(query, opening[0])
        return None

    def named_passages(self, query: str, *, preview: bool = False) -> dict[str, list[Chunk]]:
        """Every visible passage of each document the query names (not as a guess), by file,
        when search looks within named documents: what a question asks one of them about is
        judged on the whole document, not on the passages a search returns."""
        if not self.settings.named_documents:
            return {}
        snap, visible, _ = self._scope(preview)
        found = {}
        for source in sorted(named_sources(query, snap.documents, snap.aliases)):
            ids = snap.documents.get(source, frozenset()) & visible
            if ids:
                found[source] = [chunk for _, chunk in self.store.iter_chunks(sorted(ids))]
        return found

    def _opening(self, source: str, ids: frozenset[str]) -> list[Chunk]:
        """The passages among `ids` that open a document, in order: a PDF's first page, or
        every passage of any other file."""
        if source.casefold().endswith(".pdf"):
            found = [chunk for cid, chunk in self.store.first_pages()
                     if cid in ids and chunk.source == source]
        else:
            found = [chunk for _, chunk in self.store.iter_chunks(sorted(ids))]
        return sorted(found, key=lambda chunk: (chunk.page or 0, chunk.start))

    def _scored(self, query: str, chunk: Chunk) -> Hit:
        """A passage found by where it is, not by search, scored as the search would score
        it on meaning alone (it may share few of the query's words)."""
        cosine = float(self.embedder.embed_documents([chunk.text])[0]
                       @ self.embedder.embed_query(query))
        return Hit(chunk=chunk, score=calibrated_score(cosine, 0.0, self.settings), dense=cosine)

    def corrected(self, question: str) -> str:
        """The question with the words it misspells replaced by the indexed words they
        misspell (`rag.retrieval.query.analyse`), as the search read it."""
        return analyse(question, self._current().bm25, self.embedder.holds_word).corrected

    def dense_text(self, question: str) -> str:
        """What the embedder reads of a question when it is searched (corrected, shorthand
        written out, expansions after it: `rag.retrieval.query.analyse`)."""
        return analyse(question, self._current().bm25, self.embedder.holds_word).dense_text

    def names_documents(self, query: str) -> bool:
        """Whether `search` looks for this query within the documents it names."""
        snap = self._current()
        return self.settings.named_documents and bool(
            named_sources(query, snap.documents, snap.aliases))

    def _within_named(self, query: str, snap: _Snapshot, visible: frozenset[str],
                      named_documents: bool | None = None) -> tuple[frozenset[str], str]:
        """The visible chunks of the documents the query names, and the query without the
        names to rank them by (`without_named_documents`); all visible chunks and the query
        as it is when it names none (or none of theirs is visible), or naming is off
        (default: the setting)."""
        if not (self.settings.named_documents if named_documents is None else named_documents):
            return visible, query
        named = named_sources(query, snap.documents, snap.aliases)
        if not named:
            return visible, query
        inside = visible & frozenset().union(*(snap.documents[source] for source in named))
        return (inside, without_named_documents(query) or query) if inside else (visible, query)

    def search_many(
        self, queries: Sequence[str], k: int | None = None, *, preview: bool = False
    ) -> list[list[Hit]]:
        """`search` for several queries on one snapshot, their embeddings computed in one
        batch (the gold questions of a re-ingest: one model call instead of one each)."""
        snap, visible, released_at = self._scope(preview)
        if not visible:
            return [[] for _ in queries]
        return self._ranked(queries, snap, visible, released_at, k)

    def _scope(self, preview: bool) -> tuple[_Snapshot, frozenset[str], float | None]:
        """The snapshot, the chunks visible now, and the release time for the store's filter."""
        snap = self._current()
        if not snap.live:
            raise NothingIngested("Nothing has been ingested yet: run `study-assistant ingest`.")
        now = None if preview else self.clock()
        visible = snap.visible(now)
        # Let the store filter by release time only when something is hidden: the filter
        # costs a metadata scan, and most of a term nothing is.
        released_at = now if len(visible) < len(snap.live) else None
        return snap, visible, released_at

    def _ranked(
        self,
        texts: Sequence[str],
        snap: _Snapshot,
        visible: frozenset[str],
        released_at: float | None,
        k: int | None,
        lexical_extra: int | None = None,
        named_documents: bool | None = None,
        scored_without_names: bool = False,
    ) -> list[list[Hit]]:
        """Each query's hits. Its embedding and the embeddings of the queries that name a
        document, without the names, are computed in one batch; the store is asked once for
        all the queries' nearest chunks and once for all their candidates' texts and vectors;
        each query's hits are those it would get alone.

        Within named documents the passages are ranked by the query without the names, while
        each hit's scores (cosine, coverage: what the gate and the quotes judge) are the whole
        question's, as for any other search, unless `scored_without_names`."""
        n = self.settings.candidates
        scoped = [self._within_named(text, snap, visible, named_documents) for text in texts]
        scopes = [scope for scope, _ in scoped]
        queries = [analyse(text, snap.bm25, self.embedder.holds_word) for text in texts]
        ranking = [q if by == q.text else analyse(by, snap.bm25, self.embedder.holds_word)
                   for q, (_, by) in zip(queries, scoped, strict=True)]
        dense_texts = list(dict.fromkeys(q.dense_text for q in [*queries, *ranking]))
        embedded = dict(zip(dense_texts, self.embedder.embed_queries(dense_texts), strict=True))
        if scored_without_names:
            queries = ranking
        vectors = [embedded[q.dense_text] for q in queries]
        dense = self._dense([embedded[r.dense_text] for r in ranking], n, scopes, released_at)
        fusions = [self._fuse(r, q, d, snap, scope)
                   for r, q, d, scope in zip(ranking, queries, dense, scopes, strict=True)]
        wanted = dict.fromkeys(cid for f in fusions for cid in f.order)
        stored = {s.id: s for s in self.store.get_chunks(list(wanted))}
        extra = self.settings.lexical_extra if lexical_extra is None else lexical_extra
        ranked = []
        for fusion, query_vec in zip(fusions, vectors, strict=True):
            candidates = self._candidates(fusion, stored, query_vec)
            chosen = self._diversify(candidates, k or self.settings.k)
            found = self._with_lexical_best(chosen, candidates, extra)
            ranked.append([self._hit(c) for c in _joined(found, candidates, chosen)])
        return ranked

    def _fuse(
        self, ranking: Query, query: Query, dense: list[tuple[str, float]], snap: _Snapshot,
        visible: frozenset[str],
    ) -> _Fusion:
        """Dense and lexical candidates of one query fused by reciprocal rank (the lexical
        ones found by `ranking`'s terms), with their coverage of `query`'s."""
        n = self.settings.candidates
        hidden = len(snap.live) - len(visible)
        lexical = [(cid, s) for cid, s in snap.bm25.search(ranking.terms, n + hidden)
                   if cid in visible][:n]
        dense_rank = {cid: r for r, (cid, _) in enumerate(dense)}
        lexical_rank = {cid: r for r, (cid, _) in enumerate(lexical)}
        rrf = self.settings.rrf_k
        fused: dict[str, float] = {}
        for ranks in (dense_rank, lexical_rank):
            for cid, r in ranks.items():
                fused[cid] = fused.get(cid, 0.0) + 1.0 / (rrf + r + 1)
        order = sorted(fused, key=fused.__getitem__, reverse=True)[:n]
        # The lexical retriever's best stay candidates (last), for `_with_lexical_best`: a long
        # question of common words ("What is label smoothing and what value did the
        # Transformer use?") has more than n passages both retrievers find middling, which
        # outscore, fused, the one passage with its rarest words that the embedder ranks low.
        order += [cid for cid, _ in lexical[:self.settings.lexical_extra] if cid not in order]
        coverage = snap.bm25.coverage(query.core, order)
        return _Fusion(order, fused, dense_rank, lexical_rank, dict(lexical), coverage)

    @staticmethod
    def _candidates(
        fusion: _Fusion, stored: dict[str, StoredChunk], query_vec: np.ndarray
    ) -> list[Candidate]:
        """One query's fused candidates that are stored, best fused first, with their scores."""
        return [
            Candidate(
                stored[cid],
                fusion.fused[cid],
                float(np.dot(stored[cid].embedding, query_vec)),
                fusion.bm25.get(cid, 0.0),
                fusion.coverage[cid],
                fusion.dense_rank.get(cid),
                fusion.lexical_rank.get(cid),
            )
            for cid in fusion.order
            if cid in stored
        ]

    def _dense(
        self,
        vectors: Sequence[np.ndarray],
        n: int,
        scopes: Sequence[frozenset[str]],
        released_at: float | None,
    ) -> list[list[tuple[str, float]]]:
        """Each query's n nearest chunks in its scope (the visible chunks, or those of the
        documents it names). The pool also holds chunks that are not live (written by an
        unfinished ingest, or listed only by other versions) or out of scope: fetch twice as
        many, and more for the queries where they crowd out the ones in scope (asked again
        together, each query with the same growing count it would use alone)."""
        found: list[list[tuple[str, float]]] = [[] for _ in vectors]
        pending, want = list(range(len(vectors))), 2 * n
        while pending:
            nearest = self.store.query_many([vectors[i] for i in pending], want, released_at)
            short = []
            for i, hits in zip(pending, nearest, strict=True):
                scope = scopes[i]
                found[i] = [(cid, s) for cid, s in hits if cid in scope][:n]
                if len(found[i]) < min(n, len(scope)) and len(hits) >= want:
                    short.append(i)
            pending, want = short, want * 4
        return found

    def _diversify(self, candidates: list[Candidate], k: int) -> list[Candidate]:
        """Maximal marginal relevance over fused scores, with a cap per section and no two
        chunks whose text overlaps (neighbouring chunks share their overlap region)."""
        if not candidates:
            return []
        top = max(c.fused for c in candidates)
        relevance = np.array([c.fused / top for c in candidates])
        vectors = np.stack([c.stored.embedding for c in candidates])
        chunks = [c.stored.chunk for c in candidates]
        lam = self.settings.mmr_lambda
        chosen: list[int] = []
        max_sim = np.zeros(len(candidates))
        # Per candidate, kept up to date as passages are chosen: how many chosen ones share
        # its section, and whether one overlaps it.
        same_section = np.zeros(len(candidates), dtype=int)
        overlapped = np.zeros(len(candidates), dtype=bool)
        while len(chosen) < min(k, len(candidates)):
            mmr = lam * relevance - (1 - lam) * max_sim
            mmr[chosen] = -np.inf
            ruled = np.where(
                (same_section >= self.settings.max_per_section) | overlapped, -np.inf, mmr
            )
            # When the rules exclude every remaining candidate the corpus is too narrow for
            # them; fall back to plain MMR rather than return fewer than k.
            best = int(np.argmax(ruled if np.isfinite(ruled.max()) else mmr))
            chosen.append(best)
            max_sim = np.maximum(max_sim, vectors @ vectors[best])
            for i, chunk in enumerate(chunks):
                same_section[i] += _same_section(chunk, chunks[best])
                overlapped[i] = overlapped[i] or _overlaps(chunk, chunks[best])
        return [candidates[i] for i in chosen]

    @staticmethod
    def _with_lexical_best(
        chosen: list[Candidate], candidates: list[Candidate], extra: int
    ) -> list[Candidate]:
        """The chosen passages, then the lexical retriever's best `extra` when they overlap
        no passage already there (a chosen one overlaps itself). A passage holding the
        question's rarest words ("label smoothing", a section's own term) is the strongest
        evidence there is, yet when the embedder ranks it low (70th, say) the fused score
        buries it under passages both retrievers find middling."""
        best = sorted((c for c in candidates
                       if c.lexical_rank is not None and c.lexical_rank < extra),
                      key=lambda c: c.lexical_rank or 0)
        out = list(chosen)
        for c in best:
            if not any(_overlaps(c.stored.chunk, o.stored.chunk) for o in out):
                out.append(c)
        return out

    def _hit(self, c: Candidate) -> Hit:
        return Hit(
            chunk=c.stored.chunk,
            score=calibrated_score(c.cosine, c.coverage, self.settings),
            dense=c.cosine,
            bm25=c.bm25,
            coverage=c.coverage,
            lexical_rank=c.lexical_rank,
            dense_rank=c.dense_rank,
        )


def _joined(
    found: list[Candidate], candidates: list[Candidate], chosen: list[Candidate]
) -> list[Candidate]:
    """Each passage joined with the neighbours it overlaps in its section that rank with the
    chosen ones (a fused score at least the lowest chosen one's, or the lexical best) and
    continue it, and overlap no other passage. Diversity keeps such a neighbour out, as a
    near-copy; but where it goes on past the passage's end, what it adds (often the end of a
    sentence the passage cuts) is the answer as often as anything else. The passage keeps its
    own scores."""
    floor = min(c.fused for c in chosen) if chosen else math.inf
    taken = {c.stored.id for c in found}
    out = []
    for c in found:
        chunk = c.stored.chunk
        for other in candidates:
            near = other.stored.chunk
            if (other.stored.id in taken or not (other.fused >= floor or other.lexical_rank == 0)
                    or not (_same_section(chunk, near) and _overlaps(chunk, near))
                    or (near.start >= chunk.start and near.end <= chunk.end)
                    or any(_overlaps(near, f.stored.chunk) for f in found if f is not c)):
                continue
            chunk = _union(chunk, near)
            taken.add(other.stored.id)
        out.append(c if chunk is c.stored.chunk
                   else replace(c, stored=replace(c.stored, chunk=chunk)))
    return out


def _union(a: Chunk, b: Chunk) -> Chunk:
    """Two overlapping chunks of one page or file as one: their text spans joined (the shared
    text once)."""
    first, second = (a, b) if a.start <= b.start else (b, a)
    text = first.text + second.text[first.end - second.start:] if second.end > first.end \
        else first.text
    return replace(first, text=text, end=max(first.end, second.end),
                   release_at=max(a.release_at, b.release_at))


def _same_section(a: Chunk, b: Chunk) -> bool:
    return a.source == b.source and a.section == b.section


def _overlaps(a: Chunk, b: Chunk) -> bool:
    """Whether two chunks share text: same file and page, intersecting character spans."""
    return a.source == b.source and a.page == b.page and a.start < b.end and b.start < a.end
