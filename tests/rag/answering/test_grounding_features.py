"""The grounding checker's features for paraphrases (issue 12): a number's unit is not a
name and `48GB` has the terms of `48 GB`; a Markdown heading is not a statement."""

from __future__ import annotations

from rag.answering.grounding import _Passage, names, terms
from rag.index.documents import Chunk, Hit


def test_a_numbers_unit_is_not_a_name_and_joined_units_match_spaced_ones():
    claim = "With QLoRA a 65B model can be fine-tuned on a single 48 GB GPU."
    assert names(claim) == {"qlora", "gb", "gpu"}
    passage = "QLoRA can finetune a 65B parameter model on a single 48GB GPU"
    assert names(claim) <= terms(passage)
    assert {"48", "gb", "65"} <= terms(passage)


def test_a_markdown_heading_is_not_a_sentence_of_the_passage():
    text = (
        "### How BPE is trained\n\n"
        "1. Start with a vocabulary of single symbols.\n"
        "2. Count every pair of adjacent symbols in the training corpus.\n"
    )
    hit = Hit(Chunk(text, "notes/tokenization.md", None, "Tokenization > How BPE is trained",
                    0, len(text)), 0.9)
    passage = _Passage.of(hit)
    assert passage.sentences == (
        "Start with a vocabulary of single symbols.",
        "Count every pair of adjacent symbols in the training corpus.",
    )
    # The heading's words still count, through the section.
    assert {"bpe", "train"} <= passage.vocabulary
