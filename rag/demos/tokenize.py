"""How different tokenizers cut the same text: pieces, ids and counts side by side.

SmolLM2 uses byte-level BPE (`Ġ` marks a leading space; characters outside ASCII are split
into bytes), Gemma-3 a SentencePiece vocabulary (`▁` marks a leading space).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from rag.demos.common import (
    DemoInputError,
    Table,
    check_text,
    local_names,
    pick_model,
    visible,
)
from rag.llm.local import LocalChatModel
from rag.llm.openai_compat import OpenAIChatModel
from rag.llm.registry import ModelRegistry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MAX_TEXT_CHARS = 500
BYTE_LEVEL = "byte-level BPE (Ġ marks a space)"
SENTENCEPIECE = "SentencePiece (▁ marks a space)"


@dataclass(frozen=True)
class Token:
    """One token: its id, the tokenizer's own spelling, and the text it stands for."""

    id: int
    piece: str  # as the vocabulary spells it: "Ġcat", "▁cat", "<bos>"
    text: str  # readable: "␣cat"; byte fragments as "<0xE6>"; special tokens as the piece
    special: bool


@dataclass(frozen=True)
class Tokenization:
    """One model's tokens for the text."""

    model: str
    kind: str  # BYTE_LEVEL, SENTENCEPIECE, or the tokenizer model's own name
    tokens: tuple[Token, ...]

    @property
    def count(self) -> int:
        """How many tokens, special ones included (what the model's context pays)."""
        return len(self.tokens)


@dataclass(frozen=True)
class TokenizeResult:
    """The same text through several tokenizers."""

    text: str
    tokenizations: tuple[Tokenization, ...]


def check_tokenize_text(text: str) -> str:
    """The text, or a `DemoInputError` when it is empty or too long."""
    return check_text(text, "text", MAX_TEXT_CHARS)


async def tokenize(
    registry: ModelRegistry, text: str, models: Sequence[str] | None = None
) -> TokenizeResult:
    """Tokenize `text` with each named model's tokenizer (default: every local model)."""
    check_tokenize_text(text)
    names = list(models) if models else local_names(registry)
    tokenizers = [(name, await tokenizer_of(registry, name)) for name in names]
    return TokenizeResult(
        text, tuple(tokenize_with(name, tok, text) for name, tok in tokenizers)
    )


async def tokenizer_of(registry: ModelRegistry, name: str) -> PreTrainedTokenizerBase:
    """A model's tokenizer: a local model's own, or a served model's if it is on this machine."""
    chat = pick_model(registry, name)
    if isinstance(chat, LocalChatModel):
        return (await chat.load()).tokenizer
    tokenizer = None
    if isinstance(chat, OpenAIChatModel):
        tokenizer = await asyncio.to_thread(chat.local_tokenizer)
    if tokenizer is None:
        raise DemoInputError(
            f"The tokenizer of '{chat.name}' is not available on this machine; try a local "
            f"model: {', '.join(local_names(registry))}."
        )
    return tokenizer


def tokenize_with(name: str, tokenizer: PreTrainedTokenizerBase, text: str) -> Tokenization:
    """The tokens of `text`, special tokens (such as `<bos>`) included."""
    ids = [int(i) for i in tokenizer(text).input_ids]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    special = set(tokenizer.all_special_ids)
    kind = tokenizer_kind(tokenizer)
    tokens = tuple(
        Token(i, str(p), readable(tokenizer, i, str(p), kind, i in special), i in special)
        for i, p in zip(ids, pieces, strict=True)
    )
    return Tokenization(name, kind, tokens)


def tokenizer_kind(tokenizer: PreTrainedTokenizerBase) -> str:
    """What kind of tokenizer this is, from its decoder (how pieces turn back into text)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = repr(getattr(backend, "decoder", None))
    if "ByteLevel" in decoder:
        return BYTE_LEVEL
    if "▁" in decoder or "Metaspace" in decoder:
        return SENTENCEPIECE
    model = getattr(backend, "model", None)
    return type(model).__name__ if model is not None else type(tokenizer).__name__


def readable(
    tokenizer: PreTrainedTokenizerBase, token_id: int, piece: str, kind: str, special: bool
) -> str:
    """The text a token stands for, with spaces visible; byte fragments shown as bytes."""
    if special:
        return piece
    return visible(token_text(tokenizer, token_id, kind, piece))


def token_text(tokenizer: PreTrainedTokenizerBase, token_id: int, kind: str | None = None,
               piece: str | None = None) -> str:
    """The text one token decodes to; a byte fragment (part of a character: CJK, emoji) as
    its bytes, `<0xE6>`, since alone it decodes to an unreadable "\ufffd"."""
    text = str(tokenizer.decode([token_id]))
    if "\ufffd" not in text:
        return text
    piece = piece if piece is not None else str(tokenizer.convert_ids_to_tokens(token_id))
    kind = kind or tokenizer_kind(tokenizer)
    raw = piece_bytes(piece) if kind == BYTE_LEVEL else None
    if raw is None:
        return piece
    prefix = " " if raw.startswith(b" ") else ""
    return prefix + "".join(f"<0x{b:02X}>" for b in raw.lstrip(b" "))


def continuation_text(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int]) -> str:
    """Generated tokens as text, special tokens left out. They are decoded together, so a
    character whose bytes span several tokens comes out whole; when the last ones stop partway
    through a character (a byte fragment, as `token_text` finds it), the "\ufffd" those bytes
    decode to is dropped."""
    text = str(tokenizer.decode(list(token_ids), skip_special_tokens=True))
    special = set(tokenizer.all_special_ids)
    last = next((i for i in reversed(token_ids) if i not in special), None)
    if last is not None and "\ufffd" in str(tokenizer.decode([last])):
        return text.rstrip("\ufffd")
    return text


def piece_bytes(piece: str) -> bytes | None:
    """The bytes a byte-level BPE piece encodes (GPT-2's byte-to-character table)."""
    table = _unicode_to_byte()
    if any(ch not in table for ch in piece):
        return None
    return bytes(table[ch] for ch in piece)


@cache
def _unicode_to_byte() -> dict[str, int]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    shift = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + shift)
            shift += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def counts_table(result: TokenizeResult) -> Table:
    """How many tokens each model needs for the text, side by side."""
    rows = [(t.model, t.kind, str(t.count)) for t in result.tokenizations]
    return ("model", "tokenizer", "tokens"), rows


def tokens_table(tokenization: Tokenization) -> Table:
    """One model's tokens: position, id, the vocabulary's piece and the text it stands for."""
    rows = [(str(n), str(t.id), t.piece, t.text) for n, t in enumerate(tokenization.tokens, 1)]
    return ("#", "id", "piece", "text"), rows


def pieces_line(tokenization: Tokenization) -> str:
    """The tokens' texts in a row, separated by `|`: where the text is cut."""
    return "|".join(t.text for t in tokenization.tokens)
