"""Next-token probabilities: the top k at a temperature, and generation one token at a time.

Every model sees the raw prompt: next-token prediction is about continuing text. With `chat`,
an instruct model's distribution under its chat template is shown beside the raw one: there
the prompt is a user's message and the model predicts the first token of its reply.

Local models give the full distribution from their logits (softmax(logits / T)); an
OpenAI-compatible server gives what its `top_logprobs` return (vLLM: up to 20), or nothing,
which the result says plainly. Probabilities are the model's own: no repetition penalty.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rag.demos.common import DemoInputError, Table, check_range, check_text, percent, visible
from rag.demos.tokenize import continuation_text, token_text
from rag.llm.base import BackendRejected, ChatModel, PromptTooLong
from rag.llm.local import LoadedModel, LocalChatModel
from rag.llm.openai_compat import LogprobsResult, OpenAIChatModel, PositionLogprobs

if TYPE_CHECKING:
    import torch

MAX_TOP_K = 20  # vLLM returns at most 20 top_logprobs; more bars are unreadable anyway
MAX_TEMPERATURE = 5.0
MAX_STEPS = 32
MAX_PROMPT_CHARS = 1000
RUNNERS_UP = 3


@dataclass(frozen=True)
class NextTokenRequest:
    """Checked parameters of one next-token demo."""

    prompt: str
    top_k: int = 10
    temperature: float = 1.0
    steps: int = 1
    seed: int = 0
    chat: bool = False  # also show the distribution under the model's chat template

    @classmethod
    def checked(
        cls, prompt: str, top_k: int = 10, temperature: float = 1.0, steps: int = 1,
        seed: int = 0, chat: bool = False,
    ) -> NextTokenRequest:
        """Validate the parameters, or raise `DemoInputError` saying which one is wrong."""
        check_text(prompt, "prompt", MAX_PROMPT_CHARS)
        check_range(top_k, "top_k", 1, MAX_TOP_K)
        check_range(temperature, "temperature", 0.0, MAX_TEMPERATURE)
        check_range(steps, "steps", 1, MAX_STEPS)
        return cls(prompt, int(top_k), float(temperature), int(steps), int(seed), bool(chat))

    @property
    def greedy(self) -> bool:
        """Temperature 0: always the most likely token; no sampling."""
        return self.temperature == 0


@dataclass(frozen=True)
class Candidate:
    """One possible next token with its probability at the demo's temperature and at 1."""

    text: str
    prob: float  # at the requested temperature (at 1 when the temperature is 0: greedy)
    prob_at_1: float
    token_id: int | None = None


@dataclass(frozen=True)
class Step:
    """One generated token and the most likely alternatives at that position."""

    chosen: Candidate
    runners_up: tuple[Candidate, ...]


@dataclass(frozen=True)
class NextTokenResult:
    """The top-k next tokens, and greedy and sampled continuations, from one model."""

    model: str
    request: NextTokenRequest
    top: tuple[Candidate, ...]  # sorted by probability, most likely first
    greedy: tuple[Step, ...]
    sampled: tuple[Step, ...]  # empty at temperature 0
    greedy_text: str
    sampled_text: str
    entropy_bits: float | None  # of the full distribution at T (None: only the top known)
    entropy_at_1_bits: float | None
    exact: bool  # True: the full distribution; False: renormalised over the server's top-N
    seconds: float
    continues_prompt: bool = True  # False: under the chat template, a reply starts afresh
    unavailable: str | None = None  # why there are no probabilities at all
    chat_view: NextTokenResult | None = None  # the same model under its chat template (`chat`)
    why: str = ""  # one line on why the raw and chat-template distributions differ

    @property
    def view(self) -> str:
        """How the model saw the prompt: `raw text` or `chat template`."""
        return "raw text" if self.continues_prompt else "chat template"

    @property
    def greedy_choice(self) -> Candidate | None:
        """The token greedy decoding picks next (the most likely one)."""
        return self.top[0] if self.top else None


async def next_token(chat: ChatModel, request: NextTokenRequest) -> NextTokenResult:
    """The raw-prompt demo, and with `request.chat` the chat-template view beside it."""
    check_chat_option(chat, request)
    raw = await _one_view(chat, request, template=False)
    if not request.chat:
        return raw
    templated = await _one_view(chat, request, template=True)
    return replace(raw, chat_view=templated, why=why_they_differ(raw, templated))


