"""What a question asks for, as the lexical and dense retrievers each need it.

Students write "wats the diff btw sft n rlhf". Two deterministic steps make such a question
findable: a course glossary expands abbreviations and chat shorthand (sft → supervised fine
tuning), and words the index has never seen are corrected to the most common indexed word
one edit away (temprature → temperature). Expansions and corrections are added, never
substituted, so a correct rare word is not lost; they also go to the embedder, which knows
"supervised fine tuning" far better than "sft".
"""

from __future__ import annotations

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
    "hparams": "hyperparameters",
    "lr": "learning rate",
    "og": "original",
    "diff": "difference",
    "btw": "between",
    "abt": "about",
    "w": "with",
    "u": "you",
    "r": "are",
    "y": "why",
    "hw": "how",
    "n": "and",
    "mem": "memory",
    "proj": "project",
    "vs": "versus",
}
EXPANSION_WEIGHT = 0.5
# Words that say how a student feels or asks, not what about ("im confused about embeddings
# lol", "can u explain attention like im 5 pls"). They are not searched for, and they do not
# count against a question's coverage: the index has never seen "lol", and an unseen word is
# the strongest sign of an off-topic question. (As index terms: stemmed, see `index_terms`.)
CHATTER = frozenset(term for term in index_terms(
    "im confused confusing lol lmao haha pls plz please thanks thx ty help explain eli5 "
    "kinda sorta basically honestly literally idk tbh hey hi hello stuck understand dumb "
    "simple simply like ur"
) if not term.isdigit())


def own_terms(question: str) -> list[str]:
    """The question's index terms, without chatter: what it asks about."""
    return [term for term in index_terms(question) if term not in CHATTER]


@dataclass(frozen=True, slots=True)
class Query:
    """A question prepared for search.

    `terms` weighs the lexical terms (the question's own at 1, expansions at 0.5);
    `core` are the question's own terms (misspelled ones replaced by their corrections), on
    which lexical coverage is judged;
    `dense_text` is what the embedder sees: the question with its expansions appended.
    """

    text: str
    dense_text: str
    terms: dict[str, float] = field(default_factory=dict)
    core: tuple[str, ...] = ()


def analyse(question: str, index: BM25Index) -> Query:
    """Expand abbreviations and correct unknown words against the index's vocabulary."""
    own = own_terms(question)
    terms = dict.fromkeys(own, 1.0)
    extra: list[str] = []
    for word in dict.fromkeys(words(question)):
        if word in GLOSSARY:
            extra.append(GLOSSARY[word])
            for term in index_terms(GLOSSARY[word]):
                terms.setdefault(term, EXPANSION_WEIGHT)
    core = []
    for term in dict.fromkeys(own):
        fixed = index.correction(term)
        if fixed is not None and fixed not in terms:
            terms[fixed] = 1.0
            extra.append(fixed)
        core.append(fixed or term)
    dense = f"{question} ({'; '.join(extra)})" if extra else question
    return Query(question, dense, terms, tuple(core))
