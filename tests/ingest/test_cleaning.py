"""Text repair on the real, damaged course guides and the real attention paper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pypdf import PdfReader

from ingest.cleaning import clean_pdf_pages, match_pdf_heading, repair_text

GUIDES = (
    "class2-llm-overview.md",
    "llm-basics.md",
    "llm-complete-guide.md",
    "week2-support-guide.md",
    "week6-transformers-fundamentals.md",
)
# UTF-8 read as cp1252 ("â€™", "Ã—", "Â "), as cp1254 ("ğŸ"), or as MacRoman ("‚Äô",
# "\uf8ffüìÖ"), C1 controls left by a sloppy decode, and replacement characters.
MOJIBAKE = re.compile(
    "â€|â[\u0080-\u00bf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]|Ã[\u0080-\u00bf×]|Â|ðŸ|ğŸ|ï¸"
    "|‚Ä|‚Ä|‚ú|\uf8ff|\ufffd|[\u0080-\u009f]"
)
LIGATURES = re.compile("[ﬀﬁﬂﬃﬄﬅﬆ]")


def read_guide(materials: Path, name: str) -> str:
    """The raw text of a guide, exactly as it was exported."""
    return (materials / "guides" / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def attention_raw(shared_materials: Path) -> list[str]:
    """pypdf's page texts of the real attention paper."""
    reader = PdfReader(shared_materials / "papers" / "attention_is_all_you_need.pdf")
    return [page.extract_text() for page in reader.pages]


@pytest.fixture(scope="module")
def attention_clean(attention_raw: list[str]) -> list[str]:
    """The cleaned page texts of the real attention paper."""
    return clean_pdf_pages(attention_raw)


@pytest.mark.parametrize("name", GUIDES)
def test_no_mojibake_survives_in_a_real_guide(shared_materials: Path, name: str) -> None:
    repaired = repair_text(read_guide(shared_materials, name))
    leftovers = [
        repaired[max(0, m.start() - 20) : m.end() + 20] for m in MOJIBAKE.finditer(repaired)
    ]
    assert leftovers == []


def test_the_damaged_guides_really_are_damaged(shared_materials: Path) -> None:
    damaged = [name for name in GUIDES if MOJIBAKE.search(read_guide(shared_materials, name))]
    assert set(damaged) >= {"class2-llm-overview.md", "llm-basics.md", "llm-complete-guide.md"}


def test_macroman_apostrophes_and_dashes_are_repaired(shared_materials: Path) -> None:
    raw = read_guide(shared_materials, "class2-llm-overview.md")
    assert "you‚Äôll" in raw and "22T‚Äì40T" in raw
    repaired = repair_text(raw)
    assert "you'll get hands-on" in repaired
    assert "22T–40T tokens" in repaired


def test_cp1252_quotes_that_lost_their_last_byte_are_restored(shared_materials: Path) -> None:
    repaired = repair_text(read_guide(shared_materials, "llm-basics.md"))
    assert '**"Large"** = refers to' in repaired
    assert 'What makes them "smart"?' in repaired
    assert '*"playing" → "play" + "ing"*' in repaired


def test_box_drawing_and_dingbats_that_lost_a_byte_are_restored(shared_materials: Path) -> None:
    repaired = repair_text(read_guide(shared_materials, "llm-complete-guide.md"))
    assert "┌──────────▼─────────────┐" in repaired
    assert "│  ← Which words relate?" in repaired
    assert '❌ Bad: "Write code"' in repaired


def test_macroman_emoji_are_repaired() -> None:
    assert repair_text("## \uf8ffüìÖ Agenda") == "## 📅 Agenda"


def test_emoji_that_lost_a_byte_are_dropped() -> None:
    assert repair_text("## ğŸ¯ What are LLMs?") == "##  What are LLMs?"


def test_repair_keeps_markdown_syntax() -> None:
    markdown = (
        "# Title\n\n- **bold** and *em* and `code`\n\n| a | b |\n|---|---|\n"
        "[link](https://x.org/?a=1&b=2) &amp; <br>\n\n```python\nx = 1  # comment\n```\n"
    )
    assert repair_text(markdown) == markdown


def test_repair_normalises_newlines_and_drops_control_characters() -> None:
    assert repair_text("a\r\nb\rc\x00d\x07e\u00adf") == "a\nb\ncdef"


def test_repair_composes_to_nfc() -> None:
    assert repair_text("cafe\u0301") == "café"


def test_decoded_text_is_left_alone() -> None:
    text = "Softmax(QK^T / √d_k) costs 70B × 4 bits – naïve, déjà vu, 日本語, → ✅"
    assert repair_text(text) == text


def test_pdf_ligatures_are_expanded(attention_raw: list[str], attention_clean: list[str]) -> None:
    assert LIGATURES.search("".join(attention_raw))
    assert not LIGATURES.search("".join(attention_clean))
    assert "specific challenges" in attention_clean[8]


def test_pdf_words_split_at_line_ends_are_joined(
    attention_raw: list[str], attention_clean: list[str]
) -> None:
    assert "transduc-\ntion models" in attention_raw[1]
    assert "transduction models in various tasks" in attention_clean[1]


def test_pdf_compounds_split_at_line_ends_keep_their_hyphen(
    attention_raw: list[str], attention_clean: list[str]
) -> None:
    assert "position-\nwise" in attention_raw[2]
    assert "a simple, position-wise fully connected" in attention_clean[2]
    assert "sequence-\naligned" in attention_raw[1]
    assert "sequence-aligned recurrence" in attention_clean[1]


def test_pdf_page_number_footers_are_removed(
    attention_raw: list[str], attention_clean: list[str]
) -> None:
    for number, (raw, clean) in enumerate(zip(attention_raw, attention_clean, strict=True), 1):
        if number > 1:
            assert raw.rstrip().endswith(f"\n{number}")
        assert not clean.endswith(f"\n\n{number}")


