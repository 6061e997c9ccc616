"""Messages that only thank, acknowledge or greet ("thanks!", "ok got it", "hi"): a short
reply of their own, with no search. Searched, "thanks!" was "not covered by the materials"
with the closest sections listed, and it counted as a question the materials failed."""

from __future__ import annotations

import re


def _set(text: str) -> frozenset[str]:
    """A word set written as one string."""
    return frozenset(text.split())


# Every word of such a message is one of these (emoji and punctuation aside).
_THANKS = _set("thanks thank thx ty tysm tyvm cheers appreciate appreciated helpful helped helps")
_GREETING = _set("hi hello hey heya hiya yo morning evening afternoon")
_FILLER = _set(
    "you u so much a lot very many ok okay k kk cool great nice awesome perfect amazing "
    "got it that this makes sense good the best again all for your help bot lol haha "
    "oh ah alright sure thats that's bro dude man guys everyone there")
_WORD = re.compile(r"[a-z']+")
MAX_WORDS = 8

THANKS_REPLY = "You're welcome! Ask me anything else about the course materials."
GREETING_REPLY = ("Hi! Ask me a question about the course materials, e.g. \"What is LoRA "
                  "and why does it matter?\"")
ACK_REPLY = "Ask me anything else about the course materials whenever you like."


def social_reply(message: str) -> str | None:
    """The reply to a message that only thanks or greets, or None for anything else (a
    question that also thanks, "thanks, and what is LoRA?", is a question)."""
    if "?" in message:
        return None
    said = _WORD.findall(message.lower().replace("’", "'"))
    if not said or len(said) > MAX_WORDS:
        return None
    if not all(w in _THANKS or w in _GREETING or w in _FILLER for w in said):
        return None
    if any(w in _THANKS for w in said):
        return THANKS_REPLY
    if any(w in _GREETING for w in said):
        return GREETING_REPLY
    return ACK_REPLY  # only acknowledgement: "ok cool", "got it"
