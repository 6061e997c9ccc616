"""The attention demo on the real local models: weights, defaults, ranges, eager switch, heatmap."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from rag.demos import plots
from rag.demos.attention import AttentionRequest, attention
from rag.demos.common import DemoInputError, pick_local_model

SENTENCE = "The cat sat on the mat because it was soft"


async def test_rows_sum_to_one_and_attend_only_backwards(smollm2):
    result = await attention(smollm2, AttentionRequest.checked(SENTENCE))
    n = len(smollm2.tokenizer(SENTENCE).input_ids)
    assert len(result.tokens) == len(result.weights) == n
    for i, row in enumerate(result.weights):
        assert sum(row) == pytest.approx(1.0, abs=1e-4)
        assert all(w == 0 for w in row[i + 1:])  # causal: nothing from later tokens
    assert (result.layer, result.head) == (result.layers // 2, None)  # documented defaults
    assert result.head_label == f"mean of {result.heads} heads"


async def test_the_summary_is_about_the_pronoun(gemma3):
    result = await attention(gemma3, AttentionRequest.checked(SENTENCE, layer=2, head=1))
    assert result.tokens[result.focus] == "␣it" and (result.layer, result.head) == (2, 1)
    row = result.weights[result.focus]
    top_key, top_weight = result.focus_top[0]
    assert top_weight == max(row[k] for k in range(1, len(row)) if not result.special[k])
    assert top_key < result.focus + 1 and result.sink == row[0]
    assert result.summary().startswith("␣it attends most to ")


async def test_one_head_differs_from_the_mean_of_the_heads(smollm2):
    mean = await attention(smollm2, AttentionRequest.checked(SENTENCE, layer=4))
    head = await attention(smollm2, AttentionRequest.checked(SENTENCE, layer=4, head=0))
    assert mean.weights != head.weights
    for row in head.weights:
        assert sum(row) == pytest.approx(1.0, abs=1e-4)


async def test_generation_beside_the_demo_is_unchanged_and_its_attention_is_restored(smollm2):
    question = [{"role": "user", "content": "Name a colour."}]
    served_with = smollm2.loaded().model.config._attn_implementation
    assert served_with != "eager"
    alone = await smollm2.complete(question, max_tokens=6, temperature=0)
    together, _ = await asyncio.gather(
        smollm2.complete(question, max_tokens=6, temperature=0),
        attention(smollm2, AttentionRequest.checked(SENTENCE)),
    )
    assert together.text == alone.text
    assert smollm2.loaded().model.config._attn_implementation == served_with


@pytest.mark.parametrize(
    ("layer", "head", "says"),
    [(30, None, "layer (for smollm2) must be between 0 and 29 (got 30)"),
     (None, 9, "head (for smollm2) must be between 0 and 8 (got 9)"),
     (-1, None, "layer counts from 0 (got -1)")],
    ids=["layer-too-high", "head-too-high", "negative-layer"],
)
async def test_layer_and_head_out_of_range_get_clear_messages(smollm2, layer, head, says):
    with pytest.raises(DemoInputError) as caught:
        await attention(smollm2, AttentionRequest.checked(SENTENCE, layer, head))
    assert says in str(caught.value)


def test_served_models_are_refused_with_the_local_ones_named(demo_registry):
    with pytest.raises(DemoInputError) as caught:
        pick_local_model(demo_registry, "remote", "Attention")
    assert "only available for local models" in str(caught.value)
    assert "smollm2, gemma3-base" in str(caught.value)


def test_an_empty_sentence_is_a_clear_error():
    with pytest.raises(DemoInputError, match="The sentence is empty"):
        AttentionRequest.checked("  ")


async def test_heatmap_is_a_labelled_png_of_sane_size(gemma3):
    result = await attention(gemma3, AttentionRequest.checked(SENTENCE))
    axes = plots.attention_figure(result).axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == list(result.tokens)
    assert axes.get_xlabel() and axes.get_ylabel() and "gemma3-base" in axes.get_title()
    png = plots.attention_heatmap(result)
    width, height = Image.open(io.BytesIO(png)).size
    assert 300 <= width <= 1200 and 300 <= height <= 800 and len(png) < 1_000_000


async def test_tokens_that_are_part_of_a_character_are_labelled_as_bytes(smollm2):
    result = await attention(smollm2, AttentionRequest.checked("猫がマットの上に座った"))
    assert all("\ufffd" not in t for t in result.tokens), result.tokens
    assert any(t.startswith("<0x") for t in result.tokens)