def test_pdf_arxiv_stamp_is_removed(attention_raw: list[str], attention_clean: list[str]) -> None:
    assert "arXiv:1706.03762v5" in attention_raw[0]
    assert "arXiv:1706.03762v5" not in attention_clean[0]


def test_pdf_running_headers_and_footers_are_removed() -> None:
    words = ("alpha", "beta", "gamma", "delta", "epsilon")
    pages = [
        f"Efficient Widgets: A Study\n{w.title()} opens page {n}\nand {w} closes it.\n"
        f"Page {n} of {len(words)}"
        for n, w in enumerate(words, 1)
    ]
    cleaned = clean_pdf_pages(pages)
    assert not any("Efficient Widgets" in page or "Page" in page for page in cleaned)
    assert cleaned[1] == "Beta opens page 2 and beta closes it."


def test_pdf_soft_line_breaks_become_spaces_within_paragraphs(attention_clean: list[str]) -> None:
    page = attention_clean[0]
    assert re.search(r"(?<!\n)\n(?!\n)", page) is None
    abstract = (
        "The dominant sequence transduction models are based on complex recurrent or "
        "convolutional neural networks that include an encoder and a decoder."
    )
    paragraph = next(p for p in page.split("\n\n") if p.startswith("The dominant"))
    assert paragraph.startswith(abstract)
    assert paragraph.endswith("both with large and limited training data.")


def test_pdf_headings_stay_paragraphs_of_their_own(attention_clean: list[str]) -> None:
    assert "\n\n3.2.1 Scaled Dot-Product Attention\n\n" in attention_clean[3]
    assert "\n\nAbstract\n\n" in attention_clean[0]


def test_clean_pdf_pages_returns_one_text_per_page(attention_raw: list[str]) -> None:
    assert len(clean_pdf_pages(attention_raw)) == len(attention_raw) == 15


def test_a_sentence_cut_by_a_page_break_is_joined_on_its_first_page(
    attention_raw: list[str],
) -> None:
    # Page 6 ends "... a neighborhood of size r in" and page 7 goes on "the input sequence".
    cleaned = clean_pdf_pages(attention_raw)
    assert "a neighborhood of size r in the input sequence centered around" in cleaned[5]
    assert not cleaned[6].startswith("the input sequence")


def _two_pages(end: str, *start: str) -> list[str]:
    """Two pages of prose: the first ends with `end`, the second holds `start`'s lines, each a
    paragraph."""
    body = "Widgets are small. They are also cheap to make and easy to sell.\n\n"
    return [body + end, "\n\n".join(start)]


@pytest.mark.parametrize(
    ("end", "start", "joined"),
    [
        # Lower case goes on the sentence.
        ("We fit the model to a preference dataset and then",
         ["fine-tune it with reinforcement learning on the reward."], True),
        # A name after "the" does too; a table and a caption printed first are passed over.
        ("We fit the reward under a preference model such as the",
         ["Table 2: Win rates 0.1 0.2 0.3", "1.5 2.5 3.5 4.5 5.5",
          "Bradley-Terry model, then fine-tune a policy."], True),
        ("While the method was designed as a",
         ["Parameter Efficient Finetuning (PEFT) method, most memory goes to activations."],
         True),
        # A list of cited things goes on with the next one (LLaMA p. 4-5), not with a run-in
        # heading (QLoRA p. 14-15).
        ("We consider eight benchmarks: BoolQ (Clark et al., 2019), PIQA (Bisk et al., 2020),",
         ["HellaSwag (Zellers et al., 2019) and ARC (Clark et al., 2018)."], True),
        ("Approaches and datasets include MetaICL [40], MetaTuning [69],",
         ["Chatbots Many instruction following models are structured as dialogue agents."],
         False),
        # A word that ends sentences before a capitalised sentence opener: two sentences.
        ("We fit the reward model using a preference model such as the",
         ["In this work, we use sine and cosine functions of different frequencies."], False),
        # A finished sentence, a heading, a footnote's address and a short label stay apart.
        ("We fit the reward model using a preference model first.",
         ["then the policy is trained on the reward for a while."], False),
        ("We fit the reward model using a preference model such as the",
         ["3 Method", "the policy is trained on the reward for a while."], False),
        ("We use the kernels of xformers 2https://github.com/facebookresearch/xformers",
         ["and the policy is trained on the reward for a while."], False),
        ("The following is an example of what it writes. This is",
         ["Prompt:", "Write a short poem about the sea."], False),
    ],
)
def test_page_breaks_mend_only_sentences_they_cut(
    end: str, start: list[str], joined: bool
) -> None:
    first, second = clean_pdf_pages(_two_pages(end, *start))
    carried = next(p for p in start if p[0].isalpha() and not p.startswith(("Table", "3 ")))
    assert first.endswith(f"{end} {carried}") is joined
    assert (carried in second) is not joined


@pytest.mark.parametrize(
    ("line", "numbering"),
    [
        ("3.2.1 Scaled Dot-Product Attention", ("3", "2", "1")),
        ("4 QLoRA vs. Standard Finetuning", ("4",)),
        ("A.2 Deriving the DPO Objective Under the Bradley-Terry Model", ("A", "2")),
        ("References", ()),
        ("ABSTRACT", ()),
        ("7 KV cache states for", None),
        ("25. Zhengxuan Wu", None),
        ("1 GPT-3 175B 73.8 89.5 52.0", None),
        ("2 The model is trained on large corpora of text.", None),
    ],
)
def test_match_pdf_heading_tells_headings_from_body_lines(
    line: str, numbering: tuple[str, ...] | None
) -> None:
    assert match_pdf_heading(line) == numbering
