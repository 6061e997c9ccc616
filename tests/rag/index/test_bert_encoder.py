"""BertEncoder against sentence-transformers, both on the real packaged model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.config import PACKAGED_EMBEDDER, EmbeddingSettings
from rag.index import bert_encoder
from rag.index.bert_encoder import BertEncoder, length_groups, supports
from rag.index.embedder import Embedder, SentenceTransformerEncoder, resolve_embedder_path

REPO = Path(__file__).resolve().parents[3]
TEXTS = [
    "What is PagedAttention?",
    "How does LoRA reduce the number of trainable parameters?",
    "  surrounding spaces, a tab\tand a\n\nblank line  ",
    "",
    "x",
    "Ünïcödé, “curly quotes”, 日本語 and an emoji 🚀",
    # Far past the model's 256 tokens: both must truncate at the same place.
    "The KV cache is split into fixed-size blocks that need not be contiguous. " * 60,
]


@pytest.fixture(scope="module")
def packaged() -> str:
    """The packaged model's directory."""
    return resolve_embedder_path(PACKAGED_EMBEDDER)


@pytest.fixture(scope="module")
def reference(packaged: str):  # type: ignore[no-untyped-def]
    """sentence-transformers itself on the packaged model."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(packaged, device="cpu")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_vectors_match_sentence_transformers_in_one_batch(packaged, reference) -> None:
    ours = BertEncoder(packaged).encode(TEXTS)
    theirs = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert cosines(ours, theirs).min() >= 0.9999


def test_vectors_match_sentence_transformers_one_text_at_a_time(packaged, reference) -> None:
    encoder = BertEncoder(packaged)
    ours = np.stack([encoder.encode([text])[0] for text in TEXTS])
    theirs = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert cosines(ours, theirs).min() >= 0.9999


def test_vectors_are_unit_length(packaged) -> None:
    vectors = BertEncoder(packaged).encode(TEXTS, batch_size=3)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batches_hold_texts_at_least_half_as_long_as_their_longest() -> None:
    assert length_groups([3, 40, 20, 19, 10, 41, 2], 64) == [[5, 1], [2, 3, 4], [0, 6]]


def test_batches_hold_at_most_the_batch_size() -> None:
    assert length_groups([5, 5, 5, 5, 5], 2) == [[0, 1], [2, 3], [4]]


def test_packaged_model_is_supported(packaged) -> None:
    assert supports(packaged)


def test_a_real_word_is_held_whole_and_a_misspelling_is_not(packaged) -> None:
    encoder = BertEncoder(packaged)
    assert encoder.holds_word("dinner") and encoder.holds_word("capitol")
    assert not encoder.holds_word("tempreature") and not encoder.holds_word("cahce")


def test_sentence_transformers_holds_the_same_words_whole(packaged, reference) -> None:
    words = ["dinner", "capitol", "attention", "tempreature", "cahce", "kubernetes"]
    ours = [BertEncoder(packaged).holds_word(w) for w in words]
    assert ours == [SentenceTransformerEncoder(reference).holds_word(w) for w in words]
    assert any(ours) and not all(ours)


def cls_pooled_copy(packaged: str, tmp_path: Path) -> Path:
    """The packaged model's files, linked, with CLS pooling instead of mean pooling."""
    copy = tmp_path / "cls-model"
    (copy / "1_Pooling").mkdir(parents=True)
    for item in Path(packaged).iterdir():
        if item.is_file():
            (copy / item.name).symlink_to(item)
    pooling = json.loads((Path(packaged) / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    (copy / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return copy


def test_other_pooling_goes_through_sentence_transformers(packaged, reference, tmp_path) -> None:
    path = cls_pooled_copy(packaged, tmp_path)
    assert not supports(str(path))
    embedder = Embedder(EmbeddingSettings(model=str(path)))
    assert isinstance(embedder.encoder, SentenceTransformerEncoder)
    mean = reference.encode(TEXTS[:2], normalize_embeddings=True, convert_to_numpy=True)
    cls = embedder.embed_queries(TEXTS[:2])
    # CLS pooling gives other vectors than the packaged model's mean pooling.
    assert cosines(cls, mean).max() < 0.99


def test_embedding_a_query_never_imports_sentence_transformers() -> None:
    code = (
        "import sys\n"
        "from rag.config import EmbeddingSettings\n"
        "from rag.index.embedder import Embedder\n"
        "vector = Embedder(EmbeddingSettings()).embed_query('What is PagedAttention?')\n"
        "assert vector.shape == (384,), vector.shape\n"
        "print(sorted(m for m in ('sentence_transformers', 'transformers', 'sklearn', 'torch')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_long_batches_run_on_torch_with_the_same_vectors(packaged, reference, monkeypatch) -> None:
    encoder = BertEncoder(packaged)
    on_numpy = encoder.encode(TEXTS)
    ran: list[int] = []
    forward = encoder._torch_forward

    def counted(*arrays):  # type: ignore[no-untyped-def]
        ran.append(arrays[0].shape[0])
        return forward(*arrays)

    monkeypatch.setattr(encoder, "_torch_forward", counted)
    monkeypatch.setattr(bert_encoder, "TORCH_FROM_TOKENS", 1)
    on_torch = encoder.encode(TEXTS)
    theirs = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert sum(ran) == len(TEXTS)
    assert cosines(on_torch, theirs).min() >= 0.9999
    assert np.abs(on_torch - on_numpy).max() < 1e-5


def test_short_batches_run_on_numpy(packaged, monkeypatch) -> None:
    encoder = BertEncoder(packaged)
    monkeypatch.setattr(encoder, "_torch_forward", None)  # calling it would fail
    assert encoder.encode(TEXTS[:2]).shape == (2, encoder.dimension)


def test_a_query_asked_again_is_embedded_once_with_the_same_vector(monkeypatch) -> None:
    # An answer embeds its question in each of its searches and again to rank pieces.
    embedder = Embedder(EmbeddingSettings())
    calls: list[list[str]] = []
    encode = embedder.encoder.encode

    def counted(texts: list[str], batch_size: int = 64) -> np.ndarray:
        calls.append(list(texts))
        return encode(texts, batch_size)

    monkeypatch.setattr(embedder.encoder, "encode", counted)
    first = embedder.embed_query("What is PagedAttention?")
    batch = embedder.embed_queries(["What is PagedAttention?", "What is LoRA?"])
    assert embedder.embed_query("What is PagedAttention?") is first
    assert embedder.embed_queries(["What is PagedAttention?", "What is LoRA?"]) is batch
    # A batch is its own key: its vectors are the ones the same batch gave, to the last bit.
    assert len(calls) == 2
    alone = embedder.embed_queries(["What is LoRA?"])[0]
    assert np.array_equal(alone, encode(["What is LoRA?"])[0])
    assert len(calls) == 3
    # Kept vectors cannot be changed by a caller.
    with pytest.raises(ValueError):
        first += 1


def test_the_query_cache_keeps_only_recent_queries(monkeypatch) -> None:
    monkeypatch.setattr("rag.index.embedder.QUERY_CACHE", 2)
    embedder = Embedder(EmbeddingSettings())
    first = embedder.embed_query("one")
    embedder.embed_query("two")
    embedder.embed_query("three")
    again = embedder.embed_query("one")
    assert again is not first and np.array_equal(again, first)


def test_with_weights_replaces_only_what_it_is_given(packaged: str) -> None:
    encoder = BertEncoder(packaged)
    name = "encoder.layer.5.output.LayerNorm.bias"
    changed = encoder.with_weights({name: encoder.weights[name] + 1})
    assert not np.allclose(changed.encode(TEXTS[:2]), encoder.encode(TEXTS[:2]))
    assert changed.weights["embeddings.word_embeddings.weight"] is encoder.weights[
        "embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(encoder.weights[name] + 1, changed.weights[name])
    with pytest.raises(ValueError, match="not weights"):
        encoder.with_weights({"encoder.layer.9.output.dense.weight": np.zeros(1)})
