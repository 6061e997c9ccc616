"""Local generation speed: a raw fp32 `generate` against the local backend as shipped.

Run: .venv/bin/python benchmarks/local_generation.py ../shared/course_materials [--questions 4]

Both sides answer the same prompts: the system prompt, up to five passages our BM25 finds for
a dev question (trimmed to the context window as the assistant trims them) and the question,
about 1,700 tokens. Greedy decoding with the packaged SmolLM2's repetition penalty.

- A: `AutoModelForCausalLM.from_pretrained(<converted model>)` in fp32, `model.generate`.
- B: the model as `ModelLoader` loads it (int4 layers, GQA attention; rag/llm/packing.py),
  answering through `LocalChatModel.complete`, the path every answer and demo takes.

Each question runs A, B, B, A, so neither side always runs on a warmer or quieter machine;
prefill is the time to the first new token, decode the tokens after it over the time after it.
Then the quality check: every in-scope dev question answered once by each side, comparing
tokens and what the grounding checker says of the sentences.

Prints Markdown for docs/benchmarks.md; every figure is from this one run.
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

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from ingest.pipeline import Target, build_chunks, pipeline_id, scan  # noqa: E402
from rag.answering.prompting import build_messages, context_blocks  # noqa: E402
from rag.config import IngestSettings  # noqa: E402
from rag.index.documents import Hit  # noqa: E402
from rag.llm.local import LocalChatModel, ModelLoader, limit_torch_threads  # noqa: E402
from rag.llm.settings import LLMSettings  # noqa: E402
from rag.retrieval.lexical import BM25Index  # noqa: E402
from rag.retrieval.query import analyse  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EVAL = REPO.parent / "shared" / "eval"


class FirstTokenTimer:
    """A `generate()` streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self._calls = 0

    def put(self, value: Any) -> None:
        """The prompt comes first, then one call per new token."""
        self._calls += 1
        if self._calls == 2:
            self.first = time.perf_counter() - self.started

    def end(self) -> None:
        """Nothing to flush."""


def dev_prompts(root: Path, chat: LocalChatModel, llm: LLMSettings) -> list[list[dict]]:
    """The messages the assistant would send for each in-scope dev question."""
    settings = IngestSettings()
    files, _ = scan([Target(root)], settings, pipeline_id(settings, "x"))
    chunks = {c.id: c for f in files for c in build_chunks(f, settings)}
    bm25 = BM25Index(list(chunks), [c.text for c in chunks.values()])
    spec = llm.models[chat.name]
    out = []
    for line in (EVAL / "dev_questions.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        if q["kind"] != "in":
            continue
        terms = analyse(q["question"], bm25).terms
        hits = [Hit(chunks[cid], s) for cid, s in bm25.search(terms, 5)]
        fixed = build_messages(q["question"], "")
        overhead = sum(chat.count_tokens(m["content"]) + 8 for m in fixed)
        budget = spec.context_window - llm.max_new_tokens - overhead - 16
        context, _ = context_blocks(hits, budget, chat.count_tokens)
        out.append(build_messages(q["question"], context))
    return out


def run_raw(model: Any, chat: LocalChatModel, messages: list[dict], n: int) -> dict:
    """A: fp32 `generate` of the same prompt; seconds, first-token time and new token ids."""
    inputs = chat.encode(messages)
    timer = FirstTokenTimer()
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=n, do_sample=False, temperature=None, top_p=None,
            top_k=None, pad_token_id=chat.tokenizer.eos_token_id,
            repetition_penalty=chat.spec.repetition_penalty, streamer=timer,
        )
    total = time.perf_counter() - timer.started
    ids = out[0, inputs["input_ids"].shape[-1] :].tolist()
    n_in = int(inputs["input_ids"].shape[-1])
    return {"s": total, "first": timer.first or total, "ids": ids, "n_in": n_in}


def run_backend(chat: LocalChatModel, messages: list[dict], n: int) -> dict:
    """B: the local backend's `complete`, greedy."""
    began = time.perf_counter()
    done = asyncio.run(chat.complete(messages, max_tokens=n, temperature=0.0))
    total = time.perf_counter() - began
    ids = chat.tokenizer.encode(done.text, add_special_tokens=False)
    return {"s": total, "first": done.time_to_first_token_s or total, "ids": ids,
            "n": done.tokens_out, "text": done.text}


def decode_rate(run: dict, tokens: int) -> float:
    """Tokens per second after the first one."""
    return (tokens - 1) / max(run["s"] - run["first"], 1e-9)


