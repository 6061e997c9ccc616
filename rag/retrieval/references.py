"""The passages a question points to by name.

A student who writes "What does Section 5.1 of the vLLM paper describe?" or "In the week 6
guide's 'What a transformer is' part, how is a transformer described?" wants the answer from
that document and that section, not from whichever passage is nearest in meaning. Three kinds
of reference are read from the question:

- a **document**: up to four words before "paper", "guide", "overview", "notes" or
  "note"... ("the LLaMA paper", "the week 6 guide", "the vLLM serving note"), which name a
  file when every one of them is a word of its file name or of its top heading
  ("week6-transformers-fundamentals" reads as week, 6, transformers, fundamentals) and the
  noun fits it (a paper is a PDF; a guide, overview or notes are not);
- a **numbered section**: "Section 5.1", "§5.1", "sec. 3", matching a heading that starts
  with that number;
- a **named section**: a quoted title ("'Who are we aligning to?'") contained in a heading,
  or the words before "section" / "part" ("the alignment section"), all of them words of one
  heading.

A document named as a guess ("I think it was in the week 2 notes") is not a constraint: the
student may remember wrongly. Only references that match a retrieved passage count: a
question that names nothing, or names what was not retrieved, keeps every passage. When a
document and a section are both named, the passages must match both (or, when none does,
the document alone).

A named document also scopes the search itself (`named_sources`, over every file of the
index: `Retriever.search`), so its passages are among the retrieved ones to begin with.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

from rag.index.documents import Chunk, Hit
from rag.retrieval.lexical import stem
from rag.retrieval.query import own_terms

_DOCUMENT = re.compile(
    r"((?:[\w.&-]+\s+){1,4}?)(?P<kind>paper|article|guide|overview|notes?|handout|document|"
    r"reading|slides|page|table|summary)(?:'s|’s)?\b", re.IGNORECASE)
# What each kind of document is: a paper is a PDF, a guide or notes are not. "The llm basics
# table" is a table of that guide, "the LLaMA table" one of that paper; "the LLM basics
# summary" is that guide's, of either kind.
_PAPER_KINDS = frozenset({"paper", "article"})
# A course page ("the class 2 page") is a guide or notes; a paper's page is numbered ("page
# 4 of the LoRA paper") and names nothing.
_TEXT_KINDS = frozenset({"guide", "overview", "notes", "note", "handout", "page"})
# "I think it was in the week 2 notes": a guess about where something is, not a constraint.
_HEDGED = re.compile(
    r"\b(?:i think|i thought|i believe|i guess|maybe|probably|perhaps|not sure|"
    r"might (?:have )?been|was it)\b", re.IGNORECASE)
_SECTION_NUMBER = re.compile(
    r"(?:\b(?:section|sec\.?|chapter)\s*|§\s*)(\d+(?:\.\d+)*)\b", re.IGNORECASE)
_QUOTED = re.compile(r"(?:^|(?<=[\s(]))['‘\"“]([^'’\"”]{3,80}?)['’\"”](?!\w)")
_NAMED_PART = re.compile(
    r"((?:[\w&-]+\s+){1,3}?)(?:section|part|chapter)\b|"
    r"\b(?:section|part|chapter)\s+(?:on|about|called|titled|named)\s+((?:[\w&-]+\s*){1,4})",
    re.IGNORECASE)
# Words that end a reference phrase on the left ("in the", "of the") or name nothing.
_BOUNDARY = frozenset({
    "the", "a", "an", "in", "of", "from", "to", "according", "by", "does", "do", "did", "what",
    "how", "and", "or", "on", "about", "that", "this", "which", "s", "course", "original",
    "our", "your", "their", "its", "first", "same", "as", "per", "is", "are", "was", "say",
    "says", "for", "with", "at", "it", "so", "i", "me", "my", "we", "you",
})
_SPLIT = re.compile(r"[a-z]+|[0-9]+")
# What a paper calls what it presents: "We introduce LLaMA", "we propose ..., the
# Transformer", "We call the resulting models InstructGPT" (capitalised words only).
_SELF_NAME = re.compile(
    r"\b[Ww]e (?:(?:propose|present|introduce)\s+(?:[^.]{0,60}?,\s+(?:the|or)\s+)?|"
    r"(?:call|name|term|dub)\s+(?:[^.,]{0,40}?\s)?)"
    r"(?P<name>[A-Z][\w-]*(?:\s+[A-Z][\w-]*){0,3})")
# The verbs that frame a question about a document ("what does the paper say about ...").
_FRAME = re.compile(r"\b(?:say|says|said|mention|mentions|mentioned)\b", re.IGNORECASE)
# What a question asks a named document about, once the name is cut out: the words after
# "say about", "mention", "discuss" ... to the end ("What does the say about tokenization?"),
# or between "is" and "mentioned" ("Is RLHF covered in the ?").
_TOPIC_AFTER = re.compile(
    r"\b(?:(?:say|says|said|write|writes|wrote|tells?(?:\s+(?:us|me))?|ha(?:ve|s)(?:\s+to\s+say)?)"
    r"(?:\s+(?:anything|something|much))?\s+(?:about|on|regarding|concerning)|"
    r"mention(?:s|ed)?|discuss(?:es|ed)?|cover(?:s|ed)?|talk(?:s|ed)?\s+about|"
    r"address(?:es|ed)?)\s+(?:anything\s+(?:about|on)\s+)?(?P<topic>[^?!.]+?)[\s?!.]*$",
    re.IGNORECASE)
_TOPIC_BEFORE = re.compile(
    r"^\W*(?:is|are|was|were)\s+(?P<topic>[^?!.]+?)\s+(?:ever\s+|even\s+)?"
    r"(?:mentioned|discussed|covered|talked\s+about|addressed)\b", re.IGNORECASE)
# "According to the week 6 guide, what is RLHF?", "What is RLHF in the week 6 guide?".
_TOPIC_DEFINED = re.compile(
    r"^\W*(?:(?:according\s+to|in|per)\s+(?:the\s+)?(?:'s\s+)?[,:]?\s*)?"
    r"(?:what\s+(?:is|are)|what's|whats|define)\s+(?P<topic>[^?!.,]+?)[\s?!.]*$",
    re.IGNORECASE)
_TOPIC_EDGES = re.compile(
    r"^(?:(?:the|a|an|any|its|their)\s+)+|"
    r"\s+(?:at\s+all|anywhere|in|by|at|there|(?:according\s+to|in|per)(?:\s+the)?(?:\s+'s)?|"
    r"listed|described|given|shown|used|presented|defined|introduced|proposed|explained)$",
    re.IGNORECASE)
_TOPIC_CLAUSE = re.compile(
    r"\s+(?:it|they|we|you|i|that|which|who|when|where|and how|and why|and what)\s", re.IGNORECASE)
_NOT_A_TOPIC = re.compile(
    r"(?:in|of|from|by|at|for|to|with|within|what|why|how|when|where|which|who|whether|this|"
    r"these|that|those|it|them)\b", re.IGNORECASE)
# A preposition in it or at its end: "the goal of the", "an encoder used for", "the role of
# attention" ask about an aspect, which the document may discuss in other words.
_DANGLING = re.compile(r"\b(?:of|for|to|on|about|with|from|by|used)\b", re.IGNORECASE)
TOPIC_TERMS = 3
TOPIC_WORDS = 5
# A term is short; a longer "word" is pasted text, not a topic to name back in a note.
TOPIC_CHARS = 60


def _words(text: str) -> list[str]:
    """Lower-case words with letters and digits apart ("week6" is week, 6), stemmed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return [stem(w) for w in _SPLIT.findall(text)]


