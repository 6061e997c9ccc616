"""What a question asks for, as the lexical and dense retrievers each need it.

Students write "wats the diff btw sft n rlhf" or "kv cahce size per token". Two deterministic
steps make such a question findable: a course glossary expands abbreviations and chat
shorthand (sft → supervised fine tuning), and words the index has never seen are corrected
to the indexed word they most likely misspell (`BM25Index.correction`: tempreature →
temperature). Expansions are added at half weight and go to the embedder, which knows
"supervised fine tuning" far better than "sft"; chat shorthand ("a diff tokenizer", "the func
signature") is written out in place in what the embedder reads, since it reads "diff" or
"func" as another word or not at all. Corrections replace the misspelt words, for
both retrievers and for what reads the question after them (the gate's heading rule, the
quote selector): an embedding of "tempreature" is far from "temperature", and the index
cannot match a word it has never seen. A word the embedder's vocabulary holds whole is a
real word the materials happen not to use ("dinner", "capitol"), never a misspelling: turned
into a word of the materials, an off-topic question would look covered. The student's
question itself is never changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rag.retrieval.lexical import BM25Index, index_terms, words

# Abbreviations of this course's field and common chat shorthand. An expansion's terms
# weigh half as much as the words the student wrote.
GLOSSARY: dict[str, str] = {
    "sft": "supervised fine-tuning",
    "rlhf": "reinforcement learning from human feedback",
    "ppo": "proximal policy optimization",
    "dpo": "direct preference optimization",
    "icl": "in-context learning",
    "kv": "key value cache",
    "cot": "chain of thought",
    "bpe": "byte-pair encoding",
    "peft": "parameter-efficient fine-tuning",
    "lora": "low-rank adaptation",
    "qlora": "quantized low-rank adaptation",
    "nf4": "4-bit normalfloat",
    "rag": "retrieval-augmented generation",
    "llm": "large language model",
    "llms": "large language models",
    "moe": "mixture of experts",
    "rope": "rotary positional embeddings",
    "ffn": "feed-forward network",
    "mmlu": "massive multitask language understanding",
    "lr": "learning rate",
    "w": "with",
    "u": "you",
    "r": "are",
    "y": "why",
    "hw": "how",
    "n": "and",
    "vs": "versus",
}
# Chat shorthand of several letters, which the embedder reads as another word ("diff",
# "mem") or as nothing it knows ("func", "hav"), and which the passages rarely use: written out in
# place in what the embedder sees, and searched for as the glossary's expansions are. (A
# single letter, "n" or "r", stays as written there: "n=1000", "rank r".) "diff" is "the
# difference" after an article, else "different" ("a diff tokenizer").
SHORTHAND: dict[str, str] = {
    "og": "original",
    "diff": "different",
    "btw": "between",
    "abt": "about",
    "mem": "memory",
    "proj": "project",
    "hparams": "hyperparameters",
    "func": "function",
    "funcs": "functions",
    "algo": "algorithm",
    "algos": "algorithms",
    "perf": "performance",
    "approx": "approximately",
    "impl": "implementation",
    "lang": "language",
    "dims": "dimensions",
    "dim": "dimension",
    "temp": "temperature",
    "attn": "attention",
    "seq": "sequence",
    "seqs": "sequences",
    "ctx": "context",
    "tok": "token",
    "toks": "tokens",
    "embs": "embeddings",
    "param": "parameter",
    "params": "parameters",
    "vocab": "vocabulary",
    "gen": "generation",
    "info": "information",
    "eval": "evaluation",
    "evals": "evaluations",
    "hav": "have",
    "smth": "something",
    "sth": "something",
    "ur": "your",
    "thru": "through",
    "tho": "though",
    "cuz": "because",
    "wat": "what",
    "wut": "what",
    "shud": "should",
    "cud": "could",
    "wud": "would",
    "dont": "don't",
    "doesnt": "doesn't",
    "didnt": "didn't",
    "cant": "can't",
    "isnt": "isn't",
}
GLOSSARY.update({**SHORTHAND, "diff": "difference"})
EXPANSION_WEIGHT = 0.5
# A shorthand word as written: lower case and whole, not a part of "w/o", "diff-based" or
# "og_model"; "the"/"a" before "diff" decide its sense.
_SHORTHAND_WORD = re.compile(
    r"(?<![\w/'-])(?:(?P<article>(?:the|a|any|no|what's|whats)\s+)(?=diff\b))?"
    r"(?P<word>[a-z]+)(?![\w/'-])")
# Words that say how a student feels or asks, not what about ("im confused about embeddings
# lol", "can u explain attention like im 5 pls"). They are not searched for, and they do not
# count against a question's coverage: the index has never seen "lol", and an unseen word is
# the strongest sign of an off-topic question. (As index terms: stemmed, see `index_terms`.)
CHATTER = frozenset(term for term in index_terms(
    "im confused confusing lol lmao haha pls plz please thanks thx ty help explain eli5 "
    "kinda sorta basically honestly literally idk tbh hey hi hello stuck understand dumb "
    "simple simply like ur "
    # Chat spellings of the question words and fillers a stop list knows only spelt out.
    "wat wut whats wats shud shld cud wud cuz coz tho thru gonna wanna gotta nah yeah yep "
    "ok okay rn ngl imo lowkey bro dude guys anyone someone smth sth wondering curious"
) if not term.isdigit())


# Where a student's message splits into parts that may each be judged on their own: sentence
# ends and commas ("my few shot prompt keeps outputting the last example's label... is that a
# known thing").
_PART_BREAK = re.compile(r"(?<=[.?!;…])\s+|,\s+")
PART_TERMS = 3
# Each part is a search of its own: a long message of many commas is judged on its first few.
MAX_PARTS = 4


def message_parts(question: str) -> list[str]:
    """The first `MAX_PARTS` parts of a message of several sentences or clauses that ask about
    something (at least `PART_TERMS` terms of their own, chatter aside); none for a message of
    one part."""
    parts = [part.strip() for part in _PART_BREAK.split(question) if part.strip()]
    if len(parts) < 2:
        return []
    return [part for part in parts if len(set(own_terms(part))) >= PART_TERMS][:MAX_PARTS]


def own_terms(question: str) -> list[str]:
    """The question's index terms, without chatter: what it asks about."""
    return [term for term in index_terms(question) if term not in CHATTER]


