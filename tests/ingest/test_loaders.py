"""Loading real course files, and the one-line reasons for files that cannot be loaded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from ingest.loaders import LoadedDocument, PdfLimits, SkipFile, load_document
from tests.ingest.hostile_pdfs import many_pages_pdf, shared_stream_pdf

LIMIT = 50 * 1024 * 1024
ATTENTION = "papers/attention_is_all_you_need.pdf"


@pytest.fixture(scope="module")
def attention(shared_materials: Path) -> LoadedDocument:
    """The real attention paper, loaded once."""
    return load_document(shared_materials / ATTENTION, shared_materials, LIMIT)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty materials root."""
    path = tmp_path / "materials"
    path.mkdir()
    return path


def write_pdf(path: Path, source: Path, password: str | None = None) -> Path:
    """Write the first page of a real PDF to `path`, optionally encrypted."""
    writer = PdfWriter()
    writer.add_page(PdfReader(source).pages[0])
    if password is not None:
        writer.encrypt(password)
    writer.write(path)
    return path


def skip_reason(
    path: Path, root: Path, max_bytes: int = LIMIT, limits: PdfLimits | None = None
) -> str:
    """The reason load_document gives for skipping a file (fails if it does not skip)."""
    with pytest.raises(SkipFile) as caught:
        load_document(path, root, max_bytes, limits)
    reason = str(caught.value)
    assert reason and "\n" not in reason
    return reason


def test_a_guide_loads_as_one_unnumbered_markdown_page(shared_materials: Path) -> None:
    doc = load_document(shared_materials / "guides/week2-support-guide.md", shared_materials, LIMIT)
    assert (doc.source, doc.kind, len(doc.pages)) == (
        "guides/week2-support-guide.md",
        "markdown",
        1,
    )
    assert doc.pages[0].number is None
    assert doc.pages[0].text.startswith("# Week 2 Support Guide")


def test_a_paper_loads_one_page_per_pdf_page_numbered_from_one(attention: LoadedDocument) -> None:
    assert (attention.source, attention.kind) == (ATTENTION, "pdf")
    assert [page.number for page in attention.pages] == list(range(1, 16))


def test_pdf_text_lands_on_its_own_page(attention: LoadedDocument) -> None:
    pages = [p.number for p in attention.pages if "We call our particular attention" in p.text]
    assert pages == [4]
    pages = [p.number for p in attention.pages if "We used the Adam optimizer" in p.text]
    assert pages == [7]


def test_pdf_pages_are_cleaned(attention: LoadedDocument) -> None:
    text = "\n".join(page.text for page in attention.pages)
    assert "ﬁ" not in text and "arXiv:1706.03762v5" not in text
    assert "transduction models in various tasks" in text


def test_a_cp1252_text_file_is_decoded(root: Path) -> None:
    path = root / "notes.txt"
    path.write_bytes("Café – “quoted” naïve résumé, 5 €".encode("cp1252"))
    doc = load_document(path, root, LIMIT)
    assert (doc.kind, doc.pages[0].text) == ("text", 'Café – "quoted" naïve résumé, 5 €')


def test_a_utf16_text_file_with_a_bom_is_decoded(root: Path) -> None:
    path = root / "notes.txt"
    path.write_bytes("Attention is all you need".encode("utf-16"))
    assert load_document(path, root, LIMIT).pages[0].text == "Attention is all you need"


def test_html_becomes_markdown_without_scripts_or_styles(root: Path) -> None:
    path = root / "page.html"
    path.write_text(
        "<html><head><title>Tab title</title><style>p {color: red}</style></head><body>"
        "<h1>LoRA &amp; QLoRA</h1><p>Low-rank   <b>adapters</b>.</p><script>track()</script>"
        "<h3>Setup</h3><ul><li>pip install peft</li><li>load the model</li></ul></body></html>",
        encoding="utf-8",
    )
    doc = load_document(path, root, LIMIT)
    assert doc.kind == "html"
    assert doc.pages[0].text == (
        "# LoRA & QLoRA\n\nLow-rank adapters.\n\n"
        "### Setup\n\n- pip install peft\n- load the model\n"
    )


def test_an_empty_file_is_skipped(root: Path) -> None:
    (root / "empty.md").write_bytes(b"")
    (root / "blank.txt").write_bytes(b" \n\t\n")
    assert skip_reason(root / "empty.md", root) == "empty file"
    assert skip_reason(root / "blank.txt", root) == "empty file"


def test_vector_figures_lose_their_tick_labels_but_captions_and_tables_stay(
    shared_materials: Path,
) -> None:
    # LoRA's page 26 holds heatmaps drawn as huge form XObjects (megabytes of path operators).
    lora = load_document(shared_materials / "papers/lora.pdf", shared_materials, LIMIT)
    page = lora.pages[25].text
    assert "Figure 7: Normalized subspace similarity" in page
    assert "Table 18: Validation loss" in page
    assert "Layer 32" not in page  # a heatmap's axis label
    assert sum(line.strip().isdigit() for line in page.splitlines()) < 5  # tick numbers


