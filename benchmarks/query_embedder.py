"""The first query vector of a fresh process, three ways: sentence-transformers, transformers'
BertModel with mean pooling, and our BertEncoder (numpy, tokenizers and safetensors alone).

Run: .venv/bin/python benchmarks/query_embedder.py [--runs 5]

Each run starts a new Python process per way, in turn (so a busy machine weighs on all three
alike), and times its imports, the model load and the first query embedding; then, warm, the
embedding of 27 sentences of the course guides (an extractive answer's candidates are about
that many), and of 128 passages of about 1,200 characters cut from all the guides (what ingest
embeds: most reach the model's 256 tokens). Prints Markdown for docs/benchmarks.md, "Cold start".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.config import PACKAGED_EMBEDDER
from rag.index.embedder import resolve_embedder_path

REPO = Path(__file__).resolve().parent.parent

COMMON = """
import json, re, sys, time
began = time.perf_counter()
marks = {}
def mark(name):
    global began
    now = time.perf_counter(); marks[name] = now - began; began = now
path = sys.argv[1]
guide = open(sys.argv[2], encoding="utf-8").read()
sentences = [s for s in re.split(r"(?<=[.!?])\\s+", guide) if 40 < len(s) < 500][:27]
corpus = " ".join(open(p, encoding="utf-8", errors="replace").read()
                  for p in sorted(__import__("glob").glob(sys.argv[3] + "/*.md")))
corpus *= 1 + 1200 * 128 // max(len(corpus), 1)  # the guides again when they run out
passages = [corpus[i:i + 1200] for i in range(0, 1200 * 128, 1200)]
"""
WAYS = {
    "sentence-transformers": """
from sentence_transformers import SentenceTransformer
mark("import")
model = SentenceTransformer(path, device="cpu")
mark("load")
def embed(texts):
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
""",
    "transformers BertModel, mean pooling": """
import torch
from transformers import AutoModel, AutoTokenizer
mark("import")
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModel.from_pretrained(path).eval()
mark("load")
def embed(texts):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()
""",
    "BertEncoder (ours)": """
from rag.index.bert_encoder import BertEncoder
mark("import")
encoder = BertEncoder(path)
mark("load")
def embed(texts):
    return encoder.encode(texts)
""",
}
TIMED = """
embed(["What is PagedAttention?"])
mark("first query")
embed(sentences)
mark("27 sentences")
embed(passages)
mark("128 passages")
print(json.dumps(marks))
"""


def one_run(way: str, guide: Path) -> dict[str, float]:
    """Seconds per stage of one fresh process (after the interpreter's own start)."""
    code = COMMON + WAYS[way] + TIMED
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO)}
    model = resolve_embedder_path(PACKAGED_EMBEDDER)
    done = subprocess.run([sys.executable, "-c", code, model, str(guide), str(guide.parent)],
                          cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Time each way `--runs` times, interleaved, and print the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--guide", type=Path,
                        default=REPO.parent / "shared/course_materials/guides/llm-basics.md")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    for _ in range(args.runs):
        for way in WAYS:
            runs[way].append(one_run(way, args.guide))
    print(f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
          f"medians of {args.runs} runs.\n")
    print("| way | imports | load | first query | imports to first vector | 27 sentences, warm "
          "| 128 passages, warm |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for way, stages in runs.items():
        median = {k: statistics.median(r[k] for r in stages) for k in stages[0]}
        total = median["import"] + median["load"] + median["first query"]
        print(f"| {way} | {median['import']:.2f} s | {median['load']:.2f} s "
              f"| {median['first query']:.2f} s | {total:.2f} s | {median['27 sentences']:.2f} s "
              f"| {median['128 passages']:.2f} s |")


if __name__ == "__main__":
    main()
