"""Shared fixtures for the chat-model tests: one converted cache, loaded models, a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rag.llm.local import LocalChatModel, ModelLoader
from rag.llm.settings import builtin_models
from tests.conftest import FirstRun

SERVER_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class FirstLoad:
    """A loader on the session's model cache, and how long the session's first run (which
    converted SmolLM2 into that cache) took."""

    loader: ModelLoader
    seconds: float


def offline_env() -> dict[str, str]:
    """This process's environment, with every model hub switched off."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="session")
def first_load(first_run: FirstRun) -> FirstLoad:
    """A loader on the session's model cache, and how long the first, converting run took."""
    return FirstLoad(loader=ModelLoader(first_run.cache_dir), seconds=first_run.seconds)


@pytest.fixture(scope="session")
def smollm2(first_load: FirstLoad) -> LocalChatModel:
    """The packaged instruct model, shared by the whole session."""
    return LocalChatModel(builtin_models()["smollm2"], first_load.loader)


@pytest.fixture(scope="session")
def gemma3(first_load: FirstLoad) -> LocalChatModel:
    """The packaged Gemma-3-270M base model, from the session's cache."""
    return LocalChatModel(builtin_models()["gemma3-base"], first_load.loader)


def free_port() -> int:
    """A loopback port nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running `transformers serve` subprocess and how to reach it."""

    process: subprocess.Popen[bytes]
    base_url: str
    model: str
    log: Path

    def log_tail(self) -> str:
        """The last lines the server wrote, for failure messages."""
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """Terminate the server (kill it if it will not stop)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(model_dir: Path, log: Path) -> Served:
    """Start `transformers serve` pinned to a local model directory; wait until it is healthy."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=offline_env())
    served = Served(process, f"http://127.0.0.1:{port}/v1", str(model_dir), log)
    try:
        wait_until_healthy(served, port)
    except BaseException:
        served.stop()
        raise
    return served


def wait_until_healthy(served: Served, port: int) -> None:
    """Poll /health until it answers 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            pytest.fail(f"transformers serve exited early:\n{served.log_tail()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(
        f"transformers serve not healthy in {SERVER_START_TIMEOUT_S}s:\n{served.log_tail()}"
    )


@pytest.fixture
def doomed_server(exported_smollm2: Path, tmp_path: Path) -> Iterator[Served]:
    """A server of its own for a test that kills it."""
    server = start_server(exported_smollm2, tmp_path / "serve.log")
    yield server
    server.stop()
