"""Hint mode for open assignments: how well questions that target an assignment are detected,
and whether any answer gives away a protected item.

    python benchmarks/hints.py --data-dir DATA [--answers]

DATA must hold an index of the course materials (`study-assistant ingest`). The assignments are
eval/assignments/*.toml (open for the whole run); the questions are
eval/assignment_questions.jsonl (dev and test halves: the detector's rules and thresholds were
chosen looking at both), eval/assignment_questions_heldout.jsonl and
eval/assignment_questions_heldout2.jsonl (each written before a detector was run on it; their
misses were then studied, so they are development sets now) and
eval/assignment_questions_heldout3.jsonl (written before the third detector was run on it: the
held-out figure). With --answers every question is answered twice: through the
ordinary pipeline (with the packaged model) and as a hint (as in a hints-only channel); the
answer texts and the passages /sources and the Sources button would show are checked for
every protected string.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys  # noqa: E402
import tempfile
from collections import Counter
from pathlib import Path

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.config import Settings
from rag.course.protect import ProtectedGuard
from rag.services import Services, build_services

EVAL = Path(__file__).resolve().parent.parent / "eval"
SETS = ("assignment_questions.jsonl", "assignment_questions_heldout.jsonl",
        "assignment_questions_heldout2.jsonl", "assignment_questions_heldout3.jsonl")


def load_questions() -> list[dict]:
    """Every question file, one dict per question."""
    rows = []
    for name in SETS:
        rows += [json.loads(line) for line in (EVAL / name).read_text().splitlines() if line]
    return rows


def services_for(data_dir: Path, materials: Path) -> Services:
    """Services over an existing index, with the eval assignments as the course's."""
    settings = Settings(data_dir=data_dir, materials_dir=materials)
    return build_services(settings)


def detection(services: Services, rows: list[dict]) -> dict[str, Counter]:
    """Per split and kind: how many questions got hint mode, and for the right assignment."""
    counts: dict[str, Counter] = {}
    for row in rows:
        target = services.course_assistant.target(row["question"], set())
        c = counts.setdefault(row["split"], Counter())
        c[row["kind"]] += 1
        if target is not None:
            c[row["kind"] + "_hint"] += 1
            right = target.assignment is not None and target.assignment.id == row["assignment"]
            c[row["kind"] + "_right"] += int(right)
    return counts


def print_detection(counts: dict[str, Counter]) -> None:
    """One table row per split."""
    print("| split | assignment → hint (recall) | right assignment | general → hint | "
          "unrelated → hint | precision |")
    print("|---|---|---|---|---|---|")
    total: Counter = Counter()
    for split, c in [*counts.items(), ("all", None)]:
        c = c if c is not None else total
        if split != "all":
            total.update(c)
        hints = c["assignment_hint"] + c["general_hint"] + c["unrelated_hint"]
        precision = c["assignment_hint"] / hints if hints else 1.0
        print(f"| {split} | {c['assignment_hint']}/{c['assignment']} "
              f"({c['assignment_hint'] / c['assignment']:.0%}) | "
              f"{c['assignment_right']}/{c['assignment_hint']} | "
              f"{c['general_hint']}/{c['general']} ({c['general_hint'] / c['general']:.0%}) | "
              f"{c['unrelated_hint']}/{c['unrelated']} | {precision:.0%} |")


async def leaks(services: Services, rows: list[dict]) -> None:
    """Answer every question both ways; count protected strings in texts and passages."""
    course = services.course_assistant
    guard: ProtectedGuard = course.guard()
    found: Counter = Counter()
    answered: Counter = Counter()
    for row in rows:
        for style, channel in (("ordinary", set()), ("hint", {1})):
            answer = await course.answer(row["question"], channel_ids=channel)
            answered[style] += 1
            found[style + " text"] += bool(guard.leaks(answer.text))
            passages = [guard.withhold(h.chunk.text) for h in answer.retrieved]
            found[style + " passages"] += any(guard.leaks(p) for p in passages)
            raw = any(guard.leaks(h.chunk.text) for h in answer.retrieved)
            found[style + " passages before the guard"] += raw
    print(f"\nanswers: {dict(answered)}; with a protected string: {dict(found)}")


def main() -> None:
    """Run the measurements and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--answers", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        materials = Path(tmp)
        shutil.copytree(EVAL / "assignments", materials / "assignments")
        services = services_for(args.data_dir, materials)
        services.course.set_hints_only(1, True)  # the channel id the hint style uses
        rows = load_questions()
        print_detection(detection(services, rows))
        if args.answers:
            asyncio.run(leaks(services, rows))
        services.course.set_hints_only(1, False)


if __name__ == "__main__":
    main()
