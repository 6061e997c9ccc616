"""The grounding checker's features for paraphrases (issue 12): a number's unit is not a
name and `48GB` has the terms of `48 GB`; a Markdown heading is not a statement; a negation
one side has and the other lacks is a clash, and so is a relation turned round."""

from __future__ import annotations

from rag.answering.grounding import (
    _Passage,
    denies_the_other,
    names,
    negated,
    reverses_the_other,
    terms,
)
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


def test_a_negation_on_one_side_only_is_a_clash_and_a_shared_one_is_not():
    window = "Only A and B are trained; W0 receives no gradient."
    assert negated(window) == {"gradient"}
    # The claim states what the passage denies, or denies what it states.
    assert denies_the_other("W0 receives gradient updates during training.", window)
    assert denies_the_other("DPO does not need a reward model.",
                            "DPO still trains a separate reward model first.")
    # Both deny it, in other words; or the negation is about something else.
    assert not denies_the_other("During LoRA training W0 gets no gradient.", window)
    assert not denies_the_other("LoRA trains only A and B.", "A and B are trained, not W0.")
    assert not denies_the_other("A and B are trained.", "A and B are trained.")
    # A negation's reach ends with its clause, and words used outside it are not denied.
    qlora = ("Memory to fine-tune a 65B model dropped to under 48 GB, so it fits on a single "
             "48 GB GPU, with no loss versus 16-bit fine-tuning.")
    assert not denies_the_other("A 65B model can be fine-tuned on one 48 GB GPU.", qlora)
    # Spaces and line breaks inside the reach change nothing.
    assert negated("W0 receives   no\n  gradient.") == {"gradient"}
    assert negated("No  extra\ninference latency: BA merges into W0") == {
        "extra", "inference", "latency"}


def test_a_relation_turned_round_is_a_clash_and_the_passive_or_another_relation_is_not():
    window = "LLaMA-13B outperforms GPT-3 on most benchmarks, despite being 10x smaller."
    assert reverses_the_other("GPT-3 outperforms LLaMA-13B on most benchmarks.", window)
    assert reverses_the_other("GPT-3 beats LLaMA-13B on most benchmarks.", window)
    assert not reverses_the_other("LLaMA-13B beats GPT-3 on most benchmarks.", window)
    assert not reverses_the_other("GPT-3 is outperformed by LLaMA-13B.", window)
    # "larger than" is another relation than "outperforms": nothing to compare.
    assert not reverses_the_other("GPT-3 is larger than LLaMA-13B.", window)
    assert reverses_the_other("RLHF comes before SFT.", "SFT comes before RLHF.")


def test_lacking_and_failing_to_are_negations():
    window = ("Compared to FasterTransformer, vLLM can sustain up to 22x higher request rates, "
              "as FasterTransformer does not utilize a fine-grained scheduling mechanism.")
    # "lacks" denies what "does not utilize" denies: the two agree.
    assert not denies_the_other(
        "vLLM sustains up to 22x higher request rates than FasterTransformer, which lacks "
        "fine-grained scheduling.", window)
    assert denies_the_other("FasterTransformer uses a fine-grained scheduling mechanism.", window)
    assert denies_the_other("FasterTransformer fails to batch requests.",
                            "FasterTransformer batches requests.")