async def _one_view(chat: ChatModel, request: NextTokenRequest, template: bool) -> NextTokenResult:
    if isinstance(chat, LocalChatModel):
        await chat.load()
        return await asyncio.to_thread(local_next_token, chat, request, template)
    if isinstance(chat, OpenAIChatModel):
        return await served_next_token(chat, request, template)
    raise DemoInputError(f"Model '{chat.name}' cannot show token probabilities.")


def check_chat_option(chat: ChatModel, request: NextTokenRequest) -> None:
    """The `chat` option needs a model with a chat template (an instruct model)."""
    if request.chat and not getattr(getattr(chat, "spec", None), "chat_template", True):
        raise DemoInputError(
            f"'{chat.name}' is a base model: it has no chat template, so the chat option cannot "
            "show one. Try it on an instruct model such as smollm2."
        )


def why_they_differ(raw: NextTokenResult, templated: NextTokenResult) -> str:
    """One line on what the chat template changes, with each view's most likely token."""
    def top(result: NextTokenResult) -> str:
        c = result.greedy_choice
        return f"{visible(c.text)} {percent(c.prob_at_1)}" if c else "no probabilities"

    return (f"Raw, the model continues your text ({top(raw)}); under the chat template your "
            f"text is a user's message and it predicts how its reply begins ({top(templated)}).")


def messages_for(prompt: str) -> list[dict[str, str]]:
    """The prompt as a one-message conversation (for the chat-template view)."""
    return [{"role": "user", "content": prompt}]


def raw_inputs(loaded: LoadedModel, prompt: str) -> Any:
    """The prompt's tokens as the text itself, no chat template (the tokenizer's BOS, if any)."""
    return loaded.tokenizer(prompt, return_tensors="pt")


# -- local models: the full distribution -------------------------------------------------------


def local_next_token(
    chat: LocalChatModel, request: NextTokenRequest, template: bool = False
) -> NextTokenResult:
    """The demo on an in-process model, raw or templated (blocking: run it in a thread)."""
    import torch

    started = time.perf_counter()
    loaded = chat.loaded()
    prompt = request.prompt
    inputs = chat.encode(messages_for(prompt)) if template else raw_inputs(loaded, prompt)
    _check_fits(chat, int(inputs["input_ids"].shape[-1]), request.steps)
    with loaded.generate_lock, torch.inference_mode():
        greedy_walk = walk(loaded, inputs, request.steps, pick_greedy)
        sampled_walk: list[tuple[torch.Tensor, int]] = []
        if not request.greedy:
            generator = torch.Generator().manual_seed(request.seed)
            pick = sampler(request.temperature, generator)
            sampled_walk = walk(loaded, inputs, request.steps, pick)
    first = greedy_walk[0][0]
    t = request.temperature or 1.0
    return NextTokenResult(
        model=chat.name,
        request=request,
        top=top_candidates(loaded, first, t, request.top_k),
        greedy=tuple(local_step(loaded, logits, tok, t) for logits, tok in greedy_walk),
        sampled=tuple(local_step(loaded, logits, tok, t) for logits, tok in sampled_walk),
        greedy_text=continuation_text(loaded.tokenizer, [tok for _, tok in greedy_walk]),
        sampled_text=continuation_text(loaded.tokenizer, [tok for _, tok in sampled_walk]),
        entropy_bits=entropy_bits(first, t),
        entropy_at_1_bits=entropy_bits(first, 1.0),
        exact=True,
        seconds=time.perf_counter() - started,
        continues_prompt=not template,
    )


def _check_fits(chat: LocalChatModel, tokens_in: int, steps: int) -> None:
    if tokens_in + steps > chat.spec.context_window:
        raise PromptTooLong(
            f"Model '{chat.name}': the prompt has {tokens_in} tokens; with {steps} steps it "
            f"exceeds the context window of {chat.spec.context_window}."
        )


