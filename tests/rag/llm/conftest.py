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

from rag.llm.local import LocalChatModel, ModelLoader, export_packaged_model
from rag.llm.settings import builtin_models

SERVER_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class FirstLoad:
    """The session's loader and how long its first, converting, load of SmolLM2 took."""

    loader: ModelLoader
    seconds: float


@pytest.fixture(scope="session")
def llm_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of these tests' own: they check the first, converting load, so no other test
    folder may have converted into it already."""
    return tmp_path_factory.mktemp("llm-cache-own")


CONVERT_GEMMA3 = (
    "import sys; from pathlib import Path; "
    "from rag.llm.model_cache import export_packaged_model; "
    "export_packaged_model('gemma3-270m', Path(sys.argv[1]))"
)


def offline_env() -> dict[str, str]:
    """This process's environment, with every model hub switched off."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass
class Background:
    """A process running beside the tests, with its log."""

    process: subprocess.Popen[bytes]
    log: Path

    def wait_ok(self, timeout: float) -> None:
        """Wait for the process; fail the test with its log if it did not succeed."""
        code = self.process.wait(timeout=timeout)
        if code != 0:
            pytest.fail(f"background process failed ({code}):\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def gemma3_conversion(
    llm_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Background]:
    """Convert Gemma-3 in a second process, overlapping the SmolLM2 work on the other core.

    Converting is mostly single-threaded Python (GGUF metadata parsing), so on two cores this
    takes a minute off the session. It runs the same `export_packaged_model` a user would.
    """
    log = tmp_path_factory.mktemp("gemma3-conversion") / "convert.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", CONVERT_GEMMA3, str(llm_cache_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=offline_env(),
        )
    yield Background(process, log)
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def first_load(llm_cache_dir: Path, gemma3_conversion: Background) -> FirstLoad:
    """Load the packaged SmolLM2 with an empty cache: converts the GGUF, then loads it."""
    loader = ModelLoader(llm_cache_dir)
    started = time.perf_counter()
    loader.load("packaged:smollm2")
    return FirstLoad(loader=loader, seconds=time.perf_counter() - started)


@pytest.fixture(scope="session")
def smollm2(first_load: FirstLoad) -> LocalChatModel:
    """The packaged instruct model, shared by the whole session."""
    return LocalChatModel(builtin_models()["smollm2"], first_load.loader)


@pytest.fixture(scope="session")
def gemma3(first_load: FirstLoad, gemma3_conversion: Background) -> LocalChatModel:
    """The packaged Gemma-3-270M base model, loaded from the cache the background filled."""
    gemma3_conversion.wait_ok(timeout=600)
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


@pytest.fixture(scope="session")
def exported_smollm2(first_load: FirstLoad, llm_cache_dir: Path) -> Path:
    """The safetensors copy of SmolLM2 that the servers serve."""
    return export_packaged_model("smollm2", llm_cache_dir)


@pytest.fixture(scope="session")
def served(exported_smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real OpenAI-compatible server (`transformers serve`) on loopback, for the session."""
    server = start_server(exported_smollm2, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


@pytest.fixture
def doomed_server(exported_smollm2: Path, tmp_path: Path) -> Iterator[Served]:
    """A server of its own for a test that kills it."""
    server = start_server(exported_smollm2, tmp_path / "serve.log")
    yield server
    server.stop()
