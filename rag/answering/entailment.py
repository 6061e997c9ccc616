"""An entailment judge: how likely a passage's sentence states what a claim says.

The judges are cross-encoders built on the packaged all-MiniLM-L6-v2: the passage's words and
the claim's are read together (`[CLS] passage [SEP] claim [SEP]`, at most 128 tokens, the
longer side cut first), and a small head on the `[CLS]` state gives P(entailed), P(neutral)
and P(contradicted). What each judge adds to the embedder is small and ships in this package
(`judges/*.safetensors`, about 2.4 MB each): low-rank updates of the upper encoder layers
(merged into their weights at load), those layers' norms, and the head. Two judges, trained on
two halves of the written training sentences, are averaged. `benchmarks/train_judge.py` trains
them and docs/grounding.md says on what.

It runs on `BertEncoder` (numpy), like the embedder, so nothing imports torch; the layers the
judges leave unchanged run once for both.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer

from rag.config import PACKAGED_EMBEDDER
from rag.index.bert_encoder import BertEncoder, length_groups
from rag.index.embedder import resolve_embedder_path

JUDGES_DIR = Path(__file__).resolve().parent / "judges"
PACKAGED_JUDGES = ("judge_a.safetensors", "judge_b.safetensors")
LABELS = ("entailed", "neutral", "contradicted")
# How many tokens of a pair a judge reads when its file does not say.
DEFAULT_MAX_LENGTH = 128
_HEAD = ("head.dense.weight", "head.dense.bias", "head.out.weight", "head.out.bias")


class JudgeError(RuntimeError):
    """A judge file that cannot be read, or that does not fit the encoder it is loaded on."""


class _Judge:
    """One cross-encoder: the encoder with its merged layers, and its head."""

    def __init__(self, encoder: BertEncoder, first: int, head: list[np.ndarray],
                 max_length: int) -> None:
        self.encoder = encoder
        self.first = first
        self.max_length = max_length
        self.dense, self.dense_bias, self.out, self.out_bias = head

    def probabilities(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """P(entailed, neutral, contradicted) per row, from the states before layer `first`."""
        states = self.encoder.run_layers(x, mask, range(self.first, self.encoder.layers))
        hidden = np.tanh(states[:, 0] @ self.dense + self.dense_bias)
        logits = hidden @ self.out + self.out_bias
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(-1, keepdims=True)


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not path.is_file():
        raise JudgeError(f"The entailment judge {path} is missing: reinstall the package "
                         "(`make install`).")
    try:
        with safe_open(str(path), "np") as f:
            # safe_open is not iterable; keys() is its API.
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except (OSError, ValueError, SafetensorError) as exc:
        raise JudgeError(f"Cannot read the entailment judge {path}: {exc}") from exc


def load_judge(base: BertEncoder, path: Path) -> _Judge:
    """A judge file on the encoder it was trained on: each `NAME.lora_a` (r, in) and
    `NAME.lora_b` (out, r) pair adds `scale * b @ a` to the dense weight NAME; layer norms
    replace the encoder's; `head.*` is the classifier (torch's (out, in) layout)."""
    tensors, meta = _read(path)
    try:
        scale = float(meta["lora_scale"])
        labels = tuple(meta["labels"].split(","))
        max_length = int(meta.get("max_length", DEFAULT_MAX_LENGTH))
    except (KeyError, ValueError) as exc:
        raise JudgeError(f"{path} does not say its scale and labels: {exc}") from exc
    if labels != LABELS or any(k not in tensors for k in _HEAD):
        raise JudgeError(f"{path} is not a three-way entailment judge (labels {labels}).")
    changes: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        if key.startswith("head."):
            continue
        if key.endswith((".lora_a", ".lora_b")):
            stem = key.rsplit(".", 1)[0]
            if key.endswith(".lora_b"):
                if f"{stem}.lora_a" not in tensors:
                    raise JudgeError(f"{path}: {key} has no {stem}.lora_a.")
                continue
            if f"{stem}.lora_b" not in tensors:
                raise JudgeError(f"{path}: {key} has no {stem}.lora_b.")
            name = f"{stem}.weight"
            a, b = value.astype(np.float32), tensors[f"{stem}.lora_b"].astype(np.float32)
            weight = base.weights.get(name)
            if weight is None or a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] \
                    or weight.shape != (a.shape[1], b.shape[0]):
                raise JudgeError(f"{path}: {key} does not fit the encoder's {name}.")
            # The encoder keeps dense weights as (in, out).
            changes[name] = weight + np.float32(scale) * (b @ a).T
        else:
            if key not in base.weights or base.weights[key].shape != value.shape:
                raise JudgeError(f"{path}: {key} does not fit the encoder.")
            changes[key] = value.astype(np.float32)
    layers = {int(k.split(".")[2]) for k in changes if k.startswith("encoder.layer.")}
    first = min(layers, default=base.layers)
    head = [tensors[k].astype(np.float32) for k in _HEAD]
    head[0], head[2] = np.ascontiguousarray(head[0].T), np.ascontiguousarray(head[2].T)
    return _Judge(base.with_weights(changes), first, head, max_length)


class EntailmentJudge:
    """P(entailed) of (premise, hypothesis) pairs, averaged over one or more judges that share
    one base encoder; safe to share between threads."""

    def __init__(self, base: BertEncoder, paths: Sequence[Path]) -> None:
        if not paths:
            raise ValueError("an entailment judge needs at least one judge file")
        self.base = base
        self.judges = [load_judge(base, Path(p)) for p in paths]
        # The layers no judge changes run once for all of them.
        self.shared = min(j.first for j in self.judges)
        # A tokenizer of its own: the encoder's truncates single texts at its own length.
        self.tokenizer = Tokenizer.from_str(base.tokenizer.to_str())
        # Pairs are cut where the judges were trained to read them (the shortest, if they differ).
        self.tokenizer.enable_truncation(max_length=min(j.max_length for j in self.judges),
                                         strategy="longest_first")
        self.tokenizer.no_padding()

    def entailed(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """P(the premise entails the hypothesis) for each pair, the judges' mean."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        encodings = self.tokenizer.encode_batch([(p, h) for p, h in pairs])
        out = np.empty(len(pairs), dtype=np.float32)
        for group in length_groups([len(e.ids) for e in encodings], batch_size):
            ids, types, mask = self.base.pad([encodings[i] for i in group])
            x = self.base.run_layers(self.base.embed_tokens(ids, types), mask,
                                     range(self.shared))
            p = [j.probabilities(self._from(x, mask, j.first), mask)[:, 0] for j in self.judges]
            out[group] = np.mean(p, axis=0)
        return out

    def _from(self, x: np.ndarray, mask: np.ndarray, first: int) -> np.ndarray:
        """The states before layer `first`, from the shared ones."""
        return self.base.run_layers(x, mask, range(self.shared, first))


_packaged: EntailmentJudge | None = None
_packaged_lock = threading.Lock()


def packaged_judge(base: BertEncoder | None = None) -> EntailmentJudge:
    """The shipped judges on the packaged embedder, loaded once (about 0.3 s). Pass the
    embedder's own `BertEncoder` of the packaged model to share its weights (90 MB) rather
    than load them again; the judges add about 60 MB of their own."""
    global _packaged
    with _packaged_lock:
        if _packaged is None:
            base = base or BertEncoder(resolve_embedder_path(PACKAGED_EMBEDDER))
            _packaged = EntailmentJudge(base, [JUDGES_DIR / name for name in PACKAGED_JUDGES])
        return _packaged
