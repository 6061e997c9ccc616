"""A real Chroma server (`chroma run`, shipped with the chromadb package) for deployment tests.

The server runs on a free loopback port over a temporary directory; tests may stop, pause
and restart it on the same path to play an outage. It is always killed at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

CHROMA = Path(sys.executable).with_name("chroma")
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ChromaServer:
    """One `chroma run` process over a fixed path and port."""

    path: Path
    log: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """host:port, as error messages name it."""
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Start the server and wait for its heartbeat; fail with its log if it never comes."""
        assert self.process is None, "the server is already running"
        command = [str(CHROMA), "run", "--path", str(self.path), "--host", self.host,
                   "--port", str(self.port)]
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"chroma run exited with code {self.process.returncode}")
            if self.alive():
                return
            time.sleep(0.1)
        self._fail(f"no heartbeat within {START_TIMEOUT_S:.0f} s")

    def alive(self) -> bool:
        """Whether the server answers its heartbeat."""
        try:
            url = f"http://{self.address}/api/v2/heartbeat"
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Kill the server at once (SIGKILL: no clean shutdown, like a crashed container)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def ensure_running(self) -> None:
        """Bring the server back if an earlier test left it stopped or paused."""
        if self.process is not None:
            self.resume()
        if not self.alive():
            self.stop()
            self.start()

    def _fail(self, why: str) -> None:
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        pytest.fail(f"the Chroma server at {self.address} did not start: {why}\n--- log:\n{tail}")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A real Chroma server for the session; killed at teardown whatever happened."""
    if not CHROMA.exists():
        pytest.fail(f"the chromadb package's server is missing: expected {CHROMA}")
    base = tmp_path_factory.mktemp("chroma-server")
    server = ChromaServer(path=base / "db", log=base / "server.log")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.resume()
        server.stop()


@pytest.fixture
def chroma(chroma_server: ChromaServer) -> ChromaServer:
    """The session's server, running and answering at the start of the test."""
    chroma_server.ensure_running()
    return chroma_server
