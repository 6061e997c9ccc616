"""What the OpenAI-compatible client itself costs while streaming: a loopback server sends N
chunks as fast as it can, and we time the client from request to the last piece.

Run it in two checkouts to compare two clients (the hand-written httpx one, the openai SDK):

    PYTHONPATH=<checkout> python benchmarks/stream_client.py --chunks 2000 --runs 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path  # noqa: E402

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.llm.openai_compat import OpenAIChatModel
from rag.llm.settings import LLMSettings, ModelSpec

QUESTION = [{"role": "user", "content": "Count."}]


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


async def serve_chunks(n: int) -> asyncio.Server:
    """A server answering every request with n one-word chunks, a finish and usage."""
    body = b"".join(
        sse(
            {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}],
            }
        )
        for _ in range(n)
    )
    body += sse(
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3},
        }
    )
    body += b"data: [DONE]\n\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def one_answer(model: OpenAIChatModel, n: int) -> float:
    started = time.perf_counter()
    pieces = [p async for p in model.stream(QUESTION, max_tokens=n, temperature=0)]
    assert len(pieces) == n, len(pieces)
    return time.perf_counter() - started


async def main(chunks: int, runs: int) -> None:
    server = await serve_chunks(chunks)
    port = server.sockets[0].getsockname()[1]
    spec = ModelSpec(
        name="bench", backend="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1"
    )
    model = OpenAIChatModel(spec, LLMSettings(), environ={})
    first = await one_answer(model, chunks)  # includes building the client (and its imports)
    times = [await one_answer(model, chunks) for _ in range(runs)]
    await model.aclose()
    server.close()
    median = statistics.median(times)
    print(f"client: {sys.modules['rag.llm.openai_compat'].__file__}")
    print(
        f"{chunks} chunks x {runs} runs: median {median * 1000:.1f} ms "
        f"({median / chunks * 1e6:.1f} us a chunk, {chunks / median:,.0f} chunks/s); "
        f"first answer (client built) {first * 1000:.0f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.chunks, args.runs))
