"""The OpenAI-compatible backend against a real `transformers serve`, and its failure modes."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time

import openai  # noqa: F401  (imported here: no timing below includes its import)
import pytest

from rag.llm.base import (
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    LLMError,
)
from rag.llm.local import LocalChatModel
from rag.llm.openai_compat import OpenAIChatModel
from rag.llm.settings import LLMSettings, ModelSpec
from tests.rag.llm.conftest import Served, free_port
from tests.rag.llm.stub_http import StubServer, chunk, event_stream, silence, status

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ESSAY = [{"role": "user", "content": "Write a long essay about the history of dragons."}]
FAST_RETRIES = LLMSettings(max_retries=2, connect_timeout_s=2.0)


def served_model(
    base_url: str, model: str, settings: LLMSettings = FAST_RETRIES, **kw: str
) -> OpenAIChatModel:
    spec = ModelSpec(name="served", backend="openai", model=model, base_url=base_url, **kw)
    return OpenAIChatModel(spec, settings, environ={})


@pytest.mark.asyncio
async def test_streams_text_and_usage_from_transformers_serve(served: Served) -> None:
    model = served_model(served.base_url, served.model)
    try:
        pieces = [p async for p in model.stream(QUESTION, max_tokens=12, temperature=0)]
        completion = await model.complete(QUESTION, max_tokens=12, temperature=0)
    finally:
        await model.aclose()
    assert len(pieces) >= 2, pieces
    assert "".join(pieces) == completion.text
    assert "Paris" in completion.text
    assert 0 < completion.tokens_out <= 12
    assert completion.tokens_in > 5
    assert completion.time_to_first_token_s is not None


@pytest.mark.asyncio
async def test_served_greedy_answer_matches_the_local_model(
    served: Served, smollm2: LocalChatModel
) -> None:
    model = served_model(served.base_url, served.model)
    try:
        remote = await model.complete(ESSAY, max_tokens=10, temperature=0)
    finally:
        await model.aclose()
    # The server applies no repetition penalty; compare with plain greedy decoding locally.
    plain = smollm2.spec.model_copy(update={"repetition_penalty": 1.0})
    local_model = LocalChatModel(plain, smollm2.loader)
    local = await local_model.complete(ESSAY, max_tokens=10, temperature=0)
    assert remote.text == local.text
    assert remote.tokens_in == local.tokens_in


@pytest.mark.asyncio
async def test_request_the_server_refuses_is_not_retried(served: Served) -> None:
    model = served_model(served.base_url, "some-other-model")
    try:
        with pytest.raises(BackendRejected) as caught:
            await model.complete(QUESTION, max_tokens=4, temperature=0)
    finally:
        await model.aclose()
    assert caught.value.status == 400
    assert "pinned" in str(caught.value)


@pytest.mark.asyncio
async def test_nothing_listening_raises_unavailable_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    model = served_model(url, "any")
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable, match=f"Cannot connect to {url}/chat/completions"):
        await model.complete(QUESTION, max_tokens=4, temperature=0)
    await model.aclose()
    assert time.perf_counter() - started < 3.0


@pytest.mark.asyncio
async def test_overloaded_server_is_retried_then_unavailable() -> None:
    async with StubServer(status(503, "Service Unavailable")) as server:
        model = served_model(server.base_url, "any")
        with pytest.raises(BackendUnavailable, match="HTTP 503"):
            await model.complete(QUESTION, max_tokens=4, temperature=0)
        await model.aclose()
    assert len(server.requests) == FAST_RETRIES.max_retries + 1


@pytest.mark.asyncio
async def test_silent_server_is_retried_like_any_unstarted_answer_then_times_out() -> None:
    settings = FAST_RETRIES.model_copy(update={"read_timeout_s": 0.3, "max_retries": 1})
    async with StubServer(silence()) as server:
        model = served_model(server.base_url, "any", settings)
        started = time.perf_counter()
        with pytest.raises(BackendTimeout, match="did not answer within 0.3s"):
            await model.complete(QUESTION, max_tokens=4, temperature=0)
        await model.aclose()
    assert time.perf_counter() - started < 3.0
    assert len(server.requests) == 2


@pytest.mark.asyncio
async def test_server_killed_mid_stream_raises_a_clear_error(doomed_server: Served) -> None:
    model = served_model(doomed_server.base_url, doomed_server.model)
    received: list[str] = []

    async def read_until_killed() -> None:
        async for piece in model.stream(ESSAY, max_tokens=200, temperature=0):
            received.append(piece)
            if len(received) == 3:
                os.kill(doomed_server.process.pid, signal.SIGKILL)

    with pytest.raises((BackendProtocolError, BackendUnavailable)) as caught:
        await asyncio.wait_for(read_until_killed(), timeout=60)
    await model.aclose()
    assert len(received) >= 3
    assert doomed_server.base_url in str(caught.value)


@pytest.mark.asyncio
async def test_vllm_style_stream_with_done_and_usage_chunk() -> None:
    events: list[dict | str] = [
        chunk("Hello"),
        chunk(", world"),
        chunk(finish="stop"),
        chunk(usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}),
        "[DONE]",
    ]
    async with StubServer(event_stream(events)) as server:
        spec = ModelSpec(
            name="vllm", backend="openai", model="m", base_url=server.base_url, api_key_env="KEY"
        )
        model = OpenAIChatModel(spec, FAST_RETRIES, environ={"KEY": "sk-secret"})
        completion = await model.complete(QUESTION, max_tokens=4, temperature=0, stop=["\n"])
        await model.aclose()
    assert completion.text == "Hello, world"
    assert (completion.tokens_in, completion.tokens_out) == (7, 3)
    request = server.requests[0]
    assert request.header("authorization") == "Bearer sk-secret"
    body = json.loads(request.body)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 4 and body["stop"] == ["\n"]
    assert "sk-secret" not in repr(model)


@pytest.mark.asyncio
async def test_stream_that_stops_before_finishing_is_a_protocol_error() -> None:
    async with StubServer(event_stream([chunk("Half an ans")])) as server:
        model = served_model(server.base_url, "m")
        with pytest.raises(BackendProtocolError, match="ended before the answer did"):
            await model.complete(QUESTION, max_tokens=4, temperature=0)
        await model.aclose()


@pytest.mark.asyncio
async def test_error_event_mid_stream_is_a_protocol_error() -> None:
    async with StubServer(event_stream([chunk("Hi"), {"error": "CUDA out of memory"}])) as server:
        model = served_model(server.base_url, "m")
        with pytest.raises(BackendProtocolError, match="CUDA out of memory"):
            await model.complete(QUESTION, max_tokens=4, temperature=0)
        await model.aclose()


def test_missing_api_key_variable_is_a_clear_error() -> None:
    spec = ModelSpec(
        name="vllm", backend="openai", model="m", base_url="http://x/v1", api_key_env="NO_SUCH_KEY"
    )
    with pytest.raises(LLMError, match=r"\$NO_SUCH_KEY"):
        OpenAIChatModel(spec, LLMSettings(), environ={})


def test_token_count_is_exact_with_a_local_tokenizer_and_estimated_without(
    served: Served, smollm2: LocalChatModel
) -> None:
    text = "Retrieval-augmented generation grounds answers in sources."
    exact = served_model(served.base_url, served.model)
    assert exact.count_tokens(text) == smollm2.count_tokens(text)
    estimated = served_model(served.base_url, "unknown/model")
    assert estimated.count_tokens(text) == math.ceil(len(text) / 4)
