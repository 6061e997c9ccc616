"""The in-process transformers backend, on the real packaged models."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import torch
from transformers import AutoModelForCausalLM

from rag.llm import onnx_generation
from rag.llm.base import ModelLoadError, PromptTooLong
from rag.llm.local import LocalChatModel, ModelLoader
from rag.llm.model_cache import MARKER, packaged_models
from rag.llm.onnx_generation import ONNX_DIR, PREFILL_CHUNK
from rag.llm.packing import Int4Linear
from rag.llm.settings import builtin_models
from tests.rag.llm.conftest import FirstLoad, offline_env

REPO = Path(__file__).resolve().parents[3]

ESSAY = [{"role": "user", "content": "Write a long essay about the history of dragons."}]


def gguf_unavailable(scratch: Path) -> Path:
    raise AssertionError("the GGUF file was asked for although the cache is complete")


def builder_unavailable(model_dir: Path, out_dir: Path) -> None:
    raise AssertionError("the ONNX model was built again although its build is cached")


def fp32_greedy(model: LocalChatModel, messages: list[dict[str, str]], tokens: int) -> list[int]:
    """A raw fp32 transformers `generate` of the model's converted checkpoint, greedy."""
    fp32 = AutoModelForCausalLM.from_pretrained(model.loaded().path, dtype=torch.float32)
    inputs = model.encode(messages)
    with torch.inference_mode():
        out = fp32.eval().generate(
            **inputs, max_new_tokens=tokens, do_sample=False, top_p=None, top_k=None,
            temperature=None, repetition_penalty=model.spec.repetition_penalty,
        )
    return cast(list[int], out[0, inputs["input_ids"].shape[-1] :].tolist())


def test_first_load_writes_cache_that_a_later_start_loads_without_the_gguf(
    first_load: FirstLoad, llm_cache_dir: Path
) -> None:
    cached = llm_cache_dir / "models" / "smollm2"
    assert (cached / "model.safetensors").is_file()
    assert (cached / MARKER).is_file()
    assert not list(cached.parent.glob(".tmp-smollm2-*")), "a temporary build was left behind"

    no_gguf = dataclasses.replace(packaged_models()["smollm2"], locate=gguf_unavailable)
    later_start = ModelLoader(llm_cache_dir, packaged={"smollm2": no_gguf})
    started = time.perf_counter()
    reloaded = later_start.load("packaged:smollm2")
    seconds = time.perf_counter() - started

    assert reloaded.path == str(cached)
    assert reloaded.model is not first_load.loader.load("packaged:smollm2").model
    assert seconds < first_load.seconds / 2, (seconds, first_load.seconds)


def test_loader_shares_one_model_between_chat_models(first_load: FirstLoad) -> None:
    a = LocalChatModel(builtin_models()["smollm2"], first_load.loader)
    b = LocalChatModel(builtin_models()["smollm2"], first_load.loader)
    assert a.model is b.model


@pytest.mark.asyncio
async def test_greedy_generation_is_deterministic(smollm2: LocalChatModel) -> None:
    first = await smollm2.complete(ESSAY, max_tokens=12, temperature=0)
    second = await smollm2.complete(ESSAY, max_tokens=12, temperature=0)
    assert first.text.strip()
    assert first.text == second.text


@pytest.mark.asyncio
async def test_max_tokens_is_honoured(smollm2: LocalChatModel) -> None:
    completion = await smollm2.complete(ESSAY, max_tokens=6, temperature=0.7)
    assert completion.tokens_out == 6
    assert completion.finish_reason == "length"
    assert 0 < smollm2.count_tokens(completion.text) <= 6
    assert completion.tokens_in == smollm2.encode(ESSAY)["input_ids"].shape[-1]


@pytest.mark.asyncio
async def test_stop_string_cuts_output(smollm2: LocalChatModel) -> None:
    full = (await smollm2.complete(ESSAY, max_tokens=16, temperature=0)).text
    words = full.split()
    assert len(words) >= 6, full
    stop = words[4]
    cut = await smollm2.complete(ESSAY, max_tokens=16, temperature=0, stop=[stop])
    assert cut.text == full[: full.index(stop)]
    assert stop not in cut.text


@pytest.mark.asyncio
async def test_stream_yields_several_pieces(smollm2: LocalChatModel) -> None:
    pieces = [p async for p in smollm2.stream(ESSAY, max_tokens=12, temperature=0)]
    assert len(pieces) >= 4, pieces
    assert all(pieces)
    full = await smollm2.complete(ESSAY, max_tokens=12, temperature=0)
    assert "".join(pieces) == full.text


