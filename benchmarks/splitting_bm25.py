"""Our chunker and BM25 against LangChain's splitters and `bm25s`.

Run: .venv/bin/python benchmarks/splitting_bm25.py ../shared/course_materials [--synthetic 100000]

Two comparisons, every figure from this one run, printed as Markdown for docs/benchmarks.md:

- Retrieval quality on the dev question sets (`../shared/eval/dev_questions*.jsonl`, in-scope
  questions only). Each chunker's chunks (ours: `ingest.pipeline.build_chunks`; LangChain:
  `MarkdownHeaderTextSplitter` then `RecursiveCharacterTextSplitter(1000, 120)`, per page for
  PDFs, on the same cleaned text) are embedded with the packaged embedder and searched three
  ways: dense only, lexical only (our BM25, `bm25s` with its own tokenizer, `bm25s` with ours)
  and dense + lexical fused by reciprocal rank (as the retriever fuses them). A question counts
  as found when a top-5 chunk comes from one of its sources and contains one of its evidence
  strings.
- BM25 on a synthetic corpus of N chunks (texts mixing the words of the real chunks): build
  time, and query latency over the dev and calibration questions (p50/p95).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

import bm25s  # noqa: E402
import numpy as np  # noqa: E402
from langchain_text_splitters import (  # noqa: E402
    MarkdownHeaderTextSplitter,
    RecursiveCharacterTextSplitter,
)

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.loaders import LoadedDocument, load_document  # noqa: E402
from ingest.pipeline import Target, build_chunks, pipeline_id, scan  # noqa: E402
from rag.config import EmbeddingSettings, IngestSettings  # noqa: E402
from rag.index.documents import Chunk  # noqa: E402
from rag.index.embedder import Embedder  # noqa: E402
from rag.retrieval.lexical import BM25Index, tokenize  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EVAL = REPO.parent / "shared" / "eval"
HEADERS = [("#" * level, f"h{level}") for level in range(1, 7)]
Search = Callable[[str, int], list[tuple[str, float]]]


class Bm25s:
    """`bm25s` behind our index's `search(query, n)`; `tokenizer=None` uses bm25s' own."""

    def __init__(
        self, ids: Sequence[str], texts: Sequence[str], tokenizer: Callable | None = None
    ) -> None:
        self.ids = list(ids)
        self.tokenizer = tokenizer
        self.retriever = bm25s.BM25(k1=1.2, b=0.75)  # the same parameters as ours
        self.retriever.index(self._tokens(list(texts)), show_progress=False)

    def _tokens(self, texts: list[str]):  # type: ignore[no-untyped-def]
        if self.tokenizer is None:
            return bm25s.tokenize(texts, stopwords="en", show_progress=False)
        return [self.tokenizer(t) for t in texts]

    def search(self, query: str, n: int) -> list[tuple[str, float]]:
        """The n best (id, score) pairs with a positive score."""
        if self.tokenizer is None:
            tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
            if not tokens.ids[0]:
                return []
        else:
            known = [t for t in self.tokenizer(query) if t in self.retriever.vocab_dict]
            if not known:
                return []
            tokens = [known]
        n = min(n, len(self.ids))
        docs, scores = self.retriever.retrieve(tokens, k=n, show_progress=False, n_threads=1)
        return [(self.ids[i], float(s)) for i, s in zip(docs[0], scores[0], strict=True) if s > 0]


def our_chunks(root: Path, settings: IngestSettings) -> list[Chunk]:
    """The chunks our ingest would store."""
    files, _ = scan([Target(root)], settings, pipeline_id(settings, "x"))
    return [c for f in files for c in build_chunks(f, settings)]


def langchain_chunks(root: Path, settings: IngestSettings) -> list[Chunk]:
    """LangChain's Markdown-header then recursive splitters over the same cleaned documents."""
    files, _ = scan([Target(root)], settings, pipeline_id(settings, "x"))
    out: list[Chunk] = []
    for f in files:
        out.extend(split_with_langchain(load_document(f.path, f.root, 50 << 20), settings))
    return out


def split_with_langchain(doc: LoadedDocument, settings: IngestSettings) -> list[Chunk]:
    """Sections by Markdown header (PDF pages whole), then recursive character splitting."""
    recursive = RecursiveCharacterTextSplitter(
        chunk_size=settings.chunk_chars, chunk_overlap=settings.chunk_overlap
    )
    headers = MarkdownHeaderTextSplitter(HEADERS, strip_headers=True)
    out = []
    for page in doc.pages:
        if doc.kind in ("markdown", "html"):
            sections = [(s.page_content, s.metadata) for s in headers.split_text(page.text)]
        else:
            sections = [(page.text, {})]
        for text, meta in sections:
            section = " > ".join(meta[key] for _, key in HEADERS if key in meta)
            for piece in recursive.split_text(text):
                start = max(page.text.find(piece), 0)
                end = start + len(piece)
                out.append(Chunk(piece, doc.source, page.number, section, start, end))
    return list({c.id: c for c in out}.values())


