"""The schedule file: release rules, exam windows, time zones and readable errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rag.course.schedule import ScheduleError, load_schedule, parse_until

SCHEDULE = """
timezone = "Europe/Zurich"

[[release]]
path = "guides/*.md"
at = "2026-03-02 09:00"

[[release]]
path = "guides/week6.md"
at = 2026-03-09T09:00:00+00:00

[[exam]]
start = "2026-03-10 14:00"
end = "2026-03-10 16:00"
channels = [42]
"""


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_naive_time_is_in_the_course_time_zone(tmp_path):
    (tmp_path / "schedule.toml").write_text(SCHEDULE)
    schedule = load_schedule(tmp_path)
    assert schedule.release_at("guides/week2.md") == ts("2026-03-02 08:00")  # CET = UTC+1


def test_the_latest_matching_rule_wins_and_unmatched_files_are_released(tmp_path):
    (tmp_path / "schedule.toml").write_text(SCHEDULE)
    schedule = load_schedule(tmp_path)
    assert schedule.release_at("guides/week6.md") == ts("2026-03-09 09:00")
    assert schedule.release_at("papers/lora.pdf") == 0.0


def test_an_exam_window_covers_its_channels_only_while_it_runs(tmp_path):
    (tmp_path / "schedule.toml").write_text(SCHEDULE)
    exam = load_schedule(tmp_path).exams[0]
    during = ts("2026-03-10 13:30")
    assert exam.covers({42}, during)
    assert not exam.covers({7}, during)
    assert not exam.covers({42}, ts("2026-03-10 15:00"))


def test_no_schedule_file_means_everything_is_released(tmp_path):
    schedule = load_schedule(tmp_path, "Asia/Tokyo")
    assert schedule.timezone == "Asia/Tokyo" and schedule.release_at("a.md") == 0.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[release]]\npath = "a.md"\nat = "next monday"', "not a date"),
        ('[[release]]\nat = "2026-03-02 09:00"', "needs a path"),
        ('timezone = "Mars/Olympus"', "unknown time zone"),
        ('[[exam]]\nstart = "2026-03-02 10:00"\nend = "2026-03-02 09:00"', "end must come"),
        ("release = [", "schedule.toml"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong(tmp_path, text, problem):
    (tmp_path / "schedule.toml").write_text(text)
    with pytest.raises(ScheduleError, match=problem):
        load_schedule(tmp_path)


@pytest.mark.parametrize(("until", "why"), [
    ("9" * 400 + "m", "at most 7 days"),
    ("10081m", "at most 7 days"),
    ("0m", "in the future"),
], ids=["huge-number", "over-a-week", "zero"])
def test_an_exam_duration_must_end_in_the_future_within_a_week(until, why):
    with pytest.raises(ScheduleError, match=why):
        parse_until(until, "UTC", 1_700_000_000.0)


def test_an_exam_duration_of_a_week_is_accepted():
    assert parse_until("168h", "UTC", 0.0) == 7 * 86400
    assert parse_until("7d", "UTC", 0.0) == parse_until("1d", "UTC", 0.0) * 7 == 7 * 86400
    with pytest.raises(ScheduleError, match="at most 7 days"):
        parse_until("8d", "UTC", 0.0)


def test_an_end_time_that_cannot_be_read_names_the_three_forms():
    with pytest.raises(ScheduleError) as told:
        parse_until("next friday", "UTC", 0.0)
    assert "90m" in str(told.value) and "16:00" in str(told.value) and "2026-03-10" in str(
        told.value) and "until" not in str(told.value)
