"""Shared fixtures: the real course materials, the real embedder, real Chroma indexes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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

    def holds_word(self, word: str) -> bool:
        return self.inner.holds_word(word)


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

    def holds_word(self, word: str) -> bool:
        return self.inner.holds_word(word)


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


def user_env(**extra: str) -> dict[str, str]:
    """The user's environment as the tests have it, minus our own settings, plus `extra`:
    for running `python -m cli` as a user would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDY_ASSISTANT_")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **extra)
    # The tests' own quieting must not hide what the command would print.
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        env.pop(name, None)
    return env


# The session's first run: a user's first demo on an empty data dir converts the packaged
# SmolLM2 from its GGUF file (and builds its ONNX model) before it answers.
FIRST_RUN = ["demo", "nexttoken", "The capital of France is", "--top-k", "3"]
CONVERT_GEMMA3 = (
    "import sys; from pathlib import Path; "
    "from rag.llm.model_cache import export_packaged_model; "
    "export_packaged_model('gemma3-270m', Path(sys.argv[1]))"
)
CONVERSION_TIMEOUT_S = 900


@dataclass(frozen=True)
class FirstRun:
    """The session's first `study-assistant` run, on an empty model cache: how long it took
    and what it printed (tests/cli/test_terminal_output.py and tests/rag/llm check both)."""

    cache_dir: Path
    seconds: float
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    """Convert the packaged models once for the whole session, as users do: SmolLM2 by the
    first demo of a real `python -m cli` process, Gemma-3 in a second process meanwhile.

    Converting is mostly single-threaded Python (GGUF parsing), so the two overlap on two
    cores; every test that loads a model then loads it from this cache.
    """
    cache = tmp_path_factory.mktemp("llm-cache")
    log = tmp_path_factory.mktemp("gemma3-conversion") / "convert.log"
    with log.open("wb") as out:
        gemma3 = subprocess.Popen([sys.executable, "-c", CONVERT_GEMMA3, str(cache)],
                                  stdout=out, stderr=subprocess.STDOUT, env=user_env(), cwd=REPO)
    try:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cli", *FIRST_RUN, "--data-dir", str(cache)],
                              capture_output=True, text=True, env=user_env(), cwd=REPO,
                              timeout=CONVERSION_TIMEOUT_S)
        seconds = time.perf_counter() - started
        if gemma3.wait(timeout=CONVERSION_TIMEOUT_S) != 0:
            pytest.fail(f"converting Gemma-3 failed:\n{log.read_text(errors='replace')[-3000:]}")
        yield FirstRun(cache, seconds, done.returncode, done.stdout, done.stderr)
    finally:
        if gemma3.poll() is None:
            gemma3.kill()
            gemma3.wait()


@pytest.fixture(scope="session")
def llm_cache_dir(first_run: FirstRun) -> Path:
    """One model cache for the session, filled by its first run: each packaged GGUF is
    converted once."""
    return first_run.cache_dir
