"""What instructors switch on from Discord, kept in the data dir so it survives a restart:
exams started by hand, assignments opened or closed early, hints-only channels."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "course_state.json"


@dataclass(frozen=True, slots=True)
class ManualExam:
    """An exam started with /exam start; `until` 0 means until /exam end."""

    channels: tuple[int, ...]
    started_at: float
    until: float = 0.0


@dataclass
class CourseState:
    """The instructors' switches."""

    exams: list[ManualExam] = field(default_factory=list)
    # assignment id -> True (opened early) or False (closed early)
    assignments: dict[str, bool] = field(default_factory=dict)
    hints_only: list[int] = field(default_factory=list)


class StateFile:
    """Reads and atomically rewrites the state JSON; safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / STATE_FILE
        self._lock = threading.Lock()

    def load(self) -> CourseState:
        """The saved state (empty when there is none or it cannot be read)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return CourseState()
        exams = [ManualExam(tuple(e["channels"]), float(e["started_at"]), float(e["until"]))
                 for e in raw.get("exams", [])]
        return CourseState(exams, dict(raw.get("assignments", {})),
                           [int(c) for c in raw.get("hints_only", [])])

    def save(self, state: CourseState) -> None:
        """Write the state atomically (a crash leaves the old or the new file, never half)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(state), indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
