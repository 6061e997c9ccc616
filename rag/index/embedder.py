"""The embedder: documents and queries as unit vectors, the model loaded lazily (and offline for
the packaged model).

A plain mean-pooled BERT on the CPU, such as the packaged model, runs on `BertEncoder` (numpy,
tokenizers and safetensors alone), which starts in a fraction of the time torch and
sentence-transformers take to import; any other model or device goes through
sentence-transformers.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rag.config import PACKAGED_EMBEDDER, EmbeddingSettings
from rag.index.bert_encoder import BertEncoder, supports

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


# How many recent calls' query vectors are kept (the least recently used goes first): an
# answer embeds its question in each of its searches (the gate's five, the answer's ten) and
# again to rank pieces; a key is one text, or one batch of texts as given, so a vector is
# always the one the same call computed before.
QUERY_CACHE = 64


class EmbedderError(RuntimeError):
    """The configured embedding model cannot be found or loaded."""


def resolve_embedder_path(model: str) -> str:
    """Map the packaged model's name to its directory inside site-packages; pass others through."""
    if model != PACKAGED_EMBEDDER:
        return model
    # find_spec locates the package without importing it.
    spec = importlib.util.find_spec(PACKAGED_EMBEDDER.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            f"The packaged embedder '{PACKAGED_EMBEDDER}' is not installed; run `make install`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").exists():
        raise EmbedderError(f"The packaged embedder at {path} has no sentence-transformers model.")
    return str(path)


class Encoder(Protocol):
    """A loaded embedding model: texts in, unit vectors out (float32, one row per text)."""

    dimension: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...

    def holds_word(self, word: str) -> bool: ...


class SentenceTransformerEncoder:
    """Any sentence-transformers model, through its own `encode`."""

    def __init__(self, model: SentenceTransformer) -> None:
        self.model = model
        # sentence-transformers 5.x renamed the method; accept both.
        getter = getattr(model, "get_embedding_dimension", None)
        dim = getter() if getter else model.get_sentence_embedding_dimension()
        if dim is None:
            raise EmbedderError("The embedding model does not report its dimension.")
        self.dimension = int(dim)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors, one row per text."""
        vectors = self.model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def holds_word(self, word: str) -> bool:
        """Whether the tokenizer keeps the word whole, as one token."""
        return len(self.model.tokenizer.tokenize(word)) == 1


def load_encoder(model: str, device: str = "cpu") -> Encoder:
    """The encoder for a configured model: `BertEncoder` when it reproduces the model exactly
    (on the CPU, where it runs), else sentence-transformers."""
    path = resolve_embedder_path(model)
    try:
        if device == "cpu" and supports(path):
            return BertEncoder(path)
        from sentence_transformers import SentenceTransformer

        return SentenceTransformerEncoder(SentenceTransformer(path, device=device))
    except OSError as exc:
        raise EmbedderError(f"Cannot load embedding model '{path}': {exc}") from exc


class Embedder:
    """Embeds documents and queries; the model loads on first use and is shared by threads."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self.settings = settings
        self._encoder: Encoder | None = None
        self._lock = threading.Lock()
        self._queries: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._queries_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The configured model name, recorded with the index so a change forces re-embedding."""
        return self.settings.model

    @property
    def encoder(self) -> Encoder:
        """The loaded model (loads it on first access)."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = load_encoder(self.settings.model, self.settings.device)
        return self._encoder

    def embed_documents(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Embed passages as unit vectors; `on_batch(n)` is called after each batch of n texts."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        size = self.settings.batch_size
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # Sorting by length keeps padding low, as encode() does internally, while letting us
        # report progress between batches.
        for start in range(0, len(texts), size):
            idx = order[start : start + size]
            out[idx] = self.encoder.encode([texts[i] for i in idx], batch_size=size)
            if on_batch is not None:
                on_batch(len(idx))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query as a unit vector (read-only: it may be a recent call's)."""
        return self._remembered(("one", text), lambda: self.encoder.encode([text])[0])

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed several queries as unit vectors in one batch (one row each; read-only)."""
        return self._remembered(("batch", *texts), lambda: self.embed_documents(texts))

    def _remembered(self, key: tuple[str, ...], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The vectors of a recent call with the same key, else computed and kept (`QUERY_CACHE`
        calls at most)."""
        with self._queries_lock:
            if key in self._queries:
                self._queries.move_to_end(key)
                return self._queries[key]
        vectors = compute()
        vectors.setflags(write=False)
        with self._queries_lock:
            self._queries[key] = vectors
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return vectors

    def holds_word(self, word: str) -> bool:
        """Whether the model's vocabulary holds a word whole, as one token: a word common in
        the text it was trained on ("dinner"), which a misspelling ("tempreature") is not."""
        return self.encoder.holds_word(word)

    @property
    def dimension(self) -> int:
        """The embedding width."""
        return self.encoder.dimension
