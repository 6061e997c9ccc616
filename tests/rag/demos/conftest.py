"""The demos run on the real packaged local models, loaded once for the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.answering.grounding import GroundingChecker
from rag.index.embedder import Embedder
from rag.llm.local import LocalChatModel
from rag.llm.registry import ModelRegistry
from rag.llm.settings import LLMSettings, ModelSpec
from rag.services import Services, build_services
from tests.conftest import REPO, make_settings, run

REMOTE = ModelSpec(
    name="remote", backend="openai", model="no-such/model", base_url="http://127.0.0.1:9/v1"
)


@pytest.fixture(scope="session")
def demo_registry(llm_cache_dir: Path) -> ModelRegistry:
    """The built-in local models (SmolLM2 instruct, Gemma-3 base) and one served model."""
    return ModelRegistry(LLMSettings(models={"remote": REMOTE}), llm_cache_dir)


def local(registry: ModelRegistry, name: str) -> LocalChatModel:
    """A loaded local model from the registry."""
    chat = registry.get(name)
    assert isinstance(chat, LocalChatModel)
    chat.loaded()
    return chat


@pytest.fixture(scope="session")
def smollm2(demo_registry: ModelRegistry) -> LocalChatModel:
    """SmolLM2-135M-Instruct (byte-level BPE, chat template)."""
    return local(demo_registry, "smollm2")


@pytest.fixture(scope="session")
def gemma3(demo_registry: ModelRegistry) -> LocalChatModel:
    """Gemma-3-270M base (SentencePiece, plain completion prompts)."""
    return local(demo_registry, "gemma3-base")


# -- The grounding check, /hallucination and /compare (rag/answering/grounding.py, rag/demos/)
# A real index of our own study notes (course_materials/, Markdown: quick to ingest), the real
# embedder and the real local models with short greedy answers.

CHECKS_LLM = LLMSettings(max_new_tokens=32, temperature=0.0, connect_timeout_s=2.0,
                         max_retries=1)


@pytest.fixture(scope="session")
def notes_services(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, llm_cache_dir: Path
) -> Services:
    """Our study notes ingested into a real Chroma, with SmolLM2 and Gemma-3 answering."""
    settings = make_settings(tmp_path_factory.mktemp("checks") / "data", llm=CHECKS_LLM)
    services = build_services(settings, embedder=embedder,
                              models=ModelRegistry(CHECKS_LLM, llm_cache_dir))
    report = run(REPO / "course_materials", services)
    assert report.ok and report.chunks_added > 0, report.skipped
    return services


@pytest.fixture(scope="session")
def checker(notes_services: Services) -> GroundingChecker:
    """The grounding checker over the notes index (its idf table built once)."""
    return GroundingChecker(notes_services.embedder, notes_services.retriever)


@pytest.fixture
def cli_env(notes_services: Services, llm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Path:
    """The environment of a `study-assistant` command run in-process on the notes index: its
    data dir, with the session's converted models linked in, and short greedy answers."""
    data = Path(notes_services.settings.data_dir)
    models = data / "models"
    if not models.is_symlink():
        (llm_cache_dir / "models").mkdir(exist_ok=True)
        models.symlink_to(llm_cache_dir / "models", target_is_directory=True)
    monkeypatch.setenv("STUDY_ASSISTANT_DATA_DIR", str(data))
    monkeypatch.setenv("STUDY_ASSISTANT_LLM__MAX_NEW_TOKENS", "16")
    monkeypatch.setenv("STUDY_ASSISTANT_LLM__TEMPERATURE", "0")
    return data
