"""Answer benchmark: time to first token, the split of an answer's time, the pipeline's overhead
over a raw `model.generate`, and cold start before and after the safetensors cache.

Run: .venv/bin/python benchmarks/answer.py ../shared/course_materials

Prints a Markdown report for docs/benchmarks.md. Every figure comes from this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from ingest.pipeline import Target, ingest  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.services import build_services  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "What is PagedAttention?",
    "What is LoRA and why does it matter?",
    "What does alignment with DPO or PPO do to a model?",
    "What is in-context learning?",
    "What optimizer and learning rate schedule did the original Transformer use?",
]


def cold_start(data_dir: Path, question: str) -> float:
    """Wall time of `study-assistant ask` in a fresh process, from start to answer."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rag", "ask", question, "--json", "--data-dir", str(data_dir)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - began


async def answers(services, questions: list[str]) -> list:  # type: ignore[no-untyped-def]
    """Answer each question once (after one warm-up answer)."""
    await services.assistant.answer(questions[0])
    return [await services.assistant.answer(q) for q in questions]


def raw_generate(services, answer) -> float:  # type: ignore[no-untyped-def]
    """`model.generate` of the same prompt and number of new tokens, greedy, timed."""
    chat = services.models.get()
    spec = services.settings.llm.models[chat.name]
    messages, _ = services.assistant._prompt(answer.question, answer.retrieved, [], chat)
    inputs = chat.encode(messages)
    new_tokens = len(chat.tokenizer(answer.text).input_ids)
    began = time.perf_counter()
    with torch.inference_mode():
        chat.model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            repetition_penalty=spec.repetition_penalty,
            pad_token_id=chat.tokenizer.eos_token_id,
        )
    return time.perf_counter() - began


def main() -> None:
    """Run the measurements and print the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("materials", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sa-answer-"))
    settings = Settings(data_dir=work / "data")
    settings.llm.temperature = 0.0
    services = build_services(settings)
    ingest([Target(args.materials.resolve())], services.store, services.embedder, settings.ingest)

    first = cold_start(settings.data_dir, QUESTIONS[0])
    second = cold_start(settings.data_dir, QUESTIONS[0])
    results = asyncio.run(answers(services, QUESTIONS))
    answered = [a for a in results if not a.refused]
    rows = []
    for a in answered:
        raw = raw_generate(services, a)
        pipeline = a.timings["retrieve_ms"] + a.timings["prompt_ms"] + a.timings["generate_ms"]
        rows.append((a, raw, pipeline / 1000))
    print(
        f"Machine: {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}; model "
        f"{answered[0].model if answered else '-'} (greedy, max {settings.llm.max_new_tokens} "
        f"new tokens).\n"
    )
    print(
        "| question | retrieve | prompt | first token | generate | tokens out | raw generate "
        "| overhead |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for a, raw, pipe in rows:
        t = a.timings
        tokens = len(services.models.get().tokenizer(a.text).input_ids)
        print(
            f"| {a.question[:48]} | {t['retrieve_ms']:.0f} ms | {t['prompt_ms']:.0f} ms | "
            f"{t['first_token_ms']:.0f} ms | {t['generate_ms'] / 1000:.2f} s | {tokens} | "
            f"{raw:.2f} s | {100 * (pipe / raw - 1):+.1f}% |"
        )
    overheads = [pipe / raw - 1 for _, raw, pipe in rows]
    print(
        f"\nMedian overhead of the pipeline (retrieval + prompt + streamed generation) over a "
        f"raw `model.generate` of the same prompt and length: "
        f"**{100 * statistics.median(overheads):+.1f}%** (target ≤ 10%)."
    )
    print(f"Refused by the gate: {len(results) - len(answered)} of {len(results)}.\n")
    print("| cold start, process start to first answer | seconds |\n| --- | --- |")
    print(f"| first run: GGUF → safetensors conversion, then answer | {first:.1f} |")
    print(f"| later runs: safetensors cache | {second:.1f} |")
    print("\nSample answer:\n")
    if answered:
        a = answered[0]
        print(
            f"> **{a.question}**\n>\n> {a.text}\n>\n> Sources: "
            + "; ".join(f"[{c.number}] {c.source} p.{c.page}" for c in a.citations)
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
