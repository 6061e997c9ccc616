"""The chat-model protocol every backend implements, its value objects and typed errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Messages = list[dict[str, str]]


class LLMError(RuntimeError):
    """Base class of every error a chat model raises."""


class BackendUnavailable(LLMError):
    """The backend cannot be reached (refused, unreachable, or failing with 5xx/429)."""


class BackendTimeout(LLMError):
    """The backend accepted the request but did not answer within the read timeout."""


class BackendProtocolError(LLMError):
    """The backend answered something unusable, or the stream stopped half-way."""


class BackendRejected(LLMError):
    """The backend refused the request itself (4xx other than 429): retrying will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ModelLoadError(LLMError):
    """A local model cannot be found, converted or loaded, or a model is misconfigured."""


class PromptTooLong(LLMError):
    """The prompt plus the requested new tokens do not fit the model's context window."""


@dataclass(frozen=True)
class Completion:
    """A finished generation with its token counts and timings."""

    text: str
    tokens_in: int
    tokens_out: int
    time_to_first_token_s: float | None
    total_s: float
    finish_reason: str = "stop"


@dataclass
class GenerationStats:
    """Filled in by a backend while it streams; turned into a `Completion` at the end."""

    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str = "stop"


@runtime_checkable
class ChatModel(Protocol):
    """An async chat model: streams text pieces, or returns one `Completion`.

    `stream` is declared as a plain method returning an async iterator, which is how an
    `async def ... yield` generator is typed.
    """

    name: str

    def stream(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None = None,
    ) -> AsyncIterator[str]:
        """Yield the answer as it is generated; temperature 0 means greedy."""
        ...

    async def complete(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None = None,
    ) -> Completion:
        """Generate the whole answer and report tokens and timings."""
        ...

    def count_tokens(self, text: str) -> int:
        """Count tokens as this model would (an estimate where its tokenizer is unknown)."""
        ...

    async def aclose(self) -> None:
        """Release network resources (local models hold none)."""
        ...


async def collect_completion(pieces: AsyncIterator[str], stats: GenerationStats) -> Completion:
    """Drain a backend's piece stream into a `Completion`, timing the first piece."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    async for piece in pieces:
        if first is None:
            first = time.perf_counter() - started
        parts.append(piece)
    return Completion(
        text="".join(parts),
        tokens_in=stats.tokens_in,
        tokens_out=stats.tokens_out,
        time_to_first_token_s=first,
        total_s=time.perf_counter() - started,
        finish_reason=stats.finish_reason,
    )


class StopScanner:
    """Cuts streamed text at the first stop string, holding back pieces that might start one."""

    def __init__(self, stops: Sequence[str] | None) -> None:
        self._stops = [s for s in stops or () if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Take the next piece; return what is safe to emit (and set `stopped` on a match)."""
        buffer = self._held + text
        cuts = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if cuts:
            self.stopped = True
            self._held = ""
            return buffer[: min(cuts)]
        keep = self._partial_stop_length(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """Return what is still held back once the stream has ended without a stop."""
        held, self._held = self._held, ""
        return held

    def _partial_stop_length(self, buffer: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
