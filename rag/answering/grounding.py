"""Grounding check: split an answer into claims and judge each against course passages.

A claim is judged by evidence we can measure against each passage: how close in meaning it is
to the passage's best sentence or pair of sentences (cosine of all-MiniLM-L6-v2 embeddings), how
much of its idf-weighted wording that window contains (rare terms weigh most; terms the corpus
never uses weigh most of all), how many of its names (`Kaplan`, `GPT-4`, `TensorRT`) the
passage never mentions, the rarest of its terms that the window and the sentences around it
lack, the worst-covered of its clauses (meant for invented terms and half-truths;
docs/grounding.md says what the fit made of them), and what a small entailment judge
(rag/answering/entailment.py) makes of it: its highest P(entailed) over the five windows of the
pool nearest the claim. A logistic model of these, fitted on the labelled claims of
`eval/claims.jsonl` and the verifier's labelled sentences, gives P(supported) (see
docs/grounding.md). Numbers are a hard rule: a passage supports a claim only if the matching
sentences (or the file and section they are in) state every number the claim states (`about 20`
may round 20.4; 35 GB is not 35 MB).

Verdicts: *supported* (with the passage and sentence behind it), *not found in the materials*,
and *contradicted* only when a passage backs everything the claim says except its numbers and
its matching sentence states numbers of its own: the one conflict this method can honestly see.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rag.answering.entailment import EntailmentJudge, packaged_judge
from rag.answering.prompting import INJECTION_MARKER
from rag.config import PACKAGED_EMBEDDER
from rag.index.bert_encoder import BertEncoder
from rag.index.documents import Hit
from rag.index.embedder import Embedder
from rag.retrieval.calibration import logistic
from rag.retrieval.lexical import stem, tokenize
from rag.retrieval.retriever import Retriever

Verdict = Literal["supported", "not_found", "contradicted"]
SUPPORTED: Verdict = "supported"
NOT_FOUND: Verdict = "not_found"
CONTRADICTED: Verdict = "contradicted"
VERDICT_LABELS: dict[str, str] = {
    SUPPORTED: "supported",
    NOT_FOUND: "not found in the materials",
    CONTRADICTED: "contradicted by the materials",
}
MIN_CLAIM_TERMS = 3
WIDER_K = 3

_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
# An answer's citations of its passages: "[2]", "[1, 3]", "[2-4]".
CITATION = re.compile(r"\[\d{1,3}(?:\s*[,–-]\s*\d{1,3})*\]")
_LINE_PREFIX = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*•+]\s+|\d{1,2}[.)]\s+)+")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t].*$", re.MULTILINE)
_EMPHASIS = re.compile(r"\*\*|__|`")
_ABBREVIATION = re.compile(r"\b(e\.g|i\.e|et al|etc|vs|cf|fig|eq|approx|resp|no)\.", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_FILLER = re.compile(
    r"^(?:i hope (?:this|that) helps|let me know|feel free|if you have any (?:other |more )?"
    r"questions|(?:great|good) question|sure[,!]|certainly[,!]|here (?:is|are))",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:,\d{3})+|\d+(?:\.\d+)?)(?:\s?(%|[A-Za-z]+\b))?")
_UNITS = {
    "%": "%", "percent": "%", "x": "x", "times": "x", "kb": "KB", "mb": "MB", "gb": "GB",
    "tb": "TB", "k": "k", "thousand": "k", "m": "M", "million": "M", "b": "B", "billion": "B",
    "t": "T", "trillion": "T",
}
_NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50,
}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_WORD = re.compile(r"(?<![0-9])[A-Za-z][A-Za-z0-9'’-]*")
# `48GB`, `65B`, `13k`: a number and its unit or multiplier, written together or apart.
_NUMBER_UNIT = re.compile(r"(?<=\d)(?=[A-Za-z])")
# A negation, and how far it reaches: a few words, within its clause ("does not need a reward
# model"). "X rather than Y" and "X instead of Y" deny Y as "X, not Y" does, and "X lacks Y"
# as "X does not have Y".
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nothing|nor|neither|cannot|without|rather than|instead of|"
    r"lack(?:s|ed|ing)?|fail(?:s|ed)? to)\b|n['’]t\b", re.IGNORECASE)
NEGATION_REACH = 4
_CLAUSE_END = re.compile(r"[,;:.()!?]")
_REACH = re.compile(rf"(?:\s*\S+){{0,{NEGATION_REACH}}}")
# A relation with a direction: what comes before it is compared with, or precedes, what
# comes after ("LLaMA-13B outperforms GPT-3", "A is better than B", "SFT before RLHF"); in the
# passive ("is outperformed by") the sides are the other way round.
_DIRECTION = re.compile(
    r"\b(?:than|outperform(?:s|ed|ing)?|beat(?:s|ing)?|exceed(?:s|ed|ing)?|"
    r"surpass(?:es|ed|ing)?|before|after|precedes?|preceded)\b", re.IGNORECASE)
_SAME_RELATION = {stem(w): "outperform" for w in ("beat", "exceed", "surpass")}
_PASSIVE = re.compile(
    r"\b(?:is|are|was|were|be|been|being)\s+(?:\w+\s+)?"
    r"(?:outperformed|beaten|exceeded|surpassed|preceded|followed)\s+by\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ClaimCheck:
    """One claim of an answer, its verdict, P(supported) and the passage behind the verdict."""

    text: str
    verdict: Verdict
    score: float
    evidence: Hit | None
    evidence_text: str
    missing_numbers: tuple[str, ...] = ()

    @property
    def supported(self) -> bool:
        """Whether the materials support the claim."""
        return self.verdict == SUPPORTED

    def as_json(self) -> dict:
        """The JSON shape of the CLI and demos."""
        hit = self.evidence
        return {
            "claim": self.text,
            "verdict": self.verdict,
            "score": round(self.score, 3),
            "evidence": None if hit is None else {
                "source": hit.chunk.source, "page": hit.chunk.page,
                "section": hit.chunk.section, "quote": self.evidence_text,
            },
            "missing_numbers": list(self.missing_numbers),
        }


@dataclass(frozen=True, slots=True)
class GroundingReport:
    """The claims of one answer and the share of them the materials support."""

    claims: tuple[ClaimCheck, ...]

    @property
    def grounded_fraction(self) -> float | None:
        """Supported claims over all claims; None when the answer makes no checkable claim."""
        if not self.claims:
            return None
        return sum(c.supported for c in self.claims) / len(self.claims)

    def summary(self) -> str:
        """`Grounded: 67% of 6 claims`, for badges and tables."""
        fraction = self.grounded_fraction
        if fraction is None:
            return "Grounded: no checkable claims"
        noun = "claim" if len(self.claims) == 1 else "claims"
        return f"Grounded: {fraction:.0%} of {len(self.claims)} {noun}"

    def as_json(self) -> dict:
        """The JSON shape of `ask --json` and the demos."""
        fraction = self.grounded_fraction
        return {
            "grounded_fraction": None if fraction is None else round(fraction, 3),
            "claims": [c.as_json() for c in self.claims],
        }


CLAIM_FEATURES = ("cosine", "window_coverage", "missing_names", "rarest_uncovered",
                  "worst_clause", "entailment")
# The windows of the pool nearest the claim in meaning that the entailment judge reads.
JUDGED_WINDOWS = 5
# Where a claim's clauses part: a semicolon, or a comma or conjunction that starts a clause.
_CLAUSE = re.compile(
    r"[;,]\s*(?:and |but |while |whereas |which |so |since |because )?|"
    r"\s+(?:while|whereas|but|because|since|so that|and then)\s+")


@dataclass(frozen=True, slots=True)
class GroundingWeights:
    """The logistic model of P(supported) and its decision threshold.

    Fitted by `benchmarks/grounding.py` (its docstring names the data); the held-out figures
    are in docs/benchmarks.md. Numbers are not weighed: one the passage does not state
    rules the passage out as support.
    """

    cosine: float = 0.0
    window_coverage: float = 0.0
    missing_names: float = 0.0
    rarest_uncovered: float = 0.0
    worst_clause: float = 0.0
    entailment: float = 0.0
    intercept: float = 0.0
    threshold: float = 0.5

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(supported) for rows of `CLAIM_FEATURES`."""
        w = np.array([getattr(self, name) for name in CLAIM_FEATURES])
        return 1.0 / (1.0 + np.exp(-(features @ w + self.intercept)))


