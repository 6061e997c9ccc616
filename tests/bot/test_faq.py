"""FAQ files: their text, their names, and that no entry is ever replaced."""

from __future__ import annotations

from bot.faq import FaqEntry, faq_markdown, slug, write_faq
from ingest.parse_worker import chunks_of
from rag.config import IngestSettings

APPROVED_AT = 1_764_680_000.0  # 2025-12-02 12:53 UTC


def entry(question: str = "Is the final exam open book?", answer: str = "Yes, it is.",
          timezone: str = "UTC") -> FaqEntry:
    return FaqEntry(question, answer, "Tina", "Prof. Pat", APPROVED_AT, timezone)


def test_the_file_has_the_question_as_heading_the_answer_and_who_approved_it_when():
    text = faq_markdown(entry())
    lines = text.splitlines()
    assert lines[0] == "# Course FAQ (approved 2025-12-02)"
    assert lines[2] == "## Is the final exam open book?"
    assert "Yes, it is." in lines
    assert ("*Answered by Tina; approved for the course FAQ by Prof. Pat on "
            "2025-12-02 12:53 UTC.*") in lines


def test_the_approval_date_is_the_courses_local_date():
    text = faq_markdown(entry(timezone="Pacific/Auckland"))  # already Dec 3 there
    assert text.startswith("# Course FAQ (approved 2025-12-03)")


def test_passages_cut_from_the_file_carry_the_faq_and_its_date_in_their_section(tmp_path):
    path = write_faq(tmp_path, entry(answer="Yes. Bring printed notes.\n\n# Rules\n\nNo phones."))
    chunks = chunks_of(path, tmp_path, IngestSettings())  # as the ingest cuts it
    sections = {c.section for c in chunks}
    # The answer's own top-level heading is demoted under the question.
    assert sections == {"Course FAQ (approved 2025-12-02) > Is the final exam open book?",
                        "Course FAQ (approved 2025-12-02) > Is the final exam open book? > Rules"}


def test_code_in_an_answer_keeps_its_comments():
    text = faq_markdown(entry(answer="Run:\n\n```python\n# load the model\nx = 1\n```"))
    assert "# load the model" in text.splitlines()


def test_a_long_or_multi_line_question_becomes_one_short_heading_and_is_kept_whole():
    question = "Why?\n# not a heading\n" + "word " * 60
    lines = faq_markdown(entry(question=question)).splitlines()
    heading = lines[2]
    assert heading.startswith("## Why? # not a heading word") and len(heading) <= 103
    assert lines[4] == "Question: " + " ".join(question.split())


def test_file_names_are_safe():
    assert slug("../../etc/passwd") == "etc-passwd"
    assert slug("Qu'est-ce que l'attention ? 🤔") == "qu-est-ce-que-l-attention"
    assert slug("¿¿¿") == "question"
    assert len(slug("a" * 500)) == 60


def test_an_existing_entry_is_never_replaced(tmp_path):
    first = write_faq(tmp_path, entry(answer="First answer."))
    second = write_faq(tmp_path, entry(answer="Second answer."))
    assert first.name == "is-the-final-exam-open-book.md"
    assert second.name == "is-the-final-exam-open-book-2.md"
    assert "First answer." in first.read_text() and "Second answer." in second.read_text()
    assert {p.name for p in (tmp_path / "faq").iterdir()} == {first.name, second.name}
