"""The entailment judge (numpy, merged low-rank updates) against an independent reading of the
same files on transformers' BertModel, and its handling of bad judge files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rag.answering.entailment import (
    JUDGES_DIR,
    PACKAGED_JUDGES,
    EntailmentJudge,
    JudgeError,
    packaged_judge,
)
from rag.answering.grounding import CLAIM_FEATURES, JUDGED_WINDOWS, GroundingChecker, _Passage
from rag.config import PACKAGED_EMBEDDER
from rag.index.bert_encoder import BertEncoder
from rag.index.documents import Chunk, Hit
from rag.index.embedder import resolve_embedder_path

LORA = ("LoRA freezes the pretrained model weights and injects trainable rank decomposition "
        "matrices into each layer of the Transformer.")
PAIRS = [
    (LORA, "LoRA keeps the pretrained weights frozen."),
    (LORA, "LoRA does not freeze the pretrained weights."),
    (LORA, "The KV cache is kept in fixed-size blocks."),
    ("PagedAttention stores the KV cache in fixed-size blocks.", "The KV cache is kept in blocks."),
    # Past 128 tokens together: the longer side (the premise) is cut first.
    (" ".join(["The attention weights are normalised by a softmax."] * 30), "Softmax is used."),
    ("", "An empty premise."),
]


@pytest.fixture(scope="module")
def base_path() -> str:
    return resolve_embedder_path(PACKAGED_EMBEDDER)


def reference_probabilities(base_path: str, judge_file: Path) -> np.ndarray:
    """P(entailed) of PAIRS from transformers' BertModel with the file's updates merged into
    its state dict, read from the file's own layout (torch's (out, in) weights)."""
    import torch
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(base_path, add_pooling_layer=False).eval()
    tensors = load_file(str(judge_file))
    state = model.state_dict()
    for key, value in tensors.items():
        if key.endswith(".lora_a"):
            name = key.removesuffix(".lora_a")
            b = torch.from_numpy(tensors[f"{name}.lora_b"])
            state[f"{name}.weight"] += 2.0 * (b @ torch.from_numpy(value))
        elif "LayerNorm" in key:
            state[key] = torch.from_numpy(value)
    model.load_state_dict(state)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    batch = tokenizer([p for p, _ in PAIRS], [h for _, h in PAIRS], padding=True,
                      truncation="longest_first", max_length=128, return_tensors="pt")
    with torch.no_grad():
        cls = model(**batch).last_hidden_state[:, 0]
        hidden = torch.tanh(cls @ torch.from_numpy(tensors["head.dense.weight"]).T
                            + torch.from_numpy(tensors["head.dense.bias"]))
        logits = (hidden @ torch.from_numpy(tensors["head.out.weight"]).T
                  + torch.from_numpy(tensors["head.out.bias"]))
        return torch.softmax(logits, -1)[:, 0].numpy()


def test_numpy_judges_match_transformers(base_path: str) -> None:
    expected = np.mean([reference_probabilities(base_path, JUDGES_DIR / name)
                        for name in PACKAGED_JUDGES], axis=0)
    got = packaged_judge().entailed(PAIRS)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_a_paraphrase_beats_its_negation_and_an_unrelated_sentence() -> None:
    paraphrase, negation, unrelated = packaged_judge().entailed(PAIRS[:3])
    assert paraphrase > 0.5 > unrelated
    assert paraphrase > negation


def test_no_pairs() -> None:
    assert packaged_judge().entailed([]).shape == (0,)


def test_bad_judge_files_are_refused(base_path: str, tmp_path: Path) -> None:
    base = BertEncoder(base_path)
    with pytest.raises(JudgeError, match="missing: reinstall"):
        EntailmentJudge(base, [tmp_path / "absent.safetensors"])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(JudgeError, match="Cannot read"):
        EntailmentJudge(base, [garbage])
    tensors = load_file(str(JUDGES_DIR / PACKAGED_JUDGES[0]))
    meta = {"lora_scale": "2.0", "labels": "entailed,neutral,contradicted"}
    # A low-rank update for a wider model than the packaged one.
    wrong = dict(tensors)
    name = "encoder.layer.3.attention.self.query"
    wrong[f"{name}.lora_b"] = np.zeros((512, 16), dtype=np.float32)
    save_file(wrong, str(tmp_path / "wide.safetensors"), metadata=meta)
    with pytest.raises(JudgeError, match="does not fit"):
        EntailmentJudge(base, [tmp_path / "wide.safetensors"])
    unpaired = {k: v for k, v in tensors.items() if k != f"{name}.lora_b"}
    save_file(unpaired, str(tmp_path / "unpaired.safetensors"), metadata=meta)
    with pytest.raises(JudgeError, match="has no"):
        EntailmentJudge(base, [tmp_path / "unpaired.safetensors"])
    save_file(tensors, str(tmp_path / "bare.safetensors"))
    with pytest.raises(JudgeError, match="scale and labels"):
        EntailmentJudge(base, [tmp_path / "bare.safetensors"])
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata={**meta, "max_length": "16"})
    short = EntailmentJudge(base, [tmp_path / "short.safetensors"])
    assert len(short.tokenizer.encode(*PAIRS[3]).ids) == 16  # cut where its file says
    with pytest.raises(ValueError, match="at least one"):
        EntailmentJudge(base, [])


class Recording:
    """The packaged judge, keeping the pairs it was asked about."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def entailed(self, pairs):  # type: ignore[no-untyped-def]
        self.pairs += list(pairs)
        return packaged_judge().entailed(pairs)