def test_an_empty_pdf_file_is_skipped(root: Path) -> None:
    (root / "empty.pdf").write_bytes(b"")
    assert skip_reason(root / "empty.pdf", root) == "empty file"


def test_a_pdf_without_text_is_skipped(root: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.write(root / "scan.pdf")
    assert skip_reason(root / "scan.pdf", root) == "PDF has no extractable text (scanned?)"


def test_a_corrupt_pdf_is_skipped(root: Path) -> None:
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage\n%%EOF\n")
    assert skip_reason(root / "broken.pdf", root).startswith("corrupt PDF: ")


def test_a_truncated_pdf_is_skipped_without_pypdf_log_noise(
    root: Path, shared_materials: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = (shared_materials / ATTENTION).read_bytes()
    (root / "cut.pdf").write_bytes(data[: len(data) // 3])
    level = logging.getLogger("pypdf").level
    with caplog.at_level(logging.WARNING):
        assert skip_reason(root / "cut.pdf", root).startswith("corrupt PDF: ")
    assert [r for r in caplog.records if r.name.startswith("pypdf")] == []
    assert logging.getLogger("pypdf").level == level


def test_an_encrypted_pdf_is_skipped(root: Path, shared_materials: Path) -> None:
    path = write_pdf(root / "locked.pdf", shared_materials / ATTENTION, password="s3cret")
    assert skip_reason(path, root) == "encrypted PDF"


def test_a_pdf_encrypted_with_an_empty_password_loads(root: Path, shared_materials: Path) -> None:
    path = write_pdf(root / "open.pdf", shared_materials / ATTENTION, password="")
    assert PdfReader(path).is_encrypted
    doc = load_document(path, root, LIMIT)
    assert "Attention Is All You Need" in doc.pages[0].text


def test_binary_content_in_a_markdown_file_is_skipped(root: Path) -> None:
    (root / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert skip_reason(root / "image.md", root) == "binary content in a text file"


def test_control_bytes_without_nul_are_binary_too(root: Path) -> None:
    (root / "data.txt").write_bytes(bytes(range(1, 32)) * 20 + b"some text")
    assert skip_reason(root / "data.txt", root) == "binary content in a text file"


def test_an_oversized_file_is_skipped(root: Path) -> None:
    (root / "big.txt").write_bytes(b"word " * 3000)
    reason = skip_reason(root / "big.txt", root, max_bytes=10 * 1024)
    assert reason == "14.6 KB exceeds the 10.0 KB limit"


def test_oversize_is_reported_in_megabytes(root: Path) -> None:
    (root / "big.txt").write_bytes(b"x" * (3 * 1024 * 1024 + 200 * 1024))
    assert skip_reason(root / "big.txt", root, max_bytes=1024 * 1024) == (
        "3.2 MB exceeds the 1.0 MB limit"
    )


def test_a_symlink_out_of_the_root_is_skipped(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "private.md"
    outside.write_text("# Private\n\nNot course material at all.\n", encoding="utf-8")
    (root / "link.md").symlink_to(outside)
    assert skip_reason(root / "link.md", root) == "outside the materials root"


def test_a_symlink_inside_the_root_keeps_its_own_path(root: Path) -> None:
    (root / "real.md").write_text("# Notes\n\nAttention weighs tokens.\n", encoding="utf-8")
    (root / "sub").mkdir()
    (root / "sub" / "alias.md").symlink_to(root / "real.md")
    assert load_document(root / "sub" / "alias.md", root, LIMIT).source == "sub/alias.md"


def test_an_unsupported_extension_is_skipped(root: Path) -> None:
    (root / "slides.pptx").write_bytes(b"PK\x03\x04")
    assert skip_reason(root / "slides.pptx", root) == "unsupported file type '.pptx'"


def test_a_missing_file_is_skipped(root: Path) -> None:
    assert skip_reason(root / "gone.md", root) == "deleted before it could be read"


def test_a_pdf_over_the_page_limit_is_skipped(root: Path) -> None:
    (root / "long.pdf").write_bytes(many_pages_pdf(30))
    reason = skip_reason(root / "long.pdf", root, limits=PdfLimits(max_pages=20))
    assert reason == "30 pages exceeds the 20-page limit"


def test_pages_sharing_one_content_stream_are_read_once(root: Path) -> None:
    # 200 pages drawing one stream: extracting it 200 times is what made a 24 KB file
    # take minutes.
    (root / "shared.pdf").write_bytes(shared_stream_pdf(200, lines=50))
    doc = load_document(root / "shared.pdf", root, LIMIT)
    assert len(doc.pages) == 200 and doc.pages[0].text
    assert not any(page.text for page in doc.pages[1:])


def test_a_pdf_with_more_text_than_the_limit_is_skipped(root: Path) -> None:
    (root / "wordy.pdf").write_bytes(many_pages_pdf(20, lines=40))
    reason = skip_reason(root / "wordy.pdf", root, limits=PdfLimits(max_chars=10_000))
    assert reason == "more than 10,000 characters of text (the limit)"
