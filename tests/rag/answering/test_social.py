"""Messages that only thank, acknowledge or greet get a short reply of their own."""

import pytest

from rag.answering.social import ACK_REPLY, GREETING_REPLY, THANKS_REPLY, social_reply


@pytest.mark.parametrize(("message", "reply"), [
    ("thanks!", THANKS_REPLY),
    ("Thank you so much 🙏", THANKS_REPLY),
    ("cool, thx that helps", THANKS_REPLY),
    ("hi", GREETING_REPLY),
    ("Hey bot", GREETING_REPLY),
    ("ok got it", ACK_REPLY),
])
def test_thanks_and_greetings_get_their_own_reply(message: str, reply: str) -> None:
    assert social_reply(message) == reply


@pytest.mark.parametrize("message", [
    "thanks, and what is LoRA?",
    "hi, what is attention",
    "thanks for explaining attention, how do multiple heads work",
    "ok so what about top-k",
    "is it ok to use temperature 0",
])
def test_a_question_that_also_thanks_or_greets_is_a_question(message: str) -> None:
    assert social_reply(message) is None
