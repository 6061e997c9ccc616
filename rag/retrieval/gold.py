"""Gold questions: the instructors' retrieval checks that gate a re-ingest.

The set lives in the materials folder (`gold_questions.toml` by default; read, never indexed):

    k = 5                      # optional: how many passages count (default: the setting)

    [[question]]
    question = "What does LoRA train instead of the full weight matrices?"
    sources = ["papers/lora.pdf"]      # any of these among the top k passes the question
    evidence = ["low-rank"]            # optional: each must appear in such a passage

A question passes on a version when one of its sources is among the top k passages and every
evidence string appears (case and spacing ignored) in a top-k passage from one of its sources.
A source ending in `/` stands for every file under that folder. A question got worse on a new
version when it loses its source from the top k, or finds fewer of its evidence strings; a
change of rank inside the top k is shown but does not hold a re-ingest.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from rag.index.documents import Hit
from rag.retrieval.retriever import NothingIngested


class GoldSetError(ValueError):
    """The gold set file cannot be read or is malformed."""


class Searcher(Protocol):
    """What evaluation needs: a retriever's batched search."""

    def search_many(
        self, queries: Sequence[str], k: int | None = None, *, preview: bool = False
    ) -> list[list[Hit]]: ...


@dataclass(frozen=True, slots=True)
class GoldQuestion:
    """One gold question: what to ask, where the answer must come from, what it must say."""

    question: str
    sources: tuple[str, ...]
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GoldSet:
    """The instructors' gold questions."""

    path: Path
    questions: tuple[GoldQuestion, ...]
    k: int
    digest: str = ""  # of the file's bytes: results computed for another set are not reused


@dataclass(frozen=True, slots=True)
class GoldResult:
    """How one version does on one gold question."""

    question: str
    rank: int | None  # 1-based rank of the first passage from an expected source
    found: tuple[str, ...]  # evidence strings found
    missing: tuple[str, ...]  # evidence strings not found

    @property
    def passed(self) -> bool:
        """Source in the top k and all evidence found."""
        return self.rank is not None and not self.missing


@dataclass(frozen=True, slots=True)
class GoldChange:
    """One gold question on the live version and on the new one."""

    before: GoldResult
    after: GoldResult

    @property
    def worse(self) -> bool:
        """Lost its source from the top k, or found fewer evidence strings."""
        lost = self.before.rank is not None and self.after.rank is None
        return lost or len(self.after.found) < len(self.before.found)

    def why(self) -> str:
        """What changed, in a few words (for the regression report)."""
        if self.before.rank is not None and self.after.rank is None:
            return f"expected source no longer in the top k (was #{self.before.rank})"
        lost = [e for e in self.before.found if e not in self.after.found]
        if lost:
            return "evidence no longer found: " + ", ".join(repr(e) for e in lost)
        return f"rank {_rank(self.before)} → {_rank(self.after)}"

    def as_json(self) -> dict[str, Any]:
        """For the stored report of a held version and `--json` output."""
        return {"before": asdict(self.before), "after": asdict(self.after),
                "worse": self.worse, "why": self.why()}


def _rank(result: GoldResult) -> str:
    return f"#{result.rank}" if result.rank is not None else "not found"


def load_gold_set(path: Path, default_k: int, shown: str | None = None) -> GoldSet | None:
    """The gold set at `path`, or None when there is no such file. Errors name it as `shown`
    (its path under the materials folder; its file name by default): they reach Discord,
    which must not see server paths."""
    if not path.exists():
        return None
    name = shown or path.name
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:  # its str() holds the absolute path
        raise GoldSetError(f"Cannot read the gold questions in {name}: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise GoldSetError(f"Cannot read the gold questions in {name}: {exc}") from None
    k = data.get("k", default_k)
    rows = data.get("question", [])
    if not isinstance(k, int) or k < 1 or not isinstance(rows, list):
        raise GoldSetError(f"{name}: `k` must be a positive integer and questions must be "
                           "[[question]] tables.")
    questions = tuple(_question(name, i, row) for i, row in enumerate(rows, 1))
    return GoldSet(path, questions, k, hashlib.sha256(raw).hexdigest()[:16])


def _question(name: str, number: int, row: Any) -> GoldQuestion:
    """One [[question]] table, checked."""
    where = f"{name}, question {number}"
    if not isinstance(row, dict) or not isinstance(row.get("question"), str):
        raise GoldSetError(f"{where}: needs a `question` string.")
    sources, evidence = row.get("sources"), row.get("evidence", [])
    if not _strings(sources) or not sources:
        raise GoldSetError(f"{where}: needs `sources`, a list of file paths under the "
                           "materials folder.")
    if not _strings(evidence):
        raise GoldSetError(f"{where}: `evidence` must be a list of strings.")
    return GoldQuestion(row["question"].strip(), tuple(sources), tuple(evidence))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


def _from(source: str, expected: Sequence[str]) -> bool:
    return any(source == e or (e.endswith("/") and source.startswith(e)) for e in expected)


def judge(question: GoldQuestion, hits: Sequence[Hit]) -> GoldResult:
    """How a list of passages does on one gold question."""
    ranks = [i for i, h in enumerate(hits, 1) if _from(h.chunk.source, question.sources)]
    texts = [_normal(hits[i - 1].chunk.text) for i in ranks]
    found = tuple(e for e in question.evidence if any(_normal(e) in t for t in texts))
    missing = tuple(e for e in question.evidence if e not in found)
    return GoldResult(question.question, ranks[0] if ranks else None, found, missing)


def evaluate(gold: GoldSet, searcher: Searcher) -> list[GoldResult]:
    """Every gold question against one version (release dates ignored: a preview search);
    an empty version fails them all."""
    try:
        found = searcher.search_many([q.question for q in gold.questions], gold.k, preview=True)
        return [judge(q, hits) for q, hits in zip(gold.questions, found, strict=True)]
    except NothingIngested:
        return [GoldResult(q.question, None, (), q.evidence) for q in gold.questions]


def results_json(results: Sequence[GoldResult]) -> str:
    """Results as stored with the version they were measured on."""
    return json.dumps([asdict(r) for r in results], ensure_ascii=False)


def results_from_json(text: str) -> list[GoldResult]:
    """Results stored by `results_json`."""
    return [GoldResult(r["question"], r["rank"], tuple(r["found"]), tuple(r["missing"]))
            for r in json.loads(text)]


def compare(before: Sequence[GoldResult], after: Sequence[GoldResult]) -> list[GoldChange]:
    """Pair each question's result on the live version with its result on the new one."""
    return [GoldChange(b, a) for b, a in zip(before, after, strict=True)]
