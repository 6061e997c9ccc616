"""A BERT sentence encoder on torch alone: what sentence-transformers computes for a plain BERT
with mean pooling and L2 normalisation (the packaged all-MiniLM-L6-v2), without importing it.

Importing sentence-transformers (it pulls transformers' model loading, scikit-learn and more)
took about 2 s of every `study-assistant ask`, against a 5 s cold-start target; `tokenizers`,
`safetensors` and the forward pass below take milliseconds to load. The vectors match
sentence-transformers' (tests/rag/index/test_bert_encoder.py); docs/benchmarks.md, "Cold
start", has the measurements. Models this module cannot reproduce exactly go through
sentence-transformers (`supports`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
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

    def __init__(self, path: str, device: str = "cpu") -> None:
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
        weights = load_file(str(root / "model.safetensors"), device=device)
        self.weights = {name.removeprefix("bert."): w for name, w in weights.items()}
        self.device = torch.device(device)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """One unit vector per text (float32 rows), at most `batch_size` texts at a time."""
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for group in length_groups(lengths, batch_size):
            out[group] = self._batch([encodings[i] for i in group])
        return out

    def _batch(self, encodings: list[Encoding]) -> np.ndarray:
        rows, length = len(encodings), max(len(e.ids) for e in encodings)
        ids = np.full((rows, length), self.pad_id, dtype=np.int64)
        types = np.zeros((rows, length), dtype=np.int64)
        mask = np.zeros((rows, length), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            types[row, :n] = e.type_ids
            mask[row, :n] = 1
        return self._forward(*(torch.from_numpy(a).to(self.device) for a in (ids, types, mask)))

    def _forward(self, ids: torch.Tensor, types: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        """The unit vectors of one padded batch (token ids, token types, attention mask)."""
        w = self.weights
        with torch.inference_mode():
            x = (w["embeddings.word_embeddings.weight"][ids]
                 + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
                 + w["embeddings.token_type_embeddings.weight"][types])
            x = self._norm(x, "embeddings.LayerNorm")
            attend = mask.bool()[:, None, None, :]
            for layer in range(self.layers):
                x = self._layer(x, attend, f"encoder.layer.{layer}.")
            real = mask[..., None].to(x.dtype)
            pooled = (x * real).sum(1) / real.sum(1).clamp(min=1e-9)
            return F.normalize(pooled, dim=1).cpu().numpy()

    def _layer(self, x: torch.Tensor, attend: torch.Tensor, prefix: str) -> torch.Tensor:
        """One encoder layer: self-attention, then the feed-forward block, each post-norm."""
        batch, length, width = x.shape

        def heads(name: str) -> torch.Tensor:
            projected = self._linear(x, f"{prefix}attention.self.{name}")
            return projected.view(batch, length, self.heads, -1).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            heads("query"), heads("key"), heads("value"), attn_mask=attend
        ).transpose(1, 2).reshape(batch, length, width)
        x = self._norm(self._linear(attended, f"{prefix}attention.output.dense") + x,
                       f"{prefix}attention.output.LayerNorm")
        hidden = F.gelu(self._linear(x, f"{prefix}intermediate.dense"))
        return self._norm(self._linear(hidden, f"{prefix}output.dense") + x,
                          f"{prefix}output.LayerNorm")

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weights[f"{name}.weight"],
                            self.weights[f"{name}.bias"], self.eps)


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
