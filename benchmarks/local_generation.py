"""Local generation speed: a raw fp32 `generate` against the local backend's two runtimes.

Run: .venv/bin/python benchmarks/local_generation.py ../shared/course_materials [--questions 4]
     [--max-new-tokens 128] [--agreement-tokens 64] [--agreement-questions N] [--cache-dir DIR]
     [--threads N]

Both sides answer the same prompts: the system prompt, up to five passages our BM25 finds for
a dev question (trimmed to the context window as the assistant trims them) and the question,
about 1,700 tokens. Greedy decoding with the packaged SmolLM2's repetition penalty.

- A: `AutoModelForCausalLM.from_pretrained(<converted model>)` in fp32, `model.generate`.
- B: the model as `ModelLoader(onnx=False)` loads it (int4 layers, GQA attention;
  rag/llm/packing.py), answering through `LocalChatModel.complete`.
- C: the model as `ModelLoader` loads it by default: text from the fp32 onnxruntime-genai build
  (rag/llm/onnx_generation.py), through the same `LocalChatModel.complete`, the path every
  answer and demo that generates text takes.

Each question runs A, B, C, C, B, A, so no side always runs on a warmer or quieter machine;
prefill is the time to the first new token, decode the tokens after it over the time after it.
Then the agreement check: every in-scope dev question answered once by each side, comparing
B's and C's greedy tokens with A's.

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

import sys  # noqa: E402

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.pipeline import Target, build_chunks, pipeline_id, scan  # noqa: E402
from rag.answering.prompting import build_messages, context_blocks  # noqa: E402
from rag.config import IngestSettings  # noqa: E402
from rag.index.documents import Hit  # noqa: E402
from rag.llm.local import LocalChatModel, ModelLoader, limit_torch_threads  # noqa: E402
from rag.llm.onnx_generation import runtime_version  # noqa: E402
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
    """B or C: the local backend's `complete`, greedy."""
    began = time.perf_counter()
    done = asyncio.run(chat.complete(messages, max_tokens=n, temperature=0.0))
    total = time.perf_counter() - began
    ids = chat.tokenizer.encode(done.text, add_special_tokens=False)
    return {"s": total, "first": done.time_to_first_token_s or total, "ids": ids,
            "n": done.tokens_out, "text": done.text}


def decode_rate(run: dict, tokens: int) -> float:
    """Tokens per second after the first one."""
    return (tokens - 1) / max(run["s"] - run["first"], 1e-9)


def same_text(chat: LocalChatModel, raw: dict, backend: dict) -> bool:
    """Whether a backend run wrote what the raw run wrote."""
    text = chat.tokenizer.decode(raw["ids"], skip_special_tokens=True)
    return bool(text.strip() == backend["text"].strip())


def speed(raw_model: Any, sides: dict[str, LocalChatModel], prompts: list[list[dict]],
          n: int) -> list[dict]:
    """A, B, C, C, B, A per prompt; each side's prefill and decode rate over its two runs."""
    rows = []
    for messages in prompts:
        chat = sides["B"]
        a1 = run_raw(raw_model, chat, messages, n)
        firsts = {k: run_backend(side, messages, n) for k, side in sides.items()}
        seconds = {k: run_backend(side, messages, n) for k, side in reversed(sides.items())}
        a2 = run_raw(raw_model, chat, messages, n)
        row = {
            "n_in": a1["n_in"],
            "tokens": len(a1["ids"]),
            "A_prefill": statistics.mean([a1["first"], a2["first"]]),
            "A_decode": statistics.mean([decode_rate(a, len(a["ids"])) for a in (a1, a2)]),
        }
        for k in sides:
            runs = (firsts[k], seconds[k])
            row[f"{k}_prefill"] = statistics.mean([r["first"] for r in runs])
            row[f"{k}_decode"] = statistics.mean([decode_rate(r, r["n"]) for r in runs])
            row[f"{k}_same"] = same_text(chat, a1, firsts[k])
        rows.append(row)
    return rows


