"""The schedule file across restarts: the last schedule that read is kept in the data dir, so
a file that is broken when the bot starts still has its exam windows enforced; with no such
copy, the rules say that nothing scheduled is enforced."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from rag.course.rules import CourseRules

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
ROOM = 123456789012345678
WINDOW = f'[[exam]]\nstart = "2026-03-01 11:00"\nend = "2026-03-01 13:00"\nchannels = [{ROOM}]\n'
BROKEN = '[[exam]]\nstart = "2026-03-01 11:00"\nend = [unclosed\n'


def write(tmp_path, text: str | None, stamp: int) -> None:
    """schedule.toml with a new modification time (None: no file)."""
    path = tmp_path / "materials" / "schedule.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        path.unlink()
        return
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(stamp, stamp))


def start(tmp_path) -> CourseRules:
    """The rules as a freshly started bot has them."""
    return CourseRules(tmp_path / "materials", tmp_path / "data", clock=lambda: NOW)


def test_a_schedule_broken_before_a_restart_keeps_its_last_good_exam_windows(tmp_path):
    write(tmp_path, WINDOW, 1_000_000_000)
    assert start(tmp_path).exam_in({ROOM}) is not None
    write(tmp_path, BROKEN, 2_000_000_000)
    restarted = start(tmp_path)
    assert restarted.exam_in({ROOM}) is not None
    status = restarted.schedule_status()
    assert status.last_good and status.problem.startswith("schedule.toml: ")
    assert str(tmp_path) not in status.problem


def test_a_schedule_broken_at_the_first_start_enforces_nothing_and_says_so(tmp_path):
    write(tmp_path, WINDOW.replace('"2026-03-01 13:00"', '"at one"'), 1_000_000_000)
    rules = start(tmp_path)
    assert rules.exam_in({ROOM}) is None
    status = rules.schedule_status()
    assert not status.last_good and "exam 1" in status.problem and "not a date" in status.problem


def test_a_mended_schedule_is_the_one_kept_and_a_removed_one_is_forgotten(tmp_path):
    write(tmp_path, WINDOW, 1_000_000_000)
    start(tmp_path).schedule()
    later = WINDOW.replace("11:00", "15:00").replace("13:00", "17:00")  # moved: not on now
    write(tmp_path, later, 2_000_000_000)
    assert start(tmp_path).schedule_status().problem == ""
    write(tmp_path, BROKEN, 3_000_000_000)
    assert start(tmp_path).exam_in({ROOM}) is None  # the mended version is in force
    assert start(tmp_path).schedule_status().last_good
    write(tmp_path, None, 0)  # removed: nothing is scheduled, and that is what is kept
    assert start(tmp_path).schedule().exams == ()
    write(tmp_path, BROKEN, 4_000_000_000)
    assert not start(tmp_path).schedule_status().last_good


def test_a_schedule_that_breaks_while_running_keeps_its_version_in_force(tmp_path):
    write(tmp_path, WINDOW, 1_000_000_000)
    rules = start(tmp_path)
    assert rules.exam_in({ROOM}) is not None
    write(tmp_path, BROKEN, 2_000_000_000)
    assert rules.exam_in({ROOM}) is not None
    assert rules.schedule_status().last_good
    write(tmp_path, WINDOW, 3_000_000_000)
    assert rules.schedule_status().problem == ""
