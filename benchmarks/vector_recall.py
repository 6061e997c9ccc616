"""How many of a question's nearest passages Chroma's HNSW search returns, per `ef_search`.

Run:
    .venv/bin/python benchmarks/vector_recall.py ../shared/course_materials course_materials \
        --ef 100 200 500 --n 80 --seeds 0 1 2

The materials are ingested into a fresh data dir; every question of the answer sets
(`benchmarks/faithfulness.py`'s SETS) is embedded as a search embeds it. Then, for each
`ef_search` and each hash seed, a process of its own opens the index (as the bot would, with
that seed's PYTHONHASHSEED), asks Chroma for each question's `n` nearest chunks and compares
them with the exact `n` nearest (cosine over every stored vector, float64). A search asks for
twice its 40 candidates, so n = 80 is what the retriever fuses. Prints one Markdown row per
(ef, seed): mean recall, the lowest, how many questions lost one of their n nearest, and how
many their nearest one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

COLLECTION = "course_materials"


def child(data_dir: Path, ef: int, n: int) -> str:
    """One process's measurement: a Markdown row's figures for this ef_search."""
    import chromadb

    client = chromadb.PersistentClient(str(data_dir / "chroma"))
    chunks = client.get_collection(COLLECTION)
    chunks.modify(configuration={"hnsw": {"ef_search": ef}})
    stored = chunks.get(include=["embeddings"])
    pool = np.asarray(stored["embeddings"], dtype=np.float64)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    questions = np.load(data_dir / "questions.npy")
    found = chunks.query(query_embeddings=questions.tolist(), n_results=n, include=[])["ids"]
    ids = np.asarray(stored["ids"])
    recall, short, nearest_lost = [], 0, 0
    for vector, got in zip(questions, found, strict=True):
        exact = ids[np.argsort(-(pool @ (vector / np.linalg.norm(vector))))[:n]]
        share = len(set(exact) & set(got)) / n
        recall.append(share)
        short += share < 1
        nearest_lost += exact[0] not in got
    return (f"{np.mean(recall):.4f} | {min(recall):.3f} | {short} of {len(recall)} | "
            f"{nearest_lost} | {len(ids)}")


def main() -> None:
    """Ingest, embed the questions, then measure each ef_search in fresh processes."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("roots", nargs="*", type=Path)
    p.add_argument("--ef", nargs="+", type=int, default=[100, 200, 500])
    p.add_argument("--n", type=int, default=80)
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(child(args.child, args.ef[0], args.n))
        return

    from faithfulness import SETS, rows_of

    from ingest.pipeline import Target, ingest
    from rag.config import Settings
    from rag.services import build_services

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        services = build_services(Settings(data_dir=data_dir))
        report = ingest([Target(r) for r in args.roots], services.store, services.embedder,
                        services.settings.ingest)
        if not report.ok:
            raise SystemExit(f"ingest failed: {report}")
        questions = [row["question"] for path in SETS.values() for row in rows_of(path)]
        dense = [services.retriever.dense_text(q) for q in questions]
        np.save(data_dir / "questions.npy", np.asarray(services.embedder.embed_queries(dense)))
        del services
        print(f"{len(questions)} questions, n = {args.n}\n")
        print("| ef_search | hash seed | mean recall | lowest | questions short of their n "
              "nearest | nearest one missing | chunks |")
        print("|---|---|---|---|---|---|---|")
        for ef in args.ef:
            for seed in args.seeds:
                run = subprocess.run(
                    [sys.executable, __file__, "--child", str(data_dir), "--ef", str(ef),
                     "--n", str(args.n)],
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "PYTHONHASHSEED": seed})
                print(f"| {ef} | {seed} | {run.stdout.strip()} |")


if __name__ == "__main__":
    main()
