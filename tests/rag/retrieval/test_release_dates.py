"""Release dates: unreleased material is ingested ahead of time but searched only from its
release time on, by an injected clock, with no re-ingest (real embedder, real Chroma)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rag.index.embedder import Embedder
from rag.services import Services, build_services
from tests.conftest import make_settings, run

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
TOMORROW = "2026-03-02 09:00"
WEEK7 = (
    "# Week 7: Quorvex decoding\n\n"
    "Quorvex decoding is the week 7 technique: it samples three drafts and keeps the one "
    "with the lowest perplexity under a second model.\n"
)
QUESTION = "What is Quorvex decoding?"


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ingested_course(tmp_path: Path, shared: Path, embedder: Embedder, clock: Clock) -> Services:
    """One real guide (released) and a week 7 note released tomorrow, both ingested today."""
    root = tmp_path / "materials"
    (root / "week7").mkdir(parents=True)
    shutil.copy(shared / "guides" / "llm-basics.md", root / "llm-basics.md")
    (root / "week7" / "quorvex.md").write_text(WEEK7)
    (root / "schedule.toml").write_text(f'[[release]]\npath = "week7/*"\nat = "{TOMORROW}"\n')
    settings = make_settings(tmp_path / "data", materials_dir=root)
    services = build_services(settings, embedder=embedder, clock=clock)
    report = run(root, services, now=NOW)
    assert report.ok and set(report.indexed) == {"llm-basics.md", "week7/quorvex.md"}
    return services


@pytest.fixture(scope="module")
def shared_clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def clock(shared_clock: Clock):
    """The module's clock, back at NOW after each test."""
    yield shared_clock
    shared_clock.now = NOW


@pytest.fixture(scope="module")
def course(tmp_path_factory, shared_materials, embedder, shared_clock) -> Services:
    """The course, ingested once for the tests that only search it."""
    return ingested_course(tmp_path_factory.mktemp("release"), shared_materials, embedder,
                           shared_clock)


@pytest.fixture
def own_course(tmp_path, shared_materials, embedder, clock) -> Services:
    """The course, for a test that changes its files."""
    return ingested_course(tmp_path, shared_materials, embedder, clock)


def sources(services: Services, preview: bool = False) -> set[str]:
    return {h.chunk.source for h in services.retriever.search(QUESTION, 5, preview=preview)}


def test_unreleased_material_is_indexed_but_never_searched_before_its_release(course):
    assert "week7/quorvex.md" not in sources(course)


def test_it_is_searched_after_its_release_time_without_a_reingest(course, clock):
    clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    assert "week7/quorvex.md" in sources(course)


def test_an_instructor_preview_finds_it_before_its_release(course):
    assert "week7/quorvex.md" in sources(course, preview=True)


async def test_answers_are_not_built_from_unreleased_material(course):
    answer = await course.assistant.answer(QUESTION)
    assert all(h.chunk.source != "week7/quorvex.md" for h in answer.retrieved)
    # Nothing of the week 7 note reaches the student: only the question's own name, in the
    # refusal that any name the released materials lack gets (next test).
    assert answer.refused and "Quorvex" not in answer.text.replace(
        "never mention Quorvex", "")
    assert not any(w in answer.text.lower() for w in ("drafts", "perplexity", "week 7", "week7"))


async def test_a_question_about_a_document_not_released_yet_says_so(course, clock):
    # Searched as if it named nothing, it was answered from the other material, as if that
    # were what the named document says.
    asked = "What does the quorvex guide say about drafts?"
    answer = await course.assistant.answer(asked)
    assert answer.refused and answer.text.startswith("The document you asked about is not "
                                                     "released yet")
    assert not answer.retrieved and "week7" not in answer.text
    # An instructor's preview, and everyone after the release, get the document's answer.
    assert not (await course.assistant.answer(asked, preview=True)).refused
    clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    assert not (await course.assistant.answer(asked)).refused


async def test_a_name_only_unreleased_material_uses_reads_like_one_no_material_uses(
    course, clock
):
    unreleased = await course.assistant.answer(QUESTION)
    unknown = await course.assistant.answer("What is Zentrix decoding?")
    lead = "The course materials don't cover this question, so I won't guess."
    assert unreleased.text.startswith(
        f"{lead} The materials released so far never mention Quorvex.")
    assert unknown.text.startswith(f"{lead} The materials released so far never mention Zentrix.")
    # An instructor's preview knows it already; after its release, everyone does.
    assert course.assistant.unknown_to_materials(QUESTION, preview=True) == []
    preview = await course.assistant.answer(QUESTION, preview=True)
    assert "never mention" not in preview.text
    clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    assert course.assistant.unknown_to_materials(QUESTION) == []


def test_the_dry_run_lists_what_is_scheduled(course):
    report = run(course.settings.materials_dir, course, dry_run=True, now=NOW)
    assert report.scheduled == {"week7/quorvex.md": datetime(2026, 3, 2, 9, tzinfo=UTC).timestamp()}


def test_moving_a_release_date_updates_metadata_without_embedding(own_course, counting):
    root = own_course.settings.materials_dir
    (root / "schedule.toml").write_text('[[release]]\npath = "week7/*"\nat = "2026-02-01"\n')
    report = run(root, own_course, counting, now=NOW)
    assert [f.source for f in report.plan.changed] == ["week7/quorvex.md"]
    assert counting.texts == 0 and report.scheduled == {}
    assert "week7/quorvex.md" in sources(own_course)


def test_assignment_files_and_the_schedule_are_never_indexed(own_course):
    root = own_course.settings.materials_dir
    (root / "assignments").mkdir()
    (root / "assignments" / "hw1.md").write_text("# HW1\n\nThe final answer is 42 and more.\n")
    report = run(root, own_course, now=NOW)
    assert "assignment file" in report.skipped["assignments/hw1.md"]
    assert "course schedule" in report.skipped["schedule.toml"]
    assert "assignments/hw1.md" not in own_course.store.manifest()


def test_previews_and_student_questions_do_not_rebuild_the_name_catalogue(course, monkeypatch):
    reads: list[int] = []
    real = course.store.iter_texts

    def counted(ids):
        reads.append(len(ids))
        return real(ids)

    monkeypatch.setattr(course.store, "iter_texts", counted)
    for preview in (False, True, False, True, False):
        assert course.assistant.unknown_to_materials(QUESTION, preview=preview) == (
            [] if preview else ["Quorvex"])
    assert len(reads) <= 2  # one catalogue each, built at most once