# Fitted by benchmarks/grounding.py (with the wider search) on the fit split of eval/claims.jsonl
# and the labelled sentences of eval/verifier_sentences.jsonl and ..._heldout2.jsonl; refitted
# in session 36 with the entailment judge's feature.
FITTED_WEIGHTS = GroundingWeights(
    cosine=2.842,
    window_coverage=6.952,
    missing_names=-1.692,
    rarest_uncovered=2.081,
    worst_clause=-0.225,
    entailment=2.419,
    intercept=-7.669,
    threshold=0.428,
)


@dataclass(frozen=True, slots=True)
class _Window:
    """One sentence, or two neighbouring sentences, of a passage: sentences first..last."""

    passage: int
    first: int
    last: int
    text: str


def _protect(text: str) -> str:
    return _ABBREVIATION.sub(lambda m: m.group(1).replace(".", "\u2024") + "\u2024", text)


def _blocks(text: str) -> list[str]:
    """Paragraphs and list items, each on one line: hard-wrapped lines are joined."""
    blocks: list[str] = []
    joining = False
    for line in text.splitlines():
        stripped = line.strip()
        starts = _LINE_PREFIX.match(line) is not None or stripped.startswith("|")
        if not stripped:
            joining = False
        elif joining and not starts:
            blocks[-1] += " " + stripped
        else:
            blocks.append(line)
            joining = not stripped.startswith(("|", "#", "```"))
    return blocks


