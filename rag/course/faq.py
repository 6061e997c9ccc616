"""The course FAQ: approved TA answers, one Markdown file each under `<materials>/faq/`.

The bot writes them ("Add to FAQ", bot/faq.py); the ingest reads them like any material. The
answer pipeline knows them by their folder: an entry answers one question in one passage (see
`rag.answering.gate.evidence_of`).
"""

from __future__ import annotations

FAQ_DIR = "faq"


def is_faq(source: str) -> bool:
    """Whether a passage's source (a path under the materials root) is a course FAQ entry."""
    return source.startswith(FAQ_DIR + "/")
