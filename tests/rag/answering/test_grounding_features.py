"""The grounding checker's features for paraphrases (issue 12): a number's unit is not a
name and `48GB` has the terms of `48 GB`."""

from __future__ import annotations

from rag.answering.grounding import names, terms


def test_a_numbers_unit_is_not_a_name_and_joined_units_match_spaced_ones():
    claim = "With QLoRA a 65B model can be fine-tuned on a single 48 GB GPU."
    assert names(claim) == {"qlora", "gb", "gpu"}
    passage = "QLoRA can finetune a 65B parameter model on a single 48GB GPU"
    assert names(claim) <= terms(passage)
    assert {"48", "gb", "65"} <= terms(passage)

