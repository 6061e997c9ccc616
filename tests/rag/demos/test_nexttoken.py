"""The next-token demo on the real local models: probabilities, temperature, stepping, chart."""

from __future__ import annotations

import io
import math

import pytest
import torch
from PIL import Image

from rag.demos import plots
from rag.demos.common import DemoInputError, percent, pick_model, visible
from rag.demos.nexttoken import (
    MAX_PROMPT_CHARS,
    NextTokenRequest,
    NextTokenResult,
    messages_for,
    next_token,
    steps_table,
    top_table,
    views_table,
)
from rag.llm.local import LocalChatModel

PROMPT = "The capital of France is"
EPSILON = 1e-5


async def run(model: LocalChatModel, **params) -> NextTokenResult:
    return await next_token(model, NextTokenRequest.checked(PROMPT, **params))


async def test_the_default_model_continues_the_course_example_with_paris(smollm2):
    result = await run(smollm2, top_k=5, temperature=1.0)
    best = result.top[0]
    assert best.text == " Paris" and best.prob_at_1 > 0.5, result.top  # measured: 77.3%
    header, rows = top_table(result)
    assert rows[0][:3] == ("1", "␣Paris", percent(best.prob_at_1)) and rows[0][-1] == "← greedy"
    assert result.chat_view is None and result.why == ""


async def test_the_chat_option_shows_the_template_view_beside_the_raw_one(smollm2):
    result = await run(smollm2, top_k=5, temperature=0, steps=2, chat=True)
    chat = result.chat_view
    assert chat is not None and not chat.continues_prompt and chat.view == "chat template"
    loaded = smollm2.loaded()
    templated = smollm2.encode(messages_for(PROMPT))["input_ids"]
    with torch.inference_mode():
        logits = loaded.model(input_ids=templated).logits[0, -1]
    assert chat.top[0].token_id == int(logits.argmax()) != result.top[0].token_id
    assert len(chat.greedy) == 2 and chat.greedy_text
    header, rows = views_table(result)
    assert header == ("#", "raw text", "p", "chat template", "p") and len(rows) == 5
    assert rows[0][1:] == ("␣Paris", percent(result.top[0].prob_at_1),
                           visible(chat.top[0].text), percent(chat.top[0].prob_at_1))
    assert "continues your text (␣Paris" in result.why and "how its reply begins" in result.why


async def test_the_chat_option_on_a_base_model_is_a_clear_error(gemma3):
    with pytest.raises(DemoInputError, match="'gemma3-base' is a base model"):
        await run(gemma3, chat=True)


async def test_top_k_probabilities_are_sorted_and_sum_to_at_most_one(smollm2):
    result = await run(smollm2, top_k=10, temperature=0.7)
    probs = [c.prob for c in result.top]
    at_1 = [c.prob_at_1 for c in result.top]
    assert len(probs) == 10 and len({c.token_id for c in result.top}) == 10
    assert probs == sorted(probs, reverse=True) and at_1 == sorted(at_1, reverse=True)
    assert 0 < sum(probs) <= 1 + EPSILON and 0 < sum(at_1) <= 1 + EPSILON
    assert result.exact and result.unavailable is None and result.model == "smollm2"


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
async def test_greedy_steps_reproduce_generate_token_for_token(name, request):
    chat: LocalChatModel = request.getfixturevalue(name)
    result = await run(chat, temperature=0, steps=6)
    loaded = chat.loaded()
    inputs = loaded.tokenizer(PROMPT, return_tensors="pt")  # the raw text: no chat template
    generated = loaded.model.generate(
        **inputs, do_sample=False, max_new_tokens=6, pad_token_id=loaded.tokenizer.eos_token_id
    )
    expected = generated[0, inputs["input_ids"].shape[-1]:].tolist()
    assert [s.chosen.token_id for s in result.greedy] == expected
    assert result.greedy_text == loaded.tokenizer.decode(expected, skip_special_tokens=True)
    assert result.continues_prompt and result.view == "raw text"  # every model, by default


async def test_higher_temperature_flattens_the_distribution(gemma3):
    cold, warm, hot = [await run(gemma3, top_k=5, temperature=t) for t in (0.5, 1.0, 2.0)]
    assert cold.entropy_bits < warm.entropy_bits < hot.entropy_bits
    assert cold.top[0].prob > warm.top[0].prob > hot.top[0].prob
    assert warm.entropy_bits == pytest.approx(warm.entropy_at_1_bits)
    # The model's own distribution (T = 1) does not depend on the temperature asked for.
    assert [c.prob_at_1 for c in cold.top] == pytest.approx([c.prob_at_1 for c in hot.top])
    assert [c.token_id for c in cold.top] == [c.token_id for c in hot.top]


