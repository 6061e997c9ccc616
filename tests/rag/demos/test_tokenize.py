"""The tokenize demo with the real tokenizers of both packaged models."""

from __future__ import annotations

import pytest

from rag.demos.common import DemoInputError
from rag.demos.tokenize import (
    BYTE_LEVEL,
    MAX_TEXT_CHARS,
    SENTENCEPIECE,
    counts_table,
    piece_bytes,
    pieces_line,
    tokenize,
)

TEXT = "The naïve cat sat in Tōkyō (東京)\non 2024-05-01!"


async def test_counts_and_ids_match_each_tokenizer(demo_registry, smollm2, gemma3):
    result = await tokenize(demo_registry, TEXT)
    by_model = {t.model: t for t in result.tokenizations}
    assert list(by_model) == ["smollm2", "gemma3-base"]  # every local model, none served
    for name, chat in (("smollm2", smollm2), ("gemma3-base", gemma3)):
        expected = chat.tokenizer(TEXT).input_ids
        assert by_model[name].count == len(expected)
        assert [t.id for t in by_model[name].tokens] == list(expected)
    assert by_model["smollm2"].kind == BYTE_LEVEL and by_model["gemma3-base"].kind == SENTENCEPIECE
    assert by_model["smollm2"].count != by_model["gemma3-base"].count
    header, rows = counts_table(result)
    assert [row[2] for row in rows] == [str(by_model[n].count) for n in by_model]


async def test_leading_spaces_are_shown_with_a_visible_marker(demo_registry):
    result = await tokenize(demo_registry, "The cat sat")
    smol, gemma = result.tokenizations
    assert [t.piece for t in smol.tokens] == ["The", "Ġcat", "Ġsat"]
    assert [t.text for t in smol.tokens] == ["The", "␣cat", "␣sat"]
    assert [t.piece for t in gemma.tokens][-2:] == ["▁cat", "▁sat"]
    assert gemma.tokens[0].special and gemma.tokens[0].text == "<bos>"
    assert pieces_line(gemma) == "<bos>|The|␣cat|␣sat"


async def test_byte_level_fragments_are_shown_as_the_bytes_they_encode(demo_registry):
    result = await tokenize(demo_registry, "東京", ["smollm2"])
    (smol,) = result.tokenizations
    fragments = [t for t in smol.tokens if t.text.startswith("<0x")]
    assert fragments, "SmolLM2 should split these characters into byte pieces"
    assert b"".join(piece_bytes(t.piece) or b"" for t in smol.tokens) == "東京".encode()


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "The text is empty"), (" \n ", "The text is empty"),
     ("x" * (MAX_TEXT_CHARS + 1), "the limit is 500")],
    ids=["empty", "blank", "too-long"],
)
async def test_bad_text_gets_a_clear_message(demo_registry, text, says):
    with pytest.raises(DemoInputError, match=says):
        await tokenize(demo_registry, text)


async def test_a_served_model_without_a_local_tokenizer_is_a_clear_error(demo_registry):
    with pytest.raises(DemoInputError, match="tokenizer of 'remote' is not available"):
        await tokenize(demo_registry, "Hello", ["remote"])


async def test_an_unknown_model_is_a_clear_error(demo_registry):
    with pytest.raises(DemoInputError, match="Unknown model 'nope'"):
        await tokenize(demo_registry, "Hello", ["nope"])
