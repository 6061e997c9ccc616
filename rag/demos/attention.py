"""Attention weights of a local model for one sentence, one layer and one head (or their mean).

Defaults: the middle layer (`layers // 2`) and the mean over its heads, which shows the
layer's overall pattern; pick a head to see one specialised pattern. Layers and heads are
numbered from 0. Models load with SDPA attention, which returns no weights, so this demo
switches the shared model to eager attention for its one forward pass, holding the model's
generation lock so no answer is generated meanwhile, and switches it back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rag.demos.common import DemoInputError, Table, check_range, check_text, percent, visible
from rag.demos.tokenize import token_text, tokenizer_kind
from rag.llm.base import LLMError
from rag.llm.local import LoadedModel, LocalChatModel

if TYPE_CHECKING:
    import torch

MAX_SENTENCE_CHARS = 300
MAX_TOKENS = 48  # beyond this the heatmap's labels are unreadable
SUMMARY_TOP = 3
# Words whose attention is worth a sentence: pronouns point back at what they stand for.
INTERESTING = ("it", "its", "they", "them", "their", "he", "him", "his", "she", "her",
               "this", "that", "these", "those", "which", "who")


@dataclass(frozen=True)
class AttentionRequest:
    """Checked parameters of one attention demo (layer/head None: the defaults)."""

    sentence: str
    layer: int | None = None
    head: int | None = None

    @classmethod
    def checked(
        cls, sentence: str, layer: int | None = None, head: int | None = None
    ) -> AttentionRequest:
        """Validate what can be checked before the model is known."""
        check_text(sentence, "sentence", MAX_SENTENCE_CHARS)
        for value, what in ((layer, "layer"), (head, "head")):
            if value is not None and value < 0:
                raise DemoInputError(f"{what} counts from 0 (got {value}).")
        return cls(sentence, layer, head)


@dataclass(frozen=True)
class AttentionResult:
    """One layer's attention over a sentence: row i is how token i spreads its attention."""

    model: str
    sentence: str
    layer: int
    head: int | None  # None: the mean over all heads of the layer
    layers: int
    heads: int
    tokens: tuple[str, ...]  # readable token texts ("␣cat")
    special: tuple[bool, ...]
    weights: tuple[tuple[float, ...], ...]  # [query][key]; each row sums to 1 (causal)
    focus: int  # the token the summary is about
    focus_top: tuple[tuple[int, float], ...]  # (key index, weight), strongest first
    sink: float  # the focus token's weight on the first token (an "attention sink")
    seconds: float

    @property
    def head_label(self) -> str:
        """`head 3`, or `mean of 9 heads`."""
        return f"head {self.head}" if self.head is not None else f"mean of {self.heads} heads"

    def summary(self) -> str:
        """One sentence on what the focus token attends to most."""
        parts = [f"{self.tokens[k]} ({percent(w)})" for k, w in self.focus_top]
        where = f"layer {self.layer}, {self.head_label}"
        return (
            f"{self.tokens[self.focus]} attends most to {', '.join(parts) or 'itself'} "
            f"({where}); {percent(self.sink)} goes to the first token, {self.tokens[0]}, where "
            "models park attention they do not need (an attention sink)."
        )


async def attention(chat: LocalChatModel, request: AttentionRequest) -> AttentionResult:
    """Run the sentence through the model once and keep one layer's attention weights."""
    await chat.load()
    return await asyncio.to_thread(local_attention, chat, request)


def local_attention(chat: LocalChatModel, request: AttentionRequest) -> AttentionResult:
    """The demo, blocking (call it in a worker thread)."""
    started = time.perf_counter()
    loaded = chat.loaded()
    config: Any = loaded.model.config
    layers, heads = int(config.num_hidden_layers), int(config.num_attention_heads)
    layer = layers // 2 if request.layer is None else request.layer
    check_range(layer, f"layer (for {chat.name})", 0, layers - 1)
    if request.head is not None:
        check_range(request.head, f"head (for {chat.name})", 0, heads - 1)
    encoded = loaded.tokenizer(request.sentence, return_tensors="pt")
    count = int(encoded["input_ids"].shape[-1])
    if count > MAX_TOKENS:
        raise DemoInputError(f"That sentence is {count} tokens; the limit is {MAX_TOKENS}.")
    matrix = layer_weights(loaded, encoded, layer, request.head)
    ids = encoded["input_ids"][0].tolist()
    tokens, special = token_labels(loaded, ids)
    weights = tuple(tuple(float(w) for w in row) for row in matrix.tolist())
    focus = focus_token(tokens, special)
    return AttentionResult(
        chat.name, request.sentence, layer, request.head, layers, heads, tokens, special,
        weights, focus, strongest(weights[focus], special), weights[focus][0],
        time.perf_counter() - started,
    )


def layer_weights(
    loaded: LoadedModel, encoded: Any, layer: int, head: int | None
) -> torch.Tensor:
    """One layer's [query, key] attention, from an eager forward pass under the model's lock."""
    import torch

    model: Any = loaded.model
    with loaded.generate_lock, torch.inference_mode():
        previous = model.config._attn_implementation
        model.set_attn_implementation("eager")
        try:
            out = model(**encoded, output_attentions=True)
        finally:
            model.set_attn_implementation(previous)
    if not out.attentions or out.attentions[layer] is None:
        raise LLMError(f"Model '{loaded.path}' returned no attention weights.")
    per_head = out.attentions[layer][0].float()  # [heads, query, key]
    return per_head.mean(dim=0) if head is None else per_head[head]


def token_labels(loaded: LoadedModel, ids: list[int]) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """Readable token texts, and which tokens are special (`<bos>`)."""
    tokenizer = loaded.tokenizer
    special_ids = set(tokenizer.all_special_ids)
    special = tuple(i in special_ids for i in ids)
    kind = tokenizer_kind(tokenizer)
    texts = tuple(
        str(tokenizer.convert_ids_to_tokens(i)) if s else visible(token_text(tokenizer, i, kind))
        for i, s in zip(ids, special, strict=True)
    )
    return texts, special


def focus_token(tokens: tuple[str, ...], special: tuple[bool, ...]) -> int:
    """The last pronoun-like word after the first token, else the last ordinary token."""
    words = [t.strip("␣").lower() for t in tokens]
    for i in range(len(tokens) - 1, 0, -1):
        if words[i] in INTERESTING and not special[i]:
            return i
    ordinary = [i for i, s in enumerate(special) if not s]
    return ordinary[-1] if ordinary else len(tokens) - 1


def strongest(row: tuple[float, ...], special: tuple[bool, ...]) -> tuple[tuple[int, float], ...]:
    """The keys a query row weighs most, the first token and special tokens left out."""
    ranked = sorted(
        ((k, w) for k, w in enumerate(row) if k > 0 and not special[k] and w > 0),
        key=lambda kw: kw[1],
        reverse=True,
    )
    return tuple(ranked[:SUMMARY_TOP])


def focus_table(result: AttentionResult) -> Table:
    """Where the focus token's attention goes, strongest first."""
    row = result.weights[result.focus]
    ranked = sorted(range(len(row)), key=lambda k: row[k], reverse=True)
    rows = [(str(k), result.tokens[k], percent(row[k])) for k in ranked if row[k] > 0]
    return ("position", f"{result.tokens[result.focus]} attends to", "weight"), rows
