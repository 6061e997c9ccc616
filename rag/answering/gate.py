"""The abstention gate: does the retrieved evidence cover the question at all?

A question-level logistic regression over the question's best passage cosine, the mean of its
best three cosines (agreement) and its best lexical coverage estimates P(covered). Below the
configured threshold the assistant says the materials don't cover the question and never calls
a model. `fit_gate` fits it on labelled questions (see `rag.retrieval.calibration` for the
labels and `docs/calibration.md` for the procedure).

The gate reads embeddings, and a short question ("What is temperature?") embeds far from every
passage, even from a section called "Temperature". So a question is also covered when a
retrieved passage's heading names it (`titled_by`), and a question that is nothing but a term
("perplexity?", "what's top-p", "define RMSNorm") when a passage names that term as what it
is about (`names_term`): under a heading, in bold, as the subject of a defining sentence, or
as the acronym of a spelled-out name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from os.path import commonprefix

import numpy as np

from rag.answering.quotes import run_in_heading, split_sentences
from rag.answering.versions import normalised_words
from rag.config import AnswerSettings
from rag.index.documents import Chunk, Hit
from rag.retrieval.calibration import LabelledHit, logistic
from rag.retrieval.lexical import STOPWORDS, index_terms, stem, words
from rag.retrieval.query import CHATTER, own_terms

# How many of the best passages the gate's agreement feature averages over.
AGREEMENT_TOP = 3

# A term question has at most this many words (after "what is" and the like) and asks about at
# most this many terms; a passage is searched this deep for one that names the term.
TERM_WORDS = 3
TERM_SEARCH_K = 12
# "what's", "define", "explain", "what does ... mean": the words around a term that only ask
# what it is.
_TERM_LEAD = re.compile(
    r"^\s*(?:(?:so|and|ok|okay|hey|hi)[,\s]+)?(?:what(?:'s|\s+is|\s+are)|whats|define|"
    r"what\s+does|explain|tell\s+me\s+about|meaning\s+of|what\s+about)\s+"
    r"(?:an?\s+|the\s+)?", re.IGNORECASE)
_TERM_TAIL = re.compile(r"\s+(?:mean|means|stand\s+for|do)\s*$", re.IGNORECASE)
_HOW_IT_WORKS = re.compile(
    r"^\s*how\s+(?:does|do)\s+(?:an?\s+|the\s+)?(?P<term>\S.*?)\s+(?:actually\s+)?work\s*$",
    re.IGNORECASE)
_BOLD = re.compile(r"\*\*([^*\n]{1,60})\*\*|__([^_\n]{1,60})__")
# Where a defining sentence's subject ends: "X is ...", "X refers to ...", "X: ...", "X = ...",
# "X (the ...)", "X — ...".
_DEFINED_BY = re.compile(
    r"\s(?:is|are|refers?\s+to|means|stands?\s+for|denotes)\s|\s?[—–:=]\s?|\s\(", re.IGNORECASE)
SUBJECT_CHARS = 60
# A sentence with no lower-case letter in this many characters is a title in capitals.
TITLE_CHARS = 40
# A bold span or a defined subject may hold this many terms besides the asked ones
# ("**RMSNorm**", "Top-p (nucleus) sampling is ...").
BOLD_EXTRA_TERMS = 1
SUBJECT_EXTRA_TERMS = 2
# A term of several words is discussed when this many documents use it
# (`term_in_several_documents`).
PHRASE_DOCUMENTS = 2
# Two stems of one word agree on all but their last `STEM_SLACK` letters, and at least on
# `STEM_HEAD` (`term_unused`).
STEM_HEAD, STEM_SLACK = 5, 3
# A word that is an asked word inflected differs in at most its last `INFLECTION_SLACK`
# letters; one of at most `SHORT_WORD` letters only by a plural "s" (`topic_unused`).
INFLECTION_SLACK, SHORT_WORD = 5, 4
_HYPHENATED = re.compile(r"\w+(?:-\w+)+")
_LIST_MARK = re.compile(r"^[\s\-*•#>\d.)]+")
# A paper's acknowledgements or references (a heading); the extractive answers leave them out too.
BACK_MATTER = re.compile(r"^\W*(?:acknowledge?ments?|references|bibliography)\b", re.IGNORECASE)
# A span in quotation marks on one line: an example or a prompt, not the materials' words.
_QUOTED = re.compile(r"[\"“”][^\"“”\n]{0,300}[\"“”]")
_QUOTES = frozenset("\"'“”‘’«»`")
_ACRONYM = re.compile(r"\(\s*([A-Za-z][\w-]{1,12}?)s?\s*\)")

# The share of in-scope fit questions the fitted threshold may refuse when the fit set's in- and
# out-of-scope questions overlap (`study-assistant calibrate --max-in-abstain` changes it).
MAX_IN_ABSTAIN = 0.1


@dataclass(frozen=True, slots=True)
class QuestionEvidence:
    """The strongest evidence retrieval found for one question.

    `agreement` is the mean cosine of the best `AGREEMENT_TOP` passages: a covered question
    usually finds several related passages, while an off-topic one can hit a single stray
    passage (a paper's appendix of sample texts) and nothing else.
    """

    question_id: str
    in_scope: bool
    best_cosine: float
    agreement: float
    best_coverage: float


def evidence_of(
    question_id: str,
    in_scope: bool,
    cosines: Sequence[float],
    coverages: Sequence[float],
    standalone: Sequence[float] = (),
) -> QuestionEvidence:
    """Summarise one question's retrieved passages for the gate.

    `standalone` are the cosines of retrieved passages that answer one question on their own:
    approved course FAQ entries (rag/course/faq.py). Agreement between several passages is
    what the gate asks of the guides and papers, but a FAQ entry is one passage by design,
    and a person approved it as the answer; such a passage stands for its own agreement.
    Without FAQ passages among the hits the gate is exactly the fitted one.
    """
    best = sorted(cosines, reverse=True)[:AGREEMENT_TOP]
    agreement = float(np.mean(best)) if best else 0.0
    return QuestionEvidence(
        question_id,
        in_scope,
        best[0] if best else 0.0,
        max([agreement, *standalone]),
        max(coverages, default=0.0),
    )


def question_evidence(rows: Sequence[LabelledHit]) -> list[QuestionEvidence]:
    """Collapse labelled hits to one row per question."""
    by_q: dict[str, list[LabelledHit]] = {}
    for r in rows:
        by_q.setdefault(r.question_id, []).append(r)
    return [
        evidence_of(
            qid, hits[0].in_scope, [h.cosine for h in hits], [h.coverage for h in hits]
        )
        for qid, hits in by_q.items()
    ]


def gate_features(evidence: Sequence[QuestionEvidence]) -> np.ndarray:
    """Design matrix of the abstention gate: best cosine, agreement, best coverage, bias."""
    return np.array([[e.best_cosine, e.agreement, e.best_coverage, 1.0] for e in evidence])


def fit_gate(
    evidence: Sequence[QuestionEvidence], max_in_abstain: float = MAX_IN_ABSTAIN, l2: float = 1e-3
) -> tuple[np.ndarray, float]:
    """Question-level P(covered) and its abstention threshold.

    The threshold sits in the middle of the gap above the most convincing off-topic question,
    so every off-topic question of the fit set abstains, unless that would make more than
    `max_in_abstain` of the in-scope questions abstain; then it is that quantile instead.
    L2 keeps the weights finite when the two sets separate cleanly.
    """
    y = np.array([e.in_scope for e in evidence], dtype=bool)
    x = gate_features(evidence)
    w = logistic(x, y.astype(float), l2=l2)
    p = 1 / (1 + np.exp(-x @ w))
    inside, outside = np.sort(p[y]), np.sort(p[~y])
    if not len(inside) or not len(outside):
        return w, 0.5
    above = inside[inside > outside[-1]]
    threshold = (outside[-1] + above[0]) / 2 if len(above) else outside[-1] + 1e-6
    # Midway below the first in-scope question that must pass, so that rounding between this
    # fit and `gate_probability` cannot tip that question under the threshold.
    allowed = int(np.floor(max_in_abstain * len(inside)))
    quantile = float(
        (inside[allowed - 1] + inside[allowed]) / 2 if allowed else inside[0] - 1e-6
    )
    return w, float(
        min(threshold, quantile) if np.mean(inside < threshold) > max_in_abstain else threshold
    )


def gate_probability(evidence: QuestionEvidence, answer: AnswerSettings) -> float:
    """P(the materials cover the question) under the configured gate."""
    z = (
        answer.gate_cosine * evidence.best_cosine
        + answer.gate_agreement * evidence.agreement
        + answer.gate_coverage * evidence.best_coverage
        + answer.gate_intercept
    )
    return float(1 / (1 + np.exp(-z)))


def titled_by(question: str, hits: Sequence[Hit]) -> bool:
    """Whether a retrieved passage sits under a heading that names what the question asks
    about (`titled`)."""
    return bool(titled(question, hits))


def titled(question: str, hits: Sequence[Hit]) -> list[int]:
    """The retrieved passages under a heading that names what the question asks about: every
    word of the heading (section numbers aside) is one of the question's, and they are at
    least half of its words, numbers aside ("What does the temperature setting do?", "What
    does temperature do below 1?" and a section "Temperature"). A heading that is one generic
    word of a longer question ("Evaluation") does not name it.
    """
    # Numbers are values asked about ("... when it is below 1?"), not what the question is
    # about: like section numbers in headings, they are not counted. Nor is the "work" of
    # "How does RLAIF work?", which a heading "How does it work?" would otherwise name.
    works = _HOW_IT_WORKS.match(question.strip().rstrip("?!. "))
    about = works["term"] if works else question
    asked = {term for term in own_terms(about) if not term[:1].isdigit()}
    if not asked:
        return []
    return [i for i, hit in enumerate(hits) if _names(hit.chunk.section, asked)]


def section_named(question: str, hits: Sequence[Hit]) -> bool:
    """Whether the question names a retrieved passage's own heading as a part of its document:
    the heading's words, in order, right before a word for a part ("the Resources > Courses
    section", "the guide's evolution timeline" and the heading "The Evolution") or right
    after "section" ("section Key Takeaways"). Asked of a question that names a course
    document: a guide's short headings over link lists and timelines embed too little text
    for the gate's probability, but a student who names one of its parts asks about it."""
    asked = index_terms(question)
    for hit in hits:
        heading = index_terms(hit.chunk.section.rsplit(" > ", 1)[-1])
        heading = [term for term in heading if not term[:1].isdigit()]
        n = len(heading)
        if not n or in_back_matter(hit):
            continue
        for i in range(len(asked) - n + 1):
            if asked[i:i + n] != heading:
                continue
            after = asked[i + n] if i + n < len(asked) else ""
            before = asked[i - 1] if i else ""
            if after in _PARTS or before in _SECTION:
                return True
    return False


# Words for a part of a document, as the index writes them.
_PARTS = frozenset(index_terms(
    "section sections subsection part heading chapter list table timeline appendix paragraph"))
_SECTION = frozenset(index_terms("section subsection heading chapter appendix"))


def titled_together(question: str, hits: Sequence[Hit]) -> bool:
    """Whether two retrieved passages sit right under two different headings that each name
    part of what the question asks about and together name at least half of it: every word of
    each heading (section numbers aside) is one of the question's ("How does beam search differ
    from nucleus sampling?" and the sections "Beam search" and "Top-p (nucleus) sampling").
    Only a passage's own heading counts, not the wider sections above it ("Decoding").
    A heading's parenthesised alternative name counts for the word it follows ("nucleus
    sampling"). Words that only ask for the comparison ("vs", "differ") are not counted. One
    heading alone is `titled`."""
    asked = {term for term in own_terms(question)
             if not term[:1].isdigit() and term not in _COMPARING}
    named = {frozenset(variant) for hit in hits
             for variant in _heading_variants(hit.chunk.section.rsplit(" > ", 1)[-1])
             if variant and variant <= asked}
    return any(2 * len(a | b) >= len(asked) for a in named for b in named
               if not a <= b and not b <= a)


# Words that only ask for a comparison, and what is left of a possessive ("model's").
_COMPARING = frozenset(index_terms(
    "vs versus differ differs difference differences compare compared comparison between "
    "contrast")) | {"s"}
# "Top-p (nucleus) sampling": the parenthesised name and the word before it.
_ALTERNATIVE = re.compile(r"(\S+)\s*\(([^()]{1,30})\)")


def _heading_variants(heading: str) -> list[set[str]]:
    """A heading's terms (section numbers aside), and with a parenthesised alternative name,
    the terms of each reading: "Top-p (nucleus) sampling" as "Top-p sampling" and "nucleus
    sampling"; "Retrieval-augmented generation (RAG)" also as "RAG"."""
    readings = [heading]
    if (found := _ALTERNATIVE.search(heading)) is not None:
        before, after = heading[:found.start()], heading[found.end():]
        readings = [f"{before}{found.group(1)}{after}", f"{before}{found.group(2)}{after}",
                    f"{found.group(2)}{after}"]
    return [{term for term in index_terms(text) if not term[:1].isdigit()} for text in readings]


def _names(section: str, asked: set[str]) -> bool:
    """Whether a heading of a section path names the asked terms."""
    for heading in section.split(" > "):
        named = {term for term in index_terms(heading) if not term[:1].isdigit()}
        if named and named <= asked and 2 * len(named) >= len(asked):
            return True
    return False


def term_text(question: str) -> str:
    """The term a question asks about when it is nothing but a term ("perplexity?", "what's
    top-p", "define RMSNorm", "what does SFT mean"): at most `TERM_WORDS` words once the
    words that only ask what it is are set aside. Empty for other questions."""
    text = _TERM_TAIL.sub("", _TERM_LEAD.sub("", question.strip().rstrip("?!. ")))
    asked = [term for term in own_terms(text) if not term[:1].isdigit()]
    if not asked or len(text.split()) > TERM_WORDS or len(set(asked)) > TERM_WORDS:
        return ""
    return text


def asked_term(question: str) -> list[str]:
    """The index terms of `term_text` (empty for a question that is more than a term)."""
    return [term for term in own_terms(term_text(question)) if not term[:1].isdigit()]


def _holds(asked: Sequence[str], found: set[str]) -> bool:
    """Whether terms found hold every asked term, or the term written as one word."""
    return set(asked) <= found or "".join(asked) in found


def names_term(hit: Hit, asked: Sequence[str]) -> bool:
    """Whether a passage names a term as what it is about: a heading of its section (not the
    document's title) or a PDF's run-in heading ("Residual Dropout We apply ...") holds the
    term, a bold span is the term ("**perplexity** = exp(loss)"), a sentence opens by defining
    it ("Top-p sampling keeps ...": the words before "is", ":", "=", "(" or a dash; not a
    quoted example), or it spells the term out as an acronym ("rotary position embeddings
    (RoPE)"). A term written as one word counts as well ("paged attention" and
    "PagedAttention"). Passages from a paper's references or acknowledgements never do (a
    cited title is not a definition)."""
    if not asked:
        return False

    def holds(found: set[str]) -> bool:
        return _holds(asked, found)

    headings = hit.chunk.section.split(" > ")
    if in_back_matter(hit):
        return False
    # A document's title (the first of several headings) is about the whole document
    # ("Fine-Tuning: SFT, LoRA and QLoRA"), not this passage.
    if any(holds(set(index_terms(heading))) for heading in headings[len(headings) > 1:]):
        return True
    if any(holds(set(index_terms(run_in_heading(line.strip()))))
           for line in hit.chunk.text.splitlines()):
        return True
    return defines_term(hit, asked)


def defines_term(hit: Hit, asked: Sequence[str]) -> bool:
    """Whether a passage's own text names a term as what it defines (`names_term` without
    the headings): a bold span, a sentence that opens by defining it, or its acronym spelled
    out. A heading that holds the term ("LoRA: Low-Rank Adaptation > The idea") may sit over
    sentences that never say what it is."""
    if not asked:
        return False
    wanted = set(asked)

    def holds(found: set[str]) -> bool:
        return _holds(asked, found)

    if in_back_matter(hit):
        return False
    text = hit.chunk.text
    for match in _BOLD.finditer(text):
        bold = set(index_terms(match.group(1) or match.group(2)))
        if holds(bold) and len(bold) <= len(wanted) + BOLD_EXTRA_TERMS:
            return True
    if len(wanted) == 1:
        for match in _ACRONYM.finditer(text):
            acronym = match.group(1)
            if sum(c.isupper() for c in acronym) >= 2 and set(index_terms(acronym)) == wanted:
                return True
    for line in text.splitlines():
        # A Markdown heading ("## LoRA: Low-Rank Adaptation") titles what follows.
        if line.lstrip().startswith("#"):
            continue
        for sentence in split_sentences(line):
            sentence = _LIST_MARK.sub("", sentence)
            # A quoted sentence is an example or a prompt ("“The capital of France is”"),
            # not the materials' own definition; a line in capitals is a paper's title.
            if sentence[:1] in _QUOTES or not any(c.islower() for c in sentence[:TITLE_CHARS]):
                continue
            end = _DEFINED_BY.search(sentence)
            if end is None or end.start() >= SUBJECT_CHARS:
                continue
            subject = set(index_terms(sentence[: end.start()]))
            if subject and holds(subject) and len(subject) <= len(wanted) + SUBJECT_EXTRA_TERMS:
                return True
    return False


def in_back_matter(hit: Hit) -> bool:
    """Whether a passage sits in a paper's acknowledgements or references."""
    return any(BACK_MATTER.match(heading) for heading in hit.chunk.section.split(" > "))


def term_unused(question: str, hits: Sequence[Hit]) -> bool:
    """Whether a question that is only a term ("what is GQA?", "grouped-query attention?",
    "vision transformer?") finds no retrieved passage that uses every word of it. The search
    weighs rare words highest, so a passage using the term would have been found; without one
    the materials do not discuss it, however close the neighbouring passages ("attention",
    "transformer") embed. A passage's file name and headings count as its words ("instructgpt
    sft epochs?" and papers/instructgpt.pdf); a paper's references or acknowledgements do not
    count (a cited title is not a discussion). A word counts as used in its hyphen's parts
    ("KV-cache" and "KV cache"), with its suffixes stripped ("hallucinating"), and all the
    words written as one ("paged attention" and "PagedAttention"). Questions of more than
    `TERM_WORDS` words, or of that many without "what is" and the like, and comparisons are
    left to the other rules. "How does RLAIF work?" asks what a term is as well."""
    bare = question.strip().rstrip("?!. ")
    works = _HOW_IT_WORKS.match(bare)
    text = works["term"] if works else _TERM_TAIL.sub("", _TERM_LEAD.sub("", bare))
    # Three bare words are as often keywords from several passages ("transformer warmup
    # steps?", "greedy decoding downside") as one term; a comparison names two things.
    n = len(text.split())
    if n > TERM_WORDS or (n == TERM_WORDS and text == bare) or any(
            term in _COMPARING for term in own_terms(text)):
        return False
    asked = [terms for word in text.split()
             if (terms := [stem(t) for t in own_terms(word)])]
    if not asked:
        return False
    joined = stem("".join(terms[0] for terms in asked))

    def uses(hit: Hit) -> bool:
        if in_back_matter(hit):
            return False
        chunk = hit.chunk
        found = {stem(t) for t in index_terms(f"{chunk.source}\n{chunk.section}\n{chunk.text}")}

        def has(term: str) -> bool:
            # The stemmer strips one suffix: "hallucinat(ing)" and "hallucin(ation)" meet on
            # all but their last few letters.
            if term in found:
                return True
            head = term[:max(STEM_HEAD, len(term) - STEM_SLACK)]
            return len(term) > STEM_HEAD and any(t.startswith(head) for t in found)

        return has(joined) or all(
            has(terms[0]) or all(has(t) for t in terms if not t[:1].isdigit())
            for terms in asked)

    return not any(uses(hit) for hit in hits)


def topic_unused(topic: str, chunks: Sequence[Chunk]) -> bool:
    """Whether no passage of a document uses every word of a topic a question asks it about
    ("tokenization" of "What does the week 2 guide say about tokenization?",
    `references.asked_topic`), outside its references and acknowledgements. Its words count
    as written, give or take an inflection (`_inflects`: "tokenizer" and "tokenizing" for
    "tokenization", not "tokens", which a guide about something else uses in passing), or
    all written as one ("PagedAttention"); a passage's file name and headings count."""
    asked = list(dict.fromkeys(word for word in words(topic)
                               if word not in STOPWORDS and word not in CHATTER
                               and word[:1].isalpha()))
    if not asked:
        return False
    joined = "".join(asked)

    def uses(chunk: Chunk) -> bool:
        if any(BACK_MATTER.match(heading) for heading in chunk.section.split(" > ")):
            return False
        found = set(words(f"{chunk.source}\n{chunk.section}\n{chunk.text}"))
        found |= {"".join(pair) for pair in _hyphenated(chunk.text)}

        def has(term: str) -> bool:
            return term in found or any(word[:3] == term[:3] and _inflects(term, word)
                                        for word in found)

        return has(joined) or all(has(term) for term in asked)

    return not any(uses(chunk) for chunk in chunks)


def _hyphenated(text: str) -> list[tuple[str, ...]]:
    """The parts of a text's hyphenated words ("KV-cache": ("kv", "cache")), to be joined."""
    return [tuple(words(match)) for match in _HYPHENATED.findall(text)]


def _inflects(asked: str, word: str) -> bool:
    """Whether a word is an asked word give or take an inflection: short words (acronyms,
    "gpu") only with a plural "s"; longer ones when they differ in at most their last
    `INFLECTION_SLACK` letters ("tokenization", "tokenizer"; not "token", "tokens")."""
    common = len(commonprefix([asked, word]))
    if min(len(asked), len(word)) <= SHORT_WORD:
        return common == min(len(asked), len(word)) and abs(len(asked) - len(word)) <= 1
    return common >= max(len(asked), len(word)) - INFLECTION_SLACK


def term_in_several_documents(question: str, hits: Sequence[Hit]) -> bool:
    """Whether a question that is only a term of several words ("what are residual
    connections?") finds that term, its words in order, in retrieved passages of at least
    `PHRASE_DOCUMENTS` different documents. Such a term is what the passages talk about, though
    none of them defines it ("We employ a residual connection around each of the two
    sub-layers"); a short question embeds too far from them for the fitted gate. One word
    is not enough: a single word turns up in passing in documents about something else. A
    paper's references or acknowledgements do not count, nor words in quotation marks (an
    example prompt: "The capital of France is")."""
    asked = asked_term(question)
    if len(asked) < 2:
        return False
    n = len(asked)
    sources = set()
    for hit in hits:
        if in_back_matter(hit):
            continue
        terms = index_terms(_QUOTED.sub(" ", hit.chunk.text))
        if any(terms[i:i + n] == asked for i in range(len(terms) - n + 1)):
            sources.add(hit.chunk.source)
    return len(sources) >= PHRASE_DOCUMENTS


def name_found(rare: Sequence[str], hits: Sequence[Hit]) -> bool:
    """Whether a retrieved passage (not a paper's references or acknowledgements) uses one of
    the `rare` names a question asks about, names the materials use in only a few passages
    (`VersionCatalogue.rare_names`: "In what year did DeepSeek-R1 come out?"). Such a
    passage is about the named thing, however far the question embeds from it: the embedder
    has never seen the name, and the question's other words are few."""
    wanted = set().union(*(normalised_words(name) for name in rare))
    return bool(wanted) and any(
        not in_back_matter(hit) and wanted & normalised_words(hit.chunk.text) for hit in hits)


def term_named(question: str, hits: Sequence[Hit]) -> bool:
    """Whether a question that is only a term has a retrieved passage naming that term."""
    asked = asked_term(question)
    return bool(asked) and any(names_term(hit, asked) for hit in hits)
