"""The course's rules at this moment: which exams are on where, which assignments are open,
which channels are hints-only. Files are re-read when they change; the instructors' switches
live in the data dir (rag/course/state.py), beside a copy of the last schedule that read.
Everything is decided against an injected clock."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from rag.course.assignments import Assignment, read_assignments
from rag.course.schedule import (
    ASSIGNMENTS_DIR,
    SCHEDULE_FILE,
    Schedule,
    ScheduleError,
    parse_schedule,
    read_schedule,
)
from rag.course.state import CourseState, ManualExam, StateFile

log = logging.getLogger(__name__)
T = TypeVar("T")
# In the data dir: the schedule file's last version that read, in force while the file does
# not read, even right after a restart.
LAST_GOOD_SCHEDULE = "schedule.last_good.toml"


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """The schedule in force and, while the schedule file does not read, what is wrong with
    it and whether the schedule in force is its last good version (else nothing is)."""

    schedule: Schedule
    problem: str = ""
    last_good: bool = False


@dataclass(frozen=True, slots=True)
class ActiveExam:
    """An exam that is on now; no channels means server-wide; `until` inf: until ended."""

    channels: frozenset[int]
    until: float
    scheduled: bool


class CourseRules:
    """Answers "is an exam on here?", "which assignments are open?" and keeps the switches."""

    def __init__(
        self,
        materials_dir: Path,
        data_dir: Path,
        timezone: str = "UTC",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.materials_dir = Path(materials_dir)
        self.timezone = timezone
        self.clock = clock or time.time
        self._file = StateFile(Path(data_dir))
        self._last_good = Path(data_dir) / LAST_GOOD_SCHEDULE
        self._state = self._file.load()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Any, Any]] = {}

    # -- files ------------------------------------------------------------------------------

    def _stamp(self, paths: Iterable[Path]) -> tuple[Any, ...]:
        return tuple((p.name, p.stat().st_mtime_ns) for p in paths if p.exists())

    def schedule(self) -> Schedule:
        """The schedule file, re-read when it changes; while it does not read, its last good
        version (`schedule_status` says which)."""
        return self.schedule_status().schedule

    def schedule_status(self) -> ScheduleStatus:
        """The schedule in force, and what is wrong with the file when it does not read."""
        path = self.materials_dir / SCHEDULE_FILE
        return self._cached("schedule", self._stamp([path]), self._read_schedule,
                            ScheduleStatus(Schedule(self.timezone)))

    def _read_schedule(self) -> ScheduleStatus:
        try:
            schedule, text = read_schedule(self.materials_dir, self.timezone)
        except ScheduleError as exc:
            return self._last_good_schedule(str(exc))
        self._keep_schedule(text)
        return ScheduleStatus(schedule)

    def _keep_schedule(self, text: str | None) -> None:
        """Save the text of a schedule that read; no file is an empty schedule that read, so
        an old copy must not come back when a new file is broken."""
        try:
            if text is None:
                self._last_good.unlink(missing_ok=True)
            elif not self._last_good.is_file() or self._last_good.read_text("utf-8") != text:
                self._last_good.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._last_good.with_suffix(".tmp")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, self._last_good)  # a crash leaves the old copy or the new
        except OSError:
            log.exception("cannot keep a copy of the schedule in %s", self._last_good.parent)

    def _last_good_schedule(self, problem: str) -> ScheduleStatus:
        """The schedule in force while the file does not read: the one in force before, or
        after a restart the copy saved in the data dir; else none."""
        held = self._cache.get("schedule")
        last = held[1].schedule if held and (not held[1].problem or held[1].last_good) \
            else self._saved_schedule()
        log.error("cannot read the course's schedule: %s (%s)", problem,
                  "its last good version stays in force" if last is not None
                  else "no last good version: scheduled exams are NOT enforced")
        if last is None:
            return ScheduleStatus(Schedule(self.timezone), problem)
        return ScheduleStatus(last, problem, last_good=True)

    def _saved_schedule(self) -> Schedule | None:
        try:
            return parse_schedule(self._last_good.read_text("utf-8"), self.timezone)
        except (OSError, UnicodeDecodeError, ScheduleError):
            return None

    def assignments(self) -> list[Assignment]:
        """Every assignment file, re-read when one changes; a file that stops reading keeps
        its last good version (`assignment_problems` says which)."""
        return self._assignments()[0]

    def assignment_problems(self) -> dict[str, str]:
        """The assignment files that do not read, by id: what is wrong with each."""
        return self._assignments()[1]

    def _assignments(self) -> tuple[list[Assignment], dict[str, str]]:
        folder = self.materials_dir / ASSIGNMENTS_DIR
        files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
        tz = self.schedule().timezone if (self.materials_dir / SCHEDULE_FILE).exists() \
            else self.timezone
        empty: tuple[list[Assignment], dict[str, str]] = ([], {})
        return self._cached("assignments", (tz, *self._stamp(files)),
                            lambda: self._read_assignments(tz, files), empty)

    def _read_assignments(
        self, tz: str, files: list[Path]
    ) -> tuple[list[Assignment], dict[str, str]]:
        read, problems = read_assignments(self.materials_dir, tz)
        held = self._cache.get("assignments")
        last = {a.id: a for a in held[1][0]} if held is not None else {}
        kept = [last[ident] for ident in problems if ident in last]
        for ident, problem in problems.items():
            log.error("cannot read an assignment file: %s (%s)", problem,
                      "its last good version stays" if ident in last else "nothing protected")
        order = {path.stem: i for i, path in enumerate(files)}
        return sorted([*read, *kept], key=lambda a: order.get(a.id, len(order))), problems

    def _cached(self, key: str, stamp: Any, load: Callable[[], T], empty: T) -> T:
        held = self._cache.get(key)
        if held is not None and held[0] == stamp:
            return held[1]
        try:
            value = load()
        except ScheduleError:
            log.exception("cannot read the course's %s; keeping the last good version", key)
            value = held[1] if held is not None else empty
        self._cache[key] = (stamp, value)
        return value

    # -- exams ------------------------------------------------------------------------------

    def active_exams(self) -> list[ActiveExam]:
        """The exams on now: scheduled windows and ones started by hand (not yet over)."""
        now = self.clock()
        on = [ActiveExam(w.channels, w.end, True) for w in self.schedule().exams
              if w.start <= now < w.end]
        manual = [e for e in self._state.exams if not e.until or e.until > now]
        on += [ActiveExam(frozenset(e.channels), e.until or math.inf, False) for e in manual]
        return on

    def exam_in(self, channel_ids: set[int] | None) -> ActiveExam | None:
        """The exam covering a channel (given with its parent and its category, so an exam on a
        category covers the channels in it), or None. A direct message (None) is outside every
        channel, so any exam on covers it: otherwise a student in an exam room could ask
        privately what the room's channel refuses."""
        for exam in self.active_exams():
            if channel_ids is None or not exam.channels or exam.channels & channel_ids:
                return exam
        return None

    def start_exam(self, channels: Iterable[int], until: float = 0.0) -> ManualExam:
        """Start an exam in channels (none: server-wide) until a time (0: until ended)."""
        exam = ManualExam(tuple(sorted(set(channels))), self.clock(), until)
        self._change(lambda s: replace(s, exams=[*self._live(s), exam]))
        return exam

    def end_exams(self) -> int:
        """End every exam started by hand; return how many were on."""
        ended = len(self._live(self._state))
        self._change(lambda s: replace(s, exams=[]))
        return ended

    def _live(self, state: CourseState) -> list[ManualExam]:
        now = self.clock()
        return [e for e in state.exams if not e.until or e.until > now]

    # -- assignments and hints --------------------------------------------------------------

    def is_open(self, assignment: Assignment) -> bool:
        """Open by its dates, unless an instructor opened or closed it by hand."""
        forced = self._state.assignments.get(assignment.id)
        return assignment.open_by_dates(self.clock()) if forced is None else forced

    def open_assignments(self) -> list[Assignment]:
        """The assignments students are working on now."""
        return [a for a in self.assignments() if self.is_open(a)]

    def set_open(self, assignment_id: str, is_open: bool) -> Assignment:
        """Open or close an assignment by hand; KeyError for an unknown id."""
        found = {a.id: a for a in self.assignments()}
        if assignment_id not in found:
            raise KeyError(assignment_id)
        self._change(lambda s: replace(s, assignments={**s.assignments, assignment_id: is_open}))
        return found[assignment_id]

    def hints_only(self, channel_ids: set[int]) -> bool:
        """Whether an instructor marked this channel (or its parent, or its category: the ids
        come with them) hints-only."""
        return bool(set(self._state.hints_only) & channel_ids)

    def set_hints_only(self, channel_id: int, on: bool) -> None:
        """Mark or unmark a channel as hints-only."""
        rest = [c for c in self._state.hints_only if c != channel_id]
        self._change(lambda s: replace(s, hints_only=rest + ([channel_id] if on else [])))

    def _change(self, update: Callable[[CourseState], CourseState]) -> None:
        with self._lock:
            self._state = update(self._file.load())
            self._file.save(self._state)