@pytest.mark.asyncio
async def test_event_loop_is_not_blocked_while_generating(smollm2: LocalChatModel) -> None:
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    answer = await smollm2.complete(ESSAY, max_tokens=48, temperature=0)
    per_token = (time.perf_counter() - started) / answer.tokens_out
    done.set()
    await tick
    # The loop runs while tokens are computed (in the ONNX worker process, or on a torch
    # thread that releases the GIL), never once the whole generation is over.
    assert len(lags) >= max(3, answer.tokens_out / 2), f"the ticker ran {len(lags)} times"
    stalled = max(lags)
    assert stalled < 3 * per_token + 0.1, f"loop stalled {stalled:.2f}s ({per_token:.2f}s/token)"


@pytest.mark.asyncio
async def test_abandoned_stream_stops_generation(smollm2: LocalChatModel) -> None:
    # The whole answer first, to know how long generation runs when nobody stops it.
    started = time.monotonic()
    full = await smollm2.complete(ESSAY, max_tokens=512, temperature=0)
    whole_s = time.monotonic() - started
    assert full.tokens_out > 200, full
    lock = smollm2.loaded().generate_lock
    stream = smollm2.stream(ESSAY, max_tokens=512, temperature=0)
    async for _ in stream:
        break
    await stream.aclose()
    left = time.monotonic()
    while lock.locked() and time.monotonic() - left < whole_s:
        await asyncio.sleep(0.01)
    stopped_s = time.monotonic() - left
    assert stopped_s < whole_s / 4, f"generation ran {stopped_s:.2f}s after the reader left"


@pytest.mark.asyncio
async def test_prompt_longer_than_context_window_is_refused(first_load: FirstLoad) -> None:
    spec = builtin_models()["smollm2"].model_copy(update={"context_window": 32})
    model = LocalChatModel(spec, first_load.loader)
    with pytest.raises(PromptTooLong, match="context window of 32"):
        await model.complete(ESSAY, max_tokens=8, temperature=0)


@pytest.mark.asyncio
async def test_base_model_gemma3_loads_and_generates(gemma3: LocalChatModel) -> None:
    prompt = [{"role": "user", "content": "The three primary colours are"}]
    completion = await gemma3.complete(prompt, max_tokens=8, temperature=0)
    assert completion.text.strip()
    assert completion.tokens_out == 8
    assert completion.tokens_in == gemma3.count_tokens(prompt[0]["content"]) + 1  # + <bos>
    assert gemma3.loaded().onnx is None, "Gemma-3 stays on transformers"


@pytest.mark.asyncio
async def test_chat_template_on_a_base_model_is_a_clear_error(
    gemma3: LocalChatModel, first_load: FirstLoad
) -> None:
    spec = builtin_models()["gemma3-base"].model_copy(update={"chat_template": True})
    model = LocalChatModel(spec, first_load.loader)
    with pytest.raises(ModelLoadError, match="no chat template"):
        await model.complete(ESSAY, max_tokens=4, temperature=0)


def test_unknown_packaged_model_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="packaged:smollm2"):
        ModelLoader(tmp_path).load("packaged:nope")


def test_packed_layers_are_written_once_beside_the_converted_model(
    first_load: FirstLoad, llm_cache_dir: Path
) -> None:
    cached = llm_cache_dir / "models" / "smollm2"
    assert len(list(cached.glob("int4-torch-*.safetensors"))) == 1
    model = first_load.loader.load("packaged:smollm2").model
    assert sum(isinstance(m, Int4Linear) for m in model.modules()) == 30 * 7


@pytest.mark.asyncio
async def test_packed_model_gives_the_fp32_models_greedy_tokens(
    first_load: FirstLoad, llm_cache_dir: Path
) -> None:
    on_torch = LocalChatModel(builtin_models()["smollm2"], ModelLoader(llm_cache_dir, onnx=False))
    assert on_torch.loaded().onnx is None
    expected = on_torch.tokenizer.decode(fp32_greedy(on_torch, ESSAY, 24), skip_special_tokens=True)
    packed = await on_torch.complete(ESSAY, max_tokens=24, temperature=0)
    assert packed.text == expected


