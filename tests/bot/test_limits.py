"""Discord's limits: splitting, payload checks, edit pacing."""

from __future__ import annotations

import pytest

from bot.limits import (
    EMBED_TOTAL_CHARS,
    MESSAGE_CHARS,
    ChannelPacer,
    EditThrottle,
    pack_pages,
    payload_problems,
    split_for_discord,
    tail,
    thread_name,
    truncate,
)


def test_short_text_is_one_piece():
    assert split_for_discord("Attention is all you need.") == ["Attention is all you need."]


def test_long_text_splits_within_the_limit_and_keeps_every_word():
    text = " ".join(f"word{i}" for i in range(3000))
    pieces = split_for_discord(text)
    assert len(pieces) > 1
    assert all(len(p) <= MESSAGE_CHARS for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_split_prefers_paragraph_breaks():
    first, second = "a" * 1500, "b" * 1500
    assert split_for_discord(f"{first}\n\n{second}") == [first, second]


def test_unbroken_text_is_cut_hard():
    pieces = split_for_discord("x" * 4500, limit=2000)
    assert [len(p) for p in pieces] == [1996, 1996, 508]


def test_a_code_block_cut_in_two_is_closed_and_reopened():
    code = "\n".join(f"x_{i} = {i}" for i in range(400))
    pieces = split_for_discord(f"Example:\n```python\n{code}\n```\nDone.")
    assert len(pieces) > 1
    for piece in pieces:
        assert len(piece) <= MESSAGE_CHARS
        assert piece.count("```") % 2 == 0
    assert pieces[1].startswith("```python\n")


def test_a_code_block_the_text_leaves_open_is_closed():
    """A model's answer cut off at its token limit, inside a code block."""
    cut = "Attention:\n```python\nscores = q @ k.T / d ** 0.5\nweights = softmax("
    assert split_for_discord(cut) == [cut + "\n```"]
    long = cut + "\n" + "\n".join(f"x_{i} = {i}" for i in range(400))
    assert all(p.count("```") % 2 == 0 for p in split_for_discord(long))


def test_split_for_an_embed_description_uses_that_limit():
    pieces = split_for_discord("word " * 3000, limit=4096)
    assert all(len(p) <= 4096 for p in pieces) and len(pieces) == 4


def test_too_small_a_limit_is_refused():
    with pytest.raises(ValueError):
        split_for_discord("text", limit=10)


def test_truncate_and_tail_mark_the_cut():
    assert truncate("abcdef", 4) == "abc…" and truncate("abc", 4) == "abc"
    assert tail("abcdef", 4) == "…def" and tail("abc", 4) == "abc"


def test_thread_name_is_one_line_within_100_characters():
    name = thread_name("What is\nLoRA? " + "x" * 300)
    assert len(name) <= 100 and "\n" not in name and name.startswith("What is LoRA?")


def test_payload_within_limits_has_no_problems():
    payload = {"content": "hi", "embeds": [{"description": "d" * 4096, "title": "t"}]}
    assert payload_problems(payload) == []


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"content": "x" * 2001}, "content"),
        ({"embeds": [{"description": "x" * 4097}]}, "embed description"),
        ({"embeds": [{"description": "x" * 4000}, {"description": "y" * 2001}]}, "embeds total"),
        ({"embeds": [{"fields": [{"name": "n", "value": "v" * 1025}]}]}, "field value"),
        ({"embeds": [{"description": "x"}] * 11}, "embeds:"),
    ],
)
def test_payload_over_a_limit_is_reported(payload, problem):
    assert any(problem in p for p in payload_problems(payload))


def test_pack_pages_keeps_each_message_under_the_embed_total():
    pages = ["x" * 4096, "y" * 1000, "z" * 4096, "w" * 100]
    messages = pack_pages(pages)
    assert messages == [["x" * 4096, "y" * 1000], ["z" * 4096, "w" * 100]]
    assert all(sum(map(len, m)) <= EMBED_TOTAL_CHARS for m in messages)


def test_edit_throttle_lets_one_edit_through_per_interval():
    now = [0.0]
    throttle = EditThrottle(1.0, clock=lambda: now[0])
    assert throttle.ready()
    now[0] = 0.5
    assert not throttle.ready()
    now[0] = 1.0
    assert throttle.ready()
    now[0] = 1.9
    assert not throttle.ready()


class FakeClock:
    """Time that moves only when something sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_pacer_allows_five_writes_per_five_seconds_per_channel():
    clock = FakeClock()
    pacer = ChannelPacer(clock=clock, sleep=clock.sleep)
    assert all(pacer.try_take(1) for _ in range(5))
    assert not pacer.try_take(1)  # a sixth draft is skipped
    assert pacer.try_take(2)  # another channel has its own budget
    clock.now += 5.0
    assert pacer.try_take(1)


async def test_a_final_write_waits_for_room_instead_of_being_skipped():
    clock = FakeClock()
    pacer = ChannelPacer(clock=clock, sleep=clock.sleep)
    for _ in range(5):
        pacer.try_take(1)
        clock.now += 0.5
    await pacer.take(1)
    assert clock.now == pytest.approx(105.0)  # the first write left the window


async def test_a_429_keeps_the_channel_quiet_for_as_long_as_discord_asked():
    clock = FakeClock()
    pacer = ChannelPacer(clock=clock, sleep=clock.sleep)
    pacer.hold(1, 2.5)
    assert not pacer.try_take(1)
    await pacer.take(1)
    assert clock.now == pytest.approx(102.5)
