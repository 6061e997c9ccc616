"""How faithful an answer's text is to the passages it was given, measured on the words.

Three figures per answer, used by `benchmarks/faithfulness.py` and the model comparison demo
(docs/faithfulness.md explains them):

- **key fact**: one of a question's evidence strings appears in the answer text, after
  normalisation (NFKC, lower case, `*` removed, whitespace collapsed);
- **invented words**: the answer's content words (lower-case alphanumeric tokens of four or
  more characters, minus a stop list) whose Snowball stem appears in neither the question
  nor the passages;
- **invented numbers**: numbers in the answer that neither the question nor the passages
  state.

Citation markers (`[2]`, `More in [3]`) are references, not content: they are removed first.
`summarise` aggregates answers: the key-fact rate, the mean invented-word rate and the number
of answers with an invented number.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

# The answer's citation markers ("[3]"), a paper's references in the passages ("[30]") and
# those references as a quote shows them ("similar to [ref 30]."): none states a number.
_CITATION = re.compile(r"\[(?:ref )?\d{1,3}(?:\s*[,–-]\s*\d{1,3})*\]")
_TOKEN = re.compile(r"[^\W_]+")
_DIGITS = re.compile(r"\d+(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?")
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "hundred": 100, "thousand": 1000,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "million": 1e6,
    "billion": 1e9, "trillion": 1e12,
}
MIN_WORD_CHARS = 4
# Function words and the commonest verbs and adverbs: words whose presence says nothing
# about where an answer's content came from.
_STOP_TEXT = """
able about above according across actually after again against almost along already also
although always among another anyone anything around away back been before being below
between both cannot come could does doing done down during each either else enough even ever
every from further gets give given goes going good great have having here hers herself
himself however into itself just keep kind know last less like likely made make makes many
maybe might more most much must myself near need neither never next none nothing often once
only onto other others otherwise ought ours ourselves over perhaps please quite rather
really same says seem seems several shall should show since some something sometimes still
such sure take than that their theirs them themselves then there therefore these they thing
things this those though through thus together toward towards under unless until upon used
uses using very want well were what whatever when where whether which while whom whose will
with within without would your yours yourself
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


def normalise(text: str) -> str:
    """NFKC, lower case, `*` removed, whitespace collapsed: how evidence strings are matched."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().replace("*", "").split())


def has_key_fact(answer: str, evidence: Iterable[str]) -> bool:
    """Whether one of the evidence strings appears in the answer (both normalised)."""
    text = normalise(answer)
    return any(normalise(e) in text for e in evidence if e.strip())


_LOCAL = threading.local()


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball (Porter 2) stem of a lower-case word."""
    # A Snowball stemmer keeps state between calls: one per thread.
    stemmer = getattr(_LOCAL, "stemmer", None)
    if stemmer is None:
        stemmer = _LOCAL.stemmer = snowballstemmer.stemmer("english")
    return str(stemmer.stemWord(word))


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def content_words(text: str) -> list[str]:
    """Lower-case alphanumeric tokens of four or more characters, minus the stop list; citation
    markers removed first."""
    tokens = _tokens(_CITATION.sub(" ", text))
    return [t for t in tokens if len(t) >= MIN_WORD_CHARS and t not in STOP_WORDS]


def source_stems(texts: Iterable[str]) -> set[str]:
    """The stems of every token of the sources (any length: `gpt` counts)."""
    return {stem(t) for text in texts for t in _tokens(text)}


def invented_words(answer: str, sources: set[str]) -> list[str]:
    """The answer's content words whose stem the sources never use (with repeats)."""
    return [w for w in content_words(answer) if stem(w) not in sources]


def numbers(text: str) -> set[float]:
    """The numbers a text states in digits (`2,638`, `1.4`, the 4 of `GPT-4`)."""
    text = unicodedata.normalize("NFKC", _CITATION.sub(" ", text))
    return {float(n.replace(",", "")) for n in _DIGITS.findall(text)}


def source_numbers(texts: Iterable[str]) -> set[float]:
    """Numbers the sources state, in digits or as number words (`eight` backs an 8)."""
    found: set[float] = set()
    for text in texts:
        found |= numbers(text)
        found |= {float(_NUMBER_WORDS[t]) for t in _tokens(text) if t in _NUMBER_WORDS}
    return found


def invented_numbers(answer: str, sources: set[float]) -> list[str]:
    """The answer's numbers that the sources never state."""
    return [f"{n:g}" for n in sorted(numbers(answer)) if n not in sources]


@dataclass(frozen=True, slots=True)
class Faithfulness:
    """The faithfulness figures of one answer."""

    key_fact: bool | None
    content_words: int
    invented_words: tuple[str, ...]
    invented_numbers: tuple[str, ...]

    @property
    def invented_word_rate(self) -> float:
        """Invented content words over all content words (0 for an answer with none)."""
        return len(self.invented_words) / self.content_words if self.content_words else 0.0

    def as_json(self) -> dict:
        """A JSON-ready record."""
        return {
            "key_fact": self.key_fact,
            "content_words": self.content_words,
            "invented_word_rate": round(self.invented_word_rate, 4),
            "invented_words": list(self.invented_words),
            "invented_numbers": list(self.invented_numbers),
        }


def measure(
    answer: str, question: str, passages: Sequence[str], evidence: Sequence[str] = ()
) -> Faithfulness:
    """The faithfulness of an answer to the question and the passages it was given."""
    sources = [question, *passages]
    return Faithfulness(
        key_fact=has_key_fact(answer, evidence) if evidence else None,
        content_words=len(content_words(answer)),
        invented_words=tuple(invented_words(answer, source_stems(sources))),
        invented_numbers=tuple(invented_numbers(answer, source_numbers(sources))),
    )


@dataclass(frozen=True, slots=True)
class FaithfulnessSummary:
    """The figures of a set of answers (answered, in-scope questions)."""

    answers: int
    key_fact_rate: float | None
    invented_word_rate: float
    with_invented_numbers: int

    def as_json(self) -> dict:
        """A JSON-ready record."""
        rate = self.key_fact_rate
        return {
            "answers": self.answers,
            "key_fact_rate": None if rate is None else round(rate, 4),
            "invented_word_rate": round(self.invented_word_rate, 4),
            "with_invented_numbers": self.with_invented_numbers,
        }


def summarise(results: Sequence[Faithfulness]) -> FaithfulnessSummary:
    """Key-fact rate (over answers with evidence strings), mean invented-word rate, and how
    many answers state a number the sources don't."""
    keyed = [r.key_fact for r in results if r.key_fact is not None]
    return FaithfulnessSummary(
        answers=len(results),
        key_fact_rate=sum(keyed) / len(keyed) if keyed else None,
        invented_word_rate=(
            sum(r.invented_word_rate for r in results) / len(results) if results else 0.0
        ),
        with_invented_numbers=sum(bool(r.invented_numbers) for r in results),
    )