def test_the_checkers_sixth_feature_is_the_best_of_the_five_nearest_windows(embedder) -> None:
    lora = ("LoRA freezes the pretrained weights. It injects trainable rank decomposition "
            "matrices into each layer. This reduces the number of trainable parameters. "
            "The matrices can be merged into the weights after training.")
    paged = ("PagedAttention stores the KV cache in fixed-size blocks. The blocks need not be "
             "contiguous in memory. vLLM uses it to serve many requests at once.")
    hits = [Hit(Chunk(text, f"notes/{name}.md", None, name, 0, len(text)), 0.5)
            for name, text in (("lora", lora), ("paged", paged))]
    claims = ["LoRA keeps the pretrained weights frozen.",
              "The KV cache is kept in blocks that need not be contiguous."]
    judge = Recording()
    checker = GroundingChecker(embedder, None, judge=judge)  # type: ignore[arg-type]
    table = checker.candidates(claims, hits)
    windows = [w.text for i, h in enumerate(hits) for w in _Passage.of(h).windows(i)]
    vectors = embedder.embed_documents([*claims, *windows])
    for c, (claim, row) in enumerate(zip(claims, table, strict=True)):
        asked = [p for p, h in judge.pairs if h == claim]
        similarity = vectors[len(claims):] @ vectors[c]
        assert set(asked) == {windows[i] for i in np.argsort(-similarity)[:JUDGED_WINDOWS]}
        best = packaged_judge().entailed([(p, claim) for p in asked]).max()
        assert [float(cand.features[CLAIM_FEATURES.index("entailment")]) for cand in row] \
            == pytest.approx([best] * len(hits), abs=1e-6)
        assert best > 0.5  # each claim restates one window
    assert len(judge.pairs) == JUDGED_WINDOWS * len(claims)


def _train_judge():  # type: ignore[no-untyped-def]
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "train_judge.py"
    spec = importlib.util.spec_from_file_location("train_judge", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_judge"] = module
    spec.loader.exec_module(module)
    return module


def test_what_the_training_script_exports_is_what_the_checker_reads(base_path, tmp_path):
    """The training script's model, with every trained weight set to something non-trivial,
    exported and read back: the numpy judge gives the torch model's probabilities."""
    import torch

    train_judge = _train_judge()
    torch.manual_seed(0)
    model = train_judge.build_model().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    state = train_judge.trained_state(model)
    assert state and all(not k.endswith(".base.weight") for k in state)
    from safetensors.numpy import save_file as save

    path = tmp_path / "judge.safetensors"
    save(dict(train_judge.export_tensors(state)), str(path),
         metadata={"lora_scale": "2.0", "labels": "entailed,neutral,contradicted"})
    tok = train_judge.tokenizer()
    batch = tok([p for p, _ in PAIRS], [h for _, h in PAIRS], padding=True,
                truncation="longest_first", max_length=128, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(model(batch["input_ids"], batch["token_type_ids"],
                                       batch["attention_mask"]), -1)[:, 0].numpy()
    got = EntailmentJudge(BertEncoder(base_path), [path]).entailed(PAIRS)
    np.testing.assert_allclose(got, expected, atol=2e-5)
