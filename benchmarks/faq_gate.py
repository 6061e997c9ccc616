"""The course FAQ and the abstention gate: which questions one approved FAQ entry makes the
gate pass, before and after the entry is ingested.

Indexes the course guides (../shared/course_materials/guides) and our study notes
(course_materials/notes) into a temporary embedded Chroma with the packaged embedder, asks
our own questions (paraphrases of the entry, near misses it does not answer, an unrelated
one), adds one entry written by `bot.faq.write_faq`, re-ingests, and asks again. Prints
P(covered) from the assistant's gate and the best passage each time.

    .venv/bin/python benchmarks/faq_gate.py
"""

from __future__ import annotations

import shutil
import sys  # noqa: E402
import tempfile
import time
from pathlib import Path

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.faq import FaqEntry, write_faq
from ingest.pipeline import Target, ingest
from rag.config import Settings, StoreSettings
from rag.services import Services, build_services

REPO = Path(__file__).resolve().parent.parent
GUIDES = REPO.parent / "shared" / "course_materials" / "guides"
QUESTION = "Is the final exam open book?"
ANSWER = ("Yes. The final exam is open book: you may bring printed notes and the course "
          "guides, but no laptops or phones.")
ASKED = [
    ("paraphrase", "Can I bring my printed notes to the final exam?"),
    ("paraphrase", "Are we allowed notes in the final exam?"),
    ("paraphrase", "Will the final exam be open notes?"),
    ("paraphrase", "Can I use my laptop during the final exam?"),
    ("near miss", "When is the final exam?"),
    ("near miss", "Is the midterm open book?"),
    ("near miss", "How is the course graded?"),
    ("near miss", "Can I retake the final exam?"),
    ("unrelated", "Who painted the Mona Lisa?"),
]


def rows(services: Services) -> list[tuple[str, str, float, str, float]]:
    """(kind, question, P(covered), best passage's source, its cosine) per question."""
    out = []
    for kind, question in ASKED:
        hits = services.retriever.search(question, services.settings.answer.k)
        p = services.assistant.coverage_probability(hits)
        best = max(hits, key=lambda h: h.dense)
        out.append((kind, question, p, best.chunk.source, best.dense))
    return out


def main() -> None:
    """Measure and print the table."""
    work = Path(tempfile.mkdtemp(prefix="faq-gate-"))
    try:
        root = work / "materials"
        shutil.copytree(GUIDES, root / "guides")
        shutil.copytree(REPO / "course_materials" / "notes", root / "notes")
        settings = Settings(data_dir=work / "data", materials_dir=root, store=StoreSettings())
        services = build_services(settings)
        services.retriever.refresh_interval_s = 0.0
        ingest([Target(root)], services.store, services.embedder, settings.ingest)
        before = rows(services)
        write_faq(root, FaqEntry(QUESTION, ANSWER, "a TA", "an instructor", time.time()))
        ingest([Target(root)], services.store, services.embedder, settings.ingest)
        after = rows(services)
        threshold = settings.answer.abstain_below
        print(f"FAQ entry: {QUESTION!r}; gate threshold {threshold}")
        print("| kind | question | P(covered) before | after | best passage after (cosine) |")
        print("| --- | --- | --- | --- | --- |")
        for (kind, q, p0, _, _), (_, _, p1, source, cosine) in zip(before, after, strict=True):
            mark = "**" if p1 >= threshold else ""
            print(f"| {kind} | {q} | {p0:.3f} | {mark}{p1:.3f}{mark} | {source} ({cosine:.2f}) |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
