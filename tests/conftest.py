"""Shared fixtures: the real course materials, the real embedder, real Chroma indexes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

# Nothing in the test suite may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ingest.pipeline import IngestReport, Target, ingest  # noqa: E402
from rag.config import EmbeddingSettings, Settings, StoreSettings  # noqa: E402
from rag.index.embedder import Embedder  # noqa: E402
from rag.services import Services, build_services  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PAPER = "attention_is_all_you_need.pdf"


@pytest.fixture(scope="session")
def shared_materials() -> Path:
    """The real course guides and papers that ship beside the repository."""
    path = SHARED / "course_materials"
    if not path.is_dir():
        pytest.fail(f"the shared course materials are missing: expected them at {path}")
    return path


@pytest.fixture(scope="session")
def dev_questions() -> list[dict]:
    """The development question set."""
    import json

    lines = (SHARED / "eval" / "dev_questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="session")
def dev_questions_v2() -> list[dict]:
    """The second development set: 50 in-scope questions by class, 10 out of scope."""
    import json

    lines = (SHARED / "eval" / "dev_questions_v2.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class MemoEmbedder(Embedder):
    """The real packaged embedder, remembering the vectors of texts it has embedded.

    Many tests ingest the same real files into fresh indexes; computing each real vector once
    keeps the suite fast without changing what any index receives.
    """

    def __init__(self) -> None:
        super().__init__(EmbeddingSettings())
        self._memo: dict[str, np.ndarray] = {}

    def embed_documents(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        for text, vec in zip(missing, super().embed_documents(missing, on_batch), strict=True):
            self._memo[text] = vec
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real packaged embedder, loaded once for the whole session."""
    return MemoEmbedder()


class CountingEmbedder:
    """The real embedder, counting how many texts it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.texts = 0
        self.queries = 0

    def embed_documents(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed_documents(texts, on_batch)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.queries += len(texts)
        return self.inner.embed_queries(texts)


class SameQueryVectors:
    """The real embedder, giving a query the vector of the first batch that held it: a query
    searched alone must then be searched with the very vector it had in a batch (a batch's
    padding can move the last bits of a vector, and with them a tie)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name = inner, inner.name
        self.vectors: dict[str, np.ndarray] = {}

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.inner.embed_queries(missing), strict=True))
        return np.stack([self.vectors[t] for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]


@pytest.fixture
def counting(embedder: Embedder) -> CountingEmbedder:
    """A call-counting wrapper around the real embedder."""
    return CountingEmbedder(embedder)


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a test: explicit, never read from the environment."""
    return Settings(data_dir=data_dir, store=StoreSettings(), **overrides)


def services_for(data_dir: Path, embedder: Embedder) -> Services:
    """Services over a data dir, sharing the session's loaded embedder."""
    return build_services(make_settings(data_dir), embedder=embedder)


def run(root: Path, services: Services, embedder=None, **kw) -> IngestReport:
    """Ingest one root folder with the given services."""
    return ingest(
        [Target(root)],
        services.store,
        embedder or services.embedder,
        services.settings.ingest,
        **kw,
    )


@pytest.fixture
def small_root(tmp_path: Path, shared_materials: Path) -> Path:
    """A writable copy of the real guides plus the Transformer paper."""
    root = tmp_path / "materials"
    shutil.copytree(shared_materials / "guides", root / "guides")
    (root / "papers").mkdir()
    shutil.copy(shared_materials / "papers" / PAPER, root / "papers" / PAPER)
    return root


@pytest.fixture(scope="session")
def full_index(tmp_path_factory, shared_materials: Path, embedder: Embedder) -> Services:
    """The materials as the course ships them, ingested once into a real embedded Chroma: all
    the real guides and papers, plus our own study notes in `course_materials/`."""
    services = services_for(tmp_path_factory.mktemp("full") / "data", embedder)
    targets = [Target(shared_materials), Target(REPO / "course_materials")]
    report = ingest(targets, services.store, services.embedder, services.settings.ingest)
    assert report.ok and set(report.skipped) <= {"README.md"}, report.skipped
    return services


@pytest.fixture(scope="session")
def llm_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the session, so each packaged GGUF is dequantized once."""
    return tmp_path_factory.mktemp("llm-cache")
