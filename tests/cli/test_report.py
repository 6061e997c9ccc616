"""`study-assistant report` through Typer's runner, on a real question log.

The command builds its embedder with `rag.services.build_embedder`; the tests hand it the
session's already loaded real embedder instead of loading the same model again.
"""

from __future__ import annotations

import csv
import io
import time

import pytest
from PIL import Image
from typer.testing import CliRunner

from bot.escalation_log import EscalationLog
from bot.storage import QuestionLog
from cli import report
from cli.app import app
from tests.bot.test_storage import entry
from tests.bot.test_usage import KV_CACHE, plant_gaps
from tests.bot.test_usage_chart import PNG_SIGNATURE

runner = CliRunner()


@pytest.fixture
def shared_embedder(monkeypatch, embedder):
    """The report embeds with the session's real embedder."""
    monkeypatch.setattr(report, "build_embedder", lambda settings: embedder)
    return embedder


def make_log(tmp_path, plant=plant_gaps):
    data = tmp_path / "data"
    log = QuestionLog(data / "bot.sqlite3")
    plant(log, time.time())
    log.close()
    return data


def test_report_writes_the_chart_the_days_and_the_gap_groups(tmp_path, shared_embedder):
    data, out = make_log(tmp_path), tmp_path / "out"
    result = runner.invoke(app, ["report", "--days", "7", "--out", str(out),
                                 "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "11 questions over 8 days; 10 not covered or voted 👎, in 4 groups" in result.output
    png = (out / "usage.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and Image.open(io.BytesIO(png)).size == (700, 500)
    days = list(csv.DictReader((out / "usage_by_day.csv").open(encoding="utf-8")))
    assert len(days) == 8 and sum(int(d["questions"]) for d in days) == 11
    gaps = list(csv.DictReader((out / "coverage_gaps.csv").open(encoding="utf-8")))
    assert [int(g["questions"]) for g in gaps] == [4, 4, 1, 1]
    assert any(g["representative"] in KV_CACHE for g in gaps[:2])


def test_report_counts_the_questions_sent_to_a_ta_per_day(tmp_path, shared_embedder):
    data, out = make_log(tmp_path), tmp_path / "out"
    escalations = EscalationLog(data / "bot.sqlite3")
    sent = escalations.claim(1, "u1", 1001, 3, guild_id=7, channel_id=42, message_id=99,
                             private=False)
    escalations.opened(sent, 5, 6)
    escalations.close()
    result = runner.invoke(app, ["report", "--days", "7", "--out", str(out),
                                 "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    days = list(csv.DictReader((out / "usage_by_day.csv").open(encoding="utf-8")))
    assert [int(d["escalated"]) for d in days] == [0] * 7 + [1]


def test_an_empty_log_is_a_clear_message_and_writes_nothing(tmp_path):
    data, out = make_log(tmp_path, lambda log, now: None), tmp_path / "out"
    result = runner.invoke(app, ["report", "--out", str(out), "--data-dir", str(data)])
    assert result.exit_code == 1 and "is empty: the bot has not answered" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_period_without_questions_says_how_many_the_log_holds(tmp_path):
    data = make_log(tmp_path, lambda log, now: log.record(entry(), at=now - 40 * 86400))
    result = runner.invoke(app, ["report", "--days", "7", "--data-dir", str(data)])
    assert result.exit_code == 1
    assert "no questions in the last 7 days (1 in the log in all)" in result.output


def test_a_missing_data_dir_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["report", "--data-dir", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "no data dir at" in result.output
    assert "Traceback" not in result.output


def test_a_data_dir_without_a_question_log_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["report", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no question log at" in result.output