def sentences(text: str) -> list[str]:
    """Sentences of Markdown-ish text: wrapped lines joined, list items and table rows apart,
    then split at sentence ends; Markdown markers removed."""
    out: list[str] = []
    for block in _blocks(text):
        block = _EMPHASIS.sub("", _LINE_PREFIX.sub("", block)).replace("|", " ").strip()
        for piece in _SENTENCE_END.split(_protect(block)):
            piece = " ".join(piece.replace("\u2024", ".").split())
            if piece:
                out.append(piece)
    return out


def split_claims(answer: str) -> list[str]:
    """The checkable claims of an answer: its statements, without citations, code, questions,
    lead-ins ending with a colon, pleasantries, fragments of fewer than three content words and
    repeats (small models loop: a sentence said four times is one claim)."""
    text = CITATION.sub("", _CODE_BLOCK.sub(" ", answer)).replace(INJECTION_MARKER, " ")
    claims: dict[str, str] = {}
    for sentence in sentences(text):
        sentence = re.sub(r"\s+([.,;:!?])", r"\1", sentence)
        if sentence.endswith(("?", ":")) or _FILLER.match(sentence):
            continue
        if len(set(tokenize(sentence))) >= MIN_CLAIM_TERMS:
            claims.setdefault(sentence.casefold(), sentence)
    return list(claims.values())


def terms(text: str) -> set[str]:
    """The stemmed content terms of a text; a number and its unit are apart (`48GB` has the
    terms of `48 GB`)."""
    return {stem(t) for t in tokenize(_NUMBER_UNIT.sub(" ", text))}


def numbers(text: str) -> list[tuple[float, str]]:
    """The numbers a text states, with their unit when one follows (`%`, `x`, `GB`, `B` for
    billion…): digits (`10,000`, `3.5`, `13k`) and small number words (`eight`)."""
    text = _NUMBER_WORD.sub(lambda m: str(_NUMBER_WORDS[m.group(1).lower()]), text)
    found = []
    for digits, unit in _NUMBER.findall(text):
        value = float(digits.replace(",", ""))
        unit = _UNITS.get(unit.lower(), "")
        if unit == "k":  # a multiplier, not a unit: 13k and 13,000 are the same number
            value, unit = value * 1000, ""
        found.append((value, unit))
    return found