def walk(
    loaded: LoadedModel, inputs: Any, steps: int, pick: Callable[[torch.Tensor], int]
) -> list[tuple[torch.Tensor, int]]:
    """Generate up to `steps` tokens one at a time with a KV cache: (logits, chosen) per step."""
    import torch

    model: Any = loaded.model  # nn.Module's __call__ is untyped
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    eos = _eos_ids(loaded)
    past = None
    taken: list[tuple[torch.Tensor, int]] = []
    for _ in range(steps):
        out = model(input_ids=ids, attention_mask=mask, past_key_values=past, use_cache=True)
        logits = out.logits[0, -1].float()
        token = pick(logits)
        taken.append((logits, token))
        if token in eos:
            break
        past = out.past_key_values
        ids = torch.tensor([[token]])
        mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=-1)
    return taken


def pick_greedy(logits: torch.Tensor) -> int:
    """The most likely token (what `generate(do_sample=False)` picks)."""
    return int(logits.argmax())


def sampler(temperature: float, generator: torch.Generator) -> Callable[[torch.Tensor], int]:
    """A picker that samples from softmax(logits / T), reproducibly for a seeded generator."""
    import torch

    def pick(logits: torch.Tensor) -> int:
        probs = torch.softmax(logits / temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator))

    return pick


def top_candidates(
    loaded: LoadedModel, logits: torch.Tensor, temperature: float, k: int
) -> tuple[Candidate, ...]:
    """The k most likely tokens, with probabilities at `temperature` and at 1."""
    import torch

    at_t = torch.softmax(logits / temperature, dim=-1)
    at_1 = torch.softmax(logits, dim=-1)
    values, ids = at_t.topk(k)
    return tuple(
        _candidate(loaded, int(i), float(p), float(at_1[int(i)]))
        for p, i in zip(values.tolist(), ids.tolist(), strict=True)
    )


def local_step(
    loaded: LoadedModel, logits: torch.Tensor, token: int, temperature: float
) -> Step:
    """The chosen token of one step, and the most likely other tokens."""
    import torch

    at_t = torch.softmax(logits / temperature, dim=-1)
    at_1 = torch.softmax(logits, dim=-1)
    chosen = _candidate(loaded, token, float(at_t[token]), float(at_1[token]))
    others = [c for c in top_candidates(loaded, logits, temperature, RUNNERS_UP + 1)
              if c.token_id != token]
    return Step(chosen, tuple(others[:RUNNERS_UP]))


def entropy_bits(logits: torch.Tensor, temperature: float) -> float:
    """The entropy of softmax(logits / T), in bits."""
    import torch

    logp = torch.log_softmax(logits / temperature, dim=-1)
    return float(-(logp.exp() * logp).sum() / math.log(2))


def _candidate(loaded: LoadedModel, token: int, prob: float, prob_at_1: float) -> Candidate:
    # One token of a multi-byte character alone decodes to "\ufffd": shown as its bytes.
    return Candidate(token_text(loaded.tokenizer, token), prob, prob_at_1, token)


def _eos_ids(loaded: LoadedModel) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


# -- OpenAI-compatible servers: what top_logprobs return -----------------------------------


async def served_next_token(
    chat: OpenAIChatModel, request: NextTokenRequest, template: bool = False
) -> NextTokenResult:
    """The demo on a server: one greedy and (at T > 0) one seeded sampled request.

    The raw prompt goes to `/completions`, the chat-template view to `/chat/completions`.
    """
    started = time.perf_counter()

    async def ask(temperature: float, seed: int | None = None) -> LogprobsResult:
        if template:
            return await chat.token_logprobs(
                messages_for(request.prompt), max_tokens=request.steps,
                temperature=temperature, top_logprobs=request.top_k, seed=seed)
        return await chat.text_logprobs(
            request.prompt, max_tokens=request.steps, temperature=temperature,
            top_logprobs=request.top_k, seed=seed)

    try:
        greedy = await ask(0.0)
    except BackendRejected as exc:
        if template or exc.status not in (404, 405):
            raise
        greedy = LogprobsResult("", ())  # no raw-text endpoint: said plainly below
    sampled = None
    if not request.greedy and greedy.positions:
        sampled = await ask(request.temperature, request.seed)
    t = request.temperature or 1.0
    return NextTokenResult(
        model=chat.name,
        request=request,
        top=served_top(greedy.positions[0], t, request.top_k) if greedy.positions else (),
        greedy=tuple(served_step(p, t) for p in greedy.positions),
        sampled=tuple(served_step(p, t) for p in sampled.positions) if sampled else (),
        greedy_text=greedy.text,
        sampled_text=sampled.text if sampled else "",
        entropy_bits=None,
        entropy_at_1_bits=None,
        exact=False,
        seconds=time.perf_counter() - started,
        continues_prompt=not template,
        unavailable=None if greedy.positions else no_logprobs_message(chat.name, template),
    )


