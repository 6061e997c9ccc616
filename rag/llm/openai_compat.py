"""Chat models behind any OpenAI-compatible server (vLLM in production, `transformers serve`):
`/chat/completions`, streamed, for answers; the next-token demo also asks `/completions` to
continue a raw prompt.

Built on the official `openai` SDK (`AsyncOpenAI`), as vLLM's own examples are: it owns the
connection pool, the server-sent-event parsing, the timeouts, and the retries of a request that
failed before its response began (no connection, 408/409/429/5xx; exponential backoff that
honours `Retry-After`). Once a response has begun nothing is retried, so no text is ever shown
twice. On top of the SDK this module maps its exceptions to our typed errors, checks the shape
of every chunk (a malformed stream is a `BackendProtocolError`, never an AttributeError), and
enforces on our side what a server may not: one deadline for the whole generation and the
token cap, so a server that trickles tokens or ignores `max_tokens` cannot hold a slot forever.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncGenerator, Awaitable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError

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
    import openai
    from transformers import PreTrainedTokenizerBase

CHARS_PER_TOKEN = 4
# The token cap counts streamed pieces (a piece carries at least one token); this bounds the
# characters too, for a server that sends many tokens in one piece. No real answer averages
# 64 characters a token.
MAX_CHARS_PER_TOKEN = 64
# Servers without authentication still need some key for the SDK (vLLM's docs use "EMPTY").
NO_KEY = "EMPTY"
_T = TypeVar("_T")
log = logging.getLogger(__name__)


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


class _Read(BaseModel):
    """The fields we read from the SDK's objects, with their types checked.

    The SDK builds its response objects without validating them, so a server that sends
    `"choices": "x"` or a number as `content` would surface as an AttributeError or
    TypeError far from here; validating what we read turns that into one clear error.
    """

    model_config = ConfigDict(from_attributes=True, extra="ignore")


class _Delta(_Read):
    content: str | None = None


class _Choice(_Read):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(_Read):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Chunk(_Read):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None


class _TopLogprob(_Read):
    token: str
    logprob: float


class _PositionLogprob(_TopLogprob):
    top_logprobs: list[_TopLogprob] | None = None


class _Logprobs(_Read):
    content: list[_PositionLogprob] | None = None


class _Message(_Read):
    content: str | None = None


class _LogprobsChoice(_Read):
    message: _Message | None = None
    logprobs: _Logprobs | None = None


class _LogprobsAnswer(_Read):
    choices: list[_LogprobsChoice]


class _TextLogprobs(_Read):
    """The legacy `/completions` shape: parallel lists, one entry per position."""

    tokens: list[str] | None = None
    token_logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None


class _TextChoice(_Read):
    text: str | None = None
    logprobs: _TextLogprobs | None = None


class _TextAnswer(_Read):
    choices: list[_TextChoice]


class OpenAIChatModel:
    """A chat model served over the OpenAI chat-completions protocol."""

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
        self.base_url = spec.base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self._settings = settings
        self._api_key = _api_key(spec, os.environ if environ is None else environ)
        self._client: openai.AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
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
        from openai import omit

        request = self._sdk().chat.completions.create(
            model=self.spec.model,
            messages=cast(Any, messages),  # our {"role", "content"} dicts
            max_tokens=max_tokens,
            temperature=temperature,
            logprobs=True,
            top_logprobs=top_logprobs,
            stream=False,
            seed=omit if seed is None else seed,
        )
        answer = await self._step(request, self._deadline(), started=False)
        return self._parse_logprobs(answer)

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
        from openai import omit

        request = self._sdk().completions.create(
            model=self.spec.model,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            logprobs=top_logprobs,
            stream=False,
            seed=omit if seed is None else seed,
        )
        answer = await self._step(request, self._deadline(), started=False)
        return self._parse_text_logprobs(answer)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    def local_tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The served model's tokenizer if this machine has it (blocking), else None."""
        return self._local_tokenizer()

    def _with_estimated_usage(self, completion: Completion, messages: Messages) -> Completion:
        tokens_in = sum(self.count_tokens(m["content"]) for m in messages)
        tokens_out = self.count_tokens(completion.text)
        return replace(completion, tokens_in=tokens_in, tokens_out=tokens_out)

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

    def _sdk(self) -> openai.AsyncOpenAI:
        """The SDK client of the running event loop, built on first use there.

        Importing `openai` takes a second or more, so it waits until a served model is used.
        A client's connections belong to one event loop: a caller that runs each call in a
        new loop (`asyncio.run`, LangChain's sync `invoke`) gets a client per loop.
        """
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            import openai

            self._client_loop = loop

            s = self._settings
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key or NO_KEY,
                base_url=self.base_url,
                timeout=openai.Timeout(
                    connect=s.connect_timeout_s,
                    read=s.read_timeout_s,
                    write=s.read_timeout_s,
                    pool=s.connect_timeout_s,
                ),
                max_retries=s.max_retries,
                default_headers=_no_account_headers(),
            )
        return self._client

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._settings.generation_deadline_s

    async def _generate(
        self,
        messages: Messages,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None,
        stats: GenerationStats,
    ) -> AsyncGenerator[str, None]:
        from openai import AsyncStream

        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if stop:
            body["stop"] = stop
        # The SDK's own request (transport, retries, timeouts, event-stream decoding) with the
        # chunks left as plain JSON: building its typed chunk objects cost ten times our whole
        # client per token (docs/benchmarks.md); `_Chunk` checks the fields we read instead.
        request = self._sdk().post(
            "/chat/completions",
            body=body,
            cast_to=object,
            stream=True,
            stream_cls=AsyncStream[object],
        )
        # From here on the time is the server's (building the client is not counted).
        deadline = self._deadline()
        # The SDK retries the request until its response begins; after that, never.
        chunks = await self._step(request, deadline, started=False)
        scanner = StopScanner(stop)
        try:
            async with aclosing(self._texts(chunks, deadline, stats, max_tokens)) as texts:
                async for text in texts:
                    if piece := scanner.feed(text):
                        yield piece
                    if scanner.stopped:
                        return
            if tail := scanner.flush():
                yield tail
        finally:
            # An abandoned or capped answer closes its HTTP response now, so the server stops.
            await chunks.close()

    async def _texts(
        self, chunks: Any, deadline: float, stats: GenerationStats, max_tokens: int
    ) -> AsyncGenerator[str, None]:
        """The text pieces of the stream, within the deadline and the token cap."""
        finished = False
        pieces = chars = 0
        iterator = chunks.__aiter__()
        while True:
            try:
                raw = await self._step(anext(iterator), deadline, started=True)
            except StopAsyncIteration:
                break
            chunk = self._checked(raw)
            _record_usage(chunk, stats)
            for choice in chunk.choices or []:
                if choice.finish_reason:
                    finished = True
                    stats.finish_reason = choice.finish_reason
                content = choice.delta.content if choice.delta else None
                if not content:
                    continue
                pieces, chars = pieces + 1, chars + len(content)
                if pieces > max_tokens or chars > max_tokens * MAX_CHARS_PER_TOKEN:
                    self._capped(max_tokens, stats)
                    return
                yield content
        # Some servers (transformers serve) end with a finish_reason and no [DONE].
        if not finished:
            raise BackendProtocolError(f"The stream from {self.url} ended before the answer did.")

    def _capped(self, max_tokens: int, stats: GenerationStats) -> None:
        log.warning(
            "%s sent more than max_tokens=%d; the answer was cut there", self.url, max_tokens
        )
        stats.finish_reason = "length"
        stats.tokens_out = max(stats.tokens_out, max_tokens)

    async def _step(self, step: Awaitable[_T], deadline: float, *, started: bool) -> _T:
        """Await one SDK call within the generation's deadline; SDK errors become ours."""
        import openai

        loop = asyncio.get_running_loop()
        try:
            if loop.time() >= deadline:
                raise TimeoutError
            async with asyncio.timeout_at(deadline):
                return await step
        except TimeoutError:
            if asyncio.iscoroutine(step):
                step.close()
            raise BackendTimeout(
                f"{self.url} did not finish within "
                f"{self._settings.generation_deadline_s:g}s (the generation deadline)."
            ) from None
        except openai.APIError as exc:
            raise self._error(exc, started) from exc
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            if not started:
                raise
            # The SDK's event decoder and object builder: an event that is not a JSON object.
            raise BackendProtocolError(
                f"{self.url} sent an event that cannot be read: {_describe(exc)}"
            ) from exc

    def _checked(self, raw: object) -> _Chunk:
        try:
            return _Chunk.model_validate(raw)
        except ValidationError as exc:
            raise BackendProtocolError(
                f"{self.url} sent a chunk in an unexpected shape: {_first_error(exc)}"
            ) from exc

    def _error(self, exc: openai.APIError, started: bool) -> LLMError:
        """Our typed error for an SDK exception."""
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return BackendTimeout(
                f"{self.url} did not answer within {self._settings.read_timeout_s:g}s "
                f"({_cause(exc)})."
            )
        if isinstance(exc, openai.APIConnectionError):
            if started:
                return BackendProtocolError(
                    f"The connection to {self.url} broke mid-stream: {_cause(exc)}"
                )
            return BackendUnavailable(f"Cannot connect to {self.url}: {_cause(exc)}")
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        # An `error` event inside the stream.
        detail = exc.body if isinstance(exc.body, str) else exc.body or exc.message
        return BackendProtocolError(f"{self.url} reported an error mid-stream: {detail}")

    def _status_error(self, exc: openai.APIStatusError) -> LLMError:
        try:
            detail = exc.response.text[:300]
        except Exception:  # a streamed body the SDK did not read
            detail = exc.message[:300]
        message = f"{exc.response.request.url} answered HTTP {exc.status_code}: {detail}"
        if exc.status_code == 408:
            return BackendTimeout(message)
        if exc.status_code in (409, 429) or exc.status_code >= 500:
            return BackendUnavailable(message)
        return BackendRejected(message, exc.status_code)

    def _parse_logprobs(self, answer: object) -> LogprobsResult:
        try:
            choice = _LogprobsAnswer.model_validate(answer).choices[0]
        except (ValidationError, IndexError) as exc:
            raise BackendProtocolError(
                f"{self.url} sent logprobs in an unexpected shape: {str(answer)[:200]}"
            ) from exc
        text = (choice.message.content if choice.message else None) or ""
        entries = (choice.logprobs.content if choice.logprobs else None) or []
        return LogprobsResult(text, tuple(_position(entry) for entry in entries))

    def _parse_text_logprobs(self, answer: object) -> LogprobsResult:
        url = self.base_url + "/completions"
        try:
            choice = _TextAnswer.model_validate(answer).choices[0]
            positions = _text_positions(choice.logprobs or _TextLogprobs())
        except (ValidationError, IndexError, ValueError) as exc:
            raise BackendProtocolError(
                f"{url} sent logprobs in an unexpected shape: {str(answer)[:200]}"
            ) from exc
        return LogprobsResult(choice.text or "", positions)


