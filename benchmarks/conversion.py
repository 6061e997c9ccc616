"""First-start model conversion: how long `export_packaged_model` takes to turn each packaged
GGUF into the safetensors cache, in a fresh process and a fresh cache directory each time.

Run: .venv/bin/python benchmarks/conversion.py [--baseline DIR] [--runs 1]

`--baseline DIR` also times another checkout (e.g. `git archive <commit> | tar -x -C DIR`),
alternating with this one, so that a busy machine weighs on both alike. Each row gives the
wall time and the first 16 hex digits of the converted `model.safetensors`'s SHA-256, so that
a faster conversion is seen to write the same weights.

Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = ("smollm2", "gemma3-270m")
EXPORT = (
    "import sys; from pathlib import Path; "
    "from rag.llm.model_cache import export_packaged_model; "
    "export_packaged_model(sys.argv[1], Path(sys.argv[2]))"
)


def convert_once(checkout: Path, model: str) -> tuple[float, str]:
    """Seconds to convert one packaged model in a fresh process, and its weights' digest."""
    env = dict(os.environ, PYTHONPATH=str(checkout), HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
               TRANSFORMERS_VERBOSITY="error")
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", EXPORT, model, cache], cwd=checkout, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        weights = next(Path(cache).rglob("model.safetensors"))
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    return seconds, digest


def main() -> None:
    """Time each model's conversion in each checkout and print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", type=Path, help="another checkout to time the same way")
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    checkouts = {"this checkout": REPO}
    if args.baseline:
        checkouts = {"baseline": args.baseline.resolve(), **checkouts}
    times: dict[tuple[str, str], list[float]] = {}
    digests: dict[tuple[str, str], set[str]] = {}
    for _ in range(args.runs):
        for model in MODELS:
            for label, checkout in checkouts.items():
                seconds, digest = convert_once(checkout, model)
                times.setdefault((model, label), []).append(seconds)
                digests.setdefault((model, label), set()).add(digest)
    print("| model | checkout | runs | median | weights (sha256) |")
    print("| --- | --- | --- | --- | --- |")
    for (model, label), values in times.items():
        print(f"| {model} | {label} | {len(values)} | {statistics.median(values):.1f} s | "
              f"{', '.join(sorted(digests[(model, label)]))} |")


if __name__ == "__main__":
    main()
