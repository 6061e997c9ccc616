"""Named chat models, built on first use from `LLMSettings` and shared afterwards."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from rag.llm.base import ChatModel, LLMError
from rag.llm.local import LocalChatModel, ModelLoader
from rag.llm.openai_compat import OpenAIChatModel
from rag.llm.settings import LLMSettings, ModelSpec
from rag.quoting import quoted


class UnknownModel(LLMError):
    """No model of that name is configured."""


class ModelRegistry:
    """Builds each configured chat model lazily and returns the same instance afterwards."""

    def __init__(
        self,
        settings: LLMSettings,
        cache_dir: Path,
        *,
        loader: ModelLoader | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.loader = loader or ModelLoader(
            cache_dir, int4=settings.int4_kernels, onnx=settings.onnx_runtime
        )
        self._environ = environ
        self._models: dict[str, ChatModel] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The configured model names, in configuration order."""
        return list(self.settings.models)

    def get(self, name: str | None = None) -> ChatModel:
        """The chat model called `name` (the default model when None)."""
        name = name or self.settings.default
        spec = self.settings.models.get(name)
        if spec is None:
            raise UnknownModel(f"Unknown model {quoted(name)}; known models: "
                               f"{', '.join(self.names())}")
        with self._lock:
            if name not in self._models:
                self._models[name] = self._build(spec)
            return self._models[name]

    async def aclose(self) -> None:
        """Close every model built so far (their network clients)."""
        with self._lock:
            models = list(self._models.values())
        for model in models:
            await model.aclose()

    def _build(self, spec: ModelSpec) -> ChatModel:
        if spec.backend == "local":
            return LocalChatModel(spec, self.loader)
        return OpenAIChatModel(spec, self.settings, environ=self._environ)
