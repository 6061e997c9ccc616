"""The onnxruntime-genai generation loop, in a process of its own.

onnxruntime-genai's Python bindings hold the GIL while the model runs (a 64-token prefill step
took 130-200 ms on two cores), so in the bot's process every step stalled the event loop and
every other thread. `OnnxGenerator` (onnx_generation.py) starts this file as a child instead:

    python -P onnx_worker.py MODEL_DIR THREADS

It imports nothing of the project (only the standard library and the runtime), and speaks JSON
lines over its stdin and stdout:

- to the parent: `{"ready": true}` once the model is loaded (or `{"error": ...}`, then it exits);
  for each request, one line per new token id (a bare integer), then `{"end": true}`, or
  `{"error": ...}` when the runtime failed on that request;
- from the parent: `{"prompt": [ids], "search": {options}, "chunk": n}` starts a generation;
  `{"stop": true}` during one ends it early (it still answers `{"end": true}`).

End of input, at any time, means the parent has gone: the worker exits. Anything the runtime
prints goes to stderr, so stdout carries the protocol only.
"""

from __future__ import annotations

import json
import os
import select
import sys
from typing import Any, TextIO


class Lines:
    """Lines from a file descriptor, with a non-blocking check between tokens."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.closed = False

    def next(self, wait: bool) -> dict[str, Any] | None:
        """The next message; None when none is waiting (`wait` false) or input ended."""
        while b"\n" not in self.buffer:
            if self.closed:
                return None
            if not wait and not select.select([self.fd], [], [], 0)[0]:
                return None
            data = os.read(self.fd, 1 << 16)
            if not data:
                self.closed = True
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"not a message: {line[:80]!r}")
        return message


def send(out: TextIO, message: object) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def generate(model: Any, request: dict[str, Any], inbox: Lines, out: TextIO) -> None:
    """One generation: token ids out as they come, until done, stopped or input ends."""
    import onnxruntime_genai as og

    def stopped() -> bool:
        message = inbox.next(wait=False)
        return inbox.closed or (message is not None and bool(message.get("stop")))

    params = og.GeneratorParams(model)
    params.set_search_options(**request["search"])
    generator = og.Generator(model, params)
    prompt, chunk = request["prompt"], int(request["chunk"])
    for start in range(0, len(prompt), chunk):
        if stopped():
            return
        generator.append_tokens(prompt[start : start + chunk])
    while not generator.is_done() and not stopped():
        generator.generate_next_token()
        send(out, int(generator.get_next_tokens()[0]))


def main(argv: list[str]) -> int:
    directory, threads = argv[0], int(argv[1])
    # The protocol gets its own copy of stdout; fd 1 then points at stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        import onnxruntime_genai as og

        config = og.Config(directory)
        if threads:
            options = {"session_options": {"intra_op_num_threads": threads}}
            config.overlay(json.dumps({"model": {"decoder": options}}))
        model = og.Model(config)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        send(out, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    send(out, {"ready": True})
    inbox = Lines(sys.stdin.fileno())
    while (request := inbox.next(wait=True)) is not None:
        if "prompt" not in request:
            continue  # a stop that arrived after its generation ended
        try:
            generate(model, request, inbox, out)
        except Exception as exc:  # noqa: BLE001 - one failed request; the worker serves on
            send(out, {"error": f"{type(exc).__name__}: {exc}"})
        else:
            send(out, {"end": True})
        if inbox.closed:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