def test_onnx_model_is_built_once_beside_the_converted_model_and_reused(
    first_load: FirstLoad, llm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = llm_cache_dir / "models" / "smollm2"
    builds = list(cached.glob(ONNX_DIR.format(version="*")))
    assert len(builds) == 1, builds
    assert (builds[0] / MARKER).is_file()
    assert (builds[0] / "model.onnx").is_file()
    assert not list(cached.glob(".tmp-onnx-*")), "a temporary build was left behind"
    assert first_load.loader.load("packaged:smollm2").onnx is not None

    monkeypatch.setattr(onnx_generation, "run_builder", builder_unavailable)
    later = ModelLoader(llm_cache_dir).load("packaged:smollm2")
    assert later.onnx is not None
    assert later.onnx.directory == builds[0]


@pytest.mark.asyncio
async def test_onnx_greedy_answer_is_the_fp32_models(smollm2: LocalChatModel) -> None:
    assert smollm2.loaded().onnx is not None
    expected = fp32_greedy(smollm2, ESSAY, 24)
    done = await smollm2.complete(ESSAY, max_tokens=24, temperature=0)
    assert "dragon" in done.text.lower(), done.text
    assert done.text == smollm2.tokenizer.decode(expected, skip_special_tokens=True)


@pytest.mark.asyncio
async def test_event_loop_keeps_running_through_a_long_prompt(smollm2: LocalChatModel) -> None:
    long_prompt = [{"role": "user", "content": "Dragons breathe fire. " * 300 + "Why?"}]
    assert smollm2.count_tokens(long_prompt[0]["content"]) > 20 * PREFILL_CHUNK
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    await smollm2.complete(long_prompt, max_tokens=2, temperature=0)
    prefill_s = time.perf_counter() - started
    done.set()
    await tick
    # The runtime holds the GIL while it computes, in its worker process only: here the loop
    # ticks throughout (in-process, it ticked once per 64-token chunk, about a tenth of this).
    assert len(lags) > prefill_s / 0.01 / 3, f"{len(lags)} ticks in {prefill_s:.2f}s"
    assert max(lags) < prefill_s / 4, f"event loop stalled {max(lags):.2f}s of {prefill_s:.2f}s"


def onnx_greedy(chat: LocalChatModel, messages: list[dict[str, str]], n: int,
                on_token: Callable[[int], None] | None = None) -> list[int]:
    onnx = chat.loaded().onnx
    assert onnx is not None
    ids: list[int] = []

    def take(token: int) -> None:
        ids.append(token)
        if on_token is not None:
            on_token(token)

    onnx.generate(chat.encode(messages, tensors=None)["input_ids"], max_tokens=n,
                  temperature=0, repetition_penalty=1.0, on_token=take)
    return ids


class Enough(Exception):
    pass


def test_a_generation_stopped_by_its_reader_leaves_the_worker_ready(
    smollm2: LocalChatModel,
) -> None:
    expected = onnx_greedy(smollm2, ESSAY, 12)

    def stop_at_three(token: int) -> None:
        if len(seen) == 3:
            raise Enough
        seen.append(token)

    seen: list[int] = []
    with pytest.raises(Enough):
        onnx_greedy(smollm2, ESSAY, 12, on_token=stop_at_three)
    assert seen == expected[:3]
    assert onnx_greedy(smollm2, ESSAY, 12) == expected, "the stopped generation's tail leaked"


def test_a_worker_that_dies_fails_its_generation_and_the_next_starts_a_new_one(
    smollm2: LocalChatModel,
) -> None:
    onnx = smollm2.loaded().onnx
    assert onnx is not None
    expected = onnx_greedy(smollm2, ESSAY, 6)
    worker = onnx._process
    assert worker is not None

    def kill(token: int) -> None:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()

    with pytest.raises(onnx_generation.WorkerExited, match="exited"):
        onnx_greedy(smollm2, ESSAY, 200, on_token=kill)
    assert onnx_greedy(smollm2, ESSAY, 6) == expected
    assert onnx._process is not worker


def test_a_model_the_worker_cannot_load_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "genai_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="Cannot load the ONNX model"):
        onnx_generation.OnnxGenerator(tmp_path)


GENERATE_IN_A_FRESH_PROCESS = """
import asyncio, sys
from pathlib import Path
from rag.llm.local import LocalChatModel, ModelLoader
from rag.llm.settings import builtin_models
chat = LocalChatModel(builtin_models()["smollm2"], ModelLoader(Path(sys.argv[1])))
done = asyncio.run(chat.complete([{"role": "user", "content": "Say hi."}], max_tokens=4,
                                 temperature=0))
print(done.tokens_out, chat.loaded().model_loaded, "torch" in sys.modules)
"""


def test_generating_through_onnx_loads_neither_the_transformers_model_nor_torch(
    first_load: FirstLoad, llm_cache_dir: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", GENERATE_IN_A_FRESH_PROCESS, str(llm_cache_dir)],
        capture_output=True, text=True, timeout=300, env=offline_env(), cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["4", "False", "False"], done.stdout


def test_end_of_sequence_ids_are_the_models_own(smollm2: LocalChatModel) -> None:
    loaded = smollm2.loaded()
    eos = loaded.model.generation_config.eos_token_id
    assert loaded.eos_ids == frozenset(eos if isinstance(eos, list) else [eos])
    assert loaded.eos_ids
