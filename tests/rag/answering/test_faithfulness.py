"""The faithfulness measure: key fact, invented words, invented numbers."""

from __future__ import annotations

from rag.answering.faithfulness import (
    Faithfulness,
    content_words,
    has_key_fact,
    measure,
    normalise,
    summarise,
)

PASSAGE = (
    "QLoRA fine-tunes a **4-bit** quantized model; developing LLaMA used 2,638 MWh. "
    "The base model has eight attention heads."
)


def test_normalise_applies_nfkc_case_asterisks_and_whitespace() -> None:
    assert normalise("  **Ｂlock**\n size   16 ") == "block size 16"


def test_key_fact_matches_after_normalisation() -> None:
    assert has_key_fact("vLLM uses a **Block Size**\n16 by default.", ["block size 16"])


def test_key_fact_missing_when_no_evidence_string_appears() -> None:
    assert not has_key_fact("vLLM uses blocks.", ["block size 16", "sixteen tokens"])


def test_content_words_drop_short_tokens_stop_words_and_citations() -> None:
    assert content_words("The KV cache [12] would be quantized, More in [3].") == [
        "cache", "quantized"
    ]


def test_a_word_whose_stem_the_passage_uses_is_not_invented() -> None:
    result = measure("QLoRA quantizes models.", "What is QLoRA?", [PASSAGE])
    assert result.invented_words == ()


def test_a_name_absent_from_question_and_passages_is_invented() -> None:
    result = measure("QLoRA was built with Graphene.", "What is QLoRA?", [PASSAGE])
    assert result.invented_words == ("built", "graphene")
    assert result.invented_word_rate == 2 / 3


def test_words_of_the_question_count_as_sources() -> None:
    result = measure("Guanaco models.", "What are Guanaco models?", [PASSAGE])
    assert result.invented_words == ()


def test_a_number_written_with_or_without_thousands_separator_is_the_same() -> None:
    assert measure("It used 2638 MWh.", "q", [PASSAGE]).invented_numbers == ()


def test_a_number_the_sources_never_state_is_invented() -> None:
    assert measure("It used 4,000 MWh and 4 bits.", "q", [PASSAGE]).invented_numbers == ("4000",)


def test_citation_markers_are_not_numbers() -> None:
    result = measure("QLoRA quantizes models [3]. More in [5].", "q", [PASSAGE])
    assert result.invented_numbers == ()
    # A paper's reference, as a quote keeps it ("[30]" in the passage).
    quoted = measure("We share one matrix, similar to [ref 30, 31]. [1]", "q",
                     ["We share one matrix, similar to [30, 31]."])
    assert quoted.invented_numbers == ()


def test_a_number_word_in_the_passage_backs_a_digit_in_the_answer() -> None:
    assert measure("It has 8 heads.", "q", [PASSAGE]).invented_numbers == ()


def test_key_fact_is_none_without_evidence_strings() -> None:
    assert measure("Anything.", "q", [PASSAGE]).key_fact is None


def test_summary_averages_rates_and_counts_answers_with_invented_numbers() -> None:
    results = [
        Faithfulness(True, 4, ("graphene",), ()),
        Faithfulness(False, 2, (), ("128",)),
        Faithfulness(None, 0, (), ()),
    ]
    summary = summarise(results)
    assert summary.answers == 3
    assert summary.key_fact_rate == 0.5
    assert summary.invented_word_rate == (0.25 + 0 + 0) / 3
    assert summary.with_invented_numbers == 1
