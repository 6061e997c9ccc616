"""The question log: answers, feedback, statistics and export, in a real SQLite file."""

from __future__ import annotations

import csv
import io
import json
import stat

import pytest

from bot.storage import LoggedAnswer, QuestionLog, hash_user, percentile, user_hash_key


def entry(question: str = "What is LoRA?", **kw) -> LoggedAnswer:
    values = dict(
        user_hash=hash_user(42, "salt"),
        channel="123",
        question=question,
        answer="Low-rank adaptation [1].",
        sources=({"source": "papers/lora.pdf", "page": 2, "section": "Method"},),
        passages=({"source": "papers/lora.pdf", "page": 2, "section": "Method", "text": "…"},),
        model="smollm2",
        latency_ms=1200.0,
        abstained=False,
    )
    values.update(kw)
    return LoggedAnswer(**values)


@pytest.fixture
def log(tmp_path):
    log = QuestionLog(tmp_path / "bot.sqlite3")
    yield log
    log.close()


def test_user_ids_are_stored_only_as_salted_hashes(log):
    user_id = 731845501928374650  # a Discord snowflake: no timestamp or hash can contain it
    log.record(entry(user_hash=hash_user(user_id, "salt")))
    row = log.rows()[0]
    assert row["user_hash"] == hash_user(user_id, "salt") != hash_user(user_id, "other")
    assert str(user_id) not in json.dumps(row)


def test_feedback_is_one_vote_per_user_and_can_change(log):
    qid = log.record(entry())
    assert log.vote(qid, "u1", 1) and log.vote(qid, "u2", 1) and log.vote(qid, "u1", -1)
    row = log.rows()[0]
    assert (row["up"], row["down"]) == (1, 1)


def test_feedback_on_an_unknown_question_is_ignored(log):
    assert not log.vote(999, "u1", 1)


def test_passages_are_kept_for_the_sources_button(log):
    qid = log.record(entry())
    assert log.passages(qid)[0]["source"] == "papers/lora.pdf"
    assert log.passages(qid + 1) is None


def test_stats_count_questions_abstentions_feedback_sources_and_latency(log):
    for ms in (100.0, 200.0, 300.0, 400.0):
        log.vote(log.record(entry(latency_ms=ms)), "u", 1)
    log.record(entry(abstained=True, sources=(), latency_ms=5.0))
    log.record(entry(), at=0.0)  # long ago: outside the period
    stats = log.stats(since=1.0)
    assert (stats.questions, stats.abstained, stats.up, stats.down) == (5, 1, 4, 0)
    assert stats.top_sources == [("papers/lora.pdf", 4)]
    assert stats.latency_ms["p50"] == 250.0


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 90) == 0.0


def test_export_jsonl_and_csv_have_the_same_rows(log):
    log.vote(log.record(entry()), "u", -1)
    log.record(entry("What is RAG?", abstained=True))
    jsonl, table = io.StringIO(), io.StringIO()
    assert log.export(jsonl, "jsonl") == 2 and log.export(table, "csv") == 2
    records = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    rows = list(csv.DictReader(io.StringIO(table.getvalue())))
    assert [r["question"] for r in records] == [r["question"] for r in rows]
    assert records[0]["down"] == 1 and records[1]["abstained"] is True
    assert json.loads(rows[0]["sources"])[0]["page"] == 2


def test_export_rejects_an_unknown_format(log):
    with pytest.raises(ValueError):
        log.export(io.StringIO(), "xml")


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3",
                                  "@SUM(A1)", "\t=1+1"])
def test_csv_export_neutralises_cells_that_look_like_formulas(log, cell):
    log.record(entry(cell, answer=cell, model="smollm2"))
    table = io.StringIO()
    log.export(table, "csv")
    row = next(csv.DictReader(io.StringIO(table.getvalue())))
    assert row["question"] == "'" + cell and row["answer"] == "'" + cell
    assert row["latency_ms"] == "1200.0" and row["model"] == "smollm2"  # the rest is untouched


def test_the_user_hash_key_is_random_private_and_kept(tmp_path):
    key = user_hash_key(tmp_path / "data")
    path = tmp_path / "data" / "user-hash.key"
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert user_hash_key(tmp_path / "data") == key  # the same pseudonyms after a restart
    assert user_hash_key(tmp_path / "other") != key
    assert user_hash_key(tmp_path / "data", "configured secret") == b"configured secret"
