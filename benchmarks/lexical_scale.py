"""The lexical side of search at 100,000 chunks, without writing them to Chroma.

Run: .venv/bin/python benchmarks/lexical_scale.py DATA_DIR [--chunks 100000]
(DATA_DIR: an index of the shipped materials.)

The synthetic chunks are built as in benchmarks/ingest_search.py (texts of 120 words drawn
from the real chunks' words, sections and file names of real chunks), but only the BM25
snapshot is built from them: question preparation (glossary, typo correction), BM25 search
and coverage are what this repository's retrieval changes touch, and they grow with the
corpus. Chroma's HNSW query at 100,000 chunks is measured by ingest_search.py. Reports the
snapshot build time and per-question wall and CPU time (p50/p95) of analyse + search +
coverage over the questions of dev v2 and our retrieval set, three rounds after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys  # noqa: E402
import time
from pathlib import Path

import numpy as np

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.config import Settings
from rag.index.documents import Chunk
from rag.retrieval.lexical import BM25Index
from rag.retrieval.query import analyse
from rag.services import build_services

REPO = Path(__file__).resolve().parent.parent


def synthetic(real: list[Chunk], total: int) -> tuple[list[str], list[str]]:
    """Ids and lexical texts of `total` synthetic chunks made of the real chunks' words."""
    rng = np.random.default_rng(0)
    vocab = np.array(" ".join(c.text for c in real).split())
    ids, texts = [], []
    for i in range(total):
        like = real[int(rng.integers(0, len(real)))]
        fake = Chunk(" ".join(rng.choice(vocab, 120)), f"synthetic/{i // 100:05d}.md", None,
                     like.section, 0, 0)
        ids.append(f"s{i}")
        texts.append(fake.lexical_text())
    return ids, texts


def percentiles(samples: list[float]) -> str:
    """p50 / p95 in milliseconds."""
    samples = sorted(samples)
    return f"{statistics.median(samples):.1f} / {samples[int(0.95 * (len(samples) - 1))]:.1f} ms"


def main() -> None:
    """Build the snapshot and time the lexical side of every question."""
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--chunks", type=int, default=100_000)
    args = parser.parse_args()
    services = build_services(Settings(data_dir=args.data_dir))
    ids = [cid for e in services.store.manifest().values() for cid in e.chunk_ids]
    real = [c for _, c in services.store.iter_chunks(ids)]
    fake_ids, texts = synthetic(real, args.chunks)
    began = time.perf_counter()
    index = BM25Index(fake_ids + ids, texts + [c.lexical_text() for c in real])
    build_s = time.perf_counter() - began
    paths = [
        REPO.parent / "shared/eval/dev_questions_v2.jsonl",
        REPO / "eval/retrieval_questions.jsonl",
    ]
    questions = [json.loads(line)["question"] for p in paths for line in p.read_text().splitlines()]
    wall: list[float] = []
    cpu: list[float] = []
    for round_ in range(4):
        for q in questions:
            w, c = time.perf_counter(), time.process_time()
            query = analyse(q, index)
            found = index.search(query.terms, 40)
            index.coverage(query.core, [i for i, _ in found])
            if round_:
                wall.append((time.perf_counter() - w) * 1000)
                cpu.append((time.process_time() - c) * 1000)
    print(f"| BM25 snapshot build, {len(index)} chunks | {build_s:.1f} s |")
    print(f"| lexical side per question, wall p50 / p95 ({len(wall)}) | {percentiles(wall)} |")
    print(f"| lexical side per question, CPU p50 / p95 | {percentiles(cpu)} |")


if __name__ == "__main__":
    main()