@dataclass(frozen=True, slots=True)
class Query:
    """A question prepared for search.

    `terms` weighs the lexical terms (the question's own at 1, misspelt ones replaced by their
    corrections; expansions at 0.5);
    `core` are the question's own terms (corrected; shorthand the index has never seen
    replaced by the terms it stands for), on which lexical coverage is judged;
    `corrected` is the question with its misspelt words replaced (the question when none is);
    `dense_text` is what the embedder sees: the corrected question with its expansions
    appended.
    """

    text: str
    dense_text: str
    terms: dict[str, float] = field(default_factory=dict)
    core: tuple[str, ...] = ()
    corrected: str = ""


@dataclass(frozen=True, slots=True)
class Correction:
    """A misspelt word of a question (lower case), its index term, the indexed term it
    misspells, and that term as the question would have written it (a plural kept)."""

    word: str
    term: str
    fixed: str
    written: str


# A run of ASCII letters that is a whole word of `words` (not part of "week6" or "nf4").
_LETTER_WORD = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]+(?![A-Za-z0-9])")


def _no_words(word: str) -> bool:
    return False


def corrections(
    question: str, index: BM25Index, is_word: Callable[[str], bool] = _no_words
) -> list[Correction]:
    """The question's words the index has never seen that misspell one it has
    (`BM25Index.correction`, judged in the context of the question's other terms). Glossary
    shorthand and words `is_word` calls real are not misspellings."""
    context = [term for term in own_terms(question) if index.knows(term)]
    found = []
    for word in dict.fromkeys(words(question)):
        if not word.isalpha() or word in GLOSSARY:
            continue
        term = next(iter(index_terms(word)), None)  # none for a stopword
        if term is None or term in CHATTER or index.knows(term) or is_word(word):
            continue
        fixed = index.correction(term, context)
        if fixed is not None:
            # "sytems": systems; but "retrieves", corrected to "retrieved" (the index has
            # no "retrieve"), is not "retrieveds".
            plural = term != word and not fixed.endswith(("s", "ed", "ing"))
            found.append(Correction(word, term, fixed, fixed + "s" if plural else fixed))
    return found


def _core_terms(term: str, index: BM25Index) -> list[str]:
    """What coverage judges for one of the question's terms: the term itself, or for
    shorthand the index has never seen ("og", "u", "mem") the terms it stands for (none for
    "u"): a word no passage holds is the strongest sign of an off-topic question, and
    shorthand is not one."""
    if term in GLOSSARY and not index.knows(term):
        return index_terms(GLOSSARY[term])
    return [term]


def analyse(
    question: str, index: BM25Index, is_word: Callable[[str], bool] = _no_words
) -> Query:
    """Correct misspelt words against the index's vocabulary (`corrections`; `is_word` tells
    real words) and expand abbreviations."""
    fixes = corrections(question, index, is_word)
    fixed = {c.term: c.fixed for c in fixes}
    written = {c.word: c.written for c in fixes}
    corrected = _LETTER_WORD.sub(lambda m: written.get(m.group(0).lower(), m.group(0)),
                                 question) if fixes else question
    own = tuple(dict.fromkeys(fixed.get(term, term) for term in own_terms(question)))
    terms = dict.fromkeys(own, 1.0)
    core = tuple(dict.fromkeys(term for own_term in own for term in _core_terms(own_term, index)))
    extra: list[str] = []
    for word in dict.fromkeys(words(corrected)):
        if word in GLOSSARY:
            if word not in SHORTHAND:
                extra.append(GLOSSARY[word])
            for term in index_terms(GLOSSARY[word]):
                terms.setdefault(term, EXPANSION_WEIGHT)
    written_out = written_out_shorthand(corrected)
    dense = f"{written_out} ({'; '.join(extra)})" if extra else written_out
    return Query(question, dense, terms, core, corrected)


