"""Assignments: one TOML file each in `course_materials/assignments/`, instructor-only.

    title = "Assignment 2: LoRA by hand"
    opens = "2026-03-02 09:00"
    due = "2026-03-16 23:59"
    keywords = ["assignment 2", "hw2"]          # optional: phrases students use for it
    channels = [123456789012345678]             # optional: its help channels
    tasks = [
      "Compute the number of trainable parameters LoRA adds to a 4096 x 4096 weight ...",
    ]
    protected = [                               # never shown to students, in any answer
      "65,536", "65536", "r * (d + k)",
    ]

The folder is never ingested (ingest skips it), so none of this reaches search or /sources.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.course.schedule import ASSIGNMENTS_DIR, ScheduleError, to_timestamp, zone


@dataclass(frozen=True, slots=True)
class Assignment:
    """An assignment with the items the bot must never give away."""

    id: str
    title: str
    opens: float
    due: float
    tasks: tuple[str, ...]
    protected: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    channels: frozenset[int] = frozenset()

    def open_by_dates(self, now: float) -> bool:
        """Whether `now` falls between its opening and due times."""
        return self.opens <= now < self.due


def read_assignments(
    materials_dir: Path, timezone: str = "UTC"
) -> tuple[list[Assignment], dict[str, str]]:
    """Every `*.toml` file in the assignments folder that reads, by file name, and the problem
    of each one that does not (by its id): one broken file must not cost the others theirs."""
    folder = Path(materials_dir) / ASSIGNMENTS_DIR
    if not folder.is_dir():
        return [], {}
    tz = zone(timezone)
    out, problems = [], {}
    for path in sorted(folder.glob("*.toml")):
        where = f"{ASSIGNMENTS_DIR}/{path.name}"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            out.append(_assignment(path.stem, data, tz, where))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems[path.stem] = f"{where}: {exc}"
        except ScheduleError as exc:
            problems[path.stem] = str(exc)
    return out, problems


def _strings(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise ScheduleError(f"{where}: {key} must be a list of strings")
    return tuple(str(v).strip() for v in value if str(v).strip())


def _assignment(ident: str, data: dict[str, Any], tz: Any, where: str) -> Assignment:
    tasks = _strings(data, "tasks", where)
    if not tasks:
        raise ScheduleError(f"{where}: needs tasks (the text students are given)")
    channels = data.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, int) for c in channels):
        raise ScheduleError(f"{where}: channels must be a list of channel ids (numbers)")
    opens = to_timestamp(data.get("opens"), tz, where) if "opens" in data else 0.0
    due = to_timestamp(data.get("due"), tz, where) if "due" in data else float("inf")
    return Assignment(
        id=ident,
        title=str(data.get("title", ident)),
        opens=opens,
        due=due,
        tasks=tasks,
        protected=_strings(data, "protected", where),
        keywords=_strings(data, "keywords", where),
        channels=frozenset(channels),
    )
