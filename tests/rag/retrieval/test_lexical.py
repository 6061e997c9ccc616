"""BM25 scoring, number-aware tokenization and typo correction."""

from dataclasses import replace
from pathlib import Path

import pytest

from ingest.parse_worker import chunks_of
from rag.config import IngestSettings
from rag.index.documents import Chunk
from rag.retrieval.lexical import BM25Index, index_terms, tokenize


def terms(text: str) -> dict[str, float]:
    """Query terms of a text, each weighing 1."""
    return dict.fromkeys(index_terms(text), 1.0)


def test_tokenize_drops_stopwords_and_plural_s():
    assert tokenize("What are the attention heads of a Transformer?") == [
        "attention",
        "head",
        "transformer",
    ]


def test_thousands_separators_do_not_split_a_number():
    assert index_terms("2,638 MWh") == index_terms("2638 mwh") == ["2638", "mwh"]


def test_decimals_stay_one_term():
    assert index_terms("0.37 bits") == ["0.37", "bit"]


def test_mixed_tokens_keep_their_parts():
    assert index_terms("week6 48GB") == ["week6", "week", "6", "48gb", "48", "gb"]


def test_a_week_number_written_apart_matches_a_file_name_written_together():
    index = BM25Index(["a", "b"], ["guides week2-support-guide", "guides week6-fundamentals"])
    assert index.search(terms("the week 6 guide"), 2)[0][0] == "b"


def test_rare_term_outranks_common_terms():
    index = BM25Index(
        ["a", "b", "c"],
        ["the model uses attention", "attention and attention again", "paged attention in vllm"],
    )
    assert [doc for doc, _ in index.search(terms("vllm attention"), 3)][0] == "c"


def test_term_weights_scale_their_contribution():
    index = BM25Index(["a", "b"], ["supervised training", "reward model"])
    assert index.search({"supervised": 0.5, "reward": 1.0}, 2)[0][0] == "b"
    assert index.search({"supervised": 1.0, "reward": 0.5}, 2)[0][0] == "a"


def test_query_with_no_known_terms_returns_nothing():
    index = BM25Index(["a"], ["low rank adaptation"])
    assert index.search(terms("sourdough bread"), 5) == []
    assert index.search({}, 5) == []


def test_n_larger_than_corpus_is_fine():
    index = BM25Index(["a", "b"], ["lora adapters", "qlora adapters"])
    assert {doc for doc, _ in index.search(terms("adapters"), 50)} == {"a", "b"}


def test_empty_corpus_returns_nothing():
    assert BM25Index([], []).search(terms("anything"), 3) == []


def test_a_greek_letter_is_found_by_its_name():
    index = BM25Index(["a", "b"], ["**β** controls the KL penalty", "the reward model"])
    assert [doc for doc, _ in index.search(terms("dpo beta?"), 5)] == ["a"]
    assert index_terms("λ and ϵ") == ["lambda", "epsilon"]  # not "lamda"; NFKC first


def test_the_grounding_tokens_name_greek_letters_too():
    assert tokenize("**β** controls") == ["beta", "control"]


def test_an_unknown_word_one_edit_away_is_corrected():
    index = BM25Index(["a", "b"], ["temperature scaling of logits", "training data"])
    assert index.correction("temprature") == "temperature"  # a letter missing
    assert index.correction("trainnig") == "training"  # two letters swapped
    assert index.correction("traning") == "training"


def test_the_most_common_of_several_corrections_wins():
    index = BM25Index(["a", "b", "c"], ["model", "model", "modem"])
    assert index.correction("modex") == "model"


def test_a_long_word_two_edits_away_is_corrected():
    index = BM25Index(["a"], ["hallucination and attention"])
    assert index.correction("halucinaton") == "hallucination"  # two letters missing


def test_a_short_word_two_edits_away_is_not_corrected():
    index = BM25Index(["a"], ["attention"])
    assert index.correction("atntion") is None


def test_a_more_common_word_two_edits_away_loses_to_one_edit_away():
    # "continou" (continous, its plural s stripped) is two deletions at different places from
    # "continue": two edits, though both lose one letter to reach "continu".
    index = BM25Index(["a", "b", "c"], ["continue", "continue", "continuous batching"])
    assert index.correction("continou") == "continuou"


def test_the_first_letter_is_never_corrected():
    index = BM25Index(["a", "b"], ["inner product", "inner loop"])
    assert index.correction("dinner") is None


def test_the_question_decides_between_words_equally_near():
    index = BM25Index(["a", "b", "c"], ["though it helps", "even though", "chain of thought"])
    assert index.correction("thougth") == "though"  # the more common
    assert index.correction("thougth", ["chain"]) == "thought"  # the one met with "chain"


def test_known_short_and_numeric_words_are_never_corrected():
    index = BM25Index(["a"], ["attention is needed in 2017"])
    assert index.correction("attention") is None
    assert index.correction("atn") is None
    assert index.correction("2018") is None