def print_speed(rows: list[dict], n: int, sides: list[str]) -> None:
    """The side-by-side table and the ratios."""
    head = ["prompt tokens", f"new tokens (max {n})", "prefill A"]
    head += [f"prefill {k}" for k in sides] + ["decode A"] + [f"decode {k}" for k in sides]
    head += [f"decode {k}/A" for k in sides] + [f"same text {k}" for k in sides]
    print("\n| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for r in rows:
        cells = [str(r["n_in"]), str(r["tokens"]), f"{r['A_prefill']:.2f} s"]
        cells += [f"{r[k + '_prefill']:.2f} s" for k in sides] + [f"{r['A_decode']:.1f} tok/s"]
        cells += [f"{r[k + '_decode']:.1f} tok/s" for k in sides]
        cells += [f"**{r[k + '_decode'] / r['A_decode']:.2f}×**" for k in sides]
        cells += ["yes" if r[k + "_same"] else "no" for k in sides]
        print("| " + " | ".join(cells) + " |")
    for k in sides:
        ratios = [r[f"{k}_decode"] / r["A_decode"] for r in rows]
        prefill = [r["A_prefill"] / r[f"{k}_prefill"] for r in rows]
        print(
            f"\nDecode speed-up {k}/A: median **{statistics.median(ratios):.2f}×** "
            f"(range {min(ratios):.2f}–{max(ratios):.2f}); prefill speed-up A/{k}: median "
            f"{statistics.median(prefill):.2f}× (range {min(prefill):.2f}–{max(prefill):.2f})."
        )


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two generations share."""
    pairs = zip(a, b, strict=False)
    return next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))


def agreement(raw_model: Any, sides: dict[str, LocalChatModel], prompts: list[list[dict]],
              n: int) -> None:
    """Greedy tokens of A and of each side on every prompt: identical answers, shared prefixes."""
    pairs: dict[str, list[tuple[list[int], list[int]]]] = {k: [] for k in sides}
    for messages in prompts:
        chat = sides["B"]
        raw = run_raw(raw_model, chat, messages, n)["ids"]
        # Both as text re-encoded, as the sides' tokens are: the same text gives the same ids.
        text = chat.tokenizer.decode(raw, skip_special_tokens=True)
        expected = chat.tokenizer.encode(text, add_special_tokens=False)
        for k, side in sides.items():
            pairs[k].append((expected, run_backend(side, messages, n)["ids"]))
    for k, found in pairs.items():
        same = sum(a == b for a, b in found)
        differ = [shared_prefix(a, b) for a, b in found if a != b]
        print(
            f"\nGreedy agreement of {k} with A over {len(prompts)} dev prompts (up to {n} new "
            f"tokens): **{same}/{len(prompts)}** answers token-for-token identical"
            + (f"; the others share their first {sorted(differ)} tokens." if differ else ".")
        )


def main() -> None:
    """Load both sides, measure, print the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("materials", type=Path)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--agreement-tokens", type=int, default=64)
    parser.add_argument("--agreement-questions", type=int, default=None)
    # One thread per side measures per-core speed, which a busy machine disturbs far less
    # than two threads that wait on each other at every step.
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="sa-gen-"))
    llm = LLMSettings()
    spec = llm.models["smollm2"]
    sides = {
        "B": LocalChatModel(spec, ModelLoader(cache, torch_threads=args.threads,
                                              int4=llm.int4_kernels, onnx=False)),
        "C": LocalChatModel(spec, ModelLoader(cache, torch_threads=args.threads,
                                              int4=llm.int4_kernels)),
    }
    load_s = {}
    for k, side in sides.items():
        began = time.perf_counter()
        side.loaded()
        load_s[k] = time.perf_counter() - began
    assert sides["C"].loaded().onnx is not None, "C did not get the ONNX runtime"
    limit_torch_threads(args.threads)
    path = sides["B"].loaded().path
    raw_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = dev_prompts(args.materials.resolve(), sides["B"], llm)
    print(
        f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads (C too), onnxruntime-genai "
        f"{runtime_version()}, Python {platform.python_version()}. First loads (conversion, "
        f"packing, ONNX build when not cached): B {load_s['B']:.1f} s, then C {load_s['C']:.1f} s."
    )
    for side in sides.values():
        run_backend(side, prompts[0], 4)
    run_raw(raw_model, sides["B"], prompts[0], 4)
    rows = speed(raw_model, sides, prompts[: args.questions], args.max_new_tokens)
    print_speed(rows, args.max_new_tokens, list(sides))
    if args.agreement_tokens:
        agreement(raw_model, sides, prompts[: args.agreement_questions], args.agreement_tokens)
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    main()