async def test_temperature_zero_shows_the_t1_distribution_and_marks_the_greedy_choice(smollm2):
    result = await run(smollm2, top_k=3, temperature=0, steps=1)
    assert not result.sampled and result.sampled_text == ""
    assert [c.prob for c in result.top] == [c.prob_at_1 for c in result.top]
    assert result.greedy_choice == result.greedy[0].chosen == result.top[0]
    header, rows = top_table(result)
    assert header == ("#", "token", "p", "") and rows[0][-1] == "← greedy"


async def test_sampling_is_reproducible_with_a_seed_and_shown_beside_greedy(smollm2):
    first = await run(smollm2, temperature=1.5, steps=4, seed=7)
    again = await run(smollm2, temperature=1.5, steps=4, seed=7)
    ids = [s.chosen.token_id for s in first.sampled]
    assert ids == [s.chosen.token_id for s in again.sampled] and len(ids) >= 1
    for step in first.sampled:
        assert all(r.token_id != step.chosen.token_id for r in step.runners_up)
        assert 0 < step.chosen.prob <= 1
    header, rows = steps_table(first)
    assert header[1] == "greedy" and header[4] == "sampled (seed 7)"
    assert len(rows) == max(len(first.greedy), len(first.sampled))


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"top_k": 0}, "top_k must be between 1 and 20 (got 0)"),
        ({"top_k": 10_000}, "top_k must be between 1 and 20 (got 10000)"),
        ({"temperature": -1}, "temperature must be between 0 and 5 (got -1)"),
        ({"temperature": 5.5}, "temperature must be between 0 and 5"),
        ({"temperature": math.nan}, "temperature must be between 0 and 5"),
        ({"steps": 0}, "steps must be between 1 and 32 (got 0)"),
        ({"steps": 500}, "steps must be between 1 and 32 (got 500)"),
        ({"prompt": "   "}, "The prompt is empty"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "the limit is 1,000"),
    ],
    ids=["top_k-0", "top_k-10000", "T-negative", "T-too-hot", "T-nan", "steps-0", "steps-500",
         "empty-prompt", "long-prompt"],
)
def test_bad_parameters_get_clear_messages(params, says):
    params = {"prompt": PROMPT, **params}
    with pytest.raises(DemoInputError) as caught:
        NextTokenRequest.checked(**params)
    assert says in str(caught.value)


def test_an_unknown_model_is_a_clear_error(demo_registry):
    with pytest.raises(DemoInputError, match="Unknown model 'nope'; known models: smollm2"):
        pick_model(demo_registry, "nope")


async def test_chart_is_a_labelled_png_of_sane_size(smollm2):
    result = await run(smollm2, top_k=20, temperature=0.5)
    figure = plots.next_token_figure(result)
    axes = figure.axes[0]
    assert axes.get_xlabel() == "probability" and axes.get_ylabel() == "next token"
    title = figure.get_suptitle()
    assert "smollm2" in title and PROMPT in title
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["T = 0.5", "T = 1"]
    png = plots.next_token_chart(result)
    image = Image.open(io.BytesIO(png))
    image.verify()
    width, height = Image.open(io.BytesIO(png)).size
    assert image.format == "PNG" and 400 <= width <= 1200 and 300 <= height <= 800
    assert len(png) < 1_000_000


async def test_with_the_chat_option_the_chart_has_both_views(smollm2):
    result = await run(smollm2, top_k=5, temperature=0, chat=True)
    figure = plots.next_token_figure(result)
    assert [ax.get_title() for ax in figure.axes] == ["raw text", "chat template"]
    labels = {t.get_position()[1]: t.get_text() for t in figure.axes[0].get_yticklabels()}
    assert labels[max(labels)] == "␣Paris"  # the most likely at the top
    width, _ = Image.open(io.BytesIO(plots.next_token_chart(result))).size
    assert width <= 1200


async def test_candidates_that_are_part_of_a_character_are_shown_as_bytes(smollm2):
    result = await next_token(smollm2, NextTokenRequest.checked("東京は日本の", top_k=10))
    texts = [c.text for c in result.top]
    assert all("\ufffd" not in t for t in texts), texts
    assert any(t.startswith("<0x") for t in texts), "the test needs a byte-fragment candidate"


@pytest.mark.parametrize("steps", [1, 3])
async def test_a_continuation_cut_inside_a_character_ends_before_it(smollm2, steps):
    """SmolLM2 writes Japanese byte by byte: greedy, its first token is the first two bytes
    of a katakana character, and its third starts another (measured)."""
    result = await next_token(smollm2, NextTokenRequest.checked("東京は日本の", temperature=0,
                                                                steps=steps))
    ids = [s.chosen.token_id for s in result.greedy]
    assert result.greedy[-1].chosen.text.startswith("<0x"), "the test needs a cut character"
    assert "\ufffd" not in result.greedy_text
    assert result.greedy_text == smollm2.loaded().tokenizer.decode(ids[:-1])