def speed(raw_model: Any, chat: LocalChatModel, prompts: list[list[dict]], n: int) -> list[dict]:
    """A, B, B, A per prompt; each side's prefill and decode rate, averaged over its two runs."""
    rows = []
    for messages in prompts:
        a1 = run_raw(raw_model, chat, messages, n)
        b1 = run_backend(chat, messages, n)
        b2 = run_backend(chat, messages, n)
        a2 = run_raw(raw_model, chat, messages, n)
        rows.append({
            "n_in": a1["n_in"],
            "tokens": len(a1["ids"]),
            "a_prefill": statistics.mean([a1["first"], a2["first"]]),
            "b_prefill": statistics.mean([b1["first"], b2["first"]]),
            "a_decode": statistics.mean([decode_rate(a, len(a["ids"])) for a in (a1, a2)]),
            "b_decode": statistics.mean([decode_rate(b, b["n"]) for b in (b1, b2)]),
            "same": chat.tokenizer.decode(a1["ids"], skip_special_tokens=True).strip()
            == b1["text"].strip(),
        })
    return rows


def print_speed(rows: list[dict], n: int) -> None:
    """The side-by-side table and the ratios."""
    print(
        f"\n| prompt tokens | new tokens (max {n}) | prefill A | prefill B | decode A | decode B "
        "| decode B/A | same text |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for r in rows:
        print(
            f"| {r['n_in']} | {r['tokens']} | {r['a_prefill']:.2f} s | {r['b_prefill']:.2f} s "
            f"| {r['a_decode']:.1f} tok/s | {r['b_decode']:.1f} tok/s "
            f"| **{r['b_decode'] / r['a_decode']:.2f}×** | {'yes' if r['same'] else 'no'} |"
        )
    ratios = [r["b_decode"] / r["a_decode"] for r in rows]
    prefill = [r["a_prefill"] / r["b_prefill"] for r in rows]
    print(
        f"\nDecode speed-up B/A: median **{statistics.median(ratios):.2f}×** "
        f"(range {min(ratios):.2f}–{max(ratios):.2f}); prefill speed-up A/B: median "
        f"{statistics.median(prefill):.2f}× (range {min(prefill):.2f}–{max(prefill):.2f})."
    )


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two generations share."""
    pairs = zip(a, b, strict=False)
    return next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))


def agreement(raw_model: Any, chat: LocalChatModel, prompts: list[list[dict]], n: int) -> None:
    """Greedy tokens of A and B on every prompt: identical answers and shared prefixes."""
    pairs = []
    for messages in prompts:
        raw = run_raw(raw_model, chat, messages, n)["ids"]
        # Both as text re-encoded, as B's tokens are: the same text gives the same ids.
        text = chat.tokenizer.decode(raw, skip_special_tokens=True)
        pairs.append((chat.tokenizer.encode(text, add_special_tokens=False),
                      run_backend(chat, messages, n)["ids"]))
    same = sum(a == b for a, b in pairs)
    differ = [shared_prefix(a, b) for a, b in pairs if a != b]
    print(
        f"\nGreedy agreement over {len(prompts)} dev prompts (up to {n} new tokens): "
        f"**{same}/{len(prompts)}** answers token-for-token identical"
        + (f"; the others share their first {sorted(differ)} tokens." if differ else ".")
    )


def main() -> None:
    """Load both sides, measure, print the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("materials", type=Path)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--agreement-tokens", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="sa-gen-"))
    llm = LLMSettings()
    loader = ModelLoader(cache, int4=llm.int4_kernels)
    chat = LocalChatModel(llm.models["smollm2"], loader)
    began = time.perf_counter()
    loaded = chat.loaded()
    load_s = time.perf_counter() - began
    limit_torch_threads(None)
    raw_model = AutoModelForCausalLM.from_pretrained(loaded.path, dtype=torch.float32).eval()
    prompts = dev_prompts(args.materials.resolve(), chat, llm)
    print(
        f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, Python "
        f"{platform.python_version()}. B's first load (conversion and packing if not cached): "
        f"{load_s:.1f} s."
    )
    run_backend(chat, prompts[0], 4)
    run_raw(raw_model, chat, prompts[0], 4)
    print_speed(speed(raw_model, chat, prompts[: args.questions], args.max_new_tokens),
                args.max_new_tokens)
    if args.agreement_tokens:
        agreement(raw_model, chat, prompts, args.agreement_tokens)
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    main()
