"""A tiny loopback HTTP server for the failure modes a healthy real server will not produce.

It speaks just enough HTTP/1.1 for httpx: it reads one request per connection, records it,
and answers with whatever the test asked for (a status, an event stream, or silence).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

Responder = Callable[[asyncio.StreamWriter, asyncio.Event], Awaitable[None]]


@dataclass
class Request:
    """What the client sent."""

    head: str
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive), if present."""
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


@dataclass
class StubServer:
    """Answers every request on a loopback port with `respond`."""

    respond: Responder
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    hangups: int = 0  # answers the client stopped reading (its connection closed under us)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL of this server."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> StubServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request = Request(head=head, body=b"")
            length = int(request.header("content-length") or 0)
            request.body = await reader.readexactly(length)
            self.requests.append(request)
            await self.respond(writer, self._closing)
        except asyncio.IncompleteReadError:
            pass
        except ConnectionError:
            self.hangups += 1
        finally:
            writer.close()


def status(code: int, reason: str) -> Responder:
    """Answer with a bare HTTP status."""

    async def respond(writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
        body = reason.encode()
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    return respond


def silence() -> Responder:
    """Accept the request and never answer it."""

    async def respond(writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
        await closing.wait()

    return respond


def event_stream(events: list[dict | str]) -> Responder:
    """Answer 200 with these server-sent events, then close the connection."""

    async def respond(writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        for event in events:
            data = event if isinstance(event, str) else json.dumps(event)
            writer.write(f"data: {data}\n\n".encode())
        await writer.drain()

    return respond


def chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    """One OpenAI chat-completion chunk."""
    choices = (
        []
        if content is None and finish is None
        else [
            {"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}
        ]
    )
    event: dict = {"id": "x", "object": "chat.completion.chunk", "choices": choices}
    if usage is not None:
        event["usage"] = usage
    return event


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def endless(event: dict, interval_s: float) -> Responder:
    """Answer 200 and send `event` every `interval_s` seconds, never finishing: a server that
    trickles tokens (a long interval) or ignores `max_tokens` (no interval)."""

    async def respond(writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
        writer.write(STREAM_HEAD)
        line = f"data: {json.dumps(event)}\n\n".encode()
        while not closing.is_set():
            writer.write(line)
            await writer.drain()  # raises once the client has hung up
            await asyncio.sleep(interval_s)

    return respond


def then_silence(events: list[dict]) -> Responder:
    """Send these events, then keep the connection open and say nothing more."""

    async def respond(writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
        writer.write(STREAM_HEAD)
        for event in events:
            writer.write(f"data: {json.dumps(event)}\n\n".encode())
        await writer.drain()
        await closing.wait()

    return respond


def raw_stream(body: bytes) -> Responder:
    """Answer 200 as an event stream with exactly these bytes as its body, then close."""

    async def respond(writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
        writer.write(STREAM_HEAD + body)
        await writer.drain()

    return respond


def cut_chunked(events: list[dict]) -> Responder:
    """Send these events in chunked encoding, then close without the final empty chunk: the
    connection breaks mid-message, as when a server process dies."""

    async def respond(writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for event in events:
            data = f"data: {json.dumps(event)}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    return respond
