"""Chunking the real course materials: sections, pages, offsets, sizes and clean text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.chunking import chunk_document
from ingest.loaders import LoadedDocument, Page, load_document
from rag.index.documents import Chunk
from tests.ingest.test_cleaning import LIGATURES, MOJIBAKE

LIMIT = 50 * 1024 * 1024
CHUNK_CHARS, OVERLAP, MIN_CHARS = 1200, 150, 40
ATTENTION = "papers/attention_is_all_you_need.pdf"


@pytest.fixture(scope="module")
def corpus(shared_materials: Path) -> dict[str, tuple[LoadedDocument, list[Chunk]]]:
    """Every real guide and paper, loaded and chunked at the default settings."""
    out = {}
    for path in sorted(shared_materials.rglob("*")):
        if path.suffix in (".md", ".pdf"):
            doc = load_document(path, shared_materials, LIMIT)
            out[doc.source] = (doc, chunk_document(doc))
    assert len(out) == 12
    return out


def chunks_of(corpus: dict, source: str) -> list[Chunk]:
    """The chunks of one real file."""
    return corpus[source][1]


def only(chunks: list[Chunk], phrase: str) -> Chunk:
    """The first chunk containing `phrase` (fails if none does)."""
    found = [c for c in chunks if phrase in c.text]
    assert found, phrase
    return found[0]


def markdown(text: str, kind: str = "markdown") -> LoadedDocument:
    """A one-page document made in the test."""
    return LoadedDocument("notes/test.md", kind, (Page(text, None),))


def paper(*pages: str) -> LoadedDocument:
    """A cleaned PDF made in the test, one string per page."""
    return LoadedDocument(
        "papers/test.pdf", "pdf", tuple(Page(t, n) for n, t in enumerate(pages, 1))
    )


def sentences(n: int, start: int = 0) -> str:
    """A paragraph of `n` distinct sentences of about 60 characters."""
    return " ".join(
        f"Sentence {i} explains one more idea about attention heads."
        for i in range(start, start + n)
    )


def test_offsets_are_exact_for_every_real_chunk(corpus: dict) -> None:
    for doc, chunks in corpus.values():
        pages = {page.number: page.text for page in doc.pages}
        for c in chunks:
            assert pages[c.page][c.start : c.end] == c.text


def test_every_real_chunk_names_its_file(corpus: dict) -> None:
    for source, (_, chunks) in corpus.items():
        assert chunks and {c.source for c in chunks} == {source}


def test_no_chunk_of_a_real_guide_contains_mojibake(corpus: dict) -> None:
    for source, (_, chunks) in corpus.items():
        if source.startswith("guides/"):
            assert [c.text for c in chunks if MOJIBAKE.search(c.text)] == []


def test_repaired_guide_text_reaches_the_chunks(corpus: dict) -> None:
    chunks = chunks_of(corpus, "guides/class2-llm-overview.md")
    assert "you'll get hands-on" in only(chunks, "This week, you").text
    assert "~22T–40T tokens" in only(chunks, "tokens, 200+ languages").text


def test_no_ligatures_in_any_real_paper_chunk(corpus: dict) -> None:
    for source, (_, chunks) in corpus.items():
        if source.startswith("papers/"):
            assert [c.text for c in chunks if LIGATURES.search(c.text)] == []


def test_former_ligatures_read_as_plain_letters(corpus: dict) -> None:
    lora = " ".join(c.text for c in chunks_of(corpus, "papers/lora.pdf"))
    assert "full fine-tuning, which retrains all model parameters" in lora
    assert "the operational efficiency when deployed" in lora


def test_hyphenation_is_undone_in_real_paper_chunks(corpus: dict) -> None:
    lora = chunks_of(corpus, "papers/lora.pdf")
    assert "deploying independent instances of fine-tuned models" in only(lora, "deploying").text


def test_pdf_chunks_carry_their_page_number(corpus: dict) -> None:
    chunks = chunks_of(corpus, ATTENTION)
    assert only(chunks, "We call our particular attention").page == 4
    assert only(chunks, "We used the Adam optimizer").page == 7


def test_pdf_chunks_carry_the_paper_section(corpus: dict) -> None:
    chunks = chunks_of(corpus, ATTENTION)
    assert only(chunks, "We call our particular attention").section == (
        "3.2.1 Scaled Dot-Product Attention"
    )
    assert only(chunks, "We used the Adam optimizer").section == "5.3 Optimizer"


def test_pdf_section_carries_across_pages(corpus: dict) -> None:
    first_on_page_2 = next(c for c in chunks_of(corpus, ATTENTION) if c.page == 2)
    assert first_on_page_2.section == "1 Introduction"


def test_pdf_text_before_the_first_heading_has_no_section(corpus: dict) -> None:
    title = chunks_of(corpus, ATTENTION)[0]
    assert (title.page, title.section) == (1, "")
    assert title.text.startswith("Attention Is All You Need")


def test_pdf_sections_follow_the_paper_outline(corpus: dict) -> None:
    sections = list(dict.fromkeys(c.section for c in chunks_of(corpus, ATTENTION)))
    assert sections == [
        "", "Abstract", "1 Introduction", "2 Background", "3 Model Architecture",
        "3.1 Encoder and Decoder Stacks", "3.2 Attention", "3.2.1 Scaled Dot-Product Attention",
        "3.2.2 Multi-Head Attention", "3.2.3 Applications of Attention in our Model",
        "3.3 Position-wise Feed-Forward Networks", "3.4 Embeddings and Softmax",
        "3.5 Positional Encoding", "4 Why Self-Attention", "5 Training",
        "5.1 Training Data and Batching", "5.2 Hardware and Schedule", "5.3 Optimizer",
        "5.4 Regularization", "6.1 Machine Translation", "6.2 Model Variations",
        "6.3 English Constituency Parsing", "7 Conclusion", "References",
    ]  # fmt: skip


def test_appendix_sections_are_found_after_the_references(corpus: dict) -> None:
    sections = {c.section for c in chunks_of(corpus, "papers/lora.pdf")}
    assert {"REFERENCES", "C DATASET DETAILS", "H.4 AMPLIFICATION FACTOR"} <= sections


def test_figure_labels_that_look_like_headings_are_not_sections(corpus: dict) -> None:
    sections = {c.section for c in chunks_of(corpus, "papers/vllm_pagedattention.pdf")}
    assert "3.1 Memory Management in Existing Systems" in sections
    assert not any(s.startswith(("7 KV cache", "3 KV cache")) for s in sections)


def test_out_of_sequence_numbers_do_not_open_sections() -> None:
    doc = paper(
        "1 Introduction\n\nWe study attention in some depth here.\n\n"
        "7 Encoder Output Layer\n\nThat was a figure label, not a heading.\n\n"
        "2 Method\n\nThe method section explains the approach we used in detail."
    )
    assert [c.section for c in chunk_document(doc)] == ["1 Introduction", "2 Method"]


def test_letter_headings_before_the_references_are_not_appendices() -> None:
    doc = paper(
        "1 Introduction\n\nIntro text that is long enough to be a chunk.\n\n"
        "A Transformer Encoder Block\n\nBody text continues after a line that looked like a "
        "heading.\n\nReferences\n\n[1] A. Author. A paper about attention heads. 2017.\n\n"
        "A Proofs\n\nThe appendix proves the lemma in much more detail."
    )
    assert [c.section for c in chunk_document(doc)] == ["1 Introduction", "References", "A Proofs"]


def test_markdown_chunks_carry_their_heading_path(corpus: dict) -> None:
    chunk = only(chunks_of(corpus, "guides/week2-support-guide.md"), "smart librarian")
    assert chunk.section == (
        "Week 2 Support Guide > Key Concepts Explained Simply > 1. What is a Transformer?"
    )
    assert chunk.page is None


def test_emoji_and_bold_markers_are_dropped_from_section_names(corpus: dict) -> None:
    sections = {c.section for c in chunks_of(corpus, "guides/llm-basics.md")}
    assert "The Secret Sauce: Transformers > 1. Core Idea: Tokens and Sequences" in sections
    assert 'LLM > 3. What makes them "smart"?' in sections
    assert "Class 2: LLM Overview > Agenda" in {
        c.section for c in chunks_of(corpus, "guides/class2-llm-overview.md")
    }


def test_a_guide_section_chunk_starts_with_its_heading(corpus: dict) -> None:
    chunks = chunks_of(corpus, "guides/week6-transformers-fundamentals.md")
    chunk = only(chunks, "architecture tweaks")
    assert chunk.text.startswith("#### Practical takeaway\n- Scale often beats")
    assert chunk.section == "Study > Scaling Laws > Practical takeaway"


def test_headings_without_text_of_their_own_join_the_next_section(corpus: dict) -> None:
    chunk = only(chunks_of(corpus, "guides/week6-transformers-fundamentals.md"), "mental model")
    assert chunk.text.startswith("### PHASE 3 — Generative AI Core (Weeks 6–9)\n\n### Week 6")
    assert chunk.section.endswith("Goal: Deep conceptual understanding of LLMs.")


def test_markdown_chunks_hold_at_most_one_section_of_text() -> None:
    doc = markdown("# Title\n\n## A\n\nText of A.\n\n## B\n\n### B1\n\nText of B1.\n")
    assert [(c.section, c.text) for c in chunk_document(doc, min_chars=0)] == [
        ("Title > A", "# Title\n\n## A\n\nText of A."),
        ("Title > B > B1", "## B\n\n### B1\n\nText of B1."),
    ]


def test_a_paper_section_chunk_starts_with_its_heading_line(corpus: dict) -> None:
    chunk = only(chunks_of(corpus, ATTENTION), "We used the Adam optimizer")
    assert chunk.text.startswith("5.3 Optimizer\n")


def test_hash_lines_in_fenced_code_are_not_headings(corpus: dict) -> None:
    chunks = chunks_of(corpus, "guides/llm-complete-guide.md")
    chunk = only(chunks, "# Simplified pre-training objective")
    assert chunk.section == "Large Language Models (LLMs) > Training Process > Pre-Training Example"
    assert not any("Simplified pre-training" in c.section for c in chunks)


def test_chunks_cut_from_a_long_code_block_carry_its_opening_fence() -> None:
    code = "\n".join(f"step_{i} = run(step_{i - 1})  # stage {i} of the pipeline"
                     for i in range(1, 61))
    text = (f"# Serving\n\n## The script\n\nThe whole pipeline:\n\n```python\n{code}\n```\n\n"
            f"{sentences(30)}\n")
    opened, closed = text.index("```python"), text.index("\n```\n") + 1
    chunks = chunk_document(markdown(text), CHUNK_CHARS, OVERLAP, MIN_CHARS)
    inside = [c for c in chunks if opened < c.start <= closed]
    assert len(inside) >= 2 and not any("```python" in c.text for c in inside)
    assert [c.fence for c in inside] == ["```python"] * len(inside)
    assert [c.fence for c in chunks if c not in inside] == [""] * (len(chunks) - len(inside))
    assert any(c.start > closed for c in chunks)  # prose after the block starts outside it


def test_real_guide_chunks_know_the_code_block_they_start_inside(corpus: dict) -> None:
    # The guides fence only with ```, never nested: an odd count before a chunk means inside.
    fence_line = re.compile(r"^[ \t]*```", re.MULTILINE)
    inside = 0
    for doc, chunks in corpus.values():
        for c in chunks:
            page = next(p.text for p in doc.pages if p.number == c.page)
            odd = len(fence_line.findall(page, 0, c.start)) % 2 == 1
            assert c.fence.startswith("```") if odd else c.fence == "", (c.source, c.start)
            inside += odd
    assert inside >= 3  # llm-complete-guide's diagrams and class2's list-item snippet


def test_real_chunks_respect_the_size_limit(corpus: dict) -> None:
    for _, chunks in corpus.values():
        assert max(len(c.text) for c in chunks) <= CHUNK_CHARS + MIN_CHARS


def test_small_chunk_settings_are_respected(corpus: dict) -> None:
    doc = corpus[ATTENTION][0]
    chunks = chunk_document(doc, chunk_chars=300, overlap=50, min_chars=20)
    assert len(chunks) > len(chunks_of(corpus, ATTENTION)) * 2
    assert max(len(c.text) for c in chunks) <= 320


def test_long_sections_overlap_by_at_most_the_overlap(corpus: dict) -> None:
    chunks = chunks_of(corpus, ATTENTION)
    overlaps = [
        a.end - b.start
        for a, b in zip(chunks, chunks[1:], strict=False)
        if (a.page, a.section) == (b.page, b.section) and b.start < a.end
    ]
    assert len(overlaps) >= 5
    assert max(overlaps) <= OVERLAP


def test_a_long_paragraph_splits_at_sentence_ends() -> None:
    text = sentences(60)
    chunks = chunk_document(markdown(text), chunk_chars=500, overlap=100)
    assert len(chunks) >= 7
    assert all(c.text.startswith("Sentence") and c.text.endswith("heads.") for c in chunks)
    assert all(len(c.text) <= 500 for c in chunks)


def test_paragraph_breaks_are_preferred_to_sentence_breaks() -> None:
    text = sentences(6) + "\n\n" + sentences(6, start=6)
    chunks = chunk_document(markdown(text), chunk_chars=500, overlap=0)
    assert [c.text for c in chunks] == [sentences(6), sentences(6, start=6)]


def test_a_tiny_tail_is_merged_into_the_previous_chunk() -> None:
    body = sentences(18)
    text = f"{body}\n\nSee Fig. 2."
    # Too long for one chunk, so the tail is packed on its own, then absorbed.
    chunks = chunk_document(markdown(text), chunk_chars=len(body) + 5, overlap=0, min_chars=40)
    assert [c.text for c in chunks] == [text]


def test_rules_and_link_only_lines_do_not_become_chunks() -> None:
    text = (
        "## Links\n\n[Paper](https://arxiv.org/abs/1706.03762)\n\n---\n\n"
        f"## Notes\n\n{sentences(3)}\n\n---\n"
    )
    chunks = chunk_document(markdown(text))
    assert [(c.section, c.text) for c in chunks] == [("Notes", f"## Notes\n\n{sentences(3)}")]


def test_a_short_document_still_yields_one_chunk() -> None:
    chunks = chunk_document(markdown("# Title\n\nHi.\n"))
    expected = [("Title", "# Title\n\nHi.", 0, 12)]
    assert [(c.section, c.text, c.start, c.end) for c in chunks] == expected


def test_plain_text_has_no_sections() -> None:
    chunks = chunk_document(markdown("# not a heading in a .txt\n\n" + sentences(3), "text"))
    assert [c.section for c in chunks] == [""]


def test_html_headings_give_sections() -> None:
    doc = markdown(f"# LoRA\n\n### Setup\n\n{sentences(2)}\n", "html")
    assert [c.section for c in chunk_document(doc)] == ["LoRA > Setup"]


def test_chunking_is_deterministic(corpus: dict) -> None:
    doc, chunks = corpus["guides/llm-complete-guide.md"]
    again = chunk_document(doc)
    assert again == chunks
    assert [c.id for c in again] == [c.id for c in chunks]


def test_impossible_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        chunk_document(markdown("text"), chunk_chars=100, overlap=100)
