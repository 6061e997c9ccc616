"""Usage per day and coverage gaps from a real question log, grouped with the real embedder."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bot.storage import QuestionLog
from bot.usage import (
    GapQuestion,
    RememberedEmbeddings,
    build_report,
    cluster_gaps,
    daily_counts,
    report_from_log,
    write_days_csv,
    write_gaps_csv,
)
from rag.config import CourseSettings, Settings, StatsSettings
from rag.index.embedder import Embedder
from tests.bot.test_storage import entry

# Students asking the same two things in different words, and two questions asked once.
KV_CACHE = (
    "What is the KV cache in transformer inference?",
    "How does caching keys and values speed up LLM decoding?",
    "Why do transformers store the keys and values of earlier tokens during generation?",
    "Explain the key-value cache used when generating text.",
)
MIXTURE_OF_EXPERTS = (
    "What is a mixture of experts model?",
    "How does a mixture-of-experts layer route tokens to experts?",
    "Explain how mixture of experts language models work.",
)
SINGLETONS = ("When is the final exam?", "Can you recommend a pizza place near campus?")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
DAY = 86400.0


def plant_gaps(log: QuestionLog, now: float = NOW) -> None:
    """The paraphrases and singletons as abstentions over the last days; one KV-cache question
    answered but voted 👎, one answered question voted 👍 (not a gap), one asked twice."""
    for i, text in enumerate((*KV_CACHE[:-1], *MIXTURE_OF_EXPERTS, *SINGLETONS)):
        log.record(entry(text, abstained=True, sources=()), at=now - (i % 4) * DAY)
    disliked = log.record(entry(KV_CACHE[-1]), at=now - DAY)
    log.vote(disliked, "u1", -1)
    liked = log.record(entry("What is LoRA?"), at=now - 2 * DAY)
    log.vote(liked, "u1", 1)
    log.record(entry("  what is a MIXTURE of experts model? ", abstained=True), at=now)


def settings(timezone: str = "UTC", **stats) -> Settings:
    """Settings with a course time zone and gap grouping, nothing from the environment."""
    return Settings(course=CourseSettings(timezone=timezone), stats=StatsSettings(**stats))


@pytest.fixture
def log(tmp_path):
    log = QuestionLog(tmp_path / "bot.sqlite3")
    yield log
    log.close()


def test_days_are_counted_in_the_course_time_zone_including_quiet_days():
    rows = [  # 03:00 UTC on March 2 is still March 1 in New York
        {"created_at": datetime(2026, 3, 2, 3, 0, tzinfo=ZoneInfo("UTC")).timestamp(),
         "abstained": 1, "up": 0, "down": 2},
        {"created_at": datetime(2026, 3, 3, 15, 0, tzinfo=ZoneInfo("UTC")).timestamp(),
         "abstained": 0, "up": 1, "down": 0},
    ]
    since = datetime(2026, 2, 28, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    days = daily_counts(rows, since, since + 4 * DAY, ZoneInfo("America/New_York"))
    assert [(d.day, d.questions, d.abstained, d.up, d.down) for d in days] == [
        (date(2026, 2, 28), 0, 0, 0, 0),
        (date(2026, 3, 1), 1, 1, 0, 2),
        (date(2026, 3, 2), 0, 0, 0, 0),
        (date(2026, 3, 3), 1, 0, 1, 0),
        (date(2026, 3, 4), 0, 0, 0, 0),
    ]


def test_escalations_are_counted_on_the_day_they_were_sent():
    since = datetime(2026, 3, 1, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    sent = [since + 0.5 * DAY, since + 1.5 * DAY, since + 1.6 * DAY, since - DAY]
    days = daily_counts([], since, since + 2 * DAY, ZoneInfo("UTC"), sent)
    assert [(d.questions, d.escalated) for d in days] == [(0, 1), (0, 2), (0, 0)]


def test_gap_clusters_group_paraphrases_and_keep_singletons_apart(log, embedder: Embedder):
    plant_gaps(log)
    report = report_from_log(log, embedder.embed_documents, settings(), NOW - 7 * DAY, NOW)
    groups = [(c.count, set(c.examples)) for c in report.clusters]
    assert groups[0] == (4, set(KV_CACHE))
    # Three wordings, four questions: the repeat (other case and spacing) counts, once shown.
    assert groups[1] == (4, set(MIXTURE_OF_EXPERTS))
    assert sorted(groups[2:]) == [(1, {SINGLETONS[1]}), (1, {SINGLETONS[0]})]
    assert (report.gap_questions, report.grouped) == (10, 10)


def test_each_group_counts_why_its_questions_are_gaps_and_shows_a_member(log, embedder):
    plant_gaps(log)
    report = report_from_log(log, embedder.embed_documents, settings(), NOW - 7 * DAY, NOW)
    kv = report.clusters[0]
    assert (kv.abstained, kv.down_voted) == (3, 1)
    assert kv.representative in KV_CACHE and kv.examples[0] == kv.representative
    assert report.clusters[1].representative in MIXTURE_OF_EXPERTS


def test_a_lower_similarity_threshold_merges_more(embedder):
    questions = [GapQuestion(t, True, 0) for t in (*KV_CACHE, *MIXTURE_OF_EXPERTS)]
    assert len(cluster_gaps(questions, embedder.embed_documents, 0.05)) == 1


def test_only_the_latest_gap_questions_are_grouped_when_capped(log, embedder):
    plant_gaps(log)
    capped = settings(max_gap_questions=3)
    report = report_from_log(log, embedder.embed_documents, capped, NOW - 7 * DAY, NOW)
    assert (report.gap_questions, report.grouped) == (10, 3)
    assert sum(c.count for c in report.clusters) == 3


def test_a_period_without_gaps_never_calls_the_embedder(log):
    log.record(entry("What is LoRA?"), at=NOW)

    def embed(texts):
        raise AssertionError("nothing to group: the embedder must not be called")

    report = build_report(log.usage_rows(), embed, settings(), NOW - DAY, NOW)
    assert report.clusters == () and report.questions == 1


def test_the_csv_files_hold_every_day_and_group_with_formulas_neutralised(log, embedder):
    plant_gaps(log)
    log.record(entry("=HYPERLINK(\"http://x\")", abstained=True), at=NOW)
    report = report_from_log(log, embedder.embed_documents, settings(), NOW - 7 * DAY, NOW)
    days, gaps = io.StringIO(), io.StringIO()
    write_days_csv(report, days)
    write_gaps_csv(report, gaps)
    day_rows = list(csv.DictReader(io.StringIO(days.getvalue())))
    assert len(day_rows) == 8 and sum(int(r["questions"]) for r in day_rows) == 12
    assert day_rows[-1]["day"] == "2026-03-10"
    gap_rows = list(csv.DictReader(io.StringIO(gaps.getvalue())))
    assert [int(r["questions"]) for r in gap_rows[:2]] == [4, 4]
    assert "'=HYPERLINK(\"http://x\")" in {r["representative"] for r in gap_rows}
    assert len(gap_rows[0]["examples"].split(" | ")) == 3


class Recording:
    """The real embedder, keeping each batch of texts it was asked to embed."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return self.embedder.embed_documents(texts)


def test_remembered_embeddings_embed_only_texts_not_seen_before(embedder):
    recording = Recording(embedder)
    remembered = RememberedEmbeddings(recording, limit=10)
    first = remembered(KV_CACHE[:2])
    again = remembered([KV_CACHE[1], KV_CACHE[2]])
    assert recording.calls == [list(KV_CACHE[:2]), [KV_CACHE[2]]]
    assert np.array_equal(again[0], first[1])
    assert np.allclose(again[1], embedder.embed_documents([KV_CACHE[2]])[0], atol=1e-5)


def test_remembered_embeddings_forget_the_least_recently_used_beyond_the_limit(embedder):
    recording = Recording(embedder)
    remembered = RememberedEmbeddings(recording, limit=2)
    remembered(KV_CACHE[:2])
    remembered([KV_CACHE[0]])  # used again: now the newest
    remembered([KV_CACHE[2]])  # over the limit: KV_CACHE[1] goes
    remembered([KV_CACHE[0], KV_CACHE[1]])
    assert recording.calls[-1] == [KV_CACHE[1]]
