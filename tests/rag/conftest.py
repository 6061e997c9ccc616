"""Fixtures shared by the model and demo tests: one real OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.llm.model_cache import export_packaged_model
from tests.rag.llm.conftest import Served, start_server


@pytest.fixture(scope="session")
def exported_smollm2(llm_cache_dir: Path) -> Path:
    """The safetensors copy of SmolLM2 that the servers serve."""
    return export_packaged_model("smollm2", llm_cache_dir)


@pytest.fixture(scope="session")
def served(exported_smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real OpenAI-compatible server (`transformers serve`) on loopback, shared by the
    session (starting one costs about 20 s here); a test that kills a server starts its own."""
    server = start_server(exported_smollm2, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()
