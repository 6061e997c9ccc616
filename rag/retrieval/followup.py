"""Follow-up questions made searchable without trusting a model to rewrite them.

"and how much memory does it save?" finds nothing on its own. The packaged 135M model, asked
to rewrite it, answers instead ("The answer lies within the context of dynamic caches…"), and
that answer-like text then retrieves the wrong passages. So the search query is built
deterministically: a question that leans on the conversation (it says "it"/"that"/"they",
opens with "and"/"what about", or has at most two words of its own) is prefixed with the key
terms of the student's previous question. A capable model's rewrite may replace it, but only
when it passes `acceptable_rewrite`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.retrieval.lexical import STOPWORDS, words


def _set(text: str) -> frozenset[str]:
    """A word set written as one string."""
    return frozenset(text.split())


_REFERRING = _set(
    "it its that this those these they them their theirs one ones there such same "
    "he she him her his former latter"
)
_OPENERS = _set("and but so also then or plus what's")
_OPENING_PAIRS = frozenset({("what", "about"), ("how", "about"), ("and", "what")})
# Words that ask rather than name a topic: never carried over as key terms.
_ASKING = _set(
    "explain tell describe define give show shows please can could would should did was were "
    "say says said question mean means meaning difference different work works many much"
)
_POSSESSIVE = re.compile(r"['’]s\b")
_TOKEN = re.compile(r"[^\W_][\w.\-/+]*", re.UNICODE)
# A question with at most this many words of its own relies on the conversation.
_OWN_WORDS = 2
_MAX_REWRITE_CHARS = 300
_QUESTION_OPENERS = _set(
    "what which who whom whose when where why how is are was were do does did can could "
    "should would will explain describe compare list give tell"
)


def _content(text: str) -> list[str]:
    """Lower-case words of a text that name something: no stopwords or asking words."""
    return [w for w in words(text) if w not in STOPWORDS and w not in _ASKING]


def needs_context(question: str) -> bool:
    """Whether a question leans on the conversation rather than standing on its own."""
    said = words(question)
    if not said:
        return False
    if said[0] in _OPENERS or tuple(said[:2]) in _OPENING_PAIRS:
        return True
    return any(w in _REFERRING for w in said) or len(_content(question)) <= _OWN_WORDS


# "what is BPE?", "define perplexity", "explain a reward model": a short question that names a
# new subject rather than asking more about the last one ("what is the formula?", "what are
# they?", "explain more").
_ANEW = re.compile(
    r"^\s*(?:what\s*(?:is|are|'s|’s|s)|define|explain)\s+(?:an?\s+)?(?P<subject>[^?]+?)\s*\??\s*$",
    re.IGNORECASE)
# Subjects that ask for more of the last answer ("explain more", "what is an example?").
_MORE = _set("more again further example examples detail details simpler step steps")


def asks_anew(question: str) -> bool:
    """Whether a question that `needs_context` only for being short ("what is BPE?") may name
    a subject of its own: it asks what something is, and neither opens like a follow-up nor
    refers back ("the", "it", "that"). Whether it does is for the materials to tell
    (`Assistant.search_query_for`)."""
    found = _ANEW.match(question)
    if found is None:
        return False
    said = words(question)
    subject = words(found["subject"])
    return (bool(subject) and subject[0] != "the" and not any(w in _REFERRING for w in said)
            and any(w not in _MORE for w in _content(found["subject"])))


def key_terms(text: str) -> str:
    """The words of a question that name its topic, in the student's own spelling."""
    keep = []
    for token in _TOKEN.findall(_POSSESSIVE.sub("", text)):
        lowered = words(token)
        if lowered and any(w not in STOPWORDS and w not in _ASKING for w in lowered):
            keep.append(token.strip(".-/"))
    return " ".join(dict.fromkeys(keep))


def standalone_query(question: str, earlier: Sequence[str]) -> str:
    """The search query for a question, given the student's earlier questions (oldest first).

    A follow-up carries the key terms of the previous question, and of the one before it when
    the previous question was itself a follow-up.
    """
    if not earlier or not needs_context(question):
        return question
    carried = [key_terms(earlier[-1])]
    if len(earlier) > 1 and needs_context(earlier[-1]):
        carried.insert(0, key_terms(earlier[-2]))
    context = " ".join(c for c in carried if c)
    return f"{context}: {question}" if context else question


def acceptable_rewrite(rewrite: str, question: str, earlier: Sequence[str]) -> bool:
    """Whether a model's rewrite of a follow-up can be trusted as a search query.

    It must be one short question (not an answer, not the instructions echoed) that names
    something from the previous question, so the reference was actually resolved.
    """
    text = rewrite.strip()
    said = words(text)
    if not said or "\n" in text or len(text) > _MAX_REWRITE_CHARS:
        return False
    if any(w in said for w in ("rewrite", "rewritten", "conversation")):
        return False
    if not (text.endswith("?") or said[0] in _QUESTION_OPENERS):
        return False
    carried = set(_content(earlier[-1])) if earlier else set()
    return not carried or bool(carried & set(_content(text)))
