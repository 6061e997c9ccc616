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

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.pipeline import Target, ingest  # noqa: E402
from rag.answering.assistant import Finished, Token  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.llm.local import sampling_kwargs  # noqa: E402
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


async def pipeline_run(services, question: str):  # type: ignore[no-untyped-def]
    """One answer through the whole pipeline, with the model's text as generated."""
    pieces: list[str] = []
    answer = None
    async for event in services.assistant.stream(question):
        if isinstance(event, Token):
            pieces.append(event.text)
        elif isinstance(event, Finished):
            answer = event.answer
    return answer, "".join(pieces)


def pipeline_seconds(answer) -> float:  # type: ignore[no-untyped-def]
    """Retrieval + prompt building + streamed generation, as the pipeline timed them."""
    t = answer.timings
    return (t["retrieve_ms"] + t["prompt_ms"] + t["generate_ms"]) / 1000


def raw_generate(services, answer) -> tuple[float, int, str]:  # type: ignore[no-untyped-def]
    """`model.generate` of the same prompt with the same decoding settings, timed.

    Greedy decoding is deterministic, so it produces the same tokens as the pipeline did and
    stops at the same place: no forced length, and the texts are compared to prove it.
    """
    chat = services.models.get()
    spec = services.settings.llm.models[chat.name]
    messages, _ = services.assistant._prompt(answer.question, answer.retrieved, [], chat)
    inputs = chat.encode(messages)
    kwargs = sampling_kwargs(services.settings.llm.max_new_tokens, 0.0, chat.tokenizer.eos_token_id)
    began = time.perf_counter()
    with torch.inference_mode():
        out = chat.model.generate(
            **inputs, **kwargs, repetition_penalty=spec.repetition_penalty
        )
    seconds = time.perf_counter() - began
    new = out[0, inputs["input_ids"].shape[-1] :]
    return seconds, len(new), chat.tokenizer.decode(new, skip_special_tokens=True)


async def measure(services, question: str) -> dict:  # type: ignore[no-untyped-def]
    """Pipeline and raw runs in A-B-B-A order, so neither always runs on a warmer machine."""
    first, text = await pipeline_run(services, question)
    if first.refused:
        return {"answer": first, "refused": True}
    raw1 = raw_generate(services, first)
    raw2 = raw_generate(services, first)
    second, _ = await pipeline_run(services, question)
    pipe = statistics.mean([pipeline_seconds(first), pipeline_seconds(second)])
    raw = statistics.mean([raw1[0], raw2[0]])
    return {
        "answer": first,
        "refused": False,
        "pipeline_s": pipe,
        "raw_s": raw,
        "tokens": raw1[1],
        "same_text": raw1[2].strip() == text.strip(),
    }


async def measure_all(services, questions: list[str]) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every question, after one warm-up answer."""
    await services.assistant.answer(questions[0])
    return [await measure(services, q) for q in questions]


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
    results = asyncio.run(measure_all(services, QUESTIONS))
    rows = [r for r in results if not r["refused"]]
    print(
        f"Machine: {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}; model "
        f"{rows[0]['answer'].model if rows else '-'} (greedy, max "
        f"{settings.llm.max_new_tokens} new tokens).\n"
    )
    print(
        "| question | retrieve | prompt | first token | pipeline (mean of 2) | tokens out "
        "| raw generate (mean of 2) | same tokens | overhead |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for r in rows:
        t = r["answer"].timings
        print(
            f"| {r['answer'].question[:48]} | {t['retrieve_ms']:.0f} ms | {t['prompt_ms']:.0f} ms "
            f"| {t['first_token_ms']:.0f} ms | {r['pipeline_s']:.2f} s | {r['tokens']} | "
            f"{r['raw_s']:.2f} s | {'yes' if r['same_text'] else 'NO'} | "
            f"{100 * (r['pipeline_s'] / r['raw_s'] - 1):+.1f}% |"
        )
    overheads = [r["pipeline_s"] / r["raw_s"] - 1 for r in rows]
    total = sum(r["pipeline_s"] for r in rows) / sum(r["raw_s"] for r in rows) - 1
    print(
        f"\nOverhead of the pipeline (retrieval + prompt + streamed generation) over a raw "
        f"`model.generate` of the same prompt and decoding: median "
        f"**{100 * statistics.median(overheads):+.1f}%**, over all questions' summed time "
        f"**{100 * total:+.1f}%** (target ≤ 10%)."
    )
    print(f"Refused by the gate: {len(results) - len(rows)} of {len(results)}.\n")
    print("| cold start, process start to first answer | seconds |\n| --- | --- |")
    print(f"| first run: GGUF → safetensors conversion, then answer | {first:.1f} |")
    print(f"| later runs: safetensors cache | {second:.1f} |")
    print("\nSample answer:\n")
    if rows:
        a = rows[0]["answer"]
        print(
            f"> **{a.question}**\n>\n> " + a.text.replace("\n", "\n> ") + "\n>\n> Sources: "
            + "; ".join(f"[{c.number}] {c.source} p.{c.page}" for c in a.citations)
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
