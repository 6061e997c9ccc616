"""The grounding check: claims split from answers, judged against a real index of our notes
with the real embedder; numbers, names, the wider search, fitting and `ask --json`."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from rag.answering.grounding import (
    CLAIM_FEATURES,
    CONTRADICTED,
    SUPPORTED,
    GroundingReport,
    fit_weights,
    missing_numbers,
    names,
    numbers,
    sentences,
    split_claims,
)
from tests.conftest import REPO

PAGED = "What is PagedAttention?"
SUPPORTED_PAGED = "PagedAttention cuts each sequence's KV cache into fixed-size blocks."
# True, but it joins two of the notes' list items in other words ("fixed-size KV blocks" and
# "blocks can sit anywhere in GPU memory; they are not contiguous").
SUMMARY_PAGED = (
    "With PagedAttention, the keys and values of a sequence are kept in fixed-size blocks "
    "that do not have to sit next to each other in GPU memory."
)
PLANTED = "PagedAttention was invented at Google in 2019 to compress the model weights."


def test_split_claims_keeps_statements_and_drops_citations_questions_code_filler_repeats():
    answer = (
        "**LoRA** freezes the pretrained weights [1]. Here are the key points:\n"
        "- It trains two small matrices, e.g. B and A, with r = 8 [1, 2].\n"
        "- Why does it work?\n"
        "```python\nmodel = get_peft_model(model, config)\n```\n"
        "I hope this helps! Ok. LoRA freezes the pretrained weights."
    )
    assert split_claims(answer) == [
        "LoRA freezes the pretrained weights.",
        "It trains two small matrices, e.g. B and A, with r = 8.",
    ]


def test_numbers_keep_their_units_and_claims_may_round():
    assert numbers("10,000x, 13k prompts, eight heads, 175B, 80GB, 20.4%") == [
        (10000.0, "x"), (13000.0, ""), (8.0, ""), (175.0, "B"), (80.0, "GB"), (20.4, "%"),
    ]
    assert missing_numbers("about 20 to 38 percent", "only 20.4%–38.2% was used") == []
    assert missing_numbers("from 1.2 TB to 35 GB", "from 1.2 TB to 350 GB; 35 MB") == ["35 GB"]
    assert names("The Chinchilla law came from Kaplan at OpenAI, not GPT-4") >= {
        "chinchilla", "kaplan", "openai", "gpt",
    }


def test_a_planted_unsupported_sentence_is_flagged_and_a_supported_one_passes(
    notes_services, checker
):
    hits = notes_services.retriever.search(PAGED)
    report = checker.check(f"{SUPPORTED_PAGED} [1] {PLANTED}", hits)
    supported, planted = report.claims
    assert supported.verdict == SUPPORTED, supported
    assert planted.verdict != SUPPORTED, planted
    assert planted.evidence is None or planted.verdict == CONTRADICTED
    assert report.grounded_fraction == 0.5
    assert report.summary() == "Grounded: 50% of 2 claims"


@pytest.mark.xfail(strict=True, reason=(
    "known limit since the entailment judge joined the verifier (docs/grounding.md): a true "
    "summary of two list items in other words scores 0.37 against the threshold of 0.43 "
    "(before the judge, 0.37 against 0.29)"))
def test_a_true_summary_of_two_list_items_is_supported(notes_services, checker):
    hits = notes_services.retriever.search(PAGED)
    (claim,) = checker.check(SUMMARY_PAGED, hits).claims
    assert claim.verdict == SUPPORTED, claim


def test_a_supported_claim_carries_its_passage_and_sentence(notes_services, checker):
    hits = notes_services.retriever.search(PAGED)
    (claim,) = checker.check(SUPPORTED_PAGED, hits).claims
    assert claim.evidence is not None
    assert claim.evidence.chunk.source == "notes/serving-with-vllm.md"
    assert "block" in claim.evidence_text.lower()
    # The quote is the passage's own sentence(s), with Markdown markers removed.
    assert claim.evidence_text in " ".join(sentences(claim.evidence.chunk.text))


def test_a_changed_number_is_contradicted_by_the_passage_stating_the_real_one(
    notes_services, checker
):
    hits = notes_services.retriever.search("How many parameters does a LoRA matrix train?")
    right = "For d = k = 4096 and r = 8, LoRA trains 65,536 parameters per weight matrix."
    wrong = "For d = k = 4096 and r = 8, LoRA trains 131,072 parameters per weight matrix."
    kept, changed = checker.check(f"{right} {wrong}", hits, wider_search=True).claims
    assert kept.verdict == SUPPORTED, kept
    assert changed.verdict == CONTRADICTED, changed
    assert changed.missing_numbers == ("131072",)
    assert "65,536" in changed.evidence_text
    assert changed.evidence is not None and changed.evidence.chunk.source.endswith("lora.md")


def test_a_claim_denying_what_the_passage_states_is_contradicted(notes_services, checker):
    hits = notes_services.retriever.search("Does LoRA slow down inference?")
    right = "After training, BA can be merged into W0, so LoRA adds no extra inference latency."
    wrong = "After training, BA is merged into W0, which adds extra inference latency."
    kept, denied = checker.check(f"{right} {wrong}", hits, wider_search=True).claims
    assert kept.verdict == SUPPORTED, kept
    assert denied.verdict == CONTRADICTED, denied
    assert "no extra inference latency" in denied.evidence_text.lower()


def test_the_wider_search_finds_support_beyond_the_given_passages(notes_services, checker):
    hits = notes_services.retriever.search("How does byte-pair encoding build its vocabulary?")
    claim = "Continuous batching lets waiting requests join the batch at every decoding step."
    narrow = checker.check(claim, hits).claims[0]
    wide = checker.check(claim, hits, wider_search=True).claims[0]
    assert narrow.verdict != SUPPORTED
    assert wide.verdict == SUPPORTED
    assert wide.evidence is not None
    assert wide.evidence.chunk.source == "notes/serving-with-vllm.md"


def test_an_answer_without_claims_has_no_grounded_fraction(notes_services, checker):
    report = checker.check("Great question! What else would you like to know?",
                           notes_services.retriever.search(PAGED))
    assert report == GroundingReport(())
    assert report.grounded_fraction is None
    assert report.summary() == "Grounded: no checkable claims"


def test_the_labelled_claims_are_balanced_and_split_by_question():
    rows = [json.loads(line) for line in
            (REPO / "eval" / "claims.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 80 and len({r["id"] for r in rows}) == len(rows)
    counts = Counter((r["split"], r["label"]) for r in rows)
    for split in ("fit", "held_out"):
        assert abs(counts[split, "supported"] - counts[split, "unsupported"]) <= 2, counts
        assert counts[split, "supported"] >= 20
    splits_of = {}
    for r in rows:
        splits_of.setdefault(r["question"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())  # no question leaks across splits


def test_fitting_learns_the_direction_and_leaves_numbers_to_the_hard_rule():
    rng = np.random.default_rng(0)
    supported = np.array([True] * 20 + [False] * 20 + [False] * 5)
    cosine = np.concatenate([rng.uniform(0.7, 0.9, 20), rng.uniform(0.3, 0.5, 20),
                             rng.uniform(0.85, 0.95, 5)])
    # Cosine carries the labels; names are never missing; the other features are noise.
    features = np.column_stack([cosine, rng.uniform(0, 1, 45), np.zeros(45),
                                *(rng.uniform(0, 1, 45) for _ in CLAIM_FEATURES[3:])])
    numbers_missing = np.array([False] * 40 + [True] * 5)  # close wording, wrong numbers
    weights = fit_weights(features, numbers_missing, supported)
    p = weights.probability(features)
    assert weights.cosine > 0
    assert (p[:20] >= weights.threshold).all() and (p[20:40] < weights.threshold).all()


def test_ask_json_has_a_grounding_field_only_when_the_badge_is_enabled(cli_env, monkeypatch):
    runner = CliRunner()
    plain = runner.invoke(app, ["ask", "What is LoRA?", "--json"])
    assert plain.exit_code == 0, plain.output
    assert "grounding" not in json.loads(plain.stdout)
    monkeypatch.setenv("STUDY_ASSISTANT_ANSWER__GROUNDING_BADGE", "true")
    checked = runner.invoke(app, ["ask", "What is LoRA?", "--json"])
    assert checked.exit_code == 0, checked.output
    data = json.loads(checked.stdout)
    grounding = data["grounding"]
    claims = grounding["claims"]
    assert claims and {c["verdict"] for c in claims} <= {"supported", "not_found",
                                                         "contradicted"}
    supported = sum(c["verdict"] == "supported" for c in claims)
    assert grounding["grounded_fraction"] == round(supported / len(claims), 3)
    for c in claims:
        assert (c["evidence"] is not None) == (c["verdict"] != "not_found")


def test_a_missing_entailment_judge_is_one_clear_line_not_a_traceback(cli_env, monkeypatch):
    from rag.answering import entailment

    monkeypatch.setattr(entailment, "PACKAGED_JUDGES", ("absent.safetensors",))
    monkeypatch.setattr(entailment, "_packaged", None)
    monkeypatch.setenv("STUDY_ASSISTANT_ANSWER__GROUNDING_BADGE", "true")
    result = CliRunner().invoke(app, ["ask", "What is LoRA?", "--json"])
    assert result.exit_code == 1
    assert "absent.safetensors is missing: reinstall the package" in result.stderr
    assert "Traceback" not in result.output
