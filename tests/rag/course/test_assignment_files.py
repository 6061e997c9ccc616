"""Assignment files one by one: a broken file neither switches off the others' protection nor
its own last good version, and says what is wrong."""

from __future__ import annotations

import os

from rag.course.rules import CourseRules

GOOD = 'title = "LoRA by hand"\ndue = "2026-06-30 23:59"\ntasks = ["Count it."]\n' \
       'protected = ["65,536"]\n'


def write(folder, name, text, stamp):
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(stamp, stamp))  # a new modification time: the rules re-read it


def test_a_broken_assignment_file_costs_only_its_own_protection(tmp_path):
    folder = tmp_path / "materials" / "assignments"
    folder.mkdir(parents=True)
    write(folder, "a1", GOOD, 1_000_000_000)
    write(folder, "a2", GOOD.replace("LoRA by hand", "Attention"), 1_000_000_000)
    write(folder, "a3", "title = [unclosed\n", 1_000_000_000)
    rules = CourseRules(tmp_path / "materials", tmp_path / "data")
    assert [a.id for a in rules.assignments()] == ["a1", "a2"]
    problems = rules.assignment_problems()
    assert list(problems) == ["a3"] and problems["a3"].startswith("assignments/a3.toml: ")
    assert str(tmp_path) not in problems["a3"]
    # A file that stops reading keeps its last good version; the others are read as before.
    write(folder, "a1", GOOD.replace("tasks", "taskz"), 2_000_000_000)
    assert [a.id for a in rules.assignments()] == ["a1", "a2"]
    assert rules.assignments()[0].protected == ("65,536",)
    assert set(rules.assignment_problems()) == {"a1", "a3"}
    assert "needs tasks" in rules.assignment_problems()["a1"]
    # Mended, it is read again and its problem is gone.
    write(folder, "a3", GOOD.replace("LoRA by hand", "KV cache"), 3_000_000_000)
    assert [a.id for a in rules.assignments()] == ["a1", "a2", "a3"]
    assert set(rules.assignment_problems()) == {"a1"}
