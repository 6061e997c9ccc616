"""Fit and check the retriever's score calibration on labelled questions.

A hit is labelled relevant when it comes from one of the question's expected sources and
contains one of its evidence strings; every hit of an out-of-scope question is irrelevant.
A two-feature logistic regression (dense cosine, lexical coverage) is fitted by Newton's
method on one question set and evaluated on another, so the reported figures are held out.
The question-level abstention gate built on these labels lives in `rag.answering.gate`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.config import RetrievalSettings
from rag.index.documents import Hit
from rag.retrieval.retriever import Retriever


@dataclass(frozen=True, slots=True)
class LabelledHit:
    """One retrieved passage with its features and label."""

    question_id: str
    in_scope: bool
    cosine: float
    coverage: float
    relevant: bool


@dataclass(frozen=True, slots=True)
class Coefficients:
    """The fitted logistic model."""

    slope: float
    lexical: float
    intercept: float


def load_questions(path: Path) -> list[dict]:
    """Read a JSONL question set."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def is_relevant(hit: Hit, question: dict) -> bool:
    """Expected source and an evidence string inside the passage."""
    if question["kind"] != "in" or hit.chunk.source not in question["sources"]:
        return False
    text = " ".join(hit.chunk.text.lower().split())
    return any(e.lower() in text for e in question["evidence"])


def label_hits(retriever: Retriever, questions: Sequence[dict], k: int) -> list[LabelledHit]:
    """Search every question and label its top-k hits."""
    rows = []
    for q in questions:
        for hit in retriever.search(q["question"], k):
            rows.append(
                LabelledHit(
                    q["id"], q["kind"] == "in", hit.dense, hit.coverage, is_relevant(hit, q)
                )
            )
    return rows


def features(rows: Sequence[LabelledHit], settings: RetrievalSettings) -> np.ndarray:
    """Design matrix: cosine, lexical coverage, bias."""
    cos = np.array([r.cosine for r in rows])
    lex = np.array([r.coverage for r in rows])
    return np.column_stack([cos, lex, np.ones(len(rows))])


def fit(rows: Sequence[LabelledHit], settings: RetrievalSettings, l2: float = 1e-2) -> Coefficients:
    """Hit-level logistic regression: P(passage relevant | cosine, coverage)."""
    w = logistic(features(rows, settings), np.array([r.relevant for r in rows], dtype=float), l2)
    return Coefficients(float(w[0]), float(w[1]), float(w[2]))


def logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """Weights of a logistic regression by Newton's method, lightly L2-regularised."""
    w = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-x @ w))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def apply(coef: Coefficients, settings: RetrievalSettings) -> RetrievalSettings:
    """Settings with these coefficients."""
    return settings.model_copy(
        update={
            "calibration_slope": coef.slope,
            "calibration_lexical": coef.lexical,
            "calibration_intercept": coef.intercept,
        }
    )


def predict(rows: Sequence[LabelledHit], settings: RetrievalSettings) -> np.ndarray:
    """Calibrated probabilities for labelled rows under `settings`."""
    w = np.array(
        [settings.calibration_slope, settings.calibration_lexical, settings.calibration_intercept]
    )
    return 1 / (1 + np.exp(-features(rows, settings) @ w))


def reliability(rows: Sequence[LabelledHit], settings: RetrievalSettings, bins: int = 5) -> dict:
    """Brier score and a binned table of predicted vs observed relevance."""
    p = predict(rows, settings)
    y = np.array([r.relevant for r in rows], dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    table = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (p >= lo) & ((p < hi) | (hi == 1.0))
        if mask.any():
            table.append(
                (
                    float(lo),
                    float(hi),
                    int(mask.sum()),
                    float(p[mask].mean()),
                    float(y[mask].mean()),
                )
            )
    return {"brier": float(np.mean((p - y) ** 2)), "bins": table}


def best_scores(
    rows: Sequence[LabelledHit], settings: RetrievalSettings
) -> dict[str, tuple[bool, float]]:
    """Per question: (in scope?, best calibrated score among its hits)."""
    p = predict(rows, settings)
    best: dict[str, tuple[bool, float]] = {}
    for row, score in zip(rows, p, strict=True):
        prev = best.get(row.question_id, (row.in_scope, 0.0))[1]
        best[row.question_id] = (row.in_scope, max(prev, float(score)))
    return best