def _matches(claimed: tuple[float, str], stated: tuple[float, str]) -> bool:
    """Whether a stated number backs a claimed one: the same value (claims may round: `about
    20` for 20.4) and no conflicting units (35 GB is not 35 MB)."""
    (value, unit), (other, other_unit) = claimed, stated
    if unit and other_unit and unit != other_unit:
        return False
    decimals = 0 if value == int(value) else 1
    return value == other or round(other, decimals) == value


def _number_label(value: float, unit: str) -> str:
    """`131072`, `20.4%`, `35 GB`."""
    return f"{value:g}" + (unit if unit in ("%", "x") else f" {unit}" if unit else "")


def missing_numbers(claim: str, evidence: str) -> list[str]:
    """The numbers of a claim that the evidence never states."""
    stated = numbers(evidence)
    return [_number_label(*n) for n in dict.fromkeys(numbers(claim))
            if not any(_matches(n, s) for s in stated)]


def names(claim: str) -> set[str]:
    """The stemmed terms of a claim's names: capitalised words after the first, and words with
    inner capitals or digits anywhere (`LoRA`, `GPT-4`, `OASST1`); not the unit of a number
    (`65B`, `48GB`: the number rule judges those)."""
    found: set[str] = set()
    for i, word in enumerate(_WORD.findall(claim)):
        word = re.split(r"['’]", word)[0]
        inner = any(ch.isupper() or ch.isdigit() for ch in word[1:])
        if inner or (i > 0 and word[0].isupper()):
            found |= terms(word)
    return found


def negated(text: str) -> set[str]:
    """The terms a text only denies: those of the few words after a negation, up to the end of
    its clause, that the text does not also use outside every negation ("... to fine-tune a
    65B model ..., with no loss versus 16-bit fine-tuning" denies no fine-tuning)."""
    denied: set[str] = set()
    rest = text
    # Last negation first, so the earlier ones' positions still hold as their reach is cut out.
    for match in reversed(list(_NEGATION.finditer(text))):
        end = _CLAUSE_END.search(text, match.end())
        clause = text[match.end(): end.start() if end else len(text)]
        reach = _REACH.match(clause)
        stop = match.end() + (reach.end() if reach else 0)
        denied |= terms(text[match.end():stop])
        rest = rest[: match.start()] + " " + rest[stop:]
    return denied - terms(rest)


def denies_the_other(claim: str, window: str) -> bool:
    """Whether one of the two denies what the other states without any negation: "DPO needs
    no reward model" against "DPO needs a separate reward model", or the reverse. Words alone
    decide, so a negation that both share, or one elsewhere in the window, is no clash."""
    said, stated = negated(claim), negated(window)
    if said and not _NEGATION.search(window):
        return bool(said & terms(window))
    if stated and not _NEGATION.search(claim):
        return bool(stated & terms(claim))
    return False


def _relations(text: str) -> dict[str, tuple[set[str], set[str]]]:
    """Each directed relation of a text by its word ("outperform", "larger than"), with the
    terms before and after it, first side first (the passive turned round)."""
    found: dict[str, tuple[set[str], set[str]]] = {}
    for match in _DIRECTION.finditer(text):
        word = match.group(0).lower()
        if word == "than":
            previous = text[: match.start()].split()[-1:]
            word = f"{stem(previous[0].lower())} than" if previous else word
        else:
            word = _SAME_RELATION.get(stem(word), stem(word))
        before, after = terms(text[: match.start()]), terms(text[match.end():])
        found.setdefault(word, (after, before) if _PASSIVE.search(text) else (before, after))
    return found


def reverses_the_other(claim: str, window: str) -> bool:
    """Whether the claim turns one of the passage's directed relations round: with the same
    relation word, a term the passage puts first comes last in the claim and one it puts last
    comes first ("GPT-3 outperforms LLaMA-13B" against "LLaMA-13B outperforms GPT-3")."""
    stated = _relations(window)
    for word, (before, after) in _relations(claim).items():
        if word not in stated:
            continue
        was_before, was_after = stated[word]
        if (before - after) & (was_after - was_before) and (after - before) & (
                was_before - was_after):
            return True
    return False


