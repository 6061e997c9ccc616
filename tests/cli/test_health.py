"""`cli.health`: the checks behind the image's HEALTHCHECK and `python -m cli.health`.

The servers here are small loopback HTTP servers that answer the one route each check asks
for, so every failure a real Chroma or vLLM can show (down, erroring, wrong model, bad key) is
reproducible. tests/deploy/test_compose.py runs the same module against a real Chroma server.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cli.health import check_model, check_store, report
from rag.config import Settings, StoreSettings
from rag.llm.settings import LLMSettings, ModelSpec

REPO = Path(__file__).resolve().parents[2]

Route = Callable[[BaseHTTPRequestHandler], tuple[int, bytes]]


class Server:
    """A loopback HTTP server answering GET requests with `route`; records what it got."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, body = outer.route(self)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A loopback port with nothing listening."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = int(server.server_address[1])
    server.server_close()
    return port


def heartbeat(status: int) -> Route:
    """Chroma's heartbeat route answering `status`; anything else is a 404."""
    def route(handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        if handler.path == "/api/v2/heartbeat":
            return status, b'{"nanosecond heartbeat": 1}'
        return 404, b"{}"
    return route


def models_list(*ids: str, key: str | None = None) -> Route:
    """An OpenAI `GET /v1/models` serving `ids`, requiring bearer `key` when given."""
    def route(handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        if handler.path != "/v1/models":
            return 404, b"{}"
        if key is not None and handler.headers.get("Authorization") != f"Bearer {key}":
            return 401, b'{"error": "Unauthorized"}'
        return 200, json.dumps({"object": "list", "data": [{"id": i} for i in ids]}).encode()
    return route


def served(port: int, *, api_key_env: str | None = None) -> LLMSettings:
    """LLM settings whose default model `vllm` is `course-llm` at the given port."""
    spec = ModelSpec(
        name="vllm",
        backend="openai",
        model="course-llm",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key_env=api_key_env,
    )
    return LLMSettings(default="vllm", models={"vllm": spec})


@pytest.fixture
def heartbeat_server() -> Iterator[Server]:
    with Server(heartbeat(200)) as server:
        yield server


def test_store_passes_when_the_chroma_heartbeat_answers(heartbeat_server: Server) -> None:
    check = check_store(StoreSettings(host="127.0.0.1", port=heartbeat_server.port), Path("."))
    assert check.ok, check.detail
    assert f"127.0.0.1:{heartbeat_server.port}" in check.detail


def test_store_fails_when_the_chroma_server_errors() -> None:
    with Server(heartbeat(500)) as server:
        check = check_store(StoreSettings(host="127.0.0.1", port=server.port), Path("."))
    assert not check.ok
    assert "HTTP 500" in check.detail


def test_store_fails_when_nothing_listens() -> None:
    port = closed_port()
    check = check_store(StoreSettings(host="127.0.0.1", port=port), Path("."), timeout=1.0)
    assert not check.ok
    assert f"127.0.0.1:{port} unreachable" in check.detail


def test_embedded_store_passes_for_a_data_dir_not_yet_created(tmp_path: Path) -> None:
    check = check_store(StoreSettings(), tmp_path / "not" / "yet")
    assert check.ok, check.detail


def test_embedded_store_fails_when_the_data_dir_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    check = check_store(StoreSettings(), blocker)
    assert not check.ok
    assert "not a writable directory" in check.detail


def test_local_default_model_needs_no_server() -> None:
    check = check_model(LLMSettings(), environ={})
    assert check.ok
    assert "in process" in check.detail


def test_model_passes_when_the_server_lists_it() -> None:
    with Server(models_list("course-llm", "other")) as server:
        check = check_model(served(server.port), environ={})
    assert check.ok, check.detail


def test_model_fails_when_the_server_serves_another_name() -> None:
    with Server(models_list("Qwen/Qwen2.5-7B-Instruct")) as server:
        check = check_model(served(server.port), environ={})
    assert not check.ok
    assert "serves Qwen/Qwen2.5-7B-Instruct, not 'course-llm'" in check.detail


def test_model_sends_the_api_key_from_the_named_variable() -> None:
    with Server(models_list("course-llm", key="s3cret")) as server:
        check = check_model(
            served(server.port, api_key_env="VLLM_API_KEY"), environ={"VLLM_API_KEY": "s3cret"}
        )
        sent = server.headers[-1]["authorization"]
    assert check.ok, check.detail
    assert sent == "Bearer s3cret"


def test_model_fails_on_a_refused_key_without_printing_it() -> None:
    with Server(models_list("course-llm", key="right")) as server:
        check = check_model(
            served(server.port, api_key_env="VLLM_API_KEY"), environ={"VLLM_API_KEY": "wrong"}
        )
    assert not check.ok
    assert "refused the API key from $VLLM_API_KEY" in check.detail
    assert "wrong" not in check.line()


def test_model_fails_when_its_key_variable_is_unset() -> None:
    check = check_model(served(closed_port(), api_key_env="VLLM_API_KEY"), environ={})
    assert not check.ok
    assert "$VLLM_API_KEY is not set" in check.detail


def test_model_fails_when_the_server_is_down() -> None:
    check = check_model(served(closed_port()), environ={}, timeout=1.0)
    assert not check.ok
    assert "unreachable" in check.detail


def test_model_fails_on_an_answer_that_is_not_a_model_list() -> None:
    with Server(lambda handler: (200, b"<html>a proxy page</html>")) as server:
        check = check_model(served(server.port), environ={})
    assert not check.ok
    assert "did not send an OpenAI model list" in check.detail


def test_report_prints_each_check_and_returns_1_when_one_fails(heartbeat_server: Server) -> None:
    settings = Settings(
        store=StoreSettings(host="127.0.0.1", port=heartbeat_server.port),
        llm=served(closed_port()),
    )
    out = io.StringIO()
    code = report(settings, out, environ={})
    lines = out.getvalue().splitlines()
    assert code == 1
    assert lines[0].startswith("ok   store:")
    assert lines[1].startswith("FAIL model vllm:")


def test_module_exits_0_when_healthy_and_1_when_not(
    heartbeat_server: Server, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "STUDY_ASSISTANT_DATA_DIR": str(tmp_path),
        "STUDY_ASSISTANT_STORE__HOST": "127.0.0.1",
        "STUDY_ASSISTANT_STORE__PORT": str(heartbeat_server.port),
    }
    healthy = _run_module(env)
    down = _run_module({**env, "STUDY_ASSISTANT_STORE__PORT": str(closed_port())})
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert down.returncode == 1
    assert "FAIL store" in down.stdout


def test_module_reports_an_invalid_configuration_in_one_line() -> None:
    result = _run_module({"PATH": "/usr/bin:/bin", "STUDY_ASSISTANT_LLM__DEFAULT": "nope"})
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL config:")
    assert "default model 'nope'" in result.stdout
    assert len(result.stdout.splitlines()) == 1


def _run_module(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.health"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