def questions(names: Sequence[str]) -> list[dict]:
    """In-scope questions of the dev sets."""
    out = []
    for name in names:
        for line in (EVAL / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and json.loads(line)["kind"] == "in":
                out.append(json.loads(line))
    return out


def found(question: dict, chunks: Sequence[Chunk]) -> bool:
    """A chunk from one of the question's sources that contains one of its evidence strings."""
    evidence = [e.lower() for e in question["evidence"]]
    return any(
        c.source in question["sources"] and any(e in c.text.lower() for e in evidence)
        for c in chunks
    )


class OurBM25:
    """rag/retrieval/lexical.py's index queried as plain BM25: the question's tokens, each
    weighted by its count (the retriever adds its glossary and typo handling on top)."""

    def __init__(self, ids: list[str], texts: list[str]) -> None:
        self.index = BM25Index(ids, texts)

    def search(self, question: str, n: int) -> list[tuple[str, float]]:
        """The n best (id, score) pairs."""
        counts = Counter(tokenize(question))
        return self.index.search({t: float(c) for t, c in counts.items()}, n)


def fuse(*rankings: Sequence[str], k: int = 60) -> list[str]:
    """Reciprocal-rank fusion, as the retriever fuses dense and lexical candidates."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores, key=scores.__getitem__, reverse=True)


def quality(chunks: list[Chunk], embedder: Embedder, qs: list[dict]) -> dict[str, float]:
    """Share of questions found in the top 5, per retrieval method, over these chunks."""
    ids = [c.id for c in chunks]
    by_id = dict(zip(ids, chunks, strict=True))
    vectors = embedder.embed_documents([c.embedding_text() for c in chunks])
    texts = [c.text for c in chunks]
    lexical: dict[str, Search] = {
        "our BM25": OurBM25(ids, texts).search,
        "bm25s": Bm25s(ids, texts).search,
        "bm25s, our tokenizer": Bm25s(ids, texts, tokenize).search,
    }
    hits: dict[str, list[bool]] = {}
    for q in qs:
        similarity = vectors @ embedder.embed_query(q["question"])
        dense = [ids[i] for i in np.argsort(-similarity)[:40]]
        hits.setdefault("dense only", []).append(found(q, [by_id[i] for i in dense[:5]]))
        for name, search in lexical.items():
            ranked = [cid for cid, _ in search(q["question"], 40)]
            hits.setdefault(name, []).append(found(q, [by_id[i] for i in ranked[:5]]))
            fused = fuse(dense, ranked)[:5]
            hits.setdefault(f"dense + {name}", []).append(found(q, [by_id[i] for i in fused]))
    return {name: float(np.mean(v)) for name, v in hits.items()}


def synthetic_texts(real: list[Chunk], total: int) -> list[str]:
    """`total` texts of about a real chunk's length, mixing the words of the real chunks."""
    rng = np.random.default_rng(0)
    words = np.array(" ".join(c.text for c in real).split())
    lengths = [len(c.text.split()) for c in real]
    picks = rng.integers(0, len(real), total)
    return [" ".join(rng.choice(words, lengths[p])) for p in picks]


def bm25_timings(texts: list[str], qs: list[str]) -> dict[str, tuple[float, float, float]]:
    """Build seconds and query p50/p95 milliseconds of each BM25, built in turn."""
    ids = [f"c{i}" for i in range(len(texts))]
    out = {}
    for name, build in (
        ("our BM25", lambda: OurBM25(ids, texts)),
        ("bm25s", lambda: Bm25s(ids, texts)),
        ("bm25s, our tokenizer", lambda: Bm25s(ids, texts, tokenize)),
    ):
        began = time.perf_counter()
        index = build()
        built = time.perf_counter() - began
        latencies = []
        for _ in range(3):
            for q in qs:
                began = time.perf_counter()
                index.search(q, 40)
                latencies.append(1000 * (time.perf_counter() - began))
        p95 = float(np.percentile(latencies, 95))
        out[name] = (built, statistics.median(latencies), p95)
        del index
    return out


def report_quality(table: dict[str, dict[str, float]], n_questions: int) -> None:
    """Print the quality table: one row per method, one column per chunker."""
    names = list(table)
    print(f"\nIn-scope dev questions: {n_questions}. Share found in the top 5:\n")
    print("| retrieval | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for method in table[names[0]]:
        cells = " | ".join(f"{table[n][method]:.3f}" for n in names)
        print(f"| {method} | {cells} |")


def main() -> None:
    """Run both comparisons and print the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("materials", type=Path)
    parser.add_argument("--synthetic", type=int, default=100_000)
    args = parser.parse_args()
    root = args.materials.resolve()
    settings = IngestSettings()
    embedder = Embedder(EmbeddingSettings())
    qs = questions(["dev_questions.jsonl", "dev_questions_v2.jsonl"])
    ours = our_chunks(root, settings)
    chunkers = {"our chunker": ours, "LangChain splitters": langchain_chunks(root, settings)}
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"bm25s {bm25s.__version__}. Chunks: "
        + ", ".join(f"{name} {len(c)}" for name, c in chunkers.items())
    )
    report_quality({n: quality(c, embedder, qs) for n, c in chunkers.items()}, len(qs))
    if not args.synthetic:
        return
    texts = synthetic_texts(ours, args.synthetic)
    queries = [q["question"] for q in qs] + [
        json.loads(line)["question"]
        for line in (REPO / "eval/calibration_questions.jsonl").read_text().splitlines()
        if line.strip()
    ]
    print(f"\nBM25 over {len(texts)} synthetic chunks, {len(queries)} queries × 3:\n")
    print("| index | build | query p50 | query p95 |\n| --- | --- | --- | --- |")
    for name, (built, p50, p95) in bm25_timings(texts, queries).items():
        print(f"| {name} | {built:.1f} s | {p50:.1f} ms | {p95:.1f} ms |")


if __name__ == "__main__":
    main()
