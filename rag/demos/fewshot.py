"""Zero-shot versus few-shot prompting on the same model, with the same greedy decoding.

Examples come as `input => output; input => output`. A base model (no chat template) gets a
plain completion prompt (`Input: … / Output: …` lines to continue); an instruct model gets
the task as the system message and each example as a user turn and its assistant reply.
Both answers stop at the end of their first line.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass

from rag.demos.common import DemoInputError, Table, check_text
from rag.llm.base import ChatModel, Messages
from rag.llm.local import LocalChatModel

MAX_TASK_CHARS = 300
MAX_INPUT_CHARS = 300
MAX_EXAMPLES_CHARS = 1500
MAX_EXAMPLES = 8
MAX_ANSWER_TOKENS = 24
ARROW = "=>"
FORMAT_HINT = "write examples as `input => output; input => output`"


@dataclass(frozen=True)
class Example:
    """One demonstration: an input and the output we want for it."""

    input: str
    output: str


@dataclass(frozen=True)
class FewShotRequest:
    """Checked parameters of one few-shot demo."""

    task: str
    examples: tuple[Example, ...]
    input: str

    @classmethod
    def checked(cls, task: str, examples: str, input: str) -> FewShotRequest:
        """Validate the texts and parse the examples, or raise `DemoInputError`."""
        check_text(task, "task", MAX_TASK_CHARS)
        check_text(input, "input", MAX_INPUT_CHARS)
        return cls(task.strip(), parse_examples(examples), input.strip())


@dataclass(frozen=True)
class Shot:
    """One answer: the prompt as the model saw it, its first line, and what it cost."""

    prompt: str
    answer: str
    seconds: float
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class FewShotResult:
    """The same input answered zero-shot and few-shot by one model."""

    model: str
    request: FewShotRequest
    zero_shot: Shot
    few_shot: Shot


def parse_examples(text: str) -> tuple[Example, ...]:
    """`a => b; c => d` (or one example per line) as examples, with a clear error if malformed."""
    check_text(text, "list of examples", MAX_EXAMPLES_CHARS)
    parts = [p.strip() for p in re.split(r"[;\n]", text) if p.strip()]
    if not parts:
        raise DemoInputError(f"Please give at least one example: {FORMAT_HINT}.")
    if len(parts) > MAX_EXAMPLES:
        raise DemoInputError(f"Please give at most {MAX_EXAMPLES} examples (got {len(parts)}).")
    return tuple(_example(number, part) for number, part in enumerate(parts, 1))


def _example(number: int, part: str) -> Example:
    if ARROW not in part:
        raise DemoInputError(f"Example {number} (`{part[:60]}`) has no `{ARROW}`: {FORMAT_HINT}.")
    given, _, wanted = (s.strip() for s in part.partition(ARROW))
    if not given or not wanted:
        side = "input" if not given else "output"
        raise DemoInputError(
            f"Example {number} (`{part[:60]}`) has an empty {side}: {FORMAT_HINT}."
        )
    return Example(given, wanted)


async def few_shot(chat: ChatModel, request: FewShotRequest) -> FewShotResult:
    """Answer the input without and with the examples (greedy, first line only)."""
    base = not getattr(getattr(chat, "spec", None), "chat_template", True)
    await settled(chat)  # loads a local model first, so the first timing is not the load
    zero = await _shot(chat, build_messages(request, (), base))
    few = await _shot(chat, build_messages(request, request.examples, base))
    return FewShotResult(chat.name, request, zero, few)


def build_messages(request: FewShotRequest, examples: tuple[Example, ...], base: bool) -> Messages:
    """The prompt: one completion text for a base model, chat turns for an instruct model."""
    if base:
        shown = "".join(f"Input: {e.input}\nOutput: {e.output}\n\n" for e in examples)
        text = f"{request.task}\n\n{shown}Input: {request.input}\nOutput:"
        return [{"role": "user", "content": text}]
    turns: Messages = [{"role": "system", "content": request.task}]
    for e in examples:
        turns += [{"role": "user", "content": e.input}, {"role": "assistant", "content": e.output}]
    return [*turns, {"role": "user", "content": request.input}]


async def _shot(chat: ChatModel, messages: Messages) -> Shot:
    completion = await chat.complete(
        messages, max_tokens=MAX_ANSWER_TOKENS, temperature=0.0, stop=["\n"]
    )
    await settled(chat)
    return Shot(
        prompt=render_prompt(messages),
        answer=completion.text.strip(),
        seconds=completion.total_s,
        tokens_in=completion.tokens_in,
        tokens_out=completion.tokens_out,
    )


async def settled(chat: ChatModel) -> None:
    """Wait until a local model has stopped generating past the stop string.

    The next timing then measures only its own answer, and a CLI can exit cleanly.
    """
    if isinstance(chat, LocalChatModel):
        lock = (await chat.load()).generate_lock
        await asyncio.to_thread(_pass_through, lock)


def _pass_through(lock: threading.Lock) -> None:
    with lock:
        pass


def render_prompt(messages: Messages) -> str:
    """The prompt as text, for showing: a base prompt verbatim, chat turns one per line."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"[{m['role']}] {m['content']}" for m in messages)


def comparison_table(result: FewShotResult) -> Table:
    """Zero-shot beside few-shot: the answers, their time and their prompt sizes."""
    zero, few = result.zero_shot, result.few_shot
    rows = [
        ("answer", zero.answer or "(nothing)", few.answer or "(nothing)"),
        ("time", f"{zero.seconds:.2f} s", f"{few.seconds:.2f} s"),
        ("prompt tokens", str(zero.tokens_in), str(few.tokens_in)),
        ("answer tokens", str(zero.tokens_out), str(few.tokens_out)),
    ]
    examples = len(result.request.examples)
    return ("", "zero-shot", f"few-shot ({examples} examples)"), rows
