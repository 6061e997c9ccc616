"""The next-token demo on OpenAI-compatible servers: a real `transformers serve`, which sends no
logprobs, and a loopback stub that answers as vLLM does, for the parser."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from rag.demos.nexttoken import NextTokenRequest, next_token
from rag.llm.base import BackendProtocolError
from rag.llm.openai_compat import OpenAIChatModel
from rag.llm.settings import LLMSettings, ModelSpec
from tests.rag.llm.conftest import Served
from tests.rag.llm.stub_http import Responder, StubServer, status

SETTINGS = LLMSettings(max_retries=0, connect_timeout_s=2.0)


def served_model(base_url: str, model: str) -> OpenAIChatModel:
    spec = ModelSpec(name="served", backend="openai", model=model, base_url=base_url)
    return OpenAIChatModel(spec, SETTINGS, environ={})


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
    assert result.unavailable is not None and result.continues_prompt  # the raw text
    assert ("The server behind 'served' returned no token probabilities (logprobs) from "
            "/completions (raw text)") in result.unavailable


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


def text_completion(positions: list[dict]) -> dict:
    """A `/completions` answer with logprobs in the legacy shape vLLM sends for raw text."""
    return {"id": "y", "object": "text_completion", "choices": [{
        "index": 0, "text": "".join(p["token"] for p in positions), "finish_reason": "length",
        "logprobs": {"tokens": [p["token"] for p in positions],
                     "token_logprobs": [p["logprob"] for p in positions],
                     "top_logprobs": [{t["token"]: t["logprob"] for t in p["top_logprobs"]}
                                      for p in positions]}}]}


def by_path(server: StubServer, answers: dict[str, dict]) -> Responder:
    """Answer each request with the body for its path (`/v1/completions`, …)."""

    async def respond(writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
        path = server.requests[-1].head.split(" ")[1]
        await json_answer(answers[path])(writer, closing)

    return respond


def paths(server: StubServer) -> list[str]:
    return [r.head.split(" ")[1] for r in server.requests]


async def test_the_raw_prompt_goes_to_the_completions_endpoint_and_is_parsed():
    async with StubServer(json_answer({})) as server:
        server.respond = by_path(server, {"/v1/completions": text_completion([PARIS, DOT])})
        model = served_model(server.base_url, "m")
        request = NextTokenRequest.checked("The capital of France is", top_k=3, temperature=0.5,
                                           steps=2, seed=11)
        result = await next_token(model, request)
        await model.aclose()
    bodies = [json.loads(r.body) for r in server.requests]
    assert paths(server) == ["/v1/completions"] * 2  # greedy, then sampled
    assert [b["temperature"] for b in bodies] == [0.0, 0.5]
    assert all(b["prompt"] == "The capital of France is" and "messages" not in b
               and b["logprobs"] == 3 and b["max_tokens"] == 2 and b["stream"] is False
               for b in bodies)
    assert "seed" not in bodies[0] and bodies[1]["seed"] == 11
    assert [c.text for c in result.top] == [" Paris", " the", " a"]
    assert [c.prob_at_1 for c in result.top] == pytest.approx([0.6, 0.2, 0.1])
    # At T = 0.5, renormalised over the three tokens returned: p^2 / sum(p^2).
    assert [c.prob for c in result.top] == pytest.approx([0.36 / 0.41, 0.04 / 0.41, 0.01 / 0.41])
    assert [s.chosen.text for s in result.greedy] == [" Paris", "."]
    assert [r.text for r in result.greedy[1].runners_up] == [",", "!"]
    assert result.greedy_text == " Paris." and not result.exact and result.entropy_bits is None
    assert result.continues_prompt and result.chat_view is None


async def test_with_the_chat_option_a_server_also_answers_under_its_chat_template():
    chat_answer = completion({"content": [DOT, PARIS]})
    async with StubServer(json_answer({})) as server:
        server.respond = by_path(server, {"/v1/completions": text_completion([PARIS, DOT]),
                                          "/v1/chat/completions": chat_answer})
        model = served_model(server.base_url, "m")
        request = NextTokenRequest.checked("The capital of France is", top_k=3, temperature=0,
                                           chat=True)
        result = await next_token(model, request)
        await model.aclose()
    assert paths(server) == ["/v1/completions", "/v1/chat/completions"]
    chat_body = json.loads(server.requests[1].body)
    assert chat_body["messages"] == [{"role": "user", "content": "The capital of France is"}]
    assert chat_body["logprobs"] is True and chat_body["top_logprobs"] == 3
    assert result.top[0].text == " Paris" and result.chat_view is not None
    assert result.chat_view.top[0].text == "." and not result.chat_view.continues_prompt


async def test_a_server_without_a_completions_endpoint_says_so_plainly():
    async with StubServer(status(404, "Not Found")) as server:
        model = served_model(server.base_url, "m")
        result = await next_token(model, NextTokenRequest.checked("Hi", top_k=3))
        await model.aclose()
    assert result.top == () and "from /completions (raw text)" in (result.unavailable or "")


async def test_logprobs_in_an_unexpected_shape_are_a_protocol_error():
    async with StubServer(json_answer(completion({"content": [{"token": "x"}]}))) as server:
        model = served_model(server.base_url, "m")
        with pytest.raises(BackendProtocolError, match="unexpected shape"):
            await model.token_logprobs([{"role": "user", "content": "Hi"}], max_tokens=1,
                                       temperature=0, top_logprobs=2)
        await model.aclose()
