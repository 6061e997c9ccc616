"""Grounding-check benchmark: fit the checker on the `fit` claims of eval/claims.jsonl and the
verifier's labelled sentences (eval/verifier_sentences.jsonl, both splits, and
eval/verifier_sentences_heldout2.jsonl), then report precision and recall on the `held_out`
claims. eval/verifier_sentences_heldout3.jsonl is never fitted: benchmarks/verifier.py reports
it as the held-out figure of the verifier.

Run: .venv/bin/python benchmarks/grounding.py ../shared/course_materials course_materials

Each claim is judged against the passages retrieved for its question (k=5), as an answer's
claims are in the demos, and again with the wider search (each claim's own top 3 passages
added). Prints a Markdown report for docs/benchmarks.md; every figure comes from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

import numpy as np  # noqa: E402

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.pipeline import Target, ingest  # noqa: E402
from rag.answering.grounding import (  # noqa: E402
    CLAIM_FEATURES,
    FITTED_WEIGHTS,
    SUPPORTED,
    GroundingChecker,
    GroundingWeights,
    best_candidate,
    fit_weights,
)
from rag.config import Settings  # noqa: E402
from rag.services import Services, build_services  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / ".study-assistant" / "bench-grounding"
MODES = (("retrieved passages", False), ("+ wider search", True))


@dataclass
class Judged:
    """One claim's label, features (of the passage it is judged against) and verdict."""

    row: dict
    features: np.ndarray
    verdict: str = ""


def prepare(services: Services, checker: GroundingChecker, claims: list[dict], k: int,
            wider: bool) -> tuple[list[Judged], dict, float]:
    """Features of every claim, judged against its question's passages; also the pools."""
    by_question: dict[str, list[dict]] = defaultdict(list)
    for row in claims:
        by_question[row["question"]].append(row)
    judged, pools = [], {}
    began = time.perf_counter()
    for question, rows in by_question.items():
        texts = [r["claim"] for r in rows]
        hits = services.retriever.search(question, k)
        pool = checker.evidence_pool(texts, hits, wider)
        table = checker.candidates(texts, pool)
        for r, cands in zip(rows, table, strict=True):
            judged.append(Judged(r, cands[best_candidate(cands)].features))
            pools[r["id"]] = (pool, cands)
    return judged, pools, (time.perf_counter() - began) / max(len(claims), 1)


def judge(checker: GroundingChecker, judged: list[Judged], pools: dict) -> None:
    """Fill in each claim's verdict under the checker's weights."""
    for j in judged:
        pool, cands = pools[j.row["id"]]
        j.verdict = checker.judge(j.row["claim"], pool, cands).verdict


def ratio(a: int, b: int) -> str:
    """`0.83 (25/30)`."""
    return f"{a / b:.2f} ({a}/{b})" if b else "n/a"


def metrics(judged: list[Judged]) -> dict[str, str]:
    """Precision and recall of the 'unsupported' flag and of 'supported', and accuracy."""
    truth = [j.row["label"] == SUPPORTED for j in judged]
    said = [j.verdict == SUPPORTED for j in judged]
    pairs = list(zip(truth, said, strict=True))
    tp_u = sum(not t and not s for t, s in pairs)
    tp_s = sum(t and s for t, s in pairs)
    contradicted = [j for j in judged if j.verdict == "contradicted"]
    return {
        "unsupported precision": ratio(tp_u, sum(not s for s in said)),
        "unsupported recall": ratio(tp_u, sum(not t for t in truth)),
        "supported precision": ratio(tp_s, sum(said)),
        "supported recall": ratio(tp_s, sum(truth)),
        "accuracy": ratio(tp_u + tp_s, len(judged)),
        "'contradicted' verdicts truly unsupported": ratio(
            sum(j.row["label"] != SUPPORTED for j in contradicted), len(contradicted)
        ),
    }


def recall_by_kind(judged: list[Judged]) -> dict[str, str]:
    """For each kind of unsupported claim, the share flagged."""
    kinds: dict[str, list[bool]] = defaultdict(list)
    for j in judged:
        if j.row["label"] != SUPPORTED:
            kinds[j.row["kind"]].append(j.verdict != SUPPORTED)
    return {k: ratio(sum(v), len(v)) for k, v in sorted(kinds.items())}


FIELDS = (*CLAIM_FEATURES, "intercept", "threshold")
# Labelled verifier sentences fitted beside the claims' fit split (held_out 3 never is).
ALSO_FIT = ("verifier_sentences.jsonl", "verifier_sentences_heldout2.jsonl")


