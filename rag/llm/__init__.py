"""Chat models: one async protocol, an in-process transformers backend and an OpenAI-compatible one.

Importing this package is cheap: torch and transformers load only when a local model does.
"""

from rag.llm.base import (
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    ChatModel,
    Completion,
    LLMError,
    ModelLoadError,
    PromptTooLong,
)
from rag.llm.registry import ModelRegistry, UnknownModel
from rag.llm.settings import LLMSettings, ModelSpec

__all__ = [
    "BackendProtocolError",
    "BackendRejected",
    "BackendTimeout",
    "BackendUnavailable",
    "ChatModel",
    "Completion",
    "LLMError",
    "LLMSettings",
    "ModelLoadError",
    "ModelRegistry",
    "ModelSpec",
    "PromptTooLong",
    "UnknownModel",
]