def _phrase(words_before: str) -> set[str]:
    """The naming words at the end of a phrase: "In the Week 6" → {week, 6}."""
    words = _SPLIT.findall(unicodedata.normalize("NFKC", words_before).casefold())
    kept: list[str] = []
    for word in reversed(words):
        if word in _BOUNDARY:
            break
        kept.append(word)
    return {stem(w) for w in kept}


def _file_words(chunk: Chunk) -> set[str]:
    top = chunk.section.split(" > ", 1)[0] if chunk.page is None else ""
    return _name_words(chunk.source) | set(_words(top))


def _headings(chunk: Chunk) -> list[str]:
    return [h.strip() for h in chunk.section.split(" > ") if h.strip()]


def _normal(text: str) -> str:
    return " ".join(_SPLIT.findall(unicodedata.normalize("NFKC", text).casefold()))


def referenced(question: str, hits: Sequence[Hit]) -> list[int] | None:
    """The indices of the hits the question names by document and section, or None when it
    names none of them (or nothing)."""
    chunks = [hit.chunk for hit in hits]
    in_document = _documents(question, chunks)
    in_section = _sections(question, chunks)
    if in_document is not None and in_section is not None:
        both = [i for i in in_section if i in in_document]
        return both or in_document
    return in_document if in_document is not None else in_section