def _position(entry: _PositionLogprob) -> PositionLogprobs:
    """One `logprobs.content` entry of a chat completion."""
    top = tuple(TokenLogprob(t.token, t.logprob) for t in entry.top_logprobs or [])
    return PositionLogprobs(TokenLogprob(entry.token, entry.logprob), top)


def _text_positions(logprobs: _TextLogprobs) -> tuple[PositionLogprobs, ...]:
    """Positions from the legacy parallel lists (a length mismatch raises ValueError)."""
    tokens = logprobs.tokens or []
    tops = logprobs.top_logprobs or [None] * len(tokens)
    return tuple(
        PositionLogprobs(
            TokenLogprob(token, logprob),
            tuple(TokenLogprob(t, v) for t, v in (top or {}).items()),
        )
        for token, logprob, top in zip(tokens, logprobs.token_logprobs or [], tops, strict=True)
    )


def _record_usage(chunk: _Chunk, stats: GenerationStats) -> None:
    if chunk.usage is not None:
        stats.tokens_in = chunk.usage.prompt_tokens
        stats.tokens_out = chunk.usage.completion_tokens


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _cause(exc: BaseException) -> str:
    """What really failed under an SDK error ("Connection error." says little)."""
    cause = exc.__cause__ or exc.__context__
    return _describe(cause) if cause is not None else _describe(exc)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']} (got {str(error.get('input'))[:80]!r})"


def _no_account_headers() -> dict[str, Any]:
    """Keeps OpenAI account settings from the environment ($OPENAI_ORG_ID,
    $OPENAI_PROJECT_ID) away from our own model server."""
    from openai import Omit

    return {"OpenAI-Organization": Omit(), "OpenAI-Project": Omit()}


def _api_key(spec: ModelSpec, environ: Mapping[str, str]) -> str | None:
    if spec.api_key_env is None:
        return None
    key = environ.get(spec.api_key_env)
    if not key:
        raise ModelLoadError(
            f"Model '{spec.name}' reads its API key from ${spec.api_key_env}, which is not set."
        )
    return key
