"""The quote selector keeps the vectors of what it embeds for a passage (its pieces,
paragraphs and section paths): they never depend on the question, so a passage seen before,
or warmed at start-up, costs a quoted answer only its question's embedding. With the real
embedder (counted) and real indexes."""

from __future__ import annotations

from pathlib import Path

from rag.answering.extractive import STOP_CHECK_TEXTS, PieceVectors, QuoteSelector
from rag.services import Services
from tests.conftest import REPO, CountingEmbedder, run, services_for

QUESTION = "Why does PagedAttention waste less memory than earlier serving systems?"


def test_a_passage_seen_before_is_not_embedded_again_and_the_answer_is_the_same(
    full_index: Services, counting: CountingEmbedder
) -> None:
    hits = full_index.retriever.search(QUESTION, 5)
    idf = full_index.checker.term_weights(hits)
    selector = QuoteSelector(counting)
    first = selector.extract(QUESTION, hits, idf)
    assert counting.texts > 0
    counting.texts = 0
    again = selector.extract(QUESTION, hits, idf)
    assert counting.texts == 0
    assert again == first
    # Another question over the same passages embeds nothing of them either.
    selector.extract("How big is a KV cache block?", hits, idf)
    assert counting.texts == 0


def test_warming_embeds_the_pieces_ahead_of_the_question(
    full_index: Services, counting: CountingEmbedder, embedder
) -> None:
    hits = full_index.retriever.search(QUESTION, 5)
    idf = full_index.checker.term_weights(hits)
    cold = QuoteSelector(embedder).extract(QUESTION, hits, idf)
    warmed = QuoteSelector(counting)
    assert warmed.vectors.warm(h.chunk for h in hits) == counting.texts > 0
    counting.texts = 0
    assert warmed.extract(QUESTION, hits, idf) == cold
    assert counting.texts == 0


def test_warming_stops_within_a_few_texts_of_being_asked_not_at_the_end_of_a_batch(
    full_index: Services, counting: CountingEmbedder
) -> None:
    # A closing bot waited for the batch being embedded: 512 texts, some ten seconds.
    hits = full_index.retriever.search(QUESTION, 20)
    vectors = PieceVectors(counting)

    def stop() -> bool:
        return counting.texts > 0  # asked to stop once the first texts are embedded

    assert vectors.warm((h.chunk for h in hits), batch=10_000, stop=stop) == counting.texts
    assert 0 < counting.texts <= STOP_CHECK_TEXTS
    # Not asked to stop, it embeds them all.
    assert PieceVectors(counting).warm(h.chunk for h in hits) > 2 * STOP_CHECK_TEXTS


def test_the_least_recently_used_texts_go_first(counting: CountingEmbedder) -> None:
    vectors = PieceVectors(counting, max_texts=3)
    texts = ["attention", "tokenizer", "quantisation", "scheduler"]
    out = vectors(texts)
    assert out.shape == (4, counting.inner.dimension) and len(vectors) == 3
    counting.texts = 0
    vectors(["scheduler", "quantisation", "tokenizer"])
    assert counting.texts == 0
    vectors(["attention"])  # dropped first, so embedded again
    assert counting.texts == 1


def test_the_assistant_warms_every_chunk_of_the_live_index_and_stops_when_asked(
    tmp_path: Path, embedder
) -> None:
    counting = CountingEmbedder(embedder)
    services = services_for(tmp_path / "data", counting)
    assert run(REPO / "course_materials" / "notes", services).ok
    assert services.assistant.warm_quotes(stop=lambda: True) == 0
    counting.texts = 0
    embedded = services.assistant.warm_quotes()
    assert embedded == counting.texts > 0
    counting.texts = 0
    hits = services.retriever.search("What does the KV cache store?", 5)
    services.assistant.selector.extract("What does the KV cache store?", hits,
                                        services.checker.term_weights(hits))
    assert counting.texts == 0
