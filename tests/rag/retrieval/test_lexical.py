"""BM25 scoring and tokenization."""

from rag.retrieval.lexical import BM25Index, tokenize


def test_tokenize_drops_stopwords_and_plural_s():
    assert tokenize("What are the attention heads of a Transformer?") == [
        "attention",
        "head",
        "transformer",
    ]


def test_rare_term_outranks_common_terms():
    index = BM25Index(
        ["a", "b", "c"],
        ["the model uses attention", "attention and attention again", "paged attention in vllm"],
    )
    assert [doc for doc, _ in index.search("vllm attention", 3)][0] == "c"


def test_query_with_no_known_terms_returns_nothing():
    index = BM25Index(["a"], ["low rank adaptation"])
    assert index.search("sourdough bread", 5) == []
    assert index.search("", 5) == []


def test_n_larger_than_corpus_is_fine():
    index = BM25Index(["a", "b"], ["lora adapters", "qlora adapters"])
    assert {doc for doc, _ in index.search("adapters", 50)} == {"a", "b"}


def test_empty_corpus_returns_nothing():
    assert BM25Index([], []).search("anything", 3) == []
