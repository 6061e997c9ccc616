"""Fit and check the retriever's score calibration on labelled questions.

A hit is labelled relevant when it comes from one of the question's expected sources and
contains one of its evidence strings; every hit of an out-of-scope question is irrelevant.
A two-feature logistic regression (dense cosine, lexical coverage) is fitted by Newton's
method on one question set and evaluated on another, so the reported figures are held out.
The question-level abstention gate is a second logistic regression over each question's best
cosine, the mean of its best three cosines (agreement) and its best coverage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.config import AnswerSettings, RetrievalSettings
from rag.documents import Hit
from rag.retrieval import Retriever


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


# How many of the best passages the gate's agreement feature averages over.
AGREEMENT_TOP = 3


@dataclass(frozen=True, slots=True)
class QuestionEvidence:
    """The strongest evidence retrieval found for one question.

    `agreement` is the mean cosine of the best `AGREEMENT_TOP` passages: a covered question
    usually finds several related passages, while an off-topic one can hit a single stray
    passage (a paper's appendix of sample texts) and nothing else.
    """

    question_id: str
    in_scope: bool
    best_cosine: float
    agreement: float
    best_coverage: float


def evidence_of(
    question_id: str, in_scope: bool, cosines: Sequence[float], coverages: Sequence[float]
) -> QuestionEvidence:
    """Summarise one question's retrieved passages for the gate."""
    best = sorted(cosines, reverse=True)[:AGREEMENT_TOP]
    return QuestionEvidence(
        question_id,
        in_scope,
        best[0] if best else 0.0,
        float(np.mean(best)) if best else 0.0,
        max(coverages, default=0.0),
    )


def question_evidence(rows: Sequence[LabelledHit]) -> list[QuestionEvidence]:
    """Collapse labelled hits to one row per question."""
    by_q: dict[str, list[LabelledHit]] = {}
    for r in rows:
        by_q.setdefault(r.question_id, []).append(r)
    return [
        evidence_of(
            qid, hits[0].in_scope, [h.cosine for h in hits], [h.coverage for h in hits]
        )
        for qid, hits in by_q.items()
    ]


def gate_features(evidence: Sequence[QuestionEvidence]) -> np.ndarray:
    """Design matrix of the abstention gate: best cosine, agreement, best coverage, bias."""
    return np.array([[e.best_cosine, e.agreement, e.best_coverage, 1.0] for e in evidence])


def fit_gate(
    evidence: Sequence[QuestionEvidence], max_in_abstain: float = 0.1, l2: float = 1e-3
) -> tuple[np.ndarray, float]:
    """Question-level P(covered) and its abstention threshold.

    The threshold sits in the middle of the gap above the most convincing off-topic question,
    so every off-topic question of the fit set abstains, unless that would make more than
    `max_in_abstain` of the in-scope questions abstain; then it is that quantile instead.
    L2 keeps the weights finite when the two sets separate cleanly.
    """
    y = np.array([e.in_scope for e in evidence], dtype=bool)
    x = gate_features(evidence)
    w = logistic(x, y.astype(float), l2=l2)
    p = 1 / (1 + np.exp(-x @ w))
    inside, outside = np.sort(p[y]), np.sort(p[~y])
    if not len(inside) or not len(outside):
        return w, 0.5
    above = inside[inside > outside[-1]]
    threshold = (outside[-1] + above[0]) / 2 if len(above) else outside[-1] + 1e-6
    quantile = float(inside[int(np.floor(max_in_abstain * len(inside)))])
    return w, float(
        min(threshold, quantile) if np.mean(inside < threshold) > max_in_abstain else threshold
    )


def gate_probability(evidence: QuestionEvidence, answer: AnswerSettings) -> float:
    """P(the materials cover the question) under the configured gate."""
    z = (
        answer.gate_cosine * evidence.best_cosine
        + answer.gate_agreement * evidence.agreement
        + answer.gate_coverage * evidence.best_coverage
        + answer.gate_intercept
    )
    return float(1 / (1 + np.exp(-z)))
