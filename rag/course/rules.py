"""The course's rules at this moment: which exams are on where, which assignments are open,
which channels are hints-only. Files are re-read when they change; the instructors' switches
live in the data dir (rag/course/state.py). Everything is decided against an injected clock."""

from __future__ import annotations

import logging
import math
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
    load_schedule,
)
from rag.course.state import CourseState, ManualExam, StateFile

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        self._state = self._file.load()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Any, Any]] = {}

    # -- files ------------------------------------------------------------------------------

    def _stamp(self, paths: Iterable[Path]) -> tuple[Any, ...]:
        return tuple((p.name, p.stat().st_mtime_ns) for p in paths if p.exists())

    def schedule(self) -> Schedule:
        """The schedule file, re-read when it changes (the last good one if it turns bad)."""
        path = self.materials_dir / SCHEDULE_FILE
        return self._cached("schedule", self._stamp([path]),
                            lambda: load_schedule(self.materials_dir, self.timezone), Schedule())

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
        """The exam covering a channel (given with its parent), or None. A direct message
        (None) is outside every channel, so any exam on covers it: otherwise a student in an
        exam room could ask privately what the room's channel refuses."""
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
        """Whether an instructor marked this channel (or its parent) hints-only."""
        return bool(set(self._state.hints_only) & channel_ids)

    def set_hints_only(self, channel_id: int, on: bool) -> None:
        """Mark or unmark a channel as hints-only."""
        rest = [c for c in self._state.hints_only if c != channel_id]
        self._change(lambda s: replace(s, hints_only=rest + ([channel_id] if on else [])))

    def _change(self, update: Callable[[CourseState], CourseState]) -> None:
        with self._lock:
            self._state = update(self._file.load())
            self._file.save(self._state)