def written_out_shorthand(text: str) -> str:
    """The text with its chat shorthand written out (`SHORTHAND`): "can i use a diff
    tokenizer or do they hav to match" → "... a different tokenizer or do they have to ..."."""

    def spelt(found: re.Match[str]) -> str:
        word, article = found["word"], found["article"] or ""
        if word == "diff" and article and not article.startswith("a "):
            return f"{article}difference"
        return article + SHORTHAND.get(word, word)

    return _SHORTHAND_WORD.sub(spelt, text)


# A question that compares two things, and where its two sides are: "A vs B", "the difference
# between A and B", "how does A differ from / compare with B", "how do A and B compare",
# "compare A with B". A side ends at a clause's punctuation, and is searched for within 120
# characters, so a long question without punctuation costs no more than a short one.
_COMPARISONS = tuple(re.compile(pattern, re.IGNORECASE) for pattern in (
    r"\bhow\s+(?:do|did)\s+(?P<a>[^?,:;]{1,120}?)\s+and\s+(?P<b>[^?,:;]{1,120}?)\s+"
    r"(?:differ|compare|contrast)",
    r"\b(?:difference|differences|diff)\s+(?:between|btw)\s+(?P<a>[^?,:;]{1,120}?)\s+"
    r"(?:and|&|n|vs\.?|versus)\s+(?P<b>[^?,:;.]+)",
    r"\bhow\s+(?:does|do|did|is|are|was|were)\s+(?P<a>[^?,:;]{1,120}?)\s+"
    r"(?:differ|compare|contrast)\w*\s+(?:from|with|to|against)\s+(?P<b>[^?,:;.]+)",
    r"\b(?:compare|contrast)\s+(?P<a>[^?,:;]{1,120}?)\s+(?:and|with|to|vs\.?|versus)\s+"
    r"(?P<b>[^?,:;.]+)",
    r"(?P<a>(?:[\w'-]+\s+){0,3}[\w'-]+)\s+(?:vs\.?|versus)\s+(?P<b>[^?,:;.]+)",
    # A choice the question opens with: "should I fine-tune or try prompting first?" (after
    # a story, "for my little classifier should i ...", its words match passages of their own).
    r"^\W*(?:(?:so|ok|okay|and)[,\s]+)?should\s+(?:i|we|you)\s+"
    r"(?:(?:jump\s+straight\s+to|go\s+(?:straight\s+)?(?:to|with)|"
    r"start\s+with|just|first|use|try|pick|choose)\s+)*(?P<a>[^?,:;]{1,60}?)\s+or\s+"
    r"(?:(?:try|use|go\s+with|start\s+with|just|pick|choose)\s+)*"
    r"(?P<b>[^?,:;.]+?)(?:\s+(?:first|instead|then|now|later))?\s*(?:[?,:;.]|$)",
))
_SIDE_LEAD = re.compile(r"^(?:what'?s|whats|what\s+is|what\s+are|the|an?)\s+", re.IGNORECASE)
SIDE_WORDS = 5


def comparison_sides(question: str) -> list[str]:
    """The two things a question compares ("How does beam search differ from nucleus
    sampling?": "beam search", "nucleus sampling"), each at most `SIDE_WORDS` words; empty
    for a question that compares nothing."""
    for pattern in _COMPARISONS:
        found = pattern.search(question)
        if found is not None:
            a = _SIDE_LEAD.sub("", found["a"].strip())
            b = " ".join(found["b"].split()[:SIDE_WORDS])
            a = " ".join(a.split()[-SIDE_WORDS:])
            return [a, b] if own_terms(a) and own_terms(b) else []
    return []



# "Who wrote the LoRA paper?", "authors of the DPO paper?", "who are the InstructGPT authors?":
# the people a paper's first page names. Not "who introduced RLHF?" (a fact), nor "What do the
# authors of the DPO paper say about PPO?" (what they wrote).
_ASKS_FOR_AUTHORS = re.compile(
    r"\bwho\s+(?:wrote|authored|(?:are|were|is|was)\s+the\s+authors?\b)|"
    r"\bwho\s+(?:are|were)\s+(?:the\s+)?(?:[\w.-]+\s+){1,5}?authors\b|"
    r"^\W*(?:(?:what|which)\s+(?:are|were)\s+|(?:list|name|give)\s+(?:me\s+)?)?(?:the\s+)?"
    r"(?:names?\s+of\s+the\s+)?authors?\s+(?:of|for)\b|"
    r"\b(?:written|authored)\s+by\s+whom\b",
    re.IGNORECASE)


def asks_for_authors(question: str) -> bool:
    """Whether a question asks who wrote a paper."""
    return bool(_ASKS_FOR_AUTHORS.search(question))
