"""Faster CPU decoding for models dequantized from 4-bit GGUF files: the same weights, repacked.

A Q4_1 GGUF tensor stores each block of 32 weights as 4-bit codes with a scale and a minimum,
so after dequantization every block holds at most 16 evenly spaced values, its lowest and
highest among them. Group-32 int4 codes with a per-group scale and zero therefore give back
every weight exactly (checked per layer; a layer that does not round-trip stays as it is), and
torch's int4 CPU kernel reads an eighth of the bytes an fp32 matmul reads. That kernel rounds
the activations to bfloat16, so greedy tokens can differ from the fp32 model's: how often, and
what it does to answers, is measured in docs/benchmarks.md (benchmarks/local_generation.py).

Attention gets one change too: transformers' SDPA path copies each key/value head once per
query head that shares it (grouped-query attention) whenever a mask is passed; `gqa_sdpa`
passes the mask and lets the kernel share the heads instead (same arithmetic, no copies).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

GROUP = 32
GQA_SDPA = "sdpa_gqa"
# Where the packed layers are kept beside a converted model: packing takes tens of seconds, so
# it is done once. The layout is torch's own, hence the version in the name.
PACKED_FILE = "int4-torch-{version}.safetensors"


class Int4Linear(nn.Module):
    """A bias-free linear layer holding group-32 int4 codes, scales and zeros."""

    def __init__(self, packed: torch.Tensor, scales_zeros: torch.Tensor) -> None:
        super().__init__()
        self.packed = packed
        self.scales_zeros = scales_zeros
        self.out_features = int(scales_zeros.shape[1])
        self.in_features = int(scales_zeros.shape[0]) * GROUP

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scales: torch.Tensor, low: torch.Tensor) -> Int4Linear:
        """Pack [out, in] codes with [out, in/GROUP] scales and minimums."""
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        # The kernel's layout: [in/GROUP, out, (scale, zero)], weight = (code - 8)·scale + zero.
        scales_zeros = torch.stack([scales, low + 8 * scales], -1).transpose(0, 1)
        return cls(packed, scales_zeros.contiguous().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ weightᵀ, with x rounded to bfloat16 for the kernel and the result cast back."""
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        mm = torch.ops.aten._weight_int4pack_mm_for_cpu
        out = mm(flat, self.packed, GROUP, self.scales_zeros)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


def exact_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Codes, scales and minimums that reproduce `weight` exactly, or None if none do."""
    out_features, in_features = weight.shape
    if in_features % GROUP:
        return None
    # A few rows first: most layers that are not 4-bit fail there, for a fraction of the cost.
    if out_features > 8 and exact_int4(weight[:8]) is None:
        return None
    groups = weight.detach().float().reshape(out_features, in_features // GROUP, GROUP)
    low = groups.amin(-1, keepdim=True)
    scale = (groups.amax(-1, keepdim=True) - low) / 15
    codes = torch.round((groups - low) / torch.where(scale == 0, 1.0, scale)).clamp(0, 15)
    if not torch.equal(codes * scale + low, groups):
        return None
    return (
        codes.to(torch.int32).reshape(out_features, in_features),
        scale.reshape(out_features, -1),
        low.reshape(out_features, -1),
    )


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The bias-free linear layers inside the decoder blocks, by module path.

    The output projection (tied to the 8-bit embeddings) is not among them: it stays fp32.
    """
    layers: Any = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        return {}
    return {
        f"{i}.{name}": module
        for i, block in enumerate(layers)
        for name, module in block.named_modules()
        if isinstance(module, nn.Linear) and module.bias is None
    }


def pack_layers(model: nn.Module) -> dict[str, Int4Linear]:
    """An `Int4Linear` for every block linear layer that round-trips exactly through int4."""
    packed = {}
    for path, linear in block_linears(model).items():
        if linear.out_features % 16:  # the kernel's packing needs it
            continue
        exact = exact_int4(linear.weight)
        if exact is not None:
            packed[path] = Int4Linear.from_codes(*exact)
    return packed


def install(model: nn.Module, packed: dict[str, Int4Linear]) -> int:
    """Put the packed layers in place of the linear layers they were made from."""
    layers: Any = model.model.layers  # type: ignore[union-attr]
    for path, layer in packed.items():
        index, _, name = path.partition(".")
        parent_name, _, attr = name.rpartition(".")
        block = layers[int(index)]
        setattr(block.get_submodule(parent_name) if parent_name else block, attr, layer)
    return len(packed)


def save_packed(packed: dict[str, Int4Linear], path: Path) -> None:
    """Write packed layers atomically (a temporary sibling renamed into place)."""
    from safetensors.torch import save_file

    tensors = {}
    for name, layer in packed.items():
        tensors[f"{name}.packed"] = layer.packed
        tensors[f"{name}.scales_zeros"] = layer.scales_zeros
    fd, tmp = tempfile.mkstemp(prefix=".tmp-int4-", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_packed(path: Path) -> dict[str, Int4Linear]:
    """Read packed layers written by `save_packed`."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    names = {key.rpartition(".")[0] for key in tensors}
    return {n: Int4Linear(tensors[f"{n}.packed"], tensors[f"{n}.scales_zeros"]) for n in names}


def pack_linear_layers(model: nn.Module, cache_dir: Path | None = None) -> int:
    """Replace the exactly representable block linear layers with int4 ones; return how many.

    With `cache_dir` (the converted model's directory) the packed layers are read from there,
    or computed once and written there.
    """
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return 0
    version = torch.__version__.replace("+", "-")
    cached = Path(cache_dir) / PACKED_FILE.format(version=version) if cache_dir else None
    if cached is not None and cached.is_file():
        packed = load_packed(cached)
    else:
        packed = pack_layers(model)
        if cached is not None:
            save_packed(packed, cached)
    return install(model, packed)


def gqa_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Scaled dot-product attention that shares key/value heads between query heads."""
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    causal = query.shape[2] > 1 and attention_mask is None and getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout if module.training else 0.0,
        scale=scaling,
        is_causal=causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def use_gqa_sdpa(model: Any) -> bool:
    """Switch a model that uses SDPA attention to `gqa_sdpa`; return whether it switched."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    if model.config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(GQA_SDPA, gqa_sdpa)
    AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)
    model.set_attn_implementation(GQA_SDPA)
    return True
