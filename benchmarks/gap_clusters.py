"""Coverage-gap grouping: which similarity threshold groups paraphrases and keeps topics apart,
and what grouping costs at the cap.

Embeds eval/gap_questions.jsonl (our own questions: groups of paraphrases on one topic, and
questions asked once) with the packaged embedder, groups them with `bot.usage.cluster_labels`
at each threshold, and prints pair precision / recall / F1 against the topic labels and how
many topics come out exactly. With --scale N it also times `bot.usage.build_report` over N
distinct gap questions (embedding included; the model's load excluded), twice, through the
remembered embeddings /stats keeps (the second call embeds nothing new).

    .venv/bin/python benchmarks/gap_clusters.py [--scale 2000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys  # noqa: E402
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.usage import Embed, RememberedEmbeddings, build_report, cluster_labels
from rag.config import Settings
from rag.services import build_embedder

EVAL = Path(__file__).resolve().parent.parent / "eval" / "gap_questions.jsonl"
THRESHOLDS = [round(0.15 + 0.05 * i, 2) for i in range(12)]


def pair_scores(truth: Sequence[str], labels: Sequence[int]) -> tuple[float, float, float]:
    """Pair-counting precision, recall and F1: pairs put together that belong together."""
    same_true = same_pred = both = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        t, p = truth[i] == truth[j], labels[i] == labels[j]
        same_true += t
        same_pred += p
        both += t and p
    precision = both / same_pred if same_pred else 1.0
    recall = both / same_true if same_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def exact_topics(truth: Sequence[str], labels: Sequence[int]) -> int:
    """Topics whose questions form exactly one group, alone."""
    by_topic: dict[str, set[int]] = {}
    for t, label in zip(truth, labels, strict=True):
        by_topic.setdefault(t, set()).add(label)
    return sum(
        1 for t, found in by_topic.items()
        if len(found) == 1 and sum(label in found for label in labels) == truth.count(t)
    )


def sweep(embed: Embed, rows: list[dict]) -> None:
    """The table of thresholds."""
    truth = [r["topic"] for r in rows]
    vectors = embed([r["question"] for r in rows])
    print(f"{len(rows)} questions, {len(set(truth))} topics "
          f"({sum(truth.count(t) > 1 for t in set(truth))} with paraphrases)")
    print("| similarity | groups | pair precision | pair recall | pair F1 | topics exact |")
    print("| --- | --- | --- | --- | --- | --- |")
    for threshold in THRESHOLDS:
        labels = list(cluster_labels(vectors, threshold))
        p, r, f = pair_scores(truth, labels)
        print(f"| {threshold:.2f} | {len(set(labels))} | {p:.2f} | {r:.2f} | {f:.2f} | "
              f"{exact_topics(truth, labels)}/{len(set(truth))} |")


def timed_report(embed: Embed, rows: list[dict], n: int) -> None:
    """build_report over n distinct gap questions, wall time."""
    now = time.time()
    texts = [f"{rows[i % len(rows)]['question']} (case {i})" for i in range(n)]
    log_rows = [{"created_at": now - (i % 7) * 86400, "question": t, "abstained": 1, "up": 0,
                 "down": 0} for i, t in enumerate(texts)]
    settings = Settings()
    settings.stats.max_gap_questions = n
    embedding = [0.0]

    def timed_embed(batch: Sequence[str]) -> np.ndarray:
        start = time.perf_counter()
        try:
            return embed(batch)
        finally:
            embedding[0] += time.perf_counter() - start

    remembered = RememberedEmbeddings(timed_embed, 2 * n)  # as the bot's /stats holds it
    for call in ("first", "second"):
        embedding[0] = 0.0
        start = time.perf_counter()
        report = build_report(log_rows, remembered, settings, now - 7 * 86400, now)
        seconds = time.perf_counter() - start
        print(f"build_report over {n} gap questions, {call} call: {seconds:.1f} s wall, of "
              f"which embedding {embedding[0]:.1f} s, grouping and counting "
              f"{seconds - embedding[0]:.1f} s ({len(report.clusters)} groups)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=0, help="also time N gap questions")
    args = parser.parse_args()
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines() if line]
    embedder = build_embedder(Settings())
    embedder.embed_query("warm up")  # the model's load is not what is measured
    sweep(embedder.embed_documents, rows)
    if args.scale:
        timed_report(embedder.embed_documents, rows, args.scale)


if __name__ == "__main__":
    main()
