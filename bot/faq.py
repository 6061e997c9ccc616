"""Approved TA answers as course materials: one Markdown file per entry in `<materials>/faq/`.

The file is ordinary course material: the ingest reads it like any guide, and editing or
deleting it and re-ingesting updates or removes it. Its top heading names the course FAQ and
the approval date, so every passage cut from it carries both in its section, which is what
citations show (`faq/….md · Course FAQ (approved 2026-12-02) > the question`).
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from rag.course.faq import FAQ_DIR

FAQ_TITLE = "Course FAQ"
HEADING_CHARS = 100  # the chunker takes headings up to 120 characters as headings
SLUG_CHARS = 60
_SLUG_DROP = re.compile(r"[^a-z0-9]+")
_ATX = re.compile(r"^( {0,3})(#{1,2})(?=[ \t]|$)")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")


@dataclass(frozen=True)
class FaqEntry:
    """An approved answer: the question, the answer, who answered and approved it, when."""

    question: str
    answer: str
    answered_by: str
    approved_by: str
    approved_at: float  # Unix seconds
    timezone: str = "UTC"

    def approval_date(self) -> str:
        """The approval day in the course's time zone, as YYYY-MM-DD."""
        return self._local().strftime("%Y-%m-%d")

    def _local(self) -> datetime:
        return datetime.fromtimestamp(self.approved_at, ZoneInfo(self.timezone))


def one_line(text: str) -> str:
    """Text on one line, without control characters."""
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return " ".join(text.split())


def heading_text(question: str) -> str:
    """The question as a heading: one line, no leading #, short enough to be a heading."""
    line = one_line(question).lstrip("#").strip() or "Question"
    return line if len(line) <= HEADING_CHARS else line[: HEADING_CHARS - 1].rstrip() + "…"


def nested_headings(answer: str) -> str:
    """The answer with its level-1 and level-2 headings demoted to level 3, so that they stay
    under the question (code blocks are left alone: `# a comment` in Python is not a heading)."""
    lines, fence = [], ""
    for line in answer.splitlines():
        m = _FENCE.match(line)
        if m and (not fence or m.group(1)[0] == fence[0]):
            fence = "" if fence else m.group(1)
        elif not fence:
            line = _ATX.sub(lambda h: h.group(1) + "###", line)
        lines.append(line)
    return "\n".join(lines).strip()


def faq_markdown(entry: FaqEntry) -> str:
    """The FAQ file's text."""
    heading = heading_text(entry.question)
    full = one_line(entry.question)
    parts = [f"# {FAQ_TITLE} (approved {entry.approval_date()})", "", f"## {heading}", ""]
    if full.lstrip("#").strip() != heading:  # the heading was shortened: keep the question
        parts += [f"Question: {full}", ""]
    when = entry._local().strftime("%Y-%m-%d %H:%M %Z")
    parts += [nested_headings(entry.answer), "",
              f"*Answered by {one_line(entry.answered_by)}; approved for the course FAQ by "
              f"{one_line(entry.approved_by)} on {when}.*", ""]
    return "\n".join(parts)


def slug(question: str) -> str:
    """A safe file name stem from a question: ASCII letters, digits and hyphens."""
    ascii_text = unicodedata.normalize("NFKD", question).encode("ascii", "ignore").decode()
    stem = _SLUG_DROP.sub("-", ascii_text.lower()).strip("-")[:SLUG_CHARS].rstrip("-")
    return stem or "question"


def write_faq(materials_dir: Path, entry: FaqEntry) -> Path:
    """Write the entry as a new file under `<materials>/faq/`, whole or not at all; an
    existing file is never replaced (the name gets -2, -3, … instead). Returns its path."""
    folder = Path(materials_dir) / FAQ_DIR
    folder.mkdir(parents=True, exist_ok=True)
    # Written under a hidden name (the ingest skips those), then linked into place: the link
    # fails instead of replacing a file that exists.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".faq-", suffix=".md")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(faq_markdown(entry).encode("utf-8"))
        os.chmod(tmp, 0o644)
        stem = slug(entry.question)
        for n in range(1, 1000):
            path = folder / (f"{stem}.md" if n == 1 else f"{stem}-{n}.md")
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            return path
    finally:
        os.unlink(tmp)
    raise FileExistsError(f"too many FAQ entries named {stem}*.md in {folder}")
