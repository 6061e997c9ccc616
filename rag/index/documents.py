"""Value objects shared by ingest (which makes chunks) and rag (which retrieves them)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable passage of a course file.

    `source` is the path relative to the ingested root (`papers/lora.pdf`); `page` is 1-based
    for PDFs and None elsewhere; `section` is the heading path (`Attention > Multi-head`);
    `start`/`end` are character offsets into the cleaned text of the file (of the page, for PDFs).
    `release_at` is when students may see it (Unix seconds; 0 = always): it is not part of the
    id, so a new release date changes metadata only, never the stored vector. `fence` is the
    line that opened the fenced code block the text starts inside ("```python"; "" when it
    starts outside code): a chunk cut from the middle of a long block holds no opening fence of
    its own, and its text stays exactly the file's, so it is not part of the id either.
    """

    text: str
    source: str
    page: int | None
    section: str
    start: int
    end: int
    release_at: float = 0.0
    fence: str = ""

    @property
    def id(self) -> str:
        """Deterministic content id: same source, section and text give the same id."""
        key = "\x1f".join((self.source, str(self.page or 0), self.section, self.text))
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    def embedding_text(self) -> str:
        """What the embedder sees: a short header naming the document and section, then the
        text. Passages whose body never names their topic (a table row, a list item under a
        heading) then still embed near questions about that topic."""
        title = self.source.rsplit("/", 1)[-1].rsplit(".", 1)[0].replace("_", " ").replace("-", " ")
        header = f"{title} · {self.section}" if self.section else title
        return f"{header}\n\n{self.text}"

    def lexical_text(self) -> str:
        """What the lexical index sees: the folder, file name and heading path, then the text.

        A question that names the document ("the week 6 guide", "the LoRA paper") or the
        section ("practical takeaway") then matches passages whose body names neither.
        """
        folder, _, name = self.source.rpartition("/")
        return f"{folder} {name.rsplit('.', 1)[0]} · {self.section}\n{self.text}"

    def metadata(self) -> dict[str, str | int | float]:
        """Flat metadata for the vector store (Chroma accepts no None values)."""
        return {
            "source": self.source,
            "page": self.page or 0,
            "section": self.section,
            "start": self.start,
            "end": self.end,
            "release_at": float(self.release_at),
            "fence": self.fence,
        }

    @classmethod
    def from_record(cls, text: str, metadata: dict) -> Chunk:
        """Rebuild a chunk from a stored document and its metadata."""
        page = int(metadata.get("page") or 0)
        return cls(
            text=text,
            source=str(metadata["source"]),
            page=page or None,
            section=str(metadata.get("section", "")),
            start=int(metadata.get("start", 0)),
            end=int(metadata.get("end", 0)),
            release_at=float(metadata.get("release_at", 0.0)),
            fence=str(metadata.get("fence", "")),
        )


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved chunk with its calibrated relevance score in [0, 1]."""

    chunk: Chunk
    score: float
    dense: float = 0.0
    bm25: float = 0.0
    coverage: float = 0.0
    lexical_rank: int | None = None
    dense_rank: int | None = None

    def as_json(self) -> dict:
        """The search result shape of the CLI and bot: source, page, section, score, text."""
        return {
            "source": self.chunk.source,
            "page": self.chunk.page,
            "section": self.chunk.section,
            "score": round(self.score, 4),
            "text": self.chunk.text,
        }
