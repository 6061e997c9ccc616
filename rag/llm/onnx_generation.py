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

onnxruntime-genai holds the GIL while it runs the model, so the prompt goes in in chunks of
`PREFILL_CHUNK` tokens: between two chunks the event loop's thread gets to run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag.llm.base import ModelLoadError
from rag.llm.model_cache import MARKER, build_atomically, read_marker

PRECISION = "fp32"
ONNX_DIR = "onnx-" + PRECISION + "-genai-{version}"
# The builder converts other architectures too, but only these are checked by our tests.
SUPPORTED_ARCHITECTURES = frozenset({"LlamaForCausalLM"})
PREFILL_CHUNK = 64
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
    """A loaded ONNX build and the loop that generates from it one token at a time."""

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        import onnxruntime_genai as og

        config = og.Config(str(directory))
        if threads:
            options = {"session_options": {"intra_op_num_threads": threads}}
            config.overlay(json.dumps({"model": {"decoder": options}}))
        try:
            self._model = og.Model(config)
        except RuntimeError as exc:
            raise ModelLoadError(f"Cannot load the ONNX model in {directory}: {exc}") from exc
        self.directory = directory

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

        `on_token` may raise to stop generation; the exception propagates.
        """
        import onnxruntime_genai as og

        params = og.GeneratorParams(self._model)
        params.set_search_options(
            **search_options(len(prompt) + max_tokens, temperature, repetition_penalty)
        )
        generator = og.Generator(self._model, params)
        for start in range(0, len(prompt), PREFILL_CHUNK):
            generator.append_tokens(prompt[start : start + PREFILL_CHUNK])
        while not generator.is_done():
            generator.generate_next_token()
            on_token(int(generator.get_next_tokens()[0]))
