"""The verifier's training sentences (eval/verifier_train.jsonl): each row's evidence is found
where its locator says in the shared materials, and no row is one of the labelled sentences
that measure the verifier (eval/verifier_sentences*.jsonl)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _load():
    spec = importlib.util.spec_from_file_location(
        "verifier_train", REPO / "benchmarks" / "verifier_train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load()


@pytest.fixture(scope="module")
def texts(shared_materials: Path) -> dict[str, str]:
    return {name: train.material_text(shared_materials, name)
            for name in {row["file"] for row in train.read_rows()}}


def test_every_locator_finds_its_evidence(texts: dict[str, str]) -> None:
    rows = train.read_rows()
    spans = [train.evidence(row, texts) for row in rows]
    assert len(rows) == 2399 and all(spans)
    assert Counter(row["label"] for row in rows) == {"supported": 1199, "unsupported": 1200}


def test_a_shifted_text_is_refused(texts: dict[str, str]) -> None:
    row = train.read_rows()[0]
    shifted = {**texts, row["file"]: " " + texts[row["file"]]}
    with pytest.raises(ValueError, match="differs from the text"):
        train.evidence(row, shifted)


def test_no_training_sentence_is_a_labelled_one() -> None:
    def norm(text: str) -> str:
        return " ".join(text.casefold().split())

    labelled = {norm(json.loads(line)["sentence"])
                for path in (REPO / "eval").glob("verifier_sentences*.jsonl")
                for line in path.read_text(encoding="utf-8").splitlines() if line}
    assert len(labelled) > 400
    assert not [r["id"] for r in train.read_rows() if norm(r["sentence"]) in labelled]


@pytest.mark.parametrize(("name", "labels"), [
    ("verifier_sentences_heldout6.jsonl", {"supported": 43, "unsupported": 44}),
    ("verifier_sentences_heldout7.jsonl", {"supported": 45, "unsupported": 44}),
    ("verifier_sentences_heldout8.jsonl", {"supported": 45, "unsupported": 45}),
])
def test_the_later_held_out_sets_locators_find_their_evidence(
        texts: dict[str, str], shared_materials: Path, name: str, labels: dict[str, int]) -> None:
    rows = train.read_rows(REPO / "eval" / name)
    for file in {r["file"] for r in rows} - set(texts):
        texts[file] = train.material_text(shared_materials, file)
    located = [r for r in rows if r["evidence_at"] is not None]
    assert all(train.evidence(r, texts) for r in located)
    # Only statements the materials never discuss come without evidence.
    assert {r["kind"] for r in rows if r["evidence_at"] is None} == {"absent"}
    assert Counter(r["label"] for r in rows) == labels
