"""A model server that misbehaves: trickles, stalls, ignores `max_tokens`, closes mid-stream or
sends garbage. Each ends in a typed `LLMError` (or a capped answer) within a bounded time."""

from __future__ import annotations

import asyncio
import time

import openai  # noqa: F401  (imported here: no timing below includes its import)
import pytest

from rag.llm.base import BackendProtocolError, BackendTimeout, Completion
from rag.llm.openai_compat import OpenAIChatModel
from rag.llm.settings import LLMSettings, ModelSpec
from tests.rag.llm.stub_http import (
    StubServer,
    chunk,
    cut_chunked,
    endless,
    event_stream,
    raw_stream,
    then_silence,
)

QUESTION = [{"role": "user", "content": "What is attention?"}]
# Enough for every case here on a busy machine, far below "forever".
HANG_S = 15.0
# How late a deadline may fire on a machine busy with other work.
SLACK_S = 4.0


def model_for(server: StubServer, **settings: float) -> OpenAIChatModel:
    spec = ModelSpec(name="faulty", backend="openai", model="m", base_url=server.base_url)
    return OpenAIChatModel(spec, LLMSettings(max_retries=0, **settings), environ={})


async def bounded(model: OpenAIChatModel, max_tokens: int = 8) -> Completion:
    """Run one completion, failing the test (not hanging it) if it never ends."""
    try:
        return await asyncio.wait_for(
            model.complete(QUESTION, max_tokens=max_tokens, temperature=0), HANG_S
        )
    finally:
        await model.aclose()


async def test_a_trickling_server_is_stopped_at_the_generation_deadline() -> None:
    # A token every 0.1 s keeps every read well inside the read timeout, for ever.
    async with StubServer(endless(chunk("la "), 0.1)) as server:
        model = model_for(server, read_timeout_s=5.0, generation_deadline_s=1.0)
        started = time.perf_counter()
        with pytest.raises(BackendTimeout, match="within 1s"):
            await bounded(model, max_tokens=10_000)
        assert time.perf_counter() - started < 1.0 + SLACK_S
        assert await hung_up(server)  # the request was abandoned, freeing the server's slot


async def test_a_server_that_ignores_max_tokens_is_cut_at_the_cap() -> None:
    async with StubServer(endless(chunk("la "), 0.0)) as server:
        done = await bounded(model_for(server), max_tokens=5)
        assert await hung_up(server)  # the server can stop generating
    assert done.text == "la " * 5
    assert done.finish_reason == "length" and done.tokens_out == 5


async def test_a_server_sending_huge_pieces_is_cut_by_characters() -> None:
    async with StubServer(endless(chunk("x" * 10_000), 0.0)) as server:
        done = await bounded(model_for(server), max_tokens=4)
    # The first piece alone is longer than four tokens can be.
    assert done.text == "" and done.finish_reason == "length"


async def test_a_server_that_stalls_mid_answer_times_out_once() -> None:
    async with StubServer(then_silence([chunk("The answer")])) as server:
        model = model_for(server, read_timeout_s=0.5)
        with pytest.raises(BackendTimeout, match="did not answer within 0.5s"):
            await bounded(model)
    assert len(server.requests) == 1


async def test_a_server_that_never_answers_is_stopped_at_the_deadline() -> None:
    async with StubServer(then_silence([])) as server:
        model = model_for(server, read_timeout_s=30.0, generation_deadline_s=0.5)
        started = time.perf_counter()
        with pytest.raises(BackendTimeout, match="generation deadline"):
            await bounded(model)
    assert time.perf_counter() - started < 0.5 + SLACK_S


async def test_a_connection_cut_mid_message_is_a_protocol_error() -> None:
    async with StubServer(cut_chunked([chunk("Half an")])) as server:
        with pytest.raises(BackendProtocolError, match="broke mid-stream"):
            await bounded(model_for(server))


async def test_an_event_cut_in_half_is_a_protocol_error() -> None:
    async with StubServer(raw_stream(b'data: {"choices": [{"delta": {"cont')) as server:
        with pytest.raises(BackendProtocolError):
            await bounded(model_for(server))


async def hung_up(server: StubServer, within_s: float = 5.0) -> bool:
    """Whether the server sees its one answer's connection closed by the client (a server
    notices on its next write, so this waits a little)."""
    deadline = time.monotonic() + within_s
    while server.hangups < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return server.hangups == 1


GARBAGE = {
    "choices is a string": {"choices": "abc"},
    "choices is an object": {"choices": {"delta": {"content": "x"}}},
    "delta is a string": {"choices": [{"delta": "x", "finish_reason": None}]},
    "content is a number": {"choices": [{"delta": {"content": 5}, "finish_reason": None}]},
    "content is a list": {"choices": [{"delta": {"content": ["a"]}, "finish_reason": None}]},
    "finish_reason is a number": {"choices": [{"delta": {}, "finish_reason": 3}]},
    "usage is a string": {"choices": [], "usage": "lots"},
    "token count is text": {"choices": [], "usage": {"prompt_tokens": "many"}},
    "event is a list": [1, 2],
    "event is a number": 42,
    "event is a string": '"hello"',
    "event is null": None,
}


@pytest.mark.parametrize("event", GARBAGE.values(), ids=GARBAGE.keys())
async def test_an_event_of_the_wrong_shape_is_a_protocol_error(event: object) -> None:
    events = [chunk("Hi"), event, chunk(finish="stop")]
    async with StubServer(event_stream(events)) as server:  # type: ignore[arg-type]
        with pytest.raises(BackendProtocolError):
            await bounded(model_for(server))


@pytest.mark.parametrize(
    "body",
    [b"data: \xff\xfe\x00garbage\n\n", b"<html>Bad gateway</html>\n", b"data: {]\n\n"],
    ids=["binary", "html", "broken json"],
)
async def test_a_body_that_is_not_an_event_stream_is_a_protocol_error(body: bytes) -> None:
    async with StubServer(raw_stream(body)) as server:
        with pytest.raises(BackendProtocolError):
            await bounded(model_for(server))