class TermWeights:
    """Inverse document frequencies of stemmed terms over a corpus of passages."""

    def __init__(self, texts: Iterable[str]) -> None:
        df: Counter[str] = Counter()
        n = 0
        for text in texts:
            df.update(terms(text))
            n += 1
        self._idf = {t: math.log1p((n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        # A term the corpus never uses is the strongest sign of an unsupported claim.
        self._unseen = math.log1p((n + 0.5) / 0.5)

    def idf(self, term: str) -> float:
        """The weight of a term (highest for terms the corpus never uses)."""
        return self._idf.get(term, self._unseen)

    def rarest_missing(self, claim: set[str], evidence: set[str]) -> float:
        """The idf of the rarest claim term the evidence lacks, as a share of the idf of a
        term the corpus never uses (0 when the evidence has every term)."""
        return max((self.idf(t) for t in claim - evidence), default=0.0) / self._unseen

    def coverage(self, claim: set[str], evidence: set[str]) -> float:
        """The idf-weighted share of the claim's terms that the evidence contains."""
        total = sum(self.idf(t) for t in claim)
        return sum(self.idf(t) for t in claim & evidence) / total if total else 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """The evidence one passage offers for one claim: features, best window, missing numbers."""

    features: np.ndarray
    window: str
    missing: tuple[str, ...]

    @property
    def closeness(self) -> float:
        """How well the passage matches the claim, before any fitting: picks the passage."""
        cosine, window_coverage, missing_names = self.features[:3]
        return float(cosine + window_coverage - missing_names - bool(self.missing))


@dataclass(frozen=True, slots=True)
class _Passage:
    """A passage of the pool, prepared once for all claims."""

    hit: Hit
    vocabulary: set[str]
    sentences: tuple[str, ...]

    @classmethod
    def of(cls, hit: Hit) -> _Passage:
        """A passage, its vocabulary (with its title and section, which often name what its
        sentences are about) and its sentences."""
        c = hit.chunk
        title = c.source.rsplit("/", 1)[-1]
        # A question states nothing, so it supports nothing (self-check lists match claims well);
        # nor does a Markdown heading, which would otherwise pair with the sentence under it
        # (its words still count: the section is part of every window's wording).
        text = _HEADING.sub("", c.text)
        parts = tuple(s for s in sentences(text) if len(tokenize(s)) >= 2 and s[-1] != "?")
        return cls(hit, terms(f"{title} {c.section}\n{c.text}"), parts)

    def windows(self, index: int) -> list[_Window]:
        """Each sentence, and each pair of neighbouring sentences."""
        parts = self.sentences
        pairs = [_Window(index, i, i + 1, f"{a} {b}") for i, (a, b) in
                 enumerate(zip(parts, parts[1:], strict=False))]
        return [_Window(index, i, i, s) for i, s in enumerate(parts)] + pairs

    def evidence_for(
        self, claim: str, similarity: np.ndarray, own: Sequence[_Window], idf: TermWeights
    ) -> Candidate:
        """The features of this passage as evidence for a claim, from the claim's cosine with
        each of the passage's windows (`own`). Numbers must appear in the best window or the
        sentences around it, not just anywhere in the passage."""
        wanted_names = names(claim)
        absent = len(wanted_names - self.vocabulary) / len(wanted_names) if wanted_names else 0.0
        if not own:
            return Candidate(np.array([0.0, 0.0, absent, 1.0, 0.0]), "",
                             tuple(missing_numbers(claim, "")))
        at = int(np.argmax(similarity))
        best = own[at]
        # Where the window sits (the file and section: "Week 2 …") and the sentences around it.
        c = self.hit.chunk
        place = f"{c.source.rsplit('/', 1)[-1].replace('-', ' ').replace('_', ' ')} {c.section}"
        context = " ".join(self.sentences[max(best.first - 1, 0) : best.last + 2])
        claim_terms = terms(claim)
        window_terms = terms(f"{c.section} {best.text}")
        around = terms(f"{place} {context}")
        clauses = [part for part in _CLAUSE.split(claim) if len(terms(part)) >= 2]
        worst = min((idf.coverage(terms(part), around) for part in clauses), default=1.0)
        features = np.array([float(similarity[at]), idf.coverage(claim_terms, window_terms),
                             absent, idf.rarest_missing(claim_terms, around), worst])
        return Candidate(features, best.text, tuple(missing_numbers(claim, f"{place} {context}")))


class GroundingChecker:
    """Judges the claims of answers against passages; safe to share between threads."""

    def __init__(
        self,
        embedder: Embedder,
        retriever: Retriever | None = None,
        weights: GroundingWeights = FITTED_WEIGHTS,
        judge: EntailmentJudge | None = None,
    ) -> None:
        self.embedder = embedder
        self.retriever = retriever
        self.weights = weights
        self._judge = judge
        self._idf: tuple[str, TermWeights] | None = None
        self._lock = threading.Lock()

    def check(
        self, answer: str, hits: Sequence[Hit], *, wider_search: bool = False
    ) -> GroundingReport:
        """Split an answer into claims and judge each against the passages (and, with
        `wider_search`, against the best passages of the whole index for that claim)."""
        return self.check_claims(split_claims(answer), hits, wider_search=wider_search)

    def check_claims(
        self, claims: Sequence[str], hits: Sequence[Hit], *, wider_search: bool = False
    ) -> GroundingReport:
        """Judge given claims against the passages."""
        pool = self.evidence_pool(claims, hits, wider_search)
        table = self.candidates(claims, pool)
        return GroundingReport(
            tuple(self.judge(c, pool, row) for c, row in zip(claims, table, strict=True))
        )

    def evidence_pool(
        self, claims: Sequence[str], hits: Sequence[Hit], wider_search: bool
    ) -> list[Hit]:
        """The passages to judge against: the given ones, plus each claim's own search."""
        pool = list(hits)
        if wider_search and claims:
            if self.retriever is None:
                raise ValueError("a wider search needs the checker to have a retriever")
            pool += [h for c in claims for h in self.retriever.search(c, WIDER_K)]
        unique = {h.chunk.id: h for h in reversed(pool)}
        return [unique[i] for i in dict.fromkeys(h.chunk.id for h in pool)]

    def candidates(self, claims: Sequence[str], pool: Sequence[Hit]) -> list[list[Candidate]]:
        """For each claim, the evidence each passage of the pool offers."""
        passages = [_Passage.of(hit) for hit in pool]
        own = [p.windows(i) for i, p in enumerate(passages)]
        windows = [w for ws in own for w in ws]
        if not claims or not windows:
            return [[] for _ in claims]
        idf = self.term_weights(pool)
        vectors = self.embedder.embed_documents([*claims, *(w.text for w in windows)])
        similarity = vectors[: len(claims)] @ vectors[len(claims) :].T
        ends = np.cumsum([len(ws) for ws in own])
        spans = [(end - len(ws), end) for ws, end in zip(own, ends, strict=True)]
        entailed = self.entailment(claims, [w.text for w in windows], similarity)
        return [
            [Candidate(np.append(c.features, p_entailed), c.window, c.missing)
             for c in (p.evidence_for(claim, row[a:b], ws, idf)
                       for p, ws, (a, b) in zip(passages, own, spans, strict=True))]
            for claim, row, p_entailed in zip(claims, similarity, entailed, strict=True)
        ]

    @property
    def entailment_judge(self) -> EntailmentJudge:
        """The entailment judge (the packaged one unless given; loads on first use)."""
        if self._judge is None:
            # The embedder's encoder when it is the packaged model on numpy: its weights are
            # the judges' base, shared rather than loaded twice.
            packaged = getattr(self.embedder, "name", None) == PACKAGED_EMBEDDER
            encoder = getattr(self.embedder, "encoder", None) if packaged else None
            self._judge = packaged_judge(encoder if isinstance(encoder, BertEncoder) else None)
        return self._judge

    def entailment(
        self, claims: Sequence[str], windows: Sequence[str], similarity: np.ndarray
    ) -> np.ndarray:
        """For each claim, the judge's highest P(entailed) over the `JUDGED_WINDOWS` windows of
        the pool nearest it in meaning (whichever passage they are in)."""
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :JUDGED_WINDOWS]
        pairs = [(windows[w], claim) for claim, row in zip(claims, nearest, strict=True)
                 for w in row]
        p = self.entailment_judge.entailed(pairs).reshape(nearest.shape)
        return p.max(axis=1)

    def term_weights(self, pool: Sequence[Hit]) -> TermWeights:
        """Idf over the whole index (rebuilt when it changes), or over the pool without one."""
        if self.retriever is None:
            return TermWeights(h.chunk.text for h in pool)
        store = self.retriever.store
        version = store.version()
        with self._lock:
            if self._idf is None or self._idf[0] != version:
                ids = [cid for e in store.manifest().values() for cid in e.chunk_ids]
                self._idf = (version, TermWeights(t for _, t in store.iter_texts(ids)))
            return self._idf[1]

    def judge(self, claim: str, pool: Sequence[Hit], row: Sequence[Candidate]) -> ClaimCheck:
        """The verdict on one claim, from what each passage of the pool offers."""
        if not row:
            return ClaimCheck(claim, NOT_FOUND, 0.0, None, "")
        best = best_candidate(row)
        chosen = row[best]
        score = float(self.weights.probability(chosen.features[None, :])[0])
        if score < self.weights.threshold:
            return ClaimCheck(claim, NOT_FOUND, score, None, "", chosen.missing)
        if denies_the_other(claim, chosen.window) or reverses_the_other(claim, chosen.window):
            return ClaimCheck(claim, CONTRADICTED, score, pool[best], chosen.window)
        if not chosen.missing:
            return ClaimCheck(claim, SUPPORTED, score, pool[best], chosen.window)
        # The passage backs everything but the numbers: it contradicts the claim when its
        # matching sentence states numbers of its own.
        verdict = CONTRADICTED if numbers(chosen.window) else NOT_FOUND
        evidence = pool[best] if verdict == CONTRADICTED else None
        return ClaimCheck(claim, verdict, score, evidence, chosen.window if evidence else "",
                          chosen.missing)


def best_candidate(row: Sequence[Candidate]) -> int:
    """The passage a claim is judged against: the one whose best window is closest to it in
    meaning and wording, with no number missing (a fixed rule, so fitting is not circular)."""
    return max(range(len(row)), key=lambda i: row[i].closeness)


def fit_weights(
    features: np.ndarray, numbers_missing: np.ndarray, supported: np.ndarray, l2: float = 1e-2
) -> GroundingWeights:
    """Fit the logistic model on labelled claims and pick its threshold.

    The model is fitted on the claims whose numbers all appear in their passage (the others
    are ruled out whatever it says); the threshold maximises the balanced accuracy (the mean
    of the recalls of supported and unsupported claims) of the whole decision on every claim.
    """
    x = np.column_stack([features, np.ones(len(features))])
    keep = ~numbers_missing.astype(bool)
    w = logistic(x[keep], supported[keep].astype(float), l2)
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    threshold = balanced_threshold(np.where(keep, p, 0.0), supported)
    *weights, intercept = (float(v) for v in w)
    named = dict(zip(CLAIM_FEATURES, weights, strict=True))
    return GroundingWeights(**named, intercept=intercept, threshold=threshold)


def balanced_threshold(p: np.ndarray, positive: np.ndarray) -> float:
    """The cut between two neighbouring scores that best separates the classes, counting
    each class's recall equally; the middle of the best run when several tie."""
    cuts = np.unique(p)
    cuts = np.concatenate([[0.0], (cuts[1:] + cuts[:-1]) / 2, [1.0]]) if len(cuts) > 1 else cuts
    pos, neg = positive.astype(bool), ~positive.astype(bool)

    def balanced(t: float) -> float:
        return 0.5 * ((p[pos] >= t).mean() if pos.any() else 1.0) + 0.5 * (
            (p[neg] < t).mean() if neg.any() else 1.0
        )

    scores = np.array([balanced(t) for t in cuts])
    best = np.flatnonzero(scores == scores.max())
    return float(cuts[best[len(best) // 2]])