def test_coverage_is_the_idf_weighted_share_of_query_terms():
    index = BM25Index(["a", "b", "c"], ["lora rank", "lora", "qlora"])
    cover = index.coverage(["lora", "rank"], ["a", "b", "c"])
    assert cover["a"] == 1.0
    assert 0.0 < cover["b"] < 1.0
    assert cover["c"] == 0.0


# -- an index derived from another (the next version's, BM25Index.updated) --------------------


def real_chunks(root: Path, *names: str) -> list[Chunk]:
    """The chunks the ingest cuts from real course files."""
    return [c for name in names for c in chunks_of(root / name, root, IngestSettings())]


def assert_same_index(derived: BM25Index, scratch: BM25Index) -> None:
    """Same chunks in the same order, same terms with the same weights, same idf."""
    assert derived.ids == scratch.ids
    assert set(derived.vocab) == set(scratch.vocab)
    order = list(scratch.vocab)
    rows_d = derived.weights[[derived.vocab[t] for t in order]]
    rows_s = scratch.weights[[scratch.vocab[t] for t in order]]
    assert (rows_d != rows_s).nnz == 0  # bit for bit
    assert derived.coverage(order[:200], derived.ids) == scratch.coverage(order[:200], scratch.ids)


@pytest.fixture(scope="module")
def versions(shared_materials: Path) -> tuple[list[Chunk], list[Chunk]]:
    """The chunks of a live version and of the next one: one guide dropped, one retitled
    (every chunk of it new), one with a section appended, and one file added."""
    root = shared_materials
    live = real_chunks(root, "guides/llm-basics.md", "guides/week2-support-guide.md",
                       "guides/class2-llm-overview.md", "papers/lora.pdf")
    retitled = [replace(c, section=f"LLM basics (revised) > {c.section}")
                for c in real_chunks(root, "guides/llm-basics.md")]
    appended = Chunk("Review: revise attention, the KV cache and speculative decodings before "
                     "the quizz.", "guides/week2-support-guide.md", None, "Review", 0, 80)
    kept = [c for c in live if c.source in ("guides/week2-support-guide.md", "papers/lora.pdf")]
    added = real_chunks(root, "guides/week6-transformers-fundamentals.md")
    return live, retitled + kept[:5] + [appended] + kept[5:] + added


def test_an_index_derived_from_the_live_one_equals_a_scratch_build(versions):
    live, new = versions
    previous = BM25Index([c.id for c in live], [c.lexical_text() for c in live])
    texts = {c.id: c.lexical_text() for c in new}
    asked: list[str] = []

    def texts_of(ids: list[str]) -> list[tuple[str, str]]:
        asked.extend(ids)
        return [(i, texts[i]) for i in reversed(ids)]  # in any order, like Chroma

    derived = previous.updated([c.id for c in new], texts_of)
    scratch = BM25Index([c.id for c in new], [c.lexical_text() for c in new])
    assert_same_index(derived, scratch)
    assert set(asked) == {c.id for c in new} - {c.id for c in live}  # only new chunks read
    for query in ("low rank adaptation of weights", "kv cache review", "week 6 attention"):
        assert derived.search(terms(query), 20) == scratch.search(terms(query), 20)
    changed = set(scratch.vocab) ^ set(previous.vocab)  # terms added or gone
    typos = [typo for t in sorted(changed) for typo in (t[1:], t[:2] + t[3:], t + "q")]
    assert len(typos) > 100
    for typo in typos + ["quizz", "decodingg", "adaptaton", "atention", "transformr"]:
        assert derived.correction(typo) == scratch.correction(typo), typo
    # The live index is left as it was: a running bot may still be searching it.
    assert_same_index(previous, BM25Index([c.id for c in live], [c.lexical_text() for c in live]))


def test_terms_only_removed_chunks_used_are_forgotten(versions):
    live, _ = versions
    previous = BM25Index([c.id for c in live], [c.lexical_text() for c in live])
    lora = [c for c in live if c.source == "papers/lora.pdf"]
    derived = previous.updated([c.id for c in lora], lambda ids: [])
    scratch = BM25Index([c.id for c in lora], [c.lexical_text() for c in lora])
    assert_same_index(derived, scratch)
    assert previous.knows("week2") and not derived.knows("week2")
    word = next(t for t in previous.vocab if t.isalpha() and len(t) > 5 and not derived.knows(t))
    typo = word[:-1]
    assert derived.correction(typo) == scratch.correction(typo) != word


def test_the_same_chunks_give_the_same_index(versions):
    live, _ = versions
    previous = BM25Index([c.id for c in live], [c.lexical_text() for c in live])
    assert previous.updated([c.id for c in live], lambda ids: []) is previous


def test_an_id_that_cannot_be_read_is_left_out(versions):
    live, new = versions
    previous = BM25Index([c.id for c in live[:10]], [c.lexical_text() for c in live[:10]])
    derived = previous.updated([c.id for c in live[:12]], lambda ids: [])
    assert derived.ids == [c.id for c in live[:10]]
