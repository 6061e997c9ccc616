"""The gold set file and the per-question verdicts (pure: no index, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.index.documents import Chunk, Hit
from rag.retrieval.gold import GoldQuestion, GoldResult, GoldSetError, compare, judge, load_gold_set

QUESTION = GoldQuestion("What does LoRA train?", ("papers/lora.pdf",), ("low-rank",))


def hit(source: str, text: str = "Some passage.") -> Hit:
    return Hit(Chunk(text, source, 1, "", 0, len(text)), 0.5)


def test_a_missing_file_means_no_gold_set(tmp_path):
    assert load_gold_set(tmp_path / "gold_questions.toml", 5) is None


def test_the_file_is_read_with_its_own_k(tmp_path):
    path = tmp_path / "gold.toml"
    path.write_text('k = 3\n[[question]]\nquestion = "Q?"\nsources = ["a.md", "notes/"]\n')
    gold = load_gold_set(path, 5)
    assert gold is not None and gold.k == 3
    assert gold.questions == (GoldQuestion("Q?", ("a.md", "notes/"), ()),)


@pytest.mark.parametrize("body", [
    '[[question]]\nquestion = "Q?"\n',
    '[[question]]\nquestion = "Q?"\nsources = []\n',
    '[[question]]\nquestion = "Q?"\nsources = ["a.md"]\nevidence = "x"\n',
    "[[question]\n",
], ids=["no-sources", "empty-sources", "evidence-not-a-list", "bad-toml"])
def test_a_malformed_gold_set_is_a_clear_error_naming_the_file(tmp_path, body):
    path = tmp_path / "gold.toml"
    path.write_text(body)
    with pytest.raises(GoldSetError, match="gold.toml"):
        load_gold_set(path, 5)


def test_judge_finds_the_rank_and_evidence_only_in_passages_from_the_sources():
    hits = [hit("other.md", "low-rank everywhere"), hit("papers/lora.pdf", "Low-Rank\nadaptation")]
    result = judge(QUESTION, hits)
    assert result.rank == 2 and result.found == ("low-rank",) and result.passed
    elsewhere = judge(QUESTION, [hit("other.md", "low-rank"), hit("papers/lora.pdf")])
    assert elsewhere.rank == 2 and elsewhere.missing == ("low-rank",) and not elsewhere.passed


def test_a_folder_source_covers_its_files():
    question = GoldQuestion("Q?", ("papers/",))
    assert judge(question, [hit("papers/lora.pdf")]).rank == 1
    assert judge(question, [hit("papersx/lora.pdf")]).rank is None


def test_losing_the_source_or_evidence_is_worse_but_a_lower_rank_is_not():
    before = GoldResult("Q?", 1, ("a", "b"), ())
    changes = compare([before] * 3, [GoldResult("Q?", None, (), ("a", "b")),
                                     GoldResult("Q?", 1, ("a",), ("b",)),
                                     GoldResult("Q?", 4, ("a", "b"), ())])
    assert [c.worse for c in changes] == [True, True, False]
    assert "no longer in the top k" in changes[0].why()
    assert "'b'" in changes[1].why() and changes[2].why() == "rank #1 → #4"


def test_a_question_failing_before_and_after_is_not_worse():
    failing = GoldResult("Q?", None, (), ("a",))
    assert not compare([failing], [failing])[0].worse


def test_the_shipped_example_reads(tmp_path):
    example = Path(__file__).resolve().parents[3] / "docs" / "gold_questions.example.toml"
    gold = load_gold_set(example, 5)
    assert gold is not None and len(gold.questions) >= 3
