"""Chat models behind any OpenAI-compatible server (vLLM in production, `transformers serve`).

Streams `POST {base_url}/chat/completions` as server-sent events (the next-token demo also
uses the plain-text `POST {base_url}/completions`, to see a raw prompt). Connection failures and
5xx/429 answers are retried with exponential backoff, but only until the first piece of text
has reached the caller: after that a retry would repeat output, so errors are raised instead.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx

from rag.llm.base import (
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    Completion,
    GenerationStats,
    LLMError,
    Messages,
    ModelLoadError,
    StopScanner,
    collect_completion,
)
from rag.llm.settings import LLMSettings, ModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class TokenLogprob:
    """A token as the server spells it, and its log-probability."""

    token: str
    logprob: float


@dataclass(frozen=True)
class PositionLogprobs:
    """One generated position: the token chosen and the most likely tokens there."""

    chosen: TokenLogprob
    top: tuple[TokenLogprob, ...]


@dataclass(frozen=True)
class LogprobsResult:
    """A short completion with per-token log-probabilities (none if the server sent none)."""

    text: str
    positions: tuple[PositionLogprobs, ...]


class _Retryable(Exception):
    """A failure that may go away if the request is sent again."""

    def __init__(self, error: LLMError) -> None:
        super().__init__(str(error))
        self.error = error


class OpenAIChatModel:
    """A chat model served over the OpenAI chat-completions streaming protocol."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: LLMSettings,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if not spec.base_url:
            raise ModelLoadError(f"Model '{spec.name}' has no base_url.")
        self.name = spec.name
        self.spec = spec
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self._settings = settings
        self._api_key = _api_key(spec, os.environ if environ is None else environ)
        self._client: httpx.AsyncClient | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._tokenizer_tried = False

    def __repr__(self) -> str:
        # Spelled out so that the API key can never end up in a log line.
        return f"OpenAIChatModel(name={self.name!r}, url={self.url!r})"

    def count_tokens(self, text: str) -> int:
        """Exact if the model's tokenizer is available locally, else about four chars a token."""
        tokenizer = self._local_tokenizer()
        if tokenizer is not None:
            return len(tokenizer.encode(text, add_special_tokens=False))
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def stream(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield the answer as the server streams it."""
        return self._generate(messages, max_tokens, temperature, stop, GenerationStats())

    async def complete(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None = None,
    ) -> Completion:
        """Generate the whole answer; token counts come from the server's usage report."""
        stats = GenerationStats()
        pieces = self._generate(messages, max_tokens, temperature, stop, stats)
        completion = await collect_completion(pieces, stats)
        if stats.tokens_in or stats.tokens_out:
            return completion
        return self._with_estimated_usage(completion, messages)

    async def token_logprobs(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        temperature: float,
        top_logprobs: int,
        seed: int | None = None,
    ) -> LogprobsResult:
        """A short completion with each token's log-probability and the top alternatives."""
        body = self._body(messages, max_tokens, temperature, None)
        del body["stream_options"]
        body.update(stream=False, logprobs=True, top_logprobs=top_logprobs)
        if seed is not None:
            body["seed"] = seed
        return self._parse_logprobs(await self._post_json(body))

    async def text_logprobs(
        self,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float,
        top_logprobs: int,
        seed: int | None = None,
    ) -> LogprobsResult:
        """Continue a raw text (no chat template) through `/completions`, with logprobs."""
        body: dict[str, Any] = {
            "model": self.spec.model, "prompt": prompt, "max_tokens": max_tokens,
            "temperature": temperature, "logprobs": top_logprobs, "stream": False,
        }
        if seed is not None:
            body["seed"] = seed
        url = self.url.removesuffix("/chat/completions") + "/completions"
        return self._parse_text_logprobs(await self._post_json(body, url), url)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _with_estimated_usage(self, completion: Completion, messages: Messages) -> Completion:
        tokens_in = sum(self.count_tokens(m["content"]) for m in messages)
        tokens_out = self.count_tokens(completion.text)
        return replace(completion, tokens_in=tokens_in, tokens_out=tokens_out)

    def local_tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The served model's tokenizer if this machine has it (blocking), else None."""
        return self._local_tokenizer()

    def _local_tokenizer(self) -> PreTrainedTokenizerBase | None:
        if not self._tokenizer_tried:
            self._tokenizer_tried = True
            try:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(
                    self.spec.model, local_files_only=True
                )
            except Exception:  # unknown to this machine: estimate instead
                self._tokenizer = None
        return self._tokenizer

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            s = self._settings
            timeout = httpx.Timeout(
                connect=s.connect_timeout_s,
                read=s.read_timeout_s,
                write=s.read_timeout_s,
                pool=s.connect_timeout_s,
            )
            self._client = httpx.AsyncClient(timeout=timeout)
        return self._client

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _body(
        self, messages: Messages, max_tokens: int, temperature: float, stop: list[str] | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if stop:
            body["stop"] = stop
        return body

    async def _generate(
        self,
        messages: Messages,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None,
        stats: GenerationStats,
    ) -> AsyncGenerator[str, None]:
        body = self._body(messages, max_tokens, temperature, stop)
        attempt = 0
        while True:
            delivered = False
            try:
                # aclosing: an abandoned answer closes its HTTP response now, not at GC time.
                async with aclosing(self._attempt(body, stop, stats)) as pieces:
                    async for piece in pieces:
                        delivered = True
                        yield piece
                return
            except _Retryable as retryable:
                if delivered or attempt >= self._settings.max_retries:
                    raise retryable.error from retryable.__cause__
            await asyncio.sleep(self._settings.retry_backoff_s * 2**attempt)
            attempt += 1

    async def _attempt(
        self, body: dict[str, Any], stop: list[str] | None, stats: GenerationStats
    ) -> AsyncGenerator[str, None]:
        scanner = StopScanner(stop)
        try:
            async with self._http().stream(
                "POST", self.url, json=body, headers=self._headers()
            ) as response:
                await self._check_status(response)
                async with aclosing(self._read_stream(response, stats)) as texts:
                    async for text in texts:
                        if piece := scanner.feed(text):
                            yield piece
                        if scanner.stopped:
                            return
            if tail := scanner.flush():
                yield tail
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    async def _check_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        detail = (await response.aread()).decode("utf-8", errors="replace")[:300]
        message = f"{response.request.url} answered HTTP {response.status_code}: {detail}"
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(BackendUnavailable(message))
        raise BackendRejected(message, response.status_code)

    async def _read_stream(
        self, response: httpx.Response, stats: GenerationStats
    ) -> AsyncGenerator[str, None]:
        finished = False
        async for data in sse_data(response.aiter_lines()):
            if data.strip() == "[DONE]":
                return
            chunk = self._parse_chunk(data)
            _record_usage(chunk, stats)
            for choice in chunk.get("choices") or []:
                if choice.get("finish_reason"):
                    finished = True
                    stats.finish_reason = str(choice["finish_reason"])
                content = (choice.get("delta") or {}).get("content")
                if content:
                    yield content
        # Some servers (transformers serve) end with a finish_reason and no [DONE].
        if not finished:
            raise BackendProtocolError(f"The stream from {self.url} ended before the answer did.")

    async def _post_json(self, body: dict[str, Any], url: str | None = None) -> dict[str, Any]:
        """POST a non-streaming request, retrying connection failures, 5xx and 429."""
        attempt = 0
        while True:
            try:
                return await self._post_once(body, url or self.url)
            except _Retryable as retryable:
                if attempt >= self._settings.max_retries:
                    raise retryable.error from retryable.__cause__
            await asyncio.sleep(self._settings.retry_backoff_s * 2**attempt)
            attempt += 1

    async def _post_once(self, body: dict[str, Any], url: str) -> dict[str, Any]:
        headers = {**self._headers(), "Accept": "application/json"}
        try:
            response = await self._http().post(url, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        await self._check_status(response)
        return self._parse_chunk(response.text)

    def _parse_logprobs(self, data: dict[str, Any]) -> LogprobsResult:
        try:
            choice = data["choices"][0]
            text = str((choice.get("message") or {}).get("content") or "")
            entries = (choice.get("logprobs") or {}).get("content") or []
            positions = tuple(_position(entry) for entry in entries)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise BackendProtocolError(
                f"{self.url} sent logprobs in an unexpected shape: {str(data)[:200]}"
            ) from exc
        return LogprobsResult(text, positions)

    def _parse_text_logprobs(self, data: dict[str, Any], url: str) -> LogprobsResult:
        """The legacy completions shape: parallel `tokens`, `token_logprobs`, `top_logprobs`."""
        try:
            choice = data["choices"][0]
            logprobs = choice.get("logprobs") or {}
            tokens = logprobs.get("tokens") or []
            chosen = logprobs.get("token_logprobs") or []
            tops = logprobs.get("top_logprobs") or [{}] * len(tokens)
            positions = tuple(
                PositionLogprobs(
                    TokenLogprob(str(token), float(lp)),
                    tuple(TokenLogprob(str(t), float(v)) for t, v in (top or {}).items()),
                )
                for token, lp, top in zip(tokens, chosen, tops, strict=True)
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise BackendProtocolError(
                f"{url} sent logprobs in an unexpected shape: {str(data)[:200]}"
            ) from exc
        return LogprobsResult(str(choice.get("text") or ""), positions)

    def _parse_chunk(self, data: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise BackendProtocolError(
                f"{self.url} sent an event that is not JSON: {data[:200]!r}"
            ) from exc
        if not isinstance(chunk, dict):
            raise BackendProtocolError(f"{self.url} sent an unexpected event: {data[:200]!r}")
        if "error" in chunk:
            raise BackendProtocolError(f"{self.url} reported an error mid-stream: {chunk['error']}")
        return chunk

    def _transport_error(self, exc: httpx.TransportError) -> Exception:
        if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
            return _Retryable(BackendUnavailable(f"Cannot connect to {self.url}: {_describe(exc)}"))
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(
                f"{self.url} did not answer within {self._settings.read_timeout_s:g}s "
                f"({type(exc).__name__})."
            )
        # The connection broke: retried only if nothing reached the caller yet.
        return _Retryable(
            BackendProtocolError(f"The connection to {self.url} broke mid-stream: {_describe(exc)}")
        )


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data` payloads of a server-sent-event stream, one per event."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


def _position(entry: dict[str, Any]) -> PositionLogprobs:
    """One `logprobs.content` entry of a chat completion."""
    top = tuple(
        TokenLogprob(str(t["token"]), float(t["logprob"])) for t in entry.get("top_logprobs") or []
    )
    return PositionLogprobs(TokenLogprob(str(entry["token"]), float(entry["logprob"])), top)


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _record_usage(chunk: dict[str, Any], stats: GenerationStats) -> None:
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        stats.tokens_in = int(usage.get("prompt_tokens") or 0)
        stats.tokens_out = int(usage.get("completion_tokens") or 0)


def _api_key(spec: ModelSpec, environ: Mapping[str, str]) -> str | None:
    if spec.api_key_env is None:
        return None
    key = environ.get(spec.api_key_env)
    if not key:
        raise ModelLoadError(
            f"Model '{spec.name}' reads its API key from ${spec.api_key_env}, which is not set."
        )
    return key
