"""How long the event loop stalls while the packaged model generates an answer.

Run: .venv/bin/python benchmarks/loop_lag.py ../shared/course_materials [--questions 4]
     [--max-new-tokens 64] [--cache-dir DIR]

onnxruntime-genai holds the GIL while it computes. The bot runs it in a worker process
(rag/llm/onnx_worker.py); before, it ran on a thread of the bot's process, and every prefill
chunk and decode step stalled the event loop. Both ways answer the same prompts (the
assistant's messages for in-scope dev questions, as benchmarks/local_generation.py builds
them), alternating W, T, T, W per question, while a task on the event loop sleeps 5 ms at a
time and notes how late it wakes:

- W: `LocalChatModel.complete`, the worker process (what answers use);
- T: the same ONNX build loaded in this process and run on a thread, 64-token prefill chunks
  and one step per token, as `OnnxGenerator` did before the worker.

Reports the ticks' lateness (p50, p95, p99, max) and the seconds per answer. Prints Markdown
for docs/benchmarks.md; every figure is from this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

from local_generation import dev_prompts  # noqa: E402

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.llm.local import LocalChatModel, ModelLoader, cpu_threads  # noqa: E402
from rag.llm.onnx_generation import PREFILL_CHUNK, search_options  # noqa: E402
from rag.llm.settings import LLMSettings  # noqa: E402

TICK_S = 0.005


def thread_generate(model: Any, prompt: list[int], n: int, penalty: float) -> None:
    """The ONNX generation loop as it ran on a thread of the bot's process."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(**search_options(len(prompt) + n, 0.0, penalty))
    generator = og.Generator(model, params)
    for start in range(0, len(prompt), PREFILL_CHUNK):
        generator.append_tokens(prompt[start : start + PREFILL_CHUNK])
    while not generator.is_done():
        generator.generate_next_token()
        generator.get_next_tokens()


async def with_ticks(work: Any) -> tuple[float, list[float]]:
    """Run `work` (a coroutine) while a ticker on the loop records how late each tick is."""
    late: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            late.append(time.perf_counter() - before - TICK_S)

    tick = asyncio.create_task(ticker())
    began = time.perf_counter()
    await work
    seconds = time.perf_counter() - began
    done.set()
    await tick
    return seconds, late


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    """Load both ways, alternate them over the prompts, print the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("materials", type=Path)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="sa-lag-"))
    llm = LLMSettings()
    chat = LocalChatModel(llm.models["smollm2"], ModelLoader(cache))
    worker = chat.loaded().onnx
    assert worker is not None, "no ONNX runtime: nothing to compare"
    import onnxruntime_genai as og

    config = og.Config(str(worker.directory))
    # The threads the worker is given (rag/llm/local.py).
    threads = {"session_options": {"intra_op_num_threads": cpu_threads(None)}}
    config.overlay(json.dumps({"model": {"decoder": threads}}))
    in_process = og.Model(config)
    prompts = dev_prompts(args.materials, chat, llm)[: args.questions]
    n, penalty = args.max_new_tokens, chat.spec.repetition_penalty
    late: dict[str, list[float]] = {"W": [], "T": []}
    seconds: dict[str, list[float]] = {"W": [], "T": []}

    async def run(side: str, messages: list[dict]) -> None:
        if side == "W":
            work = chat.complete(messages, max_tokens=n, temperature=0.0)
        else:
            ids = chat.encode(messages, tensors=None)["input_ids"]
            work = asyncio.to_thread(thread_generate, in_process, ids, n, penalty)
        s, ticks = await with_ticks(work)
        seconds[side].append(s)
        late[side].extend(ticks)

    async def all_runs() -> None:
        await run("W", prompts[0])  # warm both
        await run("T", prompts[0])
        for key in late:
            late[key].clear()
            seconds[key].clear()
        for messages in prompts:
            for side in ("W", "T", "T", "W"):
                await run(side, messages)

    asyncio.run(all_runs())
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores; {len(prompts)} prompts, "
          f"{n} new tokens each, every prompt twice per side; ticks every {TICK_S * 1000:.0f} "
          "ms\n")
    print("| side | ticks | lateness p50 | p95 | p99 | max | seconds per answer (mean) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    names = {"W": "worker process (now)", "T": "thread in the bot's process (before)"}
    for side in ("T", "W"):
        ticks = late[side]
        print(f"| {names[side]} | {len(ticks)} | {quantile(ticks, 0.5) * 1000:.1f} ms | "
              f"{quantile(ticks, 0.95) * 1000:.1f} ms | {quantile(ticks, 0.99) * 1000:.1f} ms | "
              f"{max(ticks) * 1000:.1f} ms | {statistics.mean(seconds[side]):.2f} s |")


if __name__ == "__main__":
    main()