def no_logprobs_message(name: str, template: bool = False) -> str:
    """What the demo says when a server returns no log-probabilities."""
    endpoint = "/chat/completions" if template else "/completions (raw text)"
    return (
        f"The server behind '{name}' returned no token probabilities (logprobs) from {endpoint}, "
        "so this demo cannot show them for it. vLLM returns them; a local model always can."
    )


def served_top(position: PositionLogprobs, temperature: float, k: int) -> tuple[Candidate, ...]:
    """A position's top tokens; probabilities at T renormalised over the tokens returned."""
    pairs = {t.token: t.logprob for t in position.top}
    pairs.setdefault(position.chosen.token, position.chosen.logprob)
    scaled = {token: lp / temperature for token, lp in pairs.items()}
    peak = max(scaled.values())
    total = sum(math.exp(v - peak) for v in scaled.values())
    ranked = sorted(pairs, key=lambda token: pairs[token], reverse=True)[:k]
    return tuple(
        Candidate(token, math.exp(scaled[token] - peak) / total, math.exp(pairs[token]))
        for token in ranked
    )


def served_step(position: PositionLogprobs, temperature: float) -> Step:
    """One generated token from a server, with its runners-up."""
    candidates = served_top(position, temperature, len(position.top) + 1)
    chosen = next(c for c in candidates if c.text == position.chosen.token)
    others = tuple(c for c in candidates if c.text != position.chosen.token)
    return Step(chosen, others[:RUNNERS_UP])


# -- tables for the CLI and the bot ----------------------------------------------------------


def top_table(result: NextTokenResult) -> Table:
    """The top-k tokens: probability at T beside the one at 1; the greedy choice marked."""
    t = result.request.temperature
    both = 0 < t != 1.0
    header = ("#", "token", f"p(T={t:g})", "p(T=1)", "") if both else ("#", "token", "p", "")
    rows = []
    for rank, c in enumerate(result.top, 1):
        probs = (percent(c.prob), percent(c.prob_at_1)) if both else (percent(c.prob_at_1),)
        mark = "← greedy" if rank == 1 else ""
        rows.append((str(rank), visible(c.text), *probs, mark))
    return header, rows


def views_table(result: NextTokenResult) -> Table:
    """The raw-text top-k beside the chat-template top-k (probabilities at T = 1)."""
    chat = result.chat_view
    raw_rows, chat_rows = list(result.top), list(chat.top) if chat else []
    rows = []
    for rank in range(max(len(raw_rows), len(chat_rows))):
        cells: tuple[str, ...] = (str(rank + 1),)
        for column in (raw_rows, chat_rows):
            c = column[rank] if rank < len(column) else None
            cells += (visible(c.text), percent(c.prob_at_1)) if c else ("", "")
        rows.append(cells)
    return ("#", "raw text", "p", "chat template", "p"), rows


def steps_table(result: NextTokenResult) -> Table:
    """Each generated token, greedy beside sampled, with the greedy runners-up."""
    t = result.request.temperature
    header: tuple[str, ...] = ("step", "greedy", f"p(T={t or 1:g})", "runners-up")
    if result.sampled:
        header += (f"sampled (seed {result.request.seed})", f"p(T={t:g})")
    rows = []
    for i in range(max(len(result.greedy), len(result.sampled))):
        row: tuple[str, ...] = (str(i + 1), *_step_cells(result.greedy, i, alternatives=True))
        if result.sampled:
            row += _step_cells(result.sampled, i, alternatives=False)
        rows.append(row)
    return header, rows


def _step_cells(steps: tuple[Step, ...], i: int, alternatives: bool) -> tuple[str, ...]:
    if i >= len(steps):
        return ("", "", "") if alternatives else ("", "")
    step = steps[i]
    cells: tuple[str, ...] = (visible(step.chosen.text), percent(step.chosen.prob))
    if alternatives:
        others = " ".join(f"{visible(c.text)} {percent(c.prob)}" for c in step.runners_up)
        cells += (others,)
    return cells
