"""The few-shot demo: example parsing, prompts for base and instruct models, real answers."""

from __future__ import annotations

import pytest

from rag.demos.common import DemoInputError
from rag.demos.fewshot import (
    Example,
    FewShotRequest,
    build_messages,
    comparison_table,
    few_shot,
    parse_examples,
)

TASK = "Classify the sentiment of the review as positive or negative."
EXAMPLES = "I loved it => positive; Terrible acting => negative; What a waste of time => negative"
INPUT = "A wonderful, moving film"
HINT = "write examples as `input => output; input => output`"


def test_examples_parse_from_semicolons_or_lines():
    expected = (Example("a", "b"), Example("c d", "e => f"))
    assert parse_examples(" a => b ;c d=>e => f ") == expected
    assert parse_examples("a => b\nc d => e => f\n") == expected


@pytest.mark.parametrize(
    ("examples", "says"),
    [("a -> b", f"Example 1 (`a -> b`) has no `=>`: {HINT}"),
     ("a => b; => c", f"Example 2 (`=> c`) has an empty input: {HINT}"),
     ("a =>", f"Example 1 (`a =>`) has an empty output: {HINT}"),
     ("; ".join(f"{i} => {i}" for i in range(9)), "at most 8 examples (got 9)"),
     ("", "The list of examples is empty"),
     (" ; \n ;;", f"at least one example: {HINT}")],
    ids=["no-arrow", "empty-input", "empty-output", "too-many", "empty", "separators-only"],
)
def test_malformed_examples_get_clear_messages(examples, says):
    with pytest.raises(DemoInputError) as caught:
        FewShotRequest.checked(TASK, examples, INPUT)
    assert says in str(caught.value)


def test_an_empty_task_or_input_is_a_clear_error():
    with pytest.raises(DemoInputError, match="The task is empty"):
        FewShotRequest.checked(" ", EXAMPLES, INPUT)
    with pytest.raises(DemoInputError, match="The input is empty"):
        FewShotRequest.checked(TASK, EXAMPLES, "")


def test_instruct_models_get_the_examples_as_chat_turns():
    request = FewShotRequest.checked(TASK, "a => b; c => d", INPUT)
    roles = [m["role"] for m in build_messages(request, request.examples, base=False)]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["role"] for m in build_messages(request, (), base=False)] == ["system", "user"]


async def test_a_base_model_answers_a_plain_completion_prompt_with_and_without_examples(gemma3):
    request = FewShotRequest.checked(TASK, EXAMPLES, INPUT)
    result = await few_shot(gemma3, request)
    few = result.few_shot
    assert few.prompt.startswith(TASK) and few.prompt.endswith(f"Input: {INPUT}\nOutput:")
    assert "Input: I loved it\nOutput: positive" in few.prompt
    assert "I loved it" not in result.zero_shot.prompt
    for shot in (result.zero_shot, few):
        assert "\n" not in shot.answer and 0 < shot.tokens_out <= 24 and shot.seconds > 0
    assert few.tokens_in > result.zero_shot.tokens_in
    # What few-shot prompting is for: the answer takes the examples' form.
    assert few.answer in {e.output for e in request.examples}
    header, rows = comparison_table(result)
    assert header[2] == "few-shot (3 examples)" and rows[0][1:] == (
        result.zero_shot.answer or "(nothing)", few.answer)


async def test_an_instruct_model_answers_both_ways_greedily(smollm2):
    request = FewShotRequest.checked(TASK, EXAMPLES, INPUT)
    result = await few_shot(smollm2, request)
    assert result.model == "smollm2"
    assert "[assistant] positive" in result.few_shot.prompt
    for shot in (result.zero_shot, result.few_shot):
        assert "\n" not in shot.answer and shot.tokens_in > 0
