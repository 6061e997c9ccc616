"""Hybrid retrieval quality on the real corpus and the development questions."""

from __future__ import annotations

import threading
import time

import pytest

from rag.retrieval.retriever import NothingIngested
from tests.conftest import run, services_for


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
