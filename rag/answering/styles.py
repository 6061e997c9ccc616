"""Answer styles: how an answer is made, and the sentences it is made of.

- `extractive`: quoted from the retrieved passages, no generation (the default for the
  packaged local models, which cannot paraphrase faithfully);
- `verified`: generated, then every sentence checked against the materials; unsupported
  sentences are dropped (the default for served, OpenAI-compatible models);
- `generative`: generated and shown as written, unverified.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.llm.settings import AnswerStyle

Style = AnswerStyle
STYLES: tuple[Style, ...] = ("extractive", "verified", "generative")
# What the CLI and the Discord footer say about how an answer was made.
STYLE_LABELS: dict[str, str] = {
    "extractive": "quoted from the materials",
    "verified": "generated and verified",
    "generative": "generated, unverified",
}
# Sentence verdicts: quoted (extractive), the checker's (verified), unverified (generative).
QUOTED = "quoted"
UNVERIFIED = "unverified"


@dataclass(frozen=True, slots=True)
class AnswerSentence:
    """One sentence (list item, table row) of an answer: its text, the passage number it
    cites (None when it cites none) and its verdict; `shown` is False for a sentence of a
    model's draft that verification dropped."""

    text: str
    citation: int | None
    verdict: str
    shown: bool = True

    def as_json(self) -> dict:
        """The `ask --json` shape."""
        return {
            "text": self.text,
            "citation": self.citation,
            "verdict": self.verdict,
            "shown": self.shown,
        }


def default_style(backend: str) -> Style:
    """Quote-first for in-process models, verified generation for served ones."""
    return "extractive" if backend == "local" else "verified"