def named_sources(
    question: str, sources: Iterable[str],
    aliases: Mapping[str, Sequence[frozenset[str]]] | None = None,
) -> frozenset[str]:
    """The files among `sources` (paths as the index has them) that the question names as a
    document by their file name ("the LLaMA paper": papers/llama.pdf; "the week 6 guide") or
    by one of their `aliases` (`self_names`: "the Transformer paper"), none when it names none
    or only guesses. Retrieval searches within them."""
    names = _document_names(question)
    if not names:
        return frozenset()
    aliases = aliases or {}
    return frozenset(
        source for source in sources
        if any(_fits(source, kind) and (name <= _name_words(source) or any(
            name <= alias for alias in aliases.get(source, ()))) for name, kind in names))


def self_names(text: str) -> list[frozenset[str]]:
    """The names a paper gives what it presents, as naming words: "We propose a new simple
    network architecture, the Transformer, ..." → {transformer}; "We introduce LLaMA";
    "which we name Guanaco". Read from a paper's first page, they let "the Transformer paper"
    name attention_is_all_you_need.pdf, as its file name cannot."""
    found = [frozenset(_words(m["name"])) for m in _SELF_NAME.finditer(" ".join(text.split()))]
    return list(dict.fromkeys(name for name in found if name))


def _without_names(question: str) -> str:
    """The question with its references to documents cut out ("What does the LLaMA paper say
    about the tokenizer?" → "What does the say about the tokenizer?"), as it is when it names
    none or only guesses."""
    if _HEDGED.search(question):
        return question
    spans: list[tuple[int, int]] = []
    for m in _DOCUMENT.finditer(question):
        words = list(re.finditer(r"[\w.&-]+", m.group(1)))
        kept = 0
        for word in reversed(words):
            if not _phrase(word.group()) or word.group().casefold() in _BOUNDARY:
                break
            kept += 1
        if kept:
            spans.append((m.start(1) + words[-kept].start(), m.end()))
    out, at = [], 0
    for start, end in spans:
        out.append(question[at:start])
        at = end
    out.append(question[at:])
    return "".join(out)


def asked_topic(question: str) -> str:
    """What a question asks a document it names about, when that is a term of at most
    `TOPIC_TERMS` content words: "What does the week 2 guide say about tokenization?",
    "Does the LoRA paper mention PagedAttention?", "Is RLHF covered in the week 6 guide?",
    "According to the week 6 guide, what is RLHF?" → "tokenization", "PagedAttention",
    "RLHF", "RLHF". Empty for a question that names no document, only guesses, or asks
    something longer ("What does the week 6 guide say you should be able to do?") or about an
    aspect ("the rank of the update")."""
    if not _document_names(question):
        return ""
    rest = " ".join(_without_names(question).split())
    found = (_TOPIC_BEFORE.search(rest) or _TOPIC_AFTER.search(rest)
             or _TOPIC_DEFINED.search(rest))
    if found is None:
        return ""
    # "the tokenizer it used" asks about the tokenizer.
    topic = _TOPIC_CLAUSE.split(found["topic"], maxsplit=1)[0]
    # Twice: "the prerequisites listed in the [complete LLM guide]" → "prerequisites".
    topic = _TOPIC_EDGES.sub("", _TOPIC_EDGES.sub("", topic.strip()).strip()).strip()
    # "mentioned in the related work", "say about what training costs", "about these methods":
    # a place, a question or a pointer back, not a term.
    # "the goal of the [week 6 guide]", "an encoder used for in the", "the role of attention":
    # about the document itself or about an aspect, not a term.
    if _NOT_A_TOPIC.match(topic) or _DANGLING.search(topic):
        return ""
    asked = [term for term in own_terms(topic) if term[:1].isalpha()]
    fits = (0 < len(set(asked)) <= TOPIC_TERMS and len(topic.split()) <= TOPIC_WORDS
            and len(topic) <= TOPIC_CHARS)
    return topic if fits else ""


