"""In-process transformers chat models (the default backend, on CPU).

A `ModelLoader`, owned by the composition root, loads each model once per process and shares
it between every `LocalChatModel` that names it. Generation runs in a worker thread and hands
text to the event loop through a queue, so the loop keeps serving while the CPU works. Models
this loader converted from GGUF generate text through onnxruntime-genai where its builder
handles them (rag/llm/onnx_generation.py); the transformers model then loads only when a demo
that reads logits or attention first asks for it, so answering never pays torch's import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rag.llm.base import (
    Completion,
    GenerationStats,
    LLMError,
    Messages,
    ModelLoadError,
    PromptTooLong,
    StopScanner,
    collect_completion,
)
from rag.llm.model_cache import (
    PackagedModel,
    cache_target,
    ensure_gguf_file,
    ensure_packaged,
    export_packaged_model,
    gguf_cache_target,
    packaged_models,
)
from rag.llm.onnx_generation import OnnxGenerator, ensure_onnx_model, supported
from rag.llm.settings import PACKAGED_PREFIX, ModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["LoadedModel", "LocalChatModel", "ModelLoader", "export_packaged_model"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LoadedModel:
    """A model's tokenizer and weights in memory; `generate_lock` serializes generation on the CPU.

    `onnx`, when set, is the runtime that generates text, and the transformers `model` (which
    serves the demos' logits and attention) loads on first use: text generation never waits for
    it, nor pays torch's import. Without `onnx`, the model is loaded with the tokenizer.
    """

    tokenizer: PreTrainedTokenizerBase
    path: str
    load_model: Callable[[], PreTrainedModel]
    onnx: OnnxGenerator | None = None
    eos_ids: frozenset[int] = frozenset()
    generate_lock: threading.Lock = field(default_factory=threading.Lock)
    _model: PreTrainedModel | None = None
    _model_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self) -> PreTrainedModel:
        """The transformers model (loads it on first use, once, blocking)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    self._model = self.load_model()
        return self._model

    @property
    def model_loaded(self) -> bool:
        """Whether the transformers model is in memory yet."""
        return self._model is not None


class ModelLoader:
    """Loads local models once per process, keyed by their resolved location."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        packaged: Mapping[str, PackagedModel] | None = None,
        torch_threads: int | None = None,
        int4: bool = True,
        onnx: bool = True,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self._packaged = dict(packaged) if packaged is not None else packaged_models()
        self._torch_threads = torch_threads
        self._int4 = int4
        self._onnx = onnx
        # The bot logs at info level; the command line shows it with --verbose and otherwise
        # keeps stderr to our own messages (tests/cli/test_terminal_output.py).
        self._announce = announce or log.info
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def resolve(self, model: str) -> str:
        """Where `model` loads from: a cache directory, a local directory, or a hub id."""
        if model.startswith(PACKAGED_PREFIX):
            return str(cache_target(self.cache_dir, self._packaged_model(model).name))
        path = Path(model).expanduser()
        if path.suffix == ".gguf":
            return str(gguf_cache_target(path, self.cache_dir))
        if path.is_dir():
            return str(path.resolve())
        return model

    def load(self, model: str) -> LoadedModel:
        """Return the loaded model, converting and loading it on first use (blocking)."""
        key = self.resolve(model)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._loaded:
                path = self._prepare(model, key)
                converted = Path(key).parent == self.cache_dir / "models"
                self._loaded[key] = self._load(path, converted)
            return self._loaded[key]

    def _load(self, path: str, converted: bool) -> LoadedModel:
        """The tokenizer, the onnxruntime-genai build where there is one, and the transformers
        model: now when it generates the text, else when first asked for."""
        onnx = self._onnx_runtime(Path(path), converted)
        try:
            tokenizer = load_tokenizer(path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Cannot load local model from '{path}': {exc}") from exc
        loaded = LoadedModel(
            tokenizer=tokenizer, path=path, onnx=onnx, eos_ids=eos_token_ids(path, tokenizer),
            load_model=lambda: self._load_model(path, converted),
        )
        if onnx is None:
            loaded.model  # noqa: B018 - it generates the text: load it now
        return loaded

    def _load_model(self, path: str, converted: bool) -> PreTrainedModel:
        from transformers import AutoModelForCausalLM

        limit_torch_threads(self._torch_threads)
        try:
            model = AutoModelForCausalLM.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Cannot load local model from '{path}': {exc}") from exc
        model.eval()
        self._speed_up(model, path, converted)
        return model

    def _speed_up(self, model: PreTrainedModel, path: str, converted: bool) -> None:
        """GQA-aware attention always; int4 layers for models this loader converted from GGUF.

        Only a conversion of a 4-bit GGUF has layers that int4 holds exactly, and its cache
        directory is ours to keep the packed layers in (see rag/llm/packing.py).
        """
        # Imported here: packing imports torch, which a process that never loads a
        # transformers model (`ask`, or a bot generating through onnxruntime-genai) skips.
        from rag.llm.packing import pack_linear_layers, use_gqa_sdpa

        use_gqa_sdpa(model)
        if self._int4 and converted:
            pack_linear_layers(model, Path(path))

    def _onnx_runtime(self, directory: Path, converted: bool) -> OnnxGenerator | None:
        """The onnxruntime-genai build (made on first use) of a converted model, or None.

        A build that fails leaves the model on transformers, with a warning: answers still work.
        """
        if not (self._onnx and converted and supported(directory)):
            return None
        try:
            return OnnxGenerator(
                ensure_onnx_model(directory, self._announce), cpu_threads(self._torch_threads)
            )
        except (ModelLoadError, OSError) as exc:
            log.warning("%s; generating with transformers instead.", exc)
            return None

    def _packaged_model(self, model: str) -> PackagedModel:
        name = model.removeprefix(PACKAGED_PREFIX)
        if name not in self._packaged:
            known = ", ".join(PACKAGED_PREFIX + n for n in sorted(self._packaged))
            raise ModelLoadError(f"Unknown packaged model '{model}'; known: {known}")
        return self._packaged[name]

    def _prepare(self, model: str, key: str) -> str:
        if model.startswith(PACKAGED_PREFIX):
            return str(ensure_packaged(self._packaged_model(model), self.cache_dir))
        if model.endswith(".gguf"):
            return str(ensure_gguf_file(Path(model).expanduser(), self.cache_dir))
        return key

def limit_torch_threads(requested: int | None) -> None:
    """Use `requested` intra-op threads, or at most one per CPU this process may run on."""
    import torch

    wanted = requested or min(torch.get_num_threads(), cpu_threads(None))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def cpu_threads(requested: int | None) -> int:
    """`requested`, or the number of CPUs this process may run on."""
    if requested:
        return requested
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer. A plain `tokenizers` one (what conversions from GGUF write) loads
    as `PreTrainedTokenizerFast` itself, which `AutoTokenizer` would pick too: AutoTokenizer's
    import costs torch's, several seconds of a cold start."""
    try:
        config = json.loads((Path(path) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if config.get("tokenizer_class") in _PLAIN_TOKENIZERS:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# The class names transformers gives a tokenizer that is a tokenizer.json and nothing more.
_PLAIN_TOKENIZERS = {"TokenizersBackend", "PreTrainedTokenizerFast"}


def eos_token_ids(path: str, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The ids that end generation: the generation config's, else the model config's, else the
    tokenizer's end-of-sequence token (the order transformers reads them in)."""
    for name in ("generation_config.json", "config.json"):
        try:
            eos = json.loads((Path(path) / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        if eos is not None:
            return frozenset(eos if isinstance(eos, list) else [eos])
    eos = tokenizer.eos_token_id
    return frozenset() if eos is None else frozenset([eos])


def plain_prompt(messages: Messages) -> str:
    """Render messages as text for a base model: one message verbatim, else a transcript."""
    if len(messages) == 1:
        return messages[0]["content"]
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"


def sampling_kwargs(
    max_tokens: int, temperature: float, pad_token_id: int | None
) -> dict[str, Any]:
    """`generate()` arguments for a token budget and temperature (0 means greedy)."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": pad_token_id}
    if temperature <= 0:
        return {**kwargs, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {**kwargs, "do_sample": True, "temperature": temperature}


class _Cancelled(Exception):
    """Raised inside `generate()` to stop it once nobody reads the output any more."""


_DONE = object()


class _QueueStreamer:
    """A `generate()` streamer that decodes new tokens and posts the text to an asyncio queue."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.ids: list[int] = []
        self._tokenizer = tokenizer
        self._loop = loop
        self._emitted = 0
        self._prompt_seen = False
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether the reader has gone away."""
        return self._cancel.is_set()

    def put(self, value: Any) -> None:
        """Receive tokens from `generate()` (the prompt first, then one step at a time)."""
        if self._cancel.is_set():
            raise _Cancelled
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.push(value.reshape(-1).tolist())

    def push(self, ids: list[int]) -> None:
        """Receive new token ids (raises `_Cancelled` once the reader has gone)."""
        if self._cancel.is_set():
            raise _Cancelled
        self.ids.extend(ids)
        self._emit(final=False)

    def end(self) -> None:
        """Flush text held back at the end of generation."""
        self._emit(final=True)

    def _emit(self, final: bool) -> None:
        text = cast(str, self._tokenizer.decode(self.ids, skip_special_tokens=True))
        # A trailing U+FFFD is half of a multi-byte character; wait for the rest of it.
        if text.endswith("\ufffd") and not final:
            return
        new, self._emitted = text[self._emitted :], len(text)
        if new:
            self.post(new)

    def cancel(self) -> None:
        """Stop generation at the next token."""
        self._cancel.set()

    def post(self, item: object) -> None:
        """Hand an item to the event loop's queue (thread-safe)."""
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody will read
            self._cancel.set()


class LocalChatModel:
    """A chat model running in this process through transformers."""

    def __init__(self, spec: ModelSpec, loader: ModelLoader) -> None:
        self.name = spec.name
        self.spec = spec
        self.loader = loader

    def loaded(self) -> LoadedModel:
        """The shared loaded model (blocks while it loads the first time)."""
        return self.loader.load(self.spec.model)

    async def load(self) -> LoadedModel:
        """Load the model in a worker thread; call at startup to keep the first answer fast."""
        return await asyncio.to_thread(self.loaded)

    @property
    def model(self) -> PreTrainedModel:
        """The underlying transformers model (for logits and attention demos)."""
        return self.loaded().model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The underlying tokenizer."""
        return self.loaded().tokenizer

    def count_tokens(self, text: str) -> int:
        """Exact token count of `text` under this model's tokenizer."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def encode(self, messages: Messages, tensors: str | None = "pt") -> Any:
        """The prompt's token ids (as torch tensors by default, as lists with `tensors=None`):
        the chat template for instruct models, plain text for base ones."""
        tokenizer = self.loaded().tokenizer
        if not self.spec.chat_template:
            return tokenizer(plain_prompt(messages), return_tensors=tensors)
        if not tokenizer.chat_template:
            raise ModelLoadError(
                f"Model '{self.name}' has no chat template; "
                "set chat_template: false for base models."
            )
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors=tensors
        )

    def stream(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield the answer piece by piece as the worker thread generates it."""
        return self._generate(messages, max_tokens, temperature, stop, GenerationStats())

    async def complete(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None = None,
    ) -> Completion:
        """Generate the whole answer; token counts are exact."""
        stats = GenerationStats()
        pieces = self._generate(messages, max_tokens, temperature, stop, stats)
        return await collect_completion(pieces, stats)

    async def aclose(self) -> None:
        """Nothing to release: the loader owns the weights."""

    async def _generate(
        self,
        messages: Messages,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None,
        stats: GenerationStats,
    ) -> AsyncGenerator[str, None]:
        loaded = await self.load()
        streamer = _QueueStreamer(loaded.tokenizer, asyncio.get_running_loop())
        worker = threading.Thread(
            target=self._run_generation,
            args=(loaded, messages, max_tokens, temperature, streamer, stats),
            name=f"generate-{self.name}",
            daemon=True,
        )
        worker.start()
        scanner = StopScanner(stop)
        try:
            while not scanner.stopped:
                item = await streamer.queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise _as_llm_error(self.name, item)
                if text := scanner.feed(str(item)):
                    yield text
            if not scanner.stopped and (tail := scanner.flush()):
                yield tail
        finally:
            # Whether finished, stopped by a stop string, or abandoned: the worker stops.
            streamer.cancel()
            stats.tokens_out = len(streamer.ids)
            if scanner.stopped:
                stats.finish_reason = "stop"

    def _run_generation(
        self,
        loaded: LoadedModel,
        messages: Messages,
        max_tokens: int,
        temperature: float,
        streamer: _QueueStreamer,
        stats: GenerationStats,
    ) -> None:
        try:
            with loaded.generate_lock:
                if streamer.cancelled:
                    return
                if loaded.onnx is not None:
                    # Lists of ids, not tensors: this path never imports torch.
                    ids = self.encode(messages, tensors=None)["input_ids"]
                    stats.tokens_in = len(ids)
                    self._check_fits(stats.tokens_in, max_tokens)
                    loaded.onnx.generate(
                        ids,
                        max_tokens=max_tokens,
                        temperature=temperature,
                        repetition_penalty=self.spec.repetition_penalty,
                        on_token=lambda token: streamer.push([token]),
                    )
                    streamer.end()
                else:
                    self._generate_with_transformers(loaded, messages, max_tokens, temperature,
                                                     streamer, stats)
                stats.finish_reason = _finish_reason(loaded, streamer.ids, max_tokens)
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the reader, which re-raises it
            streamer.post(exc)
        finally:
            streamer.post(_DONE)

    def _generate_with_transformers(
        self,
        loaded: LoadedModel,
        messages: Messages,
        max_tokens: int,
        temperature: float,
        streamer: _QueueStreamer,
        stats: GenerationStats,
    ) -> None:
        import torch

        inputs = self.encode(messages)
        stats.tokens_in = int(inputs["input_ids"].shape[-1])
        self._check_fits(stats.tokens_in, max_tokens)
        # nn.Module's __getattr__ hides generate() from type checkers.
        generate = cast("Callable[..., Any]", loaded.model.generate)
        kwargs = sampling_kwargs(max_tokens, temperature, _pad_id(loaded))
        if self.spec.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.spec.repetition_penalty
        # inference_mode (not just generate()'s own no_grad) also skips version counters.
        with torch.inference_mode():
            generate(**inputs, **kwargs, streamer=streamer)

    def _check_fits(self, tokens_in: int, max_tokens: int) -> None:
        if tokens_in + max_tokens > self.spec.context_window:
            raise PromptTooLong(
                f"Model '{self.name}': prompt of {tokens_in} tokens plus {max_tokens} new tokens "
                f"exceeds its context window of {self.spec.context_window}."
            )


def _pad_id(loaded: LoadedModel) -> int | None:
    pad = loaded.tokenizer.pad_token_id
    return pad if pad is not None else loaded.tokenizer.eos_token_id


def _finish_reason(loaded: LoadedModel, ids: list[int], max_tokens: int) -> str:
    if len(ids) >= max_tokens and (not ids or ids[-1] not in loaded.eos_ids):
        return "length"
    return "stop"


def _as_llm_error(name: str, exc: BaseException) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    error = LLMError(f"Local model '{name}' failed while generating: {exc!r}")
    error.__cause__ = exc
    return error
