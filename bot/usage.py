"""Usage over time and coverage gaps, from the question log.

Per-day counts (questions, abstentions, 👍/👎) and the questions the bot abstained on or that got
a 👎, grouped by meaning: embedded with the project's embedder and joined by average-linkage
agglomerative clustering on cosine similarity, each group shown by its medoid (the question most
similar to the rest). Synchronous and free of discord: the bot runs it in a worker thread
(`asyncio.to_thread`), `study-assistant report` calls it directly.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import numpy as np

from bot.storage import QuestionLog, spreadsheet_safe
from rag.config import Settings

# Texts in, unit vectors out (one row per text): the embedder's `embed_documents`.
Embed = Callable[[Sequence[str]], np.ndarray]
DAY_FIELDS = ("day", "questions", "abstained", "thumbs_up", "thumbs_down", "escalated")
GAP_FIELDS = ("rank", "questions", "abstained", "thumbs_down", "representative", "examples")
EXAMPLES_IN_CSV = 5


@dataclass(frozen=True)
class Day:
    """What happened on one day of the course's time zone (votes on that day's answers)."""

    day: date
    questions: int = 0
    abstained: int = 0
    up: int = 0
    down: int = 0
    # Questions sent to the TAs that day ("Ask a TA").
    escalated: int = 0


@dataclass(frozen=True)
class GapQuestion:
    """A logged question the materials did not serve: abstained on, or voted 👎."""

    text: str
    abstained: bool
    down: int


@dataclass(frozen=True)
class GapCluster:
    """Gap questions alike in meaning: the medoid, and how many were asked (repeats count)."""

    representative: str
    count: int
    abstained: int
    down_voted: int
    # Distinct wordings, the most central first (the representative among them).
    examples: tuple[str, ...]


@dataclass(frozen=True)
class UsageReport:
    """Per-day counts over a period and its coverage gaps, largest group first."""

    days: tuple[Day, ...]
    clusters: tuple[GapCluster, ...]
    timezone: str
    # Gap questions in the period, and how many of the latest were grouped (a cap bounds the cost).
    gap_questions: int
    grouped: int

    @property
    def questions(self) -> int:
        """Questions asked in the period."""
        return sum(d.questions for d in self.days)


def day_of(timestamp: float, zone: ZoneInfo) -> date:
    """The calendar day of a Unix time in a time zone."""
    return datetime.fromtimestamp(timestamp, zone).date()


def daily_counts(
    rows: Sequence[Mapping[str, Any]],
    since: float,
    now: float,
    zone: ZoneInfo,
    escalations: Sequence[float] = (),
) -> tuple[Day, ...]:
    """One `Day` for every calendar day from `since` to `now` (quiet days count zero);
    `escalations` are the times questions were sent to the TAs."""
    first, last = day_of(since, zone), day_of(now, zone)
    totals = {first + timedelta(n): [0, 0, 0, 0, 0] for n in range((last - first).days + 1)}
    events = [(r["created_at"], (1, r["abstained"], r["up"], r["down"], 0)) for r in rows]
    events += [(at, (0, 0, 0, 0, 1)) for at in escalations]
    for at, values in events:
        counts = totals.get(day_of(at, zone))
        if counts is None:  # outside the period (a clock set back): not this report's
            continue
        for i, value in enumerate(values):
            counts[i] += int(value)
    return tuple(Day(d, *counts) for d, counts in totals.items())


def gap_questions(rows: Sequence[Mapping[str, Any]]) -> list[GapQuestion]:
    """The questions the bot abstained on or that got at least one 👎, in logged order."""
    return [GapQuestion(r["question"], bool(r["abstained"]), int(r["down"]))
            for r in rows if r["abstained"] or r["down"]]


def cluster_labels(vectors: np.ndarray, similarity: float) -> np.ndarray:
    """Average-linkage clusters of unit vectors: two groups merge while the mean cosine
    similarity between their members is at least `similarity`. One label per row."""
    if len(vectors) < 2:
        return np.ones(len(vectors), dtype=int)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    distances = np.clip(1.0 - vectors @ vectors.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    tree = linkage(squareform(distances, checks=False), method="average")
    return fcluster(tree, t=1.0 - similarity, criterion="distance")


def _wordings(questions: Sequence[GapQuestion]) -> dict[str, list[GapQuestion]]:
    """Gap questions by wording (case and spacing ignored), so repeats are embedded once."""
    groups: dict[str, list[GapQuestion]] = {}
    for q in questions:
        groups.setdefault(" ".join(q.text.split()).casefold(), []).append(q)
    return groups


def _cluster(members: list[list[GapQuestion]], vectors: np.ndarray) -> GapCluster:
    """One group: wordings ranked by their similarity to the rest, weighted by repeats."""
    weights = np.array([len(m) for m in members], dtype=np.float32)
    centrality = (vectors @ vectors.T) @ weights
    order = np.argsort(-centrality, kind="stable")
    asked = [q for m in members for q in m]
    examples = tuple(" ".join(members[i][0].text.split()) for i in order)
    return GapCluster(examples[0], len(asked), sum(q.abstained for q in asked),
                      sum(q.down > 0 for q in asked), examples)


def cluster_gaps(
    questions: Sequence[GapQuestion], embed: Embed, similarity: float
) -> tuple[GapCluster, ...]:
    """Gap questions grouped by meaning, the largest group first (ties: by representative)."""
    if not questions:
        return ()
    wordings = list(_wordings(questions).values())
    vectors = np.asarray(embed([w[0].text for w in wordings]), dtype=np.float32)
    labels = cluster_labels(vectors, similarity)
    clusters = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        clusters.append(_cluster([wordings[i] for i in idx], vectors[idx]))
    return tuple(sorted(clusters, key=lambda c: (-c.count, c.representative.casefold())))


class RememberedEmbeddings:
    """An `Embed` that keeps the vectors of the texts it embedded (the latest `limit`), so a
    second report over the same period embeds only the questions asked since."""

    def __init__(self, embed: Embed, limit: int) -> None:
        self._embed = embed
        self._limit = limit
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for `texts`, embedding only those not seen before."""
        with self._lock:
            known = {t: self._vectors[t] for t in texts if t in self._vectors}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            known.update(zip(missing, np.asarray(self._embed(missing)), strict=True))
        with self._lock:
            for text in texts:  # the latest texts last: the oldest are forgotten first
                self._vectors.pop(text, None)
                self._vectors[text] = known[text]
            while len(self._vectors) > self._limit:
                del self._vectors[next(iter(self._vectors))]
        return np.stack([known[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)


def build_report(
    rows: Sequence[Mapping[str, Any]],
    embed: Embed,
    settings: Settings,
    since: float,
    now: float,
    escalations: Sequence[float] = (),
) -> UsageReport:
    """The report over logged rows (`QuestionLog.usage_rows`) and escalation times: per-day
    counts in the course's time zone, and the latest gap questions grouped (the embedder is
    called only if there are any)."""
    zone = ZoneInfo(settings.course.timezone)
    gaps = gap_questions(rows)
    latest = gaps[-settings.stats.max_gap_questions:]
    clusters = cluster_gaps(latest, embed, settings.stats.gap_similarity)
    days = daily_counts(rows, since, now, zone, escalations)
    return UsageReport(days, clusters, settings.course.timezone, len(gaps), len(latest))


def report_from_log(
    log: QuestionLog,
    embed: Embed,
    settings: Settings,
    since: float,
    now: float,
    escalations: Sequence[float] = (),
) -> UsageReport:
    """The report over the questions a log holds since a time."""
    return build_report(log.usage_rows(since), embed, settings, since, now, escalations)


def write_days_csv(report: UsageReport, out: TextIO) -> None:
    """Per-day counts as CSV, one row per day (ISO dates)."""
    writer = csv.writer(out)
    writer.writerow(DAY_FIELDS)
    for d in report.days:
        writer.writerow([d.day.isoformat(), d.questions, d.abstained, d.up, d.down, d.escalated])


def write_gaps_csv(report: UsageReport, out: TextIO) -> None:
    """Every gap group as CSV, largest first; student text is made safe for spreadsheets."""
    writer = csv.writer(out)
    writer.writerow(GAP_FIELDS)
    for rank, c in enumerate(report.clusters, 1):
        others = " | ".join(c.examples[1 : 1 + EXAMPLES_IN_CSV])
        writer.writerow([rank, c.count, c.abstained, c.down_voted,
                         spreadsheet_safe(c.representative), spreadsheet_safe(others)])