def without_named_documents(question: str) -> str:
    """The question without its references to documents ("What does the LLaMA paper say about
    the tokenizer?" → "What does the about the tokenizer?"): the words a search within the
    named documents ranks by. Every passage there belongs to the document, so the words that
    name it, and the "say"/"mention" that frame the question, favour only the passages that
    repeat them (a paper's sample generations, its references). A question that names no
    document, or only guesses, is returned as it is."""
    rest = _without_names(question)
    if rest == question:
        return question
    return " ".join(_FRAME.sub(" ", rest).split())


def _document_names(question: str) -> list[tuple[set[str], str]]:
    """The naming words and the kind of each document the question names (not a guess)."""
    if _HEDGED.search(question):
        return []
    names = [(_phrase(m.group(1)), m["kind"].casefold()) for m in _DOCUMENT.finditer(question)]
    return [(n, kind) for n, kind in names if n]


def _name_words(source: str) -> set[str]:
    return set(_words(source.rsplit("/", 1)[-1].rsplit(".", 1)[0]))


def _fits(source: str, kind: str) -> bool:
    """Whether a file can be that kind of document: a paper is a PDF, a guide is not."""
    pdf = source.casefold().endswith(".pdf")
    return not ((kind in _PAPER_KINDS and not pdf) or (kind in _TEXT_KINDS and pdf))


def _documents(question: str, chunks: Sequence[Chunk]) -> list[int] | None:
    names = _document_names(question)
    if not names:
        return None
    found = [i for i, chunk in enumerate(chunks)
             if any(name <= _file_words(chunk) and _fits(chunk.source, kind)
                    for name, kind in names)]
    return found or None


def _sections(question: str, chunks: Sequence[Chunk]) -> list[int] | None:
    numbers = [m.group(1) for m in _SECTION_NUMBER.finditer(question)]
    quoted = [_normal(m.group(1)) for m in _QUOTED.finditer(question)]
    quoted = [q for q in quoted if len(q.split()) >= 2]
    named = [_phrase(m.group(1)) if m.group(1)
             else {w for w in _words(m.group(2)) if w not in _BOUNDARY}
             for m in _NAMED_PART.finditer(question)]
    named = [n for n in named if n]
    if not (numbers or quoted or named):
        return None

    def matches(chunk: Chunk) -> bool:
        for heading in _headings(chunk):
            if any(re.match(rf"{re.escape(n)}(?!\d)", heading) for n in numbers):
                return True
            normal = _normal(heading)
            if any(f" {q} " in f" {normal} " for q in quoted):
                return True
            if any(n <= set(_words(heading)) for n in named):
                return True
        return False

    found = [i for i, chunk in enumerate(chunks) if matches(chunk)]
    return found or None


# A question that only asks what a named document is about ("what does the week 6 guide
# cover?", "summary of the hallucination notes", "what's in the week 2 guide?"): one of the
# cues asks for its content, and every other word but the document's name frames the ask.
_OVERVIEW_CUES = frozenset({
    "cover", "covers", "covered", "about", "summary", "summarize", "summarise", "overview",
    "topics", "topic", "points", "ideas", "tldr", "in", "contain", "contains", "include",
    "includes", "discuss", "discusses", "teach", "teaches", "over", "explain", "explains",
})
_OVERVIEW_WORDS = _OVERVIEW_CUES | frozenset({
    "what", "whats", "what's", "does", "do", "did", "is", "are", "the", "a", "an", "of", "me",
    "give", "can", "you", "please", "pls", "i", "need", "quick", "short", "brief", "briefly",
    "this", "that", "it", "tell", "us", "main", "key", "tl", "dr", "go", "goes", "s", "and",
    "whole",
})


def asks_for_overview(question: str) -> bool:
    """Whether a question names one document (not as a guess) and asks only what it is
    about ("what is the bonus reading in the week 2 guide about?" names a part of one)."""
    if len(_document_names(question)) != 1:
        return False
    rest = re.findall(r"[a-z]+(?:'[a-z]+)?", without_named_documents(question).casefold())
    # "What does the LLaMA paper say?": the framing verb alone asks for its content.
    asks = bool(set(rest) & _OVERVIEW_CUES) or bool(_FRAME.search(question))
    return bool(rest) and set(rest) <= _OVERVIEW_WORDS and asks
