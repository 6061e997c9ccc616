"""Hybrid retrieval quality on the real corpus and the development questions."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rag.index.chroma_store import ChromaStore
from rag.index.documents import Chunk
from rag.retrieval.retriever import NothingIngested, Retriever
from tests.conftest import SameQueryVectors, run, services_for

TINY = {
    "attention.md": "# Attention\n\nSelf-attention lets every token look at every other token "
    "of the input, weighting each by the similarity of its key to the token's query.\n",
    "lora.md": "# LoRA\n\nLoRA freezes the pretrained weights and trains two small low-rank "
    "matrices whose product is added to a weight matrix.\n",
    "lora-memory.md": "# LoRA and memory\n\nBecause LoRA trains only the low-rank matrices, "
    "the optimiser keeps state for very few parameters instead of the full weight matrices.\n",
    "bpe.md": "# Byte-pair encoding\n\nA byte-pair encoding tokenizer merges the most frequent "
    "adjacent pair of symbols into a new vocabulary entry, again and again.\n",
}


def in_scope(dev_questions: list[dict]) -> list[dict]:
    return [q for q in dev_questions if q["kind"] == "in"]


def test_top5_are_not_slices_of_one_passage(full_index, dev_questions):
    for q in in_scope(dev_questions):
        hits = full_index.retriever.search(q["question"], 5)
        spans = [(h.chunk.source, h.chunk.page, h.chunk.start, h.chunk.end) for h in hits]
        for i, a in enumerate(spans):
            for b in spans[i + 1 :]:
                overlap = a[:2] == b[:2] and a[2] < b[3] and b[2] < a[3]
                assert not overlap, (q["question"], a, b)


def test_a_passage_is_joined_with_a_neighbour_that_continues_it(full_index, dev_questions):
    # Diversity keeps out a chunk that overlaps a chosen one; where it ranks with the chosen
    # ones and goes on past the chosen one's end, its text joins the passage instead.
    retriever = full_index.retriever
    ids = [cid for entry in retriever.store.manifest().values() for cid in entry.chunk_ids]
    stored = {c.chunk.id: c.chunk for c in retriever.store.get_chunks(ids)}
    joined = []
    for q in in_scope(dev_questions):
        for h in retriever.search(q["question"], 5):
            assert len(h.chunk.text) == h.chunk.end - h.chunk.start
            if h.chunk.id not in stored:
                joined.append(h.chunk)
    assert joined, "no passage was joined on the dev questions"
    for chunk in joined:
        where = (chunk.source, chunk.page, chunk.section)
        parts = [c for c in stored.values() if (c.source, c.page, c.section) == where
                 and chunk.start <= c.start < c.end <= chunk.end]
        assert len(parts) >= 2
        for part in parts:  # each stored chunk's text sits at its offset in the joined one
            at = part.start - chunk.start
            assert chunk.text[at:at + len(part.text)] == part.text


def test_scores_are_probabilities_and_in_scope_beats_out_of_scope(full_index, dev_questions):
    best = {q["id"]: full_index.retriever.search(q["question"], 5)[0].score for q in dev_questions}
    assert all(0.0 <= s <= 1.0 for s in best.values())
    inside = sorted(best[q["id"]] for q in dev_questions if q["kind"] == "in")
    outside = [best[q["id"]] for q in dev_questions if q["kind"] == "out"]
    assert max(outside) < inside[len(inside) // 2]


def test_hits_carry_citation_fields(full_index):
    hits = full_index.retriever.search("What is PagedAttention?", 5)
    top = hits[0].as_json()
    assert set(top) == {"source", "page", "section", "score", "text"}
    assert any(h.chunk.source == "papers/vllm_pagedattention.pdf" and h.chunk.page for h in hits)


def test_search_on_empty_index_says_nothing_was_ingested(tmp_path, embedder):
    services = services_for(tmp_path / "data", embedder)
    with pytest.raises(NothingIngested, match="study-assistant ingest"):
        services.retriever.search("anything", 5)


def test_a_rebuild_after_an_ingest_does_not_make_other_searches_wait(tmp_path, embedder):
    root = tmp_path / "materials"
    root.mkdir()
    (root / "a.md").write_text(
        "# Attention\n\nSelf-attention lets every token look at every other token of the input.\n"
    )
    services = services_for(tmp_path / "data", embedder)
    run(root, services)
    retriever = services.retriever
    retriever.refresh_interval_s = 0.0
    assert retriever.search("self-attention", 1)
    (root / "b.md").write_text(
        "# LoRA\n\nLoRA trains two small low-rank matrices beside the frozen weight matrix.\n"
    )
    run(root, services)
    read_texts = services.store.iter_chunks

    def slow_read(ids):  # reading a 100,000-chunk index takes seconds
        time.sleep(2.0)
        return read_texts(ids)

    services.store.iter_chunks = slow_read
    rebuilding = threading.Thread(target=retriever.search, args=("low-rank", 1))
    rebuilding.start()
    time.sleep(0.3)
    began = time.perf_counter()
    during = retriever.search("low-rank matrices", 2)
    waited = time.perf_counter() - began
    rebuilding.join()
    assert waited < 1.5
    assert {h.chunk.source for h in during} == {"a.md"}  # the previous, consistent version
    assert "b.md" in {h.chunk.source for h in retriever.search("low-rank matrices", 2)}


def test_a_batch_of_searches_gives_each_query_exactly_what_it_gets_alone(
    full_index, dev_questions, embedder
):
    retriever = Retriever(full_index.store, SameQueryVectors(embedder),  # type: ignore[arg-type]
                          full_index.settings.retrieval)
    questions = [q["question"] for q in dev_questions]
    batched = retriever.search_many(questions, 5, preview=True)
    alone = [retriever.search(q, 5, preview=True) for q in questions]
    assert batched == alone  # same chunks, order, scores and ranks
    assert len({tuple(h.chunk.id for h in hits) for hits in batched}) > len(questions) // 2


CROWD = [f"Self-attention, restated {i}: every token of the input attends to every other token "
         f"of the input (unfinished draft {i})." for i in range(8)]


def test_a_batch_asks_again_only_for_the_queries_that_chunks_of_other_versions_crowd_out(
    tmp_path, embedder, monkeypatch
):
    root = tmp_path / "materials"
    root.mkdir()
    for name, text in TINY.items():
        (root / name).write_text(text)
    services = services_for(tmp_path / "data", embedder)
    run(root, services)
    crowd = [Chunk(text, "drafts/attention.md", None, "", 0, len(text)) for text in CROWD]
    # Stored but listed by no manifest, as an unfinished ingest leaves them: never live.
    services.store.add_chunks(crowd, embedder.embed_documents([c.text for c in crowd]))
    settings = services.settings.retrieval.model_copy(update={"candidates": 2})
    retriever = Retriever(services.store, SameQueryVectors(embedder), settings)  # type: ignore[arg-type]
    asked: list[int] = []
    real = ChromaStore.query_many

    def spy(store: ChromaStore, embeddings, n, released_at=None):  # type: ignore[no-untyped-def]
        asked.append(len(embeddings))
        return real(store, embeddings, n, released_at)

    monkeypatch.setattr(ChromaStore, "query_many", spy)
    questions = ["How does self-attention let tokens attend to each other?",
                 "What does LoRA train instead of the full weight matrices?"]
    batched = retriever.search_many(questions, 2)
    assert asked == [2, 1]  # the attention question alone was asked again, for more
    assert all(h.chunk.source in TINY for hits in batched for h in hits)
    assert batched[0][0].chunk.source == "attention.md"
    assert batched == [retriever.search(q, 2) for q in questions]


def test_the_passage_the_lexical_retriever_ranks_first_is_never_buried_by_fusion(full_index):
    # "label smoothing" is the Transformer paper's own term (its Regularization section); the
    # embedder ranks that passage far down (near InstructGPT's labelers), so fused ranks alone
    # leave it out of the five.
    question = "What is label smoothing and what did it do to perplexity?"

    def regularization(hits):
        return [h for h in hits if h.chunk.source.endswith("attention_is_all_you_need.pdf")
                and h.chunk.section.endswith("Regularization")]

    retriever = full_index.retriever
    hits = retriever.search(question, 5)
    assert len(hits) == 6 and regularization(hits) == hits[5:]
    assert hits[5].lexical_rank == 0
    fused_only = Retriever(retriever.store, retriever.embedder,
                           retriever.settings.model_copy(update={"lexical_extra": 0}))
    hits = fused_only.search(question, 5)
    assert len(hits) == 5 and not regularization(hits)


def test_the_lexical_best_stays_a_candidate_when_passages_both_rank_middling_outscore_it():
    # "What is label smoothing and what value did the Transformer use?" over the benchmark's
    # index: more passages than the fused candidates hold its common words and are near in
    # meaning, and outscore, fused, the one with its rare words that only BM25 ranks high.
    from types import SimpleNamespace

    from rag.config import RetrievalSettings
    from rag.retrieval.lexical import BM25Index
    from rag.retrieval.query import analyse

    texts = {"near": "Attention weighs tokens.",
             "c1": "The Transformer used this value.", "c2": "The Transformer used it.",
             "rare": "We employed label smoothing during training."}
    texts.update({f"c{i}": f"A value {i} of a model." for i in range(3, 8)})
    bm25 = BM25Index(list(texts), list(texts.values()))
    query = analyse("What is label smoothing and what value did the Transformer use?", bm25,
                    lambda word: True)
    # Three candidates: two passages both retrievers rank, and the embedder's first, which
    # ties, fused, with BM25's first and was listed before it.
    dense = [("near", 0.6), ("c1", 0.5), ("c2", 0.4)]
    here = SimpleNamespace(settings=RetrievalSettings(candidates=3, lexical_extra=1))
    snap = SimpleNamespace(bm25=bm25, live=frozenset(texts))
    fusion = Retriever._fuse(here, query, query, dense, snap, frozenset(texts))  # type: ignore[arg-type]
    assert fusion.lexical_rank == {"rare": 0, "c1": 1, "c2": 2}
    assert fusion.order == ["c1", "c2", "near", "rare"]


def test_a_misspelt_question_finds_what_its_spelling_finds(full_index):
    retriever = full_index.retriever
    typo = retriever.search("kv cahce size per token", 5)
    spelt = retriever.search("kv cache size per token", 5)
    assert [(h.chunk.id, h.score) for h in typo] == [(h.chunk.id, h.score) for h in spelt]


def test_a_real_word_the_materials_never_use_is_not_corrected(full_index):
    # The index knows "broad" and "break", one edit from "bread"; the embedder knows "bread".
    assert full_index.retriever.corrected("how to bake bread") == "how to bake bread"


def test_a_question_naming_a_paper_is_searched_within_it(full_index):
    # Searched everywhere, this finds the course guides' pretraining sections and the LLaMA
    # paper's acknowledgements ("help on data collection"), not its pre-training data section.
    question = "What does the LLaMA paper say about its training data?"
    retriever = full_index.retriever
    hits = retriever.search(question, 5)
    assert {h.chunk.source for h in hits} == {"papers/llama.pdf"}
    assert any("Pre-training Data" in h.chunk.section for h in hits), [
        h.chunk.section for h in hits]
    everywhere = Retriever(retriever.store, retriever.embedder,
                           retriever.settings.model_copy(update={"named_documents": False}))
    assert {h.chunk.source for h in everywhere.search(question, 5)} != {"papers/llama.pdf"}
    # A guess about where something is, or a name no file has, searches everywhere.
    for other in ("i think the llama paper said something about training data?",
                  "What does the GPT-4 paper say about training data?"):
        assert {h.chunk.source for h in retriever.search(other, 5)} != {"papers/llama.pdf"}
    assert retriever.search_many([question], 5) == [hits]


def test_a_paper_named_by_what_it_presents_is_searched_within(full_index):
    # No file is called "transformer"; the paper's first page says "we propose ... the
    # Transformer".
    question = "What does the Transformer paper say about dropout?"
    hits = full_index.retriever.search(question, 5)
    assert {h.chunk.source for h in hits} == {"papers/attention_is_all_you_need.pdf"}
    assert any(h.chunk.section.endswith("Regularization") for h in hits)


def test_within_a_named_paper_the_name_does_not_rank_its_passages(full_index):
    # Every passage of the paper is about LLaMA: ranked by "LLaMA paper say", the five were
    # its sample generations and references ("you say", "LLaMA-I"), never the tokenizer's
    # paragraph. The hits' scores are still the whole question's.
    question = "What does the LLaMA paper say about the tokenizer it used?"
    retriever = full_index.retriever
    hits = retriever.search(question, 5)
    assert any("bytepair encoding" in h.chunk.text.lower() for h in hits[:5]), [
        h.chunk.section for h in hits]
    whole = retriever.embedder.embed_query(question)
    for h in hits:
        stored = retriever.store.get_chunks([h.chunk.id])[0]
        assert abs(h.dense - float(np.dot(stored.embedding, whole))) < 1e-4


def test_joining_takes_a_continuing_neighbour_that_ranks_with_the_chosen_ones() -> None:
    from rag.index.chroma_store import StoredChunk
    from rag.retrieval.retriever import Candidate, _joined

    page = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu."

    def candidate(start: int, end: int, fused: float, section: str = "6.2",
                  lexical_rank: int | None = None) -> Candidate:
        chunk = Chunk(page[start:end], "papers/x.pdf", 9, section, start, end)
        return Candidate(StoredChunk(chunk.id, chunk, np.zeros(2)), fused, 0.5, 0.0, 0.5, 0,
                         lexical_rank)

    chosen = [candidate(0, 30, 0.9), candidate(50, 72, 0.5, section="7")]
    ahead = candidate(20, 45, 0.6)        # continues the first, ranks with the chosen
    inside = candidate(5, 25, 0.95)       # adds nothing
    low = candidate(25, 50, 0.1)          # ranks below every chosen one
    other = candidate(40, 60, 0.7, "8")   # another section's
    joined = _joined(chosen, [*chosen, inside, ahead, low, other], chosen)
    assert [c.stored.chunk.text for c in joined] == [page[0:45], page[50:72]]
    assert joined[0].cosine == chosen[0].cosine and joined[0].stored.chunk.start == 0
    # The lexical retriever's best joins however it fuses; a neighbour that would also
    # overlap another passage does not.
    best = candidate(25, 50, 0.1, lexical_rank=0)
    assert _joined(chosen, [*chosen, best], chosen)[0].stored.chunk.text == page[0:50]
    bridge = candidate(25, 55, 0.8)
    assert _joined(chosen, [*chosen, bridge], chosen) == chosen
