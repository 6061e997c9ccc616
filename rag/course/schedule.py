"""The course schedule: when material is released and when exams run.

Instructors write `schedule.toml` in the materials folder::

    timezone = "Europe/Zurich"          # optional; else the `course.timezone` setting

    [[release]]
    path = "guides/week6-*.md"          # a path or glob under the materials folder
    at = "2026-03-02 09:00"             # course time zone unless it names an offset

    [[exam]]
    start = "2026-03-10 14:00"
    end = "2026-03-10 16:00"
    channels = [123456789012345678]     # optional; none means the whole server

Times are kept as Unix seconds; `0.0` means "always released".
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rag.quoting import quoted

SCHEDULE_FILE = "schedule.toml"
# One file per assignment, instructor-only: never ingested, never shown (rag/course/assignments.py).
ASSIGNMENTS_DIR = "assignments"


class ScheduleError(ValueError):
    """The schedule or an assignment file cannot be read; the message says where and why."""


@dataclass(frozen=True, slots=True)
class ReleaseRule:
    """Files matching `pattern` become visible to students at `at` (Unix seconds)."""

    pattern: str
    at: float


@dataclass(frozen=True, slots=True)
class ExamWindow:
    """Content answers are refused from `start` to `end`; no channels means server-wide."""

    start: float
    end: float
    channels: frozenset[int] = frozenset()
    label: str = ""

    def covers(self, channel_ids: set[int], now: float) -> bool:
        """Whether the window is on at `now` for a channel (given with its parent and category)."""
        if not self.start <= now < self.end:
            return False
        return not self.channels or bool(self.channels & channel_ids)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Release rules and exam windows of one materials folder."""

    timezone: str = "UTC"
    releases: tuple[ReleaseRule, ...] = ()
    exams: tuple[ExamWindow, ...] = ()

    def release_at(self, source: str) -> float:
        """When a file (path under the materials root) is released: the latest matching rule
        wins, so a broad rule can be postponed for one file; 0.0 when none matches."""
        times = [r.at for r in self.releases if _matches(source, r.pattern)]
        return max(times, default=0.0)

    def scheduled(self, sources: list[str], now: float) -> dict[str, float]:
        """The given files that are not yet released at `now`, with their release times."""
        return {s: t for s in sources if (t := self.release_at(s)) > now}


def _matches(source: str, pattern: str) -> bool:
    pattern = pattern.strip().removeprefix("./")
    if pattern.endswith("/"):
        return source.startswith(pattern)
    return fnmatch.fnmatchcase(source, pattern) or source.startswith(pattern.rstrip("/") + "/")


def zone(name: str) -> ZoneInfo:
    """A time zone by IANA name, or ScheduleError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone '{name}' (use an IANA name like Europe/Zurich)") \
            from exc


def to_timestamp(value: Any, tz: ZoneInfo, where: str) -> float:
    """A TOML datetime, date or 'YYYY-MM-DD HH:MM' string as Unix seconds (naive = course time)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ScheduleError(f"{where}: {quoted(value)} is not a date like 2026-03-02 09:00") \
                from exc
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise ScheduleError(f"{where}: expected a date and time, got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.timestamp()


def load_schedule(materials_dir: Path, default_timezone: str = "UTC") -> Schedule:
    """Read `schedule.toml` from a materials folder (an empty schedule when there is none)."""
    return read_schedule(materials_dir, default_timezone)[0]


def read_schedule(
    materials_dir: Path, default_timezone: str = "UTC"
) -> tuple[Schedule, str | None]:
    """`load_schedule`, with the text it read (None when there is no file): the copy a caller
    keeps of the last schedule that read."""
    path = Path(materials_dir) / SCHEDULE_FILE
    if not path.is_file():
        return Schedule(timezone=default_timezone), None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScheduleError(f"{SCHEDULE_FILE}: {exc}") from exc
    return parse_schedule(text, default_timezone), text


def parse_schedule(text: str, default_timezone: str = "UTC") -> Schedule:
    """A schedule from the text of a `schedule.toml`, or ScheduleError saying where and why."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScheduleError(f"{SCHEDULE_FILE}: {exc}") from exc
    name = str(data.get("timezone", default_timezone))
    tz = zone(name)
    releases = tuple(_release(r, tz, i) for i, r in enumerate(_tables(data, "release"), 1))
    exams = tuple(_exam(e, tz, i) for i, e in enumerate(_tables(data, "exam"), 1))
    return Schedule(name, releases, exams)


def _tables(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    tables = data.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ScheduleError(f"{SCHEDULE_FILE}: write each {key} as a [[{key}]] table")
    return tables


def _release(table: dict[str, Any], tz: ZoneInfo, n: int) -> ReleaseRule:
    where = f"{SCHEDULE_FILE}, release {n}"
    if not isinstance(table.get("path"), str) or not table["path"].strip():
        raise ScheduleError(f"{where}: needs a path (a file or glob under the materials folder)")
    return ReleaseRule(table["path"].strip(), to_timestamp(table.get("at"), tz, where))


def _exam(table: dict[str, Any], tz: ZoneInfo, n: int) -> ExamWindow:
    where = f"{SCHEDULE_FILE}, exam {n}"
    start = to_timestamp(table.get("start"), tz, where)
    end = to_timestamp(table.get("end"), tz, where)
    if end <= start:
        raise ScheduleError(f"{where}: the end must come after the start")
    channels = table.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, int) for c in channels):
        raise ScheduleError(f"{where}: channels must be a list of channel ids (numbers)")
    return ExamWindow(start, end, frozenset(channels), str(table.get("label", "")))


MAX_DURATION_S = 7 * 86400  # the longest "90m"/"2h" duration /exam start accepts


def parse_until(text: str, tz_name: str, now: float) -> float:
    """An end time typed by an instructor: '90m', '2h', '1d', '16:00' (today, course time;
    tomorrow if past) or '2026-03-10 16:00'. Raises ScheduleError with an example."""
    text = text.strip().lower()
    for unit, seconds in (("m", 60), ("h", 3600), ("d", 86400)):
        if text.endswith(unit) and text[:-1].strip().isdigit():
            digits = text[:-1].strip()
            # Capped before int(): a 400-digit number would overflow the timestamp.
            if len(digits) > 6 or int(digits) * seconds > MAX_DURATION_S:
                raise ScheduleError("that is too long: at most 7 days (7d, 168h or 10080m)")
            if int(digits) == 0:
                raise ScheduleError("the end must be in the future (at least 1m)")
            return now + int(digits) * seconds
    tz = zone(tz_name)
    if len(text) <= 5 and ":" in text:
        try:
            clock = time.fromisoformat(text.zfill(5))
        except ValueError as exc:
            raise ScheduleError(f"{quoted(text)} is not a time like 16:00") from exc
        today = datetime.fromtimestamp(now, tz).date()
        at = datetime.combine(today, clock, tz).timestamp()
        return at if at > now else at + 86400
    try:
        at = to_timestamp(text, tz, "until")
    except ScheduleError as exc:
        raise ScheduleError(f"{quoted(text)} is neither a duration like 90m, 2h or 1d, a time "
                            "like 16:00, nor a date like 2026-03-10 16:00") from exc
    if at <= now:
        raise ScheduleError("that time has already passed")
    return at
