"""Can this process answer? Checks that the store and the default chat model's server respond.

`python -m cli.health` prints one line per check and exits 0 when every check passes, 1
otherwise. The Docker image's HEALTHCHECK runs it every 30 s, so it stays cheap: a couple of
HTTP requests with short timeouts, no model loaded, and neither chromadb nor torch imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx
from pydantic import ValidationError

from rag.config import Settings, StoreSettings
from rag.llm.settings import LLMSettings

TIMEOUT_S = 3.0
HEARTBEAT_PATH = "/api/v2/heartbeat"


@dataclass(frozen=True)
class Check:
    """The outcome of one check, in words an operator can act on."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """One line for a terminal or `docker inspect`."""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def check_store(store: StoreSettings, data_dir: Path, timeout: float = TIMEOUT_S) -> Check:
    """The Chroma server answers its heartbeat; embedded, the data dir can be written."""
    if not store.host:
        path = Path(data_dir)
        existing = next((p for p in (path, *path.parents) if p.exists()), path)
        if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
            return Check("store", True, f"embedded store under {path}")
        return Check("store", False, f"embedded store: {existing} is not a writable directory")
    where = f"{store.host}:{store.port}"
    url = f"{'https' if store.ssl else 'http'}://{where}{HEARTBEAT_PATH}"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return Check("store", False, f"Chroma server at {where} unreachable: {_describe(exc)}")
    if response.status_code != 200:
        status = response.status_code
        return Check("store", False, f"Chroma server at {where} answered HTTP {status}")
    return Check("store", True, f"Chroma server at {where} answers")


def check_model(
    llm: LLMSettings, environ: Mapping[str, str], timeout: float = TIMEOUT_S
) -> Check:
    """The default model's server lists it; an in-process model has nothing to reach."""
    spec = llm.models[llm.default]
    name = f"model {spec.name}"
    if spec.backend != "openai" or not spec.base_url:
        return Check(name, True, f"runs in process ({spec.model})")
    base = spec.base_url.rstrip("/")
    headers = {}
    if spec.api_key_env:
        key = environ.get(spec.api_key_env, "")
        if not key:
            return Check(name, False, f"its API key variable ${spec.api_key_env} is not set")
        headers["Authorization"] = f"Bearer {key}"
    try:
        response = httpx.get(f"{base}/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return Check(name, False, f"server at {base} unreachable: {_describe(exc)}")
    if response.status_code in (401, 403):
        sent = f"the API key from ${spec.api_key_env}" if spec.api_key_env else "no API key"
        return Check(name, False, f"server at {base} refused {sent}")
    if response.status_code != 200:
        return Check(name, False, f"server at {base} answered HTTP {response.status_code}")
    try:
        served = [str(entry["id"]) for entry in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return Check(name, False, f"server at {base} did not send an OpenAI model list")
    if spec.model not in served:
        listed = ", ".join(served) or "nothing"
        return Check(name, False, f"server at {base} serves {listed}, not '{spec.model}'")
    return Check(name, True, f"server at {base} serves '{spec.model}'")


def run_checks(
    settings: Settings, environ: Mapping[str, str] | None = None, timeout: float = TIMEOUT_S
) -> list[Check]:
    """Every check, in order: the store, then the default chat model."""
    env = os.environ if environ is None else environ
    return [
        check_store(settings.store, settings.data_dir, timeout),
        check_model(settings.llm, env, timeout),
    ]


def report(
    settings: Settings, out: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """Print one line per check; return the exit code (0 healthy, 1 not)."""
    checks = run_checks(settings, environ)
    for check in checks:
        print(check.line(), file=out or sys.stdout)
    return 0 if all(check.ok for check in checks) else 1


def main() -> int:
    """`python -m cli.health`: read the settings from the environment and report."""
    try:
        settings = Settings()
    except ValidationError as exc:
        print(Check("config", False, " ".join(str(exc).split())).line())
        return 1
    return report(settings)


if __name__ == "__main__":
    raise SystemExit(main())