def print_weights(name: str, w: GroundingWeights) -> None:
    """The weights, as the `GroundingWeights(...)` to paste into rag/answering/grounding.py."""
    values = ", ".join(f"{f}={getattr(w, f):.3f}" for f in FIELDS)
    print(f"{name}: `GroundingWeights({values})`\n")


def rounded(w: GroundingWeights) -> tuple[float, ...]:
    """The weights as printed (3 decimals), to compare a new fit with the shipped one."""
    return tuple(round(getattr(w, f), 3) for f in FIELDS)


def also_fit(eval_dir: Path) -> list[dict]:
    """The verifier's labelled sentences, as claims of the fit split."""
    rows = []
    for name in ALSO_FIT:
        for line in (eval_dir / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                rows.append({"id": f"{name}:{r['id']}", "split": "fit", "question": r["question"],
                             "claim": r["sentence"], "label": r["label"], "kind": r["kind"]})
    return rows


def fit(judged: list[Judged], pools: dict) -> GroundingWeights:
    """Fit the checker on the fit split."""
    rows = [j for j in judged if j.row["split"] == "fit"]
    missing = [bool(pools[j.row["id"]][1][best_candidate(pools[j.row["id"]][1])].missing)
               for j in rows]
    return fit_weights(np.stack([j.features for j in rows]), np.array(missing),
                       np.array([j.row["label"] == SUPPORTED for j in rows]))


def report(services: Services, claims: list[dict], k: int) -> None:
    """Fit on the fit split (with the wider search: the labels say whether the materials,
    not the question's five passages, support a claim), then evaluate every split and mode."""
    prepared = {}
    for mode, wider in MODES:
        checker = GroundingChecker(services.embedder, services.retriever)
        prepared[mode] = prepare(services, checker, claims, k, wider)
        print(f"- {mode}: {prepared[mode][2] * 1000:.0f} ms per claim (embedding included)")
    fitted = fit(*prepared[MODES[1][0]][:2])
    print()
    print_weights("Fitted on the fit split", fitted)
    weights = FITTED_WEIGHTS if rounded(fitted) == rounded(FITTED_WEIGHTS) else fitted
    if weights is FITTED_WEIGHTS:
        print("These are the shipped `FITTED_WEIGHTS`; the figures below use them.\n")
    else:
        print_weights("**The fit above differs from the shipped FITTED_WEIGHTS** (the figures "
                      "below use the fit: paste it into rag/answering/grounding.py); shipped",
                      FITTED_WEIGHTS)
    tables = []
    for mode, _ in MODES:
        judged, pools, _ = prepared[mode]
        judge(GroundingChecker(services.embedder, services.retriever, weights), judged, pools)
        for split in ("fit", "held_out"):
            part = [j for j in judged if j.row["split"] == split]
            tables.append((f"{split}, {mode}", len(part), metrics(part), recall_by_kind(part)))
    print_tables(tables)


def print_tables(tables: list) -> None:
    """Two Markdown tables: the headline metrics, and the recall by kind of false claim."""
    names = [t[0] for t in tables]
    print("\n| | " + " | ".join(f"{n} ({t[1]} claims)" for n, t in zip(names, tables,
                                                                      strict=True)) + " |")
    print("| --- |" + " --- |" * len(tables))
    for key in tables[0][2]:
        print(f"| {key} | " + " | ".join(t[2][key] for t in tables) + " |")
    print("\nUnsupported claims flagged, by kind:\n")
    print("| kind | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(tables))
    for kind in tables[0][3]:
        print(f"| {kind} | " + " | ".join(t[3].get(kind, "n/a") for t in tables) + " |")


def main() -> None:
    """Ingest (or reuse) the index, then fit and report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("materials", type=Path, nargs="+")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--claims", type=Path, default=REPO / "eval" / "claims.jsonl")
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    settings = Settings(data_dir=args.data_dir)
    services = build_services(settings)
    targets = [Target(m.resolve()) for m in args.materials]
    done = ingest(targets, services.store, services.embedder, settings.ingest)
    lines = args.claims.read_text(encoding="utf-8").splitlines()
    claims = [json.loads(line) for line in lines if line.strip()] + also_fit(REPO / "eval")
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}; index: "
        f"{', '.join(str(m) for m in args.materials)} ({services.retriever.live_count()} chunks, "
        f"{done.chunks_added} embedded now); claims: {args.claims.name} + {' + '.join(ALSO_FIT)} "
        f"({len(claims)}), "
        f"k={args.k}.\n"
    )
    report(services, claims, args.k)


if __name__ == "__main__":
    main()
