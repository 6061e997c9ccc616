"""The next-token demo on OpenAI-compatible servers: a real `transformers serve`, which sends no
logprobs, and a loopback stub that answers as vLLM does, for the parser."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.demos.nexttoken import NextTokenRequest, next_token
from rag.llm.base import BackendProtocolError
from rag.llm.model_cache import export_packaged_model
from rag.llm.openai_compat import OpenAIChatModel
from rag.llm.settings import LLMSettings, ModelSpec
from tests.rag.llm.conftest import Served, start_server
from tests.rag.llm.stub_http import Responder, StubServer

SETTINGS = LLMSettings(max_retries=0, connect_timeout_s=2.0)


def served_model(base_url: str, model: str) -> OpenAIChatModel:
    spec = ModelSpec(name="served", backend="openai", model=model, base_url=base_url)
    return OpenAIChatModel(spec, SETTINGS, environ={})


@pytest.fixture(scope="module")
def served(smollm2, llm_cache_dir: Path, tmp_path_factory) -> Iterator[Served]:
    """`transformers serve` on the packaged SmolLM2 (converted by the session's loader)."""
    model_dir = export_packaged_model("smollm2", llm_cache_dir)
    server = start_server(model_dir, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


async def test_a_server_without_logprobs_says_so_plainly(served: Served):
    model = served_model(served.base_url, served.model)
    try:
        raw = await model.token_logprobs(
            [{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0, top_logprobs=5
        )
        result = await next_token(model, NextTokenRequest.checked("Hi", top_k=5, steps=2))
    finally:
        await model.aclose()
    assert raw.text and raw.positions == ()  # it answered, without probabilities
    assert result.top == () and result.greedy == () and result.sampled == ()
    assert result.unavailable is not None
    assert "The server behind 'served' returned no token probabilities" in result.unavailable


def vllm_position(token: str, logprob: float, top: list[tuple[str, float]]) -> dict:
    """One `logprobs.content` entry as vLLM sends it."""
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                             for t, lp in top]}


PARIS = vllm_position(" Paris", math.log(0.6), [(" Paris", math.log(0.6)), (" the", math.log(0.2)),
                                                (" a", math.log(0.1))])
DOT = vllm_position(".", math.log(0.5), [(".", math.log(0.5)), (",", math.log(0.3)),
                                         ("!", math.log(0.05))])


def json_answer(body: dict) -> Responder:
    """Answer 200 with one JSON body."""

    async def respond(writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
        data = json.dumps(body).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await writer.drain()

    return respond


def completion(logprobs: object) -> dict:
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " Paris."},
                         "logprobs": logprobs, "finish_reason": "length"}]}


async def test_vllm_style_logprobs_are_parsed_into_the_demo():
    async with StubServer(json_answer(completion({"content": [PARIS, DOT]}))) as server:
        model = served_model(server.base_url, "m")
        request = NextTokenRequest.checked("The capital of France is", top_k=3, temperature=0.5,
                                           steps=2, seed=11)
        result = await next_token(model, request)
        await model.aclose()
    bodies = [json.loads(r.body) for r in server.requests]
    assert [b["temperature"] for b in bodies] == [0.0, 0.5]  # greedy, then sampled
    assert all(b["logprobs"] is True and b["top_logprobs"] == 3 and b["max_tokens"] == 2
               and b["stream"] is False and "stream_options" not in b for b in bodies)
    assert "seed" not in bodies[0] and bodies[1]["seed"] == 11
    assert [c.text for c in result.top] == [" Paris", " the", " a"]
    assert [c.prob_at_1 for c in result.top] == pytest.approx([0.6, 0.2, 0.1])
    # At T = 0.5, renormalised over the three tokens returned: p^2 / sum(p^2).
    assert [c.prob for c in result.top] == pytest.approx([0.36 / 0.41, 0.04 / 0.41, 0.01 / 0.41])
    assert [s.chosen.text for s in result.greedy] == [" Paris", "."]
    assert [r.text for r in result.greedy[1].runners_up] == [",", "!"]
    assert result.greedy_text == " Paris." and not result.exact and result.entropy_bits is None


async def test_logprobs_in_an_unexpected_shape_are_a_protocol_error():
    async with StubServer(json_answer(completion({"content": [{"token": "x"}]}))) as server:
        model = served_model(server.base_url, "m")
        with pytest.raises(BackendProtocolError, match="unexpected shape"):
            await model.token_logprobs([{"role": "user", "content": "Hi"}], max_tokens=1,
                                       temperature=0, top_logprobs=2)
        await model.aclose()
