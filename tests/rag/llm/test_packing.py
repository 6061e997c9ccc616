"""Int4 repacking of 4-bit layers and GQA-aware attention, on small tensors (unit tests)."""

from __future__ import annotations

import pytest
import torch

from rag.llm.packing import GROUP, Int4Linear, exact_int4, gqa_sdpa


def q4_1_weight(rows: int = 32, cols: int = 4 * GROUP) -> torch.Tensor:
    """What dequantizing a Q4_1 tensor gives: per block of 32, scale·code + minimum (both
    fp16), with the block's lowest and highest codes (0 and 15) present, as llama.cpp's
    quantizer makes them."""
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (rows, cols // GROUP, GROUP), generator=gen)
    codes[..., 0], codes[..., 1] = 0, 15
    scale = (torch.rand(rows, cols // GROUP, 1, generator=gen) / 50).half().float()
    low = (-torch.rand(rows, cols // GROUP, 1, generator=gen) / 5).half().float()
    return (codes * scale + low).reshape(rows, cols)


def test_a_dequantized_q4_1_weight_round_trips_exactly() -> None:
    weight = q4_1_weight()
    exact = exact_int4(weight)
    assert exact is not None
    codes, scales, low = exact
    rebuilt = codes.reshape(32, -1, GROUP) * scales[..., None] + low[..., None]
    assert torch.equal(rebuilt.reshape(weight.shape), weight)


def test_a_weight_that_is_not_4_bit_is_left_alone() -> None:
    weight = torch.randn(24, 4 * GROUP, generator=torch.Generator().manual_seed(1))
    assert exact_int4(weight) is None


def test_a_width_that_is_not_a_multiple_of_the_group_is_left_alone() -> None:
    assert exact_int4(q4_1_weight()[:, :-1]) is None


def test_int4_linear_matches_the_fp32_layer_up_to_bf16_activations() -> None:
    weight = q4_1_weight()
    layer = Int4Linear.from_codes(*exact_int4(weight))  # type: ignore[misc]
    x = torch.randn(3, 5, weight.shape[1], generator=torch.Generator().manual_seed(2))
    got = layer(x)
    assert got.shape == (3, 5, 32) and got.dtype == torch.float32
    torch.testing.assert_close(got, x @ weight.T, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("query_len", [1, 6])
def test_gqa_sdpa_equals_attention_over_repeated_heads(query_len: int) -> None:
    gen = torch.Generator().manual_seed(3)
    query = torch.randn(1, 6, query_len, 16, generator=gen)
    key, value = (torch.randn(1, 2, 9, 16, generator=gen) for _ in range(2))
    mask = torch.zeros(1, 1, query_len, 9)
    mask[..., -1] = float("-inf")
    module = torch.nn.Module().eval()
    out, _ = gqa_sdpa(module, query, key, value, mask)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(3, 1), value.repeat_interleave(3, 1), attn_mask=mask
    )
    torch.testing.assert_close(out, expected.transpose(1, 2))
