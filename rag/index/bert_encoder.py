"""A BERT sentence encoder without sentence-transformers: what it computes for a plain BERT
with mean pooling and L2 normalisation (the packaged all-MiniLM-L6-v2), without importing it.

Importing sentence-transformers (it pulls transformers' model loading, scikit-learn and more)
took about 2 s of every `study-assistant ask`, against a 5 s cold-start target, and torch alone
takes 1-3 s. So a question and an answer's candidate sentences run on numpy (with tokenizers
and safetensors, which load in milliseconds): a six-layer forward pass over a few thousand
tokens is a dozen matrix products, as fast on numpy's BLAS. Long batches (an ingest's
passages) run on torch, whose fused attention and GELU make them about 1.5 times as fast.
Both give sentence-transformers' vectors (tests/rag/index/test_bert_encoder.py);
docs/benchmarks.md, "Cold start", has the measurements. Models this module cannot reproduce
exactly go through sentence-transformers (`supports`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Encoding, Tokenizer

# sentence-transformers' modules for a plain mean-pooled, normalised encoder, in order.
_MODULES = [
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
]
_MEAN_ONLY = {
    "pooling_mode_cls_token": False,
    "pooling_mode_mean_tokens": True,
    "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False,
}


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def supports(path: str) -> bool:
    """Whether the sentence-transformers model in directory `path` is one this encoder
    reproduces: a BERT with absolute positions and exact GELU, mean pooling, then Normalize."""
    root = Path(path)
    try:
        modules = _json(root / "modules.json")
        config = _json(root / "config.json")
        pooling = _json(root / modules[1]["path"] / "config.json")
        st_config = _json(root / "sentence_bert_config.json")
    except (OSError, ValueError, LookupError, TypeError):
        return False
    return (
        [m.get("type") for m in modules] == _MODULES
        and modules[0].get("path", "") == ""
        and config.get("model_type") == "bert"
        and config.get("hidden_act") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and all(pooling.get(k, False) == v for k, v in _MEAN_ONLY.items())
        and not st_config.get("do_lower_case", False)
        and (root / "tokenizer.json").is_file()
        and (root / "model.safetensors").is_file()
    )


class BertEncoder:
    """Embeds texts as unit vectors (mean of the last layer over real tokens, normalised)."""

    def __init__(self, path: str) -> None:
        root = Path(path)
        config = _json(root / "config.json")
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.dimension = int(config["hidden_size"])
        max_length = min(int(_json(root / "sentence_bert_config.json")["max_seq_length"]),
                         int(config["max_position_embeddings"]))
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        # tokenizer.json carries its own fixed padding and truncation; sentence-transformers
        # truncates at max_seq_length, and batches are padded here.
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        self.pad_id = int(config.get("pad_token_id", 0))
        # Dense weights are stored (out, in); they are kept as (in, out), so that each layer is
        # one `x @ w` over the whole batch. Embedding tables stay as they are.
        self.weights = {
            name: np.ascontiguousarray(w.T) if w.ndim == 2 and not name.startswith("embeddings.")
            else w
            for name, w in ((n.removeprefix("bert."), w)
                            for n, w in load_file(str(root / "model.safetensors")).items())
        }

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """One unit vector per text (float32 rows), at most `batch_size` texts at a time."""
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        # numpy starts at once; torch's fused attention and GELU are faster on long batches
        # (an ingest's passages) but its import costs seconds, so it is kept for those.
        forward = (self._torch_forward if sum(lengths) >= TORCH_FROM_TOKENS and _has_torch()
                   else self._forward)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for group in length_groups(lengths, batch_size):
            out[group] = forward(*self.pad([encodings[i] for i in group]))
        return out

    def holds_word(self, word: str) -> bool:
        """Whether the tokenizer keeps the word whole, as one token."""
        return len(self.tokenizer.encode(word, add_special_tokens=False).ids) == 1

    def pad(self, encodings: list[Encoding]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids, token types and attention mask of texts, padded to the longest."""
        rows, length = len(encodings), max(len(e.ids) for e in encodings)
        ids = np.full((rows, length), self.pad_id, dtype=np.int64)
        types = np.zeros((rows, length), dtype=np.int64)
        mask = np.zeros((rows, length), dtype=bool)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            types[row, :n] = e.type_ids
            mask[row, :n] = True
        return ids, types, mask

    def _forward(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The unit vectors of one padded batch (token ids, token types, attention mask)."""
        x = self.run_layers(self.embed_tokens(ids, types), mask, range(self.layers))
        real = mask[..., None].astype(np.float32)
        pooled = (x * real).sum(1) / np.maximum(real.sum(1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)

    def embed_tokens(self, ids: np.ndarray, types: np.ndarray) -> np.ndarray:
        """The normalised input embeddings of a padded batch: word, position and token type."""
        w = self.weights
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
             + w["embeddings.token_type_embeddings.weight"][types])
        return self._norm(x, "embeddings.LayerNorm")

    def run_layers(self, x: np.ndarray, mask: np.ndarray, layers: range) -> np.ndarray:
        """The hidden states after the given encoder layers (all of them: the last layer's)."""
        lengths = mask.sum(1).tolist()
        for layer in layers:
            x = self._layer(x, lengths, f"encoder.layer.{layer}.")
        return x

    def with_weights(self, changes: dict[str, np.ndarray]) -> BertEncoder:
        """This encoder with some weights replaced (named and shaped as `weights`); the rest,
        and the tokenizer, are shared, not copied."""
        unknown = set(changes) - set(self.weights)
        if unknown:
            raise ValueError(f"not weights of this encoder: {', '.join(sorted(unknown))}")
        clone = copy.copy(self)
        clone.weights = {**self.weights, **changes}
        return clone

    def _layer(self, x: np.ndarray, lengths: list[int], prefix: str) -> np.ndarray:
        """One encoder layer: self-attention, then the feed-forward block, each post-norm."""
        batch, length, width = x.shape
        size = width // self.heads

        def heads(name: str) -> np.ndarray:
            projected = self._linear(x, f"{prefix}attention.self.{name}")
            # Contiguous per head, so that numpy multiplies the heads with BLAS.
            return np.ascontiguousarray(
                projected.reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3))

        query, key, value = heads("query"), heads("key"), heads("value")
        query *= np.float32(1 / math.sqrt(size))
        attended = np.zeros_like(query)
        # One text at a time, over its real tokens only: padding is neither attended to (as
        # the attention mask has it) nor computed, and each text's scores stay in the cache.
        for row, n in enumerate(lengths):
            scores = query[row, :, :n] @ key[row, :, :n].transpose(0, 2, 1)
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            np.matmul(scores, value[row, :, :n], out=attended[row, :, :n])
        attended = attended.transpose(0, 2, 1, 3).reshape(batch, length, width)
        x = self._norm(self._linear(attended, f"{prefix}attention.output.dense") + x,
                       f"{prefix}attention.output.LayerNorm")
        hidden = gelu(self._linear(x, f"{prefix}intermediate.dense"))
        return self._norm(self._linear(hidden, f"{prefix}output.dense") + x,
                          f"{prefix}output.LayerNorm")

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        # One (tokens, in) @ (in, out) product for the whole batch.
        out = x.reshape(-1, x.shape[-1]) @ self.weights[f"{name}.weight"]
        out += self.weights[f"{name}.bias"]
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        centred = x - mean
        variance = (centred * centred).mean(-1, keepdims=True)
        return (centred / np.sqrt(variance + np.float32(self.eps)) * self.weights[f"{name}.weight"]
                + self.weights[f"{name}.bias"])


    def _torch_forward(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """`_forward` on torch's kernels (the same weights, shared, not copied)."""
        import torch
        import torch.nn.functional as F

        w = {name: torch.from_numpy(value) for name, value in self.weights.items()}

        def linear(x: torch.Tensor, name: str) -> torch.Tensor:
            out = torch.addmm(w[f"{name}.bias"], x.reshape(-1, x.shape[-1]), w[f"{name}.weight"])
            return out.view(*x.shape[:-1], -1)

        def norm(x: torch.Tensor, name: str) -> torch.Tensor:
            return F.layer_norm(x, (x.shape[-1],), w[f"{name}.weight"], w[f"{name}.bias"],
                                self.eps)

        with torch.inference_mode():
            tokens, kinds, real = (torch.from_numpy(a) for a in (ids, types, mask))
            batch, length = tokens.shape
            x = norm(w["embeddings.word_embeddings.weight"][tokens]
                     + w["embeddings.position_embeddings.weight"][:length]
                     + w["embeddings.token_type_embeddings.weight"][kinds], "embeddings.LayerNorm")
            attend = real[:, None, None, :]
            for layer in range(self.layers):
                prefix = f"encoder.layer.{layer}."
                q, k, v = (linear(x, f"{prefix}attention.self.{name}")
                           .view(batch, length, self.heads, -1).transpose(1, 2)
                           for name in ("query", "key", "value"))
                attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
                attended = attended.transpose(1, 2).reshape(batch, length, -1)
                x = norm(linear(attended, f"{prefix}attention.output.dense") + x,
                         f"{prefix}attention.output.LayerNorm")
                hidden = F.gelu(linear(x, f"{prefix}intermediate.dense"))
                x = norm(linear(hidden, f"{prefix}output.dense") + x, f"{prefix}output.LayerNorm")
            weights = real[..., None].to(x.dtype)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return F.normalize(pooled, dim=1).numpy()


# A call embedding at least this many tokens (about 32 passages of an ingest) runs on torch.
TORCH_FROM_TOKENS = 8192


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


# erf as an odd rational function on [-4, 4] (beyond it erf is +-1 in float32): the
# coefficients of Eigen's float32 erf, within 5e-7 of the exact function (tested). numpy has no
# erf, and scipy's costs its import and runs no faster.
_ERF_NUMERATOR = [np.float32(c) for c in (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
    -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)]
_ERF_DENOMINATOR = [np.float32(c) for c in (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
    -1.42647390514189e-02)]
# Elementwise work in slices that stay in the CPU cache: about five times faster than whole
# arrays of a batch's million activations.
_BLOCK = 1 << 16


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in float32."""
    x = np.clip(x, np.float32(-4), np.float32(4))
    square = x * x
    numerator = np.full_like(square, _ERF_NUMERATOR[0])
    for c in _ERF_NUMERATOR[1:]:
        numerator *= square
        numerator += c
    denominator = np.full_like(square, _ERF_DENOMINATOR[0])
    for c in _ERF_DENOMINATOR[1:]:
        denominator *= square
        denominator += c
    numerator *= x
    numerator /= denominator
    return numerator


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU, x * Phi(x), as BERT's "gelu" (not the tanh approximation)."""
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, flat.size, _BLOCK):
        part = flat[start:start + _BLOCK]
        out[start:start + _BLOCK] = part * np.float32(0.5) * (
            1 + erf(part * np.float32(1 / math.sqrt(2))))
    return out.reshape(x.shape)


def length_groups(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices grouped into batches, longest texts first: at most `size` each, and none holding
    a text under half as long as its longest, so that padding at most doubles the work (a
    question's candidate sentences run from a few tokens to a hundred)."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        group = groups[-1] if groups else None
        if group is None or len(group) == size or 2 * lengths[i] < lengths[group[0]]:
            groups.append([i])
        else:
            group.append(i)
    return groups
