"""Sentence-transformers embeddings, loaded lazily (and offline for the packaged model)."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.config import PACKAGED_EMBEDDER, EmbeddingSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


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


class Embedder:
    """Embeds documents and queries; the model loads on first use and is shared by threads."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self.settings = settings
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The configured model name, recorded with the index so a change forces re-embedding."""
        return self.settings.model

    @property
    def model(self) -> SentenceTransformer:
        """The loaded SentenceTransformer (loads it on first access)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        path = resolve_embedder_path(self.settings.model)
        try:
            return SentenceTransformer(path, device=self.settings.device)
        except OSError as exc:
            raise EmbedderError(f"Cannot load embedding model '{path}': {exc}") from exc

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
            out[idx] = self.model.encode(
                [texts[i] for i in idx],
                batch_size=size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            if on_batch is not None:
                on_batch(len(idx))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query as a unit vector."""
        vec = self.model.encode(
            [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vec[0], dtype=np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed several queries as unit vectors in one batch (one row each)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vecs = self.model.encode(
            list(texts), batch_size=self.settings.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)

    @property
    def dimension(self) -> int:
        """The embedding width."""
        model = self.model
        # sentence-transformers 5.x renamed the method; accept both.
        getter = getattr(model, "get_embedding_dimension", None)
        dim = getter() if getter else model.get_sentence_embedding_dimension()
        if dim is None:
            raise EmbedderError("The embedding model does not report its dimension.")
        return int(dim)
