"""Faster CPU generation through onnxruntime-genai, for models this process converted from GGUF.

On first use the converted model's directory is handed to onnxruntime-genai's model builder,
which writes an fp32 ONNX graph with a fused grouped-query attention operator into
`onnx-fp32-genai-<version>/` beside it; later starts load that. The builder runs in a
subprocess whose output is kept for an error message (its own progress bars and logs never
reach the terminal), in a temporary sibling renamed into place.

Why fp32: it gives the fp32 transformers model's greedy tokens (every dev prompt checked in
docs/benchmarks.md, and a test) at about three times its decode speed. The builder's int8 and
int4 builds decode faster still, but they quantise the activations too (its CPU default) and
re-quantise the de-quantised weights, and their answers part from the fp32 model's within a few
tokens and carried the key fact less often; with fp32 activations they were slower than
transformers. Measured in docs/benchmarks.md (benchmarks/local_generation.py).

onnxruntime-genai holds the GIL while it runs the model (a 64-token prefill step took 130-200
ms on two cores), which stalled the bot's event loop at every step. So the model runs in a
worker process (onnx_worker.py), and this process only waits on a pipe for its tokens.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag.llm.base import ModelLoadError
from rag.llm.model_cache import MARKER, build_atomically, read_marker

PRECISION = "fp32"
ONNX_DIR = "onnx-" + PRECISION + "-genai-{version}"
# The builder converts other architectures too, but only these are checked by our tests.
SUPPORTED_ARCHITECTURES = frozenset({"LlamaForCausalLM"})
# The worker checks for a stop between chunks of the prompt (and between new tokens).
PREFILL_CHUNK = 64
WORKER = Path(__file__).with_name("onnx_worker.py")
BUILD_TIMEOUT_S = 1800.0


def runtime_version() -> str | None:
    """The installed onnxruntime-genai version, or None if it is not installed."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return None
    return importlib.metadata.version("onnxruntime-genai")


def supported(model_dir: Path) -> bool:
    """Whether the runtime is installed and the builder handles this model's architecture."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    architectures = set(config.get("architectures") or [])
    return runtime_version() is not None and bool(architectures & SUPPORTED_ARCHITECTURES)


def onnx_dir(model_dir: Path) -> Path:
    """Where the ONNX build of a converted model lives (one per runtime version)."""
    return model_dir / ONNX_DIR.format(version=runtime_version())


def ensure_onnx_model(model_dir: Path, announce: Callable[[str], None]) -> Path:
    """The ONNX build of `model_dir`, building it first if there is none (tens of seconds)."""
    target = onnx_dir(model_dir)
    identity = {"builder": runtime_version(), "precision": PRECISION}
    if read_marker(target) == identity:
        return target
    announce(
        f"Building the ONNX model for {model_dir.name} with onnxruntime-genai "
        "(once; under a minute on an idle machine)…"
    )

    def build(work: Path) -> None:
        run_builder(model_dir, work)
        # Written last: a directory with this file is a finished build.
        (work / MARKER).write_text(json.dumps(identity, sort_keys=True), encoding="utf-8")

    return build_atomically(target, build)


def run_builder(model_dir: Path, out_dir: Path) -> None:
    """Run onnxruntime-genai's model builder on a local checkpoint, offline, quietly."""
    scratch = out_dir / ".builder-cache"
    command = [
        sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir),
        "-o", str(out_dir), "-p", PRECISION, "-e", "cpu", "-c", str(scratch),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        message = f"The ONNX build of {model_dir} took over {exc.timeout:.0f} s"
        raise ModelLoadError(message) from exc
    shutil.rmtree(scratch, ignore_errors=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise ModelLoadError(f"The ONNX build of {model_dir} failed:\n{tail}")


def search_options(
    max_length: int, temperature: float, repetition_penalty: float
) -> dict[str, Any]:
    """onnxruntime-genai search options for a length, temperature (0: greedy) and penalty."""
    options: dict[str, Any] = {"max_length": max_length, "repetition_penalty": repetition_penalty}
    if temperature <= 0:
        return {**options, "do_sample": False}
    # transformers' sampling defaults, so both runtimes draw from the same distribution.
    return {**options, "do_sample": True, "temperature": temperature, "top_k": 50, "top_p": 1.0}


class OnnxGenerator:
    """A loaded ONNX build, generating in a worker process of its own (onnx_worker.py).

    The worker holds the GIL only in its own process: here the thread that calls `generate`
    waits on a pipe, and the event loop runs on. A worker that dies fails the generation it was
    running with a clear error, and the next generation starts a new one.
    """

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        self.directory = directory
        self._threads = threads
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._start()

    def _start(self) -> subprocess.Popen[str]:
        command = [sys.executable, "-P", str(WORKER), str(self.directory), str(self._threads or 0)]
        process = subprocess.Popen(  # noqa: S603 - our interpreter and our script
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8",
            bufsize=1,
        )
        self._process = process
        weakref.finalize(self, _stop_worker, process)
        try:
            message = self._receive()
        except WorkerExited as exc:
            raise ModelLoadError(f"Cannot load the ONNX model in {self.directory}: {exc}") from exc
        if message != {"ready": True}:
            _stop_worker(process)
            detail = message.get("error") if isinstance(message, dict) else message
            raise ModelLoadError(f"Cannot load the ONNX model in {self.directory}: {detail}")
        return process

    def _send(self, message: dict[str, Any]) -> None:
        process = self._process
        assert process is not None and process.stdin is not None
        try:
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:  # ValueError: the pipe was closed
            raise WorkerExited(self._exit_status()) from exc

    def _receive(self) -> Any:
        process = self._process
        assert process is not None and process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise WorkerExited(self._exit_status())
        return json.loads(line)

    def _exit_status(self) -> str:
        process = self._process
        assert process is not None
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the ONNX worker process stopped answering"
        return f"the ONNX worker process exited (code {code})"

    def generate(
        self,
        prompt: list[int],
        *,
        max_tokens: int,
        temperature: float,
        repetition_penalty: float,
        on_token: Callable[[int], None],
    ) -> None:
        """Generate up to `max_tokens` after `prompt`, calling `on_token` with each new id.

        `on_token` may raise to stop generation; the worker is told to stop, and the exception
        propagates once it has. A runtime error raises RuntimeError.
        """
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            search = search_options(len(prompt) + max_tokens, temperature, repetition_penalty)
            self._send({"prompt": prompt, "search": search, "chunk": PREFILL_CHUNK})
            stopping: BaseException | None = None
            while True:
                message = self._receive()
                if isinstance(message, int):
                    if stopping is None:
                        try:
                            on_token(message)
                        except BaseException as exc:  # noqa: BLE001 - re-raised below
                            stopping = exc
                            self._send({"stop": True})
                    continue
                if stopping is not None:
                    raise stopping
                if "error" in message:
                    raise RuntimeError(f"onnxruntime-genai: {message['error']}")
                return

    def close(self) -> None:
        """Stop the worker process (it also stops by itself when this process exits)."""
        with self._lock:
            if self._process is not None:
                _stop_worker(self._process)


class WorkerExited(RuntimeError):
    """The worker process ended (or hung) while a request was waiting on it."""


def _stop_worker(process: subprocess.Popen[str]) -> None:
    """Close the worker's input (it exits at end of input), killing it if it lingers."""
    if process.poll() is not None:
        return
    try:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
