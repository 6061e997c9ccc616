"""BM25 scoring, number-aware tokenization and typo correction."""

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


def test_an_unknown_word_one_edit_away_is_corrected():
    index = BM25Index(["a", "b"], ["temperature scaling of logits", "training data"])
    assert index.correction("temprature") == "temperature"  # a letter missing
    assert index.correction("trainnig") == "training"  # two letters swapped
    assert index.correction("traning") == "training"


def test_the_most_common_of_several_corrections_wins():
    index = BM25Index(["a", "b", "c"], ["model", "model", "modem"])
    assert index.correction("modex") == "model"


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
