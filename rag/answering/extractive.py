"""Quote-first answers: the sentences, list items or table rows of the retrieved passages
that answer the question, in the materials' own words, each followed by its citation.

Every quotable piece of the passages (`rag.answering.quotes`) gets P(it states the answer)
from a small logistic model of how close it is to the question: the cosine of their
embeddings, the idf-weighted share of the question's terms the piece contains (alone, and
with its section path and file name), its length, whether it is a list item, whether it
reads as a definition of the subject of a "what is X" question (or spells out the acronym it
asks about: "Proximal Policy Optimization (PPO)"), whether it only points to
other material (a video, an article, a link), whether it is a short code block, the cosine
of the question with the piece's section path (down to the heading right above it) and with
its whole paragraph, list or table, and whether it gives a reason when the question asks
why. The weights are fitted by benchmarks/fit_quotes.py (logistic regression, positives
weighed up) on pieces labelled by whether they contain an evidence string, from our own
fit questions (see that script); never on the dev sets.

The most likely piece leads; up to four pieces follow while they score at least half as
well and the answer stays within about 120 words (the first piece is quoted whole even when
longer). The pieces of a list of short entries (bullets under a heading) or of a table are
quoted together, in document order under their lead-in line or header row; a code block is
quoted as a fenced block under its lead-in line. A piece that spells out the acronym a
definition question asks about leads ("What does PPO stand for?"), and a definition that
leads brings the sentence after it when that one goes on about its subject ("It consists of
..."). For a why-question, a
sentence that gives the reason right after the leading statement follows it; so does the
next sentence after a leading one that announces it or only restates the question. Some
pieces may not answer: the reader's tasks (unless the question asks for them), pieces
without a number when the question asks for a quantity, a paper's acknowledgements and
references (unless the question asks about thanks, funding or citations), and pieces outside
the document or section the question names (`rag.retrieval.references`) or, when it names
none, outside the passages under a heading that names what it asks about (`gate.titled`: "what
does temperature do" and a section "Temperature"), each rule only while something else is
left. A sentence that repeats one already quoted (the same words, or most of its terms: a
paper and our notes often state one fact twice) is left out.
Passages that scored as well but did not fit are pointed to with "More in [n]".

What is embedded for a passage (its pieces, their paragraphs or lists, their section paths)
never depends on the question, so `PieceVectors` keeps it, and the bot fills it for the whole
index at start-up (`Assistant.warm_quotes`): an answer then embeds only its question.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from rag.answering.gate import BACK_MATTER, asked_term, names_term, titled, topic_unused
from rag.answering.grounding import CITATION, TermWeights, numbers, terms
from rag.answering.injection import is_instruction
from rag.answering.quotes import ANNOUNCES, Quote, plain, quotes_of
from rag.answering.styles import QUOTED, AnswerSentence
from rag.index.documents import Chunk, Hit
from rag.index.embedder import Embedder
from rag.retrieval.query import asks_for_authors, comparison_sides
from rag.retrieval.references import (
    asked_topic,
    asks_for_overview,
    referenced,
    without_named_documents,
)

MAX_QUOTES = 4
MAX_WORDS = 120
KEEP_RATIO = 0.5
SHORT_ITEM_WORDS = 12
# Numbered steps this short in all are quoted whole, however long each one is.
STEPS_WORDS = 60
# A question term no chosen piece holds is looked for when this rare (idf 3.0: in about one
# passage in 20 of the shipped materials' index), in pieces that score at least this share
# of the best.
COMPLEMENT_IDF = 3.0
COMPLEMENT_RATIO = 0.25
# Words of a question about who wrote what it asks about ("the LLaMA authors", "the
# researchers"): the material's source, not a part of the answer a quote must hold.
_ABOUT_THE_SOURCE = frozenset(terms("authors papers researchers articles writers"))
# The verbs that ask ("how did the authors build one?", "what could go wrong", "give the
# percentages"), rare in the materials' prose but no part of what an answer must hold.
_ASKING = frozenset(terms("did doing done been being could would should might must had get got "
                          "give tell explain describe say says said mention happen"))
MAX_POINTERS = 2
# At most this many rows of one table a PDF flattened (each row is a piece of its own).
MAX_TABLE_ROWS = 2
# An answer's passages are the k best of this many searched, reranked by their nearest
# piece (`by_nearest_piece`: reciprocal-rank fusion with this constant; small, as the
# ranks are few).
PIECE_POOL = 10
PIECE_RRF = 5
# A sentence with at least this share of its terms in a sentence already quoted repeats it.
REPEATS_SHARED_TERMS = 0.8
# A leading sentence with at most this share of terms the question lacks restates it.
RESTATES_NEW_TERMS = 0.5
FEATURES = ("cosine", "coverage", "context_coverage", "log_words", "item", "defines", "pointer",
            "code", "heading_cosine", "group_cosine", "gives_reason")

# "What is X?", "What are Xs?", "Define X", "What does X mean?": the subject X.
_DEFINITION_QUESTION = re.compile(
    r"^\s*(?:(?:so|and|ok|okay)[, ]+)?(?:(?:in|according to) [^,?]{1,60},\s*)?"
    r"(?:what(?:'s| is| are)|whats|define|what does|how (?:is|are))\s+(?:an?\s+|the\s+)?"
    r"(?P<subject>.+?)"
    r"(?:\s+(?:mean|stand for|do|described|defined|explained))?\s*\??\s*$",
    re.IGNORECASE,
)
# "How does the Transformer paper describe an attention function (in general terms)?", "how
# do the notes define perplexity": what X is, asked of a document.
_DESCRIBE_QUESTION = re.compile(
    r"^\s*(?:(?:so|and|ok|okay)[, ]+)?how\s+(?:does|do)\s+[^?]{1,50}?\s+"
    r"(?:define|describe|characteri[sz]e)\s+(?:an?\s+|the\s+)?(?P<subject>.+?)"
    r"(?:\s+in\s+(?:general|simple|plain|broad)\s+terms)?\s*\??\s*$",
    re.IGNORECASE,
)
# "What does X mean as a decoding strategy?": what X means, said of a kind of thing.
_MEANING_QUESTION = re.compile(
    r"^\s*(?:(?:so|and|ok|okay)[, ]+)?(?:(?:in|according to) [^,?]{1,60},\s*)?"
    r"what\s+does\s+(?:the\s+(?:term|word|phrase)\s+)?(?P<subject>[^?]+?)\s+"
    r"(?:mean|stand\s+for)\s+(?:as|in|when|for)\b", re.IGNORECASE)
# Where a qualifier after a definition's subject begins: "X, as opposed to Y", "X compared
# with Y", "X in simple terms".
_QUALIFIER = re.compile(
    r",?\s+(?:as opposed to|compared (?:with|to)|rather than|in (?:simple|plain) terms)\b",
    re.IGNORECASE)
# A sentence that goes on about the subject of the one before it.
_GOES_ON = re.compile(r"(?:It|Its|They|Their)\s")
# A definition's verb within a piece's first words: "X is ...", "Xs are ...", "X refers to",
# or an appositive dash ("... maintains block tables—the mapping between ...").
_COPULA = re.compile(
    r"\b(?:is|are|refers? to|means|stands? for|denotes|describes|"
    r"(?:can|could|may) be (?:described|defined|viewed|seen|thought of) as)\b|\s?[—–]\s?",
    re.IGNORECASE)
COPULA_WITHIN = 12
_SCENE_SETTING = re.compile(
    r"(?:in|for|with|within|during|under|on|at|after|before|by|from|unlike|like)\s", re.IGNORECASE)
# A question after a reason, and a piece that gives one.
# Chat's "y" counts when a word follows it ("llama 65b vs chinchilla on mmlu, y worse?").
_WHY_QUESTION = re.compile(r"\b(?:why|how come|reasons?)\b|(?:^|[,;:.!?]\s*)y\s+(?=[a-z])",
                           re.IGNORECASE)
# A purpose stated up front is a reason too ("To improve the training stability, we normalize
# the input of each transformer sub-layer ...").
_REASON = re.compile(
    r"\b(?:because|due to|owing to|the reason|explanation|as a result|this is why|so that|"
    r"therefore|thus|hence|caused by|since|in order to|so as to)\b|^To [a-z]+\b[^.]*?,",
    re.IGNORECASE)
# A sentence that sets up an inquiry ("we investigate whether ...", "To further investigate
# this, we look at ...") and one that reports what it found.
_INQUIRY = re.compile(
    r"\b(?:we|they|the authors)\s+(?:then\s+|further\s+|also\s+|first\s+|next\s+)?"
    r"(?:investigate|study|examine|analy[sz]e|look (?:at|into)|explore|check|test|ask|inspect|"
    r"probe)\b|^To (?:further )?(?:investigate|study|examine|analy[sz]e|test|check|understand|"
    r"assess|see)\b", re.IGNORECASE)
_FINDING = re.compile(
    r"\b(?:find|found|finds|show|shows|showed|shown|observe[ds]?|reveals?|conclude[ds]?|"
    r"demonstrates?|suggests?|confirms?|results? in)\b", re.IGNORECASE)
# A sentence that opens by referring to the one before it ("This ...", "Simple, but ...").
_REFERS_BACK = re.compile(
    r"(?:this|these|that|those|it|its|they|their|such|however|but|so|thus|hence|therefore|"
    r"instead|also|similarly|accordingly|consequently|in contrast|in this case|[\w-]+, but)\b",
    re.IGNORECASE)
# A sentence whose subject is a pronoun for what the sentence before it said.
_PRONOUN_LEAD = re.compile(r"(?:this|these|that|those|it|they)\s", re.IGNORECASE)
# Where a paper says what it presents ("We propose Low-Rank Adaptation, or LoRA, ...").
_PRESENTS = re.compile(r"(?:In this (?:paper|work),?\s+)?[Ww]e (?:propose|present|introduce)\b")
# Where a paper's title and authors end on its first page.
_ABSTRACT = re.compile(r"\n\s*abstract\b", re.IGNORECASE)
_BLANK_LINE = re.compile(r"\n\s*\n")
SUBJECT_WORDS = 6
ACRONYM_SUBJECT_WORDS = 2
_WORD = re.compile(r"[^\W\d_]+")
# A question after what an acronym stands for: its spelled-out form alone answers it.
_ASKS_FOR_EXPANSION = re.compile(
    r"\b(?:stands? for|mean|short for|acronym|abbreviation|spelled out)\b", re.IGNORECASE)
# Words an acronym's spelled-out form may hold without a letter of their own.
_SMALL_WORDS = frozenset({"of", "from", "for", "the", "and", "with", "to", "in", "on", "a", "an"})
_NOT_A_SUBJECT_END = frozenset({"for", "of", "in", "to", "on", "with", "by", "from", "about"})
# Pointers to further material rather than statements: "Video: ...", "📖 Learn more:", links.
# "References:" and "Key references" lead to reading; "a useful reference point:" and "the
# reference model:" lead to facts (LLaMA's data mixture as a table).
_POINTER_LEAD = re.compile(
    r"\b(?:learn more|resources?|further reading|references|reference\s*:|see also|"
    r"reading list|links?|watch|videos?)(?!\w)", re.IGNORECASE)
# A heading over a list of such pointers ("## 📚 Resources", "Further reading").
_POINTER_HEADING = re.compile(
    r"[\W\d]*(?:learn more|(?:additional |further |useful )?(?:resources|reading|links)|"
    r"references|reading list|see also|videos)\W*", re.IGNORECASE)
_ADDRESS = re.compile(r"https?://|www\.", re.IGNORECASE)
_POINTER_TEXT = re.compile(
    r"^\W*(?:video|article|paper|book|blog|course|notebook|hands-on|tutorial|docs?|"
    r"documentation|website|slides|repo(?:sitory)?)\b[^:]{0,40}:|https?://|www\.",
    re.IGNORECASE)

# A piece that sets the reader a task ("Name three ways ...", "Explain why ...": self-check
# questions, exercises, learning objectives) states nothing, so it answers only a question
# about the tasks themselves ("What is the homework?", "What should I be able to do?").
_TASK = re.compile(
    r"^\W*(?:name|describe|explain|discuss|list|compare|contrast|summari[sz]e|define|identify|"
    r"outline|reflect on)\b", re.IGNORECASE)
_ASKS_FOR_TASKS = re.compile(
    r"\b(?:homework|assignments?|exercises?|tasks?|check-?lists?|objectives?|goals?|"
    r"self-check|quiz(?:zes)?|practi[cs]e (?:questions?|problems?)|outcomes?|to-?dos?|"
    r"deliverables?|prepare|revise|revision|(?:will|should|do|can) (?:i|we|you) learn|"
    r"able to)\b", re.IGNORECASE)

# A document's list of its own parts, by its heading, and a question that asks for one: what a
# guide covers, its agenda or outline ("What topics does the class 2 overview cover?").
_CONTENTS_HEADING = re.compile(
    r"\b(?:(?:table of )?contents|agenda|outline|syllabus|topics covered)\b", re.IGNORECASE)
_ASKS_FOR_CONTENTS = re.compile(
    r"\b(?:agenda|contents|outline|syllabus|topics?|cover(?:s|ed|ing)?|sections?|parts|"
    r"chapters?|structure|structured|organi[sz]ed)\b", re.IGNORECASE)
# A paper's map of itself: where it will present what ("In the rest of this paper, we present
# an overview of the modifications ...", "In this section, we describe ..."). What it finds
# there ("In this section, we show that ...") is a statement.
_MAPS_THE_DOCUMENT = re.compile(
    r"^(?:In the (?:rest|remainder) of (?:this|the) (?:paper|section|work)|"
    r"The (?:rest|remainder) of (?:this|the) paper|In (?:the (?:next|following) sections?|"
    r"this (?:section|subsection|appendix)|Sections? \d+(?:\.\d+)*)|Section \d+(?:\.\d+)*)\b,?"
    r"\s+(?:we\s+)?"
    r"(?:will\s+|first\s+|further\s+|then\s+|also\s+)*(?:present|describe|discuss|introduce|give|"
    r"detail|outline|review|include|build|derive|is (?:structured|organi[sz]ed))\b"
    # "This section describes the training regime for our models."
    r"|^This (?:section|subsection|appendix|chapter) (?:describes|presents|discusses|"
    r"introduces|gives|details|outlines|reviews|summari[sz]es|provides)\b", re.IGNORECASE)

# "We describe the simple design of LoRA and its practical benefits.", "... the datasets used,
# outlined in Section 5": what comes next, once its pointers to parts of the paper are read as
# no content ("We present QLoRA, an efficient ..." says what the paper is, and stays, as do
# "We describe our hiring process in Appendix B; in general, they are ..." and "We describe
# below our setup, using nucleus sampling with p = 0.9 ...", which go on to say it).
_ONLY_DESCRIBES = re.compile(r"^We (?:now |then |first |briefly |next )?describe\b[^;,\d]{0,200}$")
# "Section 5", "Appendix B", "Figure 2", "Eq. 4": where in the paper, not what.
_PART_POINTER = re.compile(
    r"\b(?:Sections?|Appendi(?:x|ces)|Figures?|Fig\.|Tables?|Eqs?\.?)\s*[A-Z]?\d*(?:\.\d+)*\b")

# A heading that is two names joined into one ("Encoder–Decoder", "3.2 Encoder-Decoder
# Models"): a third thing to a question that compares the two ("How do encoders and decoders
# differ?"), unlike a heading that lists several ("Encoder-only, decoder-only, ...").
_COMPOUND_HEADING = re.compile(
    r"(?:[\d.]+\s+)?([^\W\d_]+)\s*[-\u2013\u2014/]\s*([^\W\d_]+)(?:\s+[^\W\d_]+){0,2}")

# A question after a judgement ("which ... are best", "is DPO better than PPO?", "where does
# most of the memory go?", "which mattered more: its size or its quality?"), and a piece that
# states one: a comparison or a superlative.
_ASKS_FOR_DEGREE = re.compile(
    r"\b(?:best|worst|better|worse|most|least|biggest|greatest)\b"
    r"|\b(?:which|what)\b[^?.!]{0,200}\b(?:matter(?:s|ed)?|count(?:s|ed)?) (?:the )?(?:more|less)\b"
    r"|\b(?:more|less) (?:important|useful|effective|helpful)\b", re.IGNORECASE)
_STATES_DEGREE = re.compile(
    r"\b(?:best|worst|most|least|better|worse|more|less|fewer|than|outperform\w*|"
    r"exceed\w*|superior|inferior|smallest|largest|biggest|highest|lowest|fastest|slowest|"
    r"strongest|weakest|cheapest|greatest|as (?:small|few|little|large|many|much|low|high) as)\b",
    re.IGNORECASE)
# A bound on an amount ("more than 1,000 models", "at least 150,000 samples") judges nothing.
_AMOUNT_BOUND = re.compile(
    r"\b(?:(?:more|less|fewer|greater|larger|smaller|higher|lower)\s+than|at\s+(?:least|most))"
    r"\s+(?=[\d$~≈])", re.IGNORECASE)

# "Besides deduplication, language ID and quality filtering, what else ...?": what a question
# sets aside, up to where it asks (a question word after a comma, or the clause's end).
_SETS_ASIDE = re.compile(
    r"\b(?:besides|apart from|aside from|other than|except for|in addition to)\s+",
    re.IGNORECASE)
_ASIDE_END = re.compile(
    r",\s*(?=(?:what|which|how|who|where|when|why|is|are|do|does|did|can|could|should|"
    r"would|will|any)\b)|\s+(?=(?:what|which|how|who|where|when|why)\b)|[?;:.!]",
    re.IGNORECASE)
_ASIDE_ITEM = re.compile(r",\s*(?:and\s+|or\s+)?|\s+(?:and|or|&)\s+", re.IGNORECASE)
ASIDE_CHARS = 200
ASIDE_OPENING_WORDS = 6

# A question after a quantity: only a piece that states a number can answer it.
_ASKS_FOR_QUANTITY = re.compile(
    r"\b(?:how (?:many|much|long|large|big|fast|often|far)|by how much|"
    r"what(?:'s|s| is| was| are| were)? (?:the |its |their )?(?:[\w-]+ ){0,2}?"
    r"(?:percentage|fraction|share|proportion|size|number|count|length|ratio|(?:win )?rate|"
    r"dimension(?:ality)?|width|depth)s?\b)",
    re.IGNORECASE)
# An amount stated in words ("hundreds to thousands", "dozens of GPUs"; not "a few
# experiments", which is as often said in passing).
_AMOUNT_IN_WORDS = re.compile(
    r"\b(?:hundreds|thousands|millions|billions|trillions|dozens)\b", re.IGNORECASE)
# A number that names a part of a paper or a work it cites, not a quantity.
_POINTS_TO_A_PART = re.compile(
    r"(?:\b(?:sections?|sec\.|chapters?|tables?|tab\.|figures?|figs?\.|eqs?\.|equations?|"
    r"appendix|appendices|algorithms?|alg\.|rows?|columns?|lines?)\s*|§\s*)"
    r"\(?[A-Z]?\d+(?:\.\d+)*\)?(?:\s*(?:,|and|-|–)\s*\(?[A-Z]?\d+(?:\.\d+)*\)?)*|"
    r"\[(?:ref )?\d+(?:\s*[,–-]\s*\d+)*\]", re.IGNORECASE)
# A paper's thanks and its list of references: never an answer about its content.
_ASKS_FOR_BACK_MATTER = re.compile(
    r"\b(?:thank(?:s|ed)?|acknowledge?(?:ments?|d|s)?|fund(?:ed|ing|s)?|grants?|sponsor(?:ed|s)?|"
    r"cite[sd]?|citations?|references?|bibliography)\b", re.IGNORECASE)
# A PDF heading's section number ("3.2" of "3.2 Attention", "C.4" of "C.4 Details ...").
_SECTION_NUMBER = re.compile(r"^((?:[A-Z]|\d+)(?:\.\d+)*)\s")
# An appendix of what models wrote, by its heading, and a question that asks for such text.
_SAMPLES = re.compile(
    r"^\W*(?:[A-Z](?:\.\d+)*\s+)?(?:(?:model\s+)?generations\s+(?:from|of)\b|"
    r"(?:model\s+|random\s+)?samples\s*$|sample\s+(?:responses|outputs|generations)\b|"
    r"illustrative\s+(?:user\s+)?prompts\b)", re.IGNORECASE)
_ASKS_FOR_SAMPLES = re.compile(
    r"\b(?:samples?|generat(?:ions?|ed|es?)|examples?|outputs?|wrote|writes?|responses?|"
    r"completions?|transcripts?|prompts?)\b", re.IGNORECASE)
# A question after further material ("any videos on this?", "where can I read more?"): only
# then do pointers to reading ("Learn more: - Video: ...") answer.
# "The course", "the materials", "the X paper" and "sources" name where an answer is, not a
# wish for reading: only "any/other/good ... papers" and the like ask for more material.
_ASKS_FOR_MATERIAL = re.compile(
    r"\b(?:resources?|videos?|links?|read(?:ing)?|learn more|tutorials?|books?|watch|"
    r"where can i|further|references?|docs|documentation|recommend\w*|"
    r"(?:any|other|good|more|extra|additional|online|free|some|a|an) (?:\w+ )?"
    r"(?:courses?|papers?|materials?|sources?|articles?|blogs?|posts?))\b",
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class QuoteWeights:
    """The logistic model of P(a piece states the answer), one weight per `FEATURES` column.

    Fitted by benchmarks/fit_quotes.py (see its docstring for the command and the data)."""

    cosine: float = 1.837
    coverage: float = 2.94
    context_coverage: float = 1.884
    log_words: float = 0.089
    item: float = 0.431
    defines: float = 0.278
    pointer: float = -0.74
    code: float = 0.209
    heading_cosine: float = 0.077
    group_cosine: float = 0.901
    gives_reason: float = 0.159
    intercept: float = -3.226

    def vector(self) -> np.ndarray:
        """The weights in `FEATURES` order."""
        return np.array([getattr(self, name) for name in FEATURES])

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(states the answer) for rows of `quote_features`."""
        return 1.0 / (1.0 + np.exp(-(features @ self.vector() + self.intercept)))


FITTED_QUOTE_WEIGHTS = QuoteWeights()


@dataclass(frozen=True, slots=True)
class Extract:
    """A quote-first answer: its text, its sentences and the passages it points to."""

    text: str
    sentences: tuple[AnswerSentence, ...]
    cited: tuple[int, ...]


def embedding_text(quote: Quote, section: str) -> str:
    """What the embedder sees of a piece: its section, its list's lead-in or table header."""
    body = f"{quote.header}\n{quote.text}" if quote.kind == "row" else quote.text
    body = f"{quote.lead} {body}" if quote.lead else body
    return f"{section}: {body}" if section else body


def section_of(quote: Quote, section: str) -> str:
    """Where a piece sits: its chunk's section, and the heading above it inside the chunk
    when the chunk crosses into another section ("Self-Attention > Why it scales")."""
    if not quote.heading or section.rsplit(">", 1)[-1].strip() == quote.heading:
        return section
    return f"{section} > {quote.heading}" if section else quote.heading


def group_text(quotes: Sequence[Quote], i: int, section: str) -> str:
    """What the embedder sees of piece i's paragraph, list or table: its section, lead-in,
    header and every piece of it in order (a piece alone in its group: the piece's own
    text, so that it is embedded once)."""
    q = quotes[i]
    pieces = [o.text for o in quotes if o.passage == q.passage and o.group == q.group]
    if len(pieces) == 1:
        return embedding_text(q, section)
    body = "\n".join(filter(None, [q.lead, q.header, *pieces]))
    return f"{section}: {body}" if section else body


def piece_texts(
    quotes: Sequence[Quote], hits: Sequence[Hit]
) -> tuple[list[str], dict[tuple[int, int], str], list[str]]:
    """What the embedder sees of the pieces of some passages: each piece's text, each
    paragraph, list or table's text, and each piece's section path. They depend on the
    passages alone, never on the question."""
    sections = [section_of(q, hits[q.passage].chunk.section) for q in quotes]
    groups = {(q.passage, q.group): group_text(quotes, i, sections[i])
              for i, q in enumerate(quotes)}
    texts = [embedding_text(q, s) for q, s in zip(quotes, sections, strict=True)]
    return texts, groups, sections


def quote_features(
    question: str, quotes: Sequence[Quote], hits: Sequence[Hit], embedder: Embedder,
    idf: TermWeights, vectors: Callable[[list[str]], np.ndarray] | None = None,
) -> np.ndarray:
    """One row per piece, columns as `FEATURES`: the cosine of piece and question, the
    idf-weighted share of the question's terms the piece holds (alone, and with its heading
    and file name), log words, list item, whether the piece defines the subject of a "what is
    X" question, whether it points to other material, whether it is code, the cosine of the
    question with the piece's section path and with its whole paragraph, list or table, and
    whether it gives a reason when the question asks why. `vectors` embeds the passages'
    texts (default: the embedder, every time; `PieceVectors` keeps them)."""
    if not quotes:
        return np.zeros((0, len(FEATURES)))
    texts, groups, sections = piece_texts(quotes, hits)
    # Pieces, groups and section paths in one batch, each distinct text once.
    unique = list(dict.fromkeys([*texts, *groups.values(), *sections]))
    embed = embedder.embed_documents if vectors is None else vectors
    cos_of = dict(zip(unique, embed(unique) @ embedder.embed_query(question), strict=True))
    cosine = [cos_of[t] for t in texts]
    wanted = terms(question)
    subject = definition_subject(question)
    acronym = asked_acronym(question)
    why = bool(_WHY_QUESTION.search(question))
    rows = []
    for quote, section, cos in zip(quotes, sections, cosine, strict=True):
        heading = float(cos_of[section]) if section else 0.0
        own = terms(f"{quote.lead} {quote.header} {quote.text}")
        title = hits[quote.passage].chunk.source.rsplit("/", 1)[-1]
        context = own | terms(f"{section} {title}")
        rows.append([float(cos), idf.coverage(wanted, own), idf.coverage(wanted, context),
                     math.log1p(quote.words), float(quote.kind == "item"),
                     float(defines(quote.text, subject, idf)
                           or bool(acronym and expands(quote.text, acronym))),
                     float(is_pointer(quote)),
                     float(quote.kind == "code"),
                     heading,
                     float(cos_of[groups[(quote.passage, quote.group)]]),
                     float(why and bool(_REASON.search(quote.text)))])
    return np.array(rows)


def definition_subject(question: str) -> set[str]:
    """The terms of X in "what is X?" (empty for other questions); a qualifier after X does
    not make it another question ("What does 'sampling' mean as a decoding strategy, as
    opposed to always taking the top token?")."""
    question = _QUALIFIER.split(question, maxsplit=1)[0]
    match = (_MEANING_QUESTION.match(question) or _DEFINITION_QUESTION.match(question)
             or _DESCRIBE_QUESTION.match(question))
    if match is None:
        return set()
    words = match["subject"].split()
    # "What are embeddings used for?", "what is the point of X": not a definition.
    if len(words) > SUBJECT_WORDS or words[-1].lower() in _NOT_A_SUBJECT_END:
        return set()
    return terms(match["subject"])


def defines(text: str, subject: set[str], idf: TermWeights) -> bool:
    """Whether a piece reads as a definition of the subject: its words before a defining verb
    ("is", "are", "refers to"...), within the first few words, name most of the subject. A
    piece that opens with a phrase setting the scene ("In a RAG system a common approach is a
    relevance threshold ...") has its subject after that phrase: it says what something in X
    is, not what X is."""
    # A list entry that ends in a question ("Faithfulness metrics for RAG: is each claim
    # entailed by the retrieved context?") asks; it defines nothing.
    if not subject or _SCENE_SETTING.match(text) or text.rstrip().endswith("?"):
        return False
    head = " ".join(text.split()[:COPULA_WITHIN])
    verb = _COPULA.search(head)
    return verb is not None and idf.coverage(subject, terms(head[: verb.start()])) >= 0.5


def opens_section_on(quotes: Sequence[Quote], hits: Sequence[Hit], question: str) -> list[bool]:
    """For "What is X?": the pieces that open a section titled X (`titles`): the first
    sentence or item under "### Retrieval-augmented generation (RAG)" is "Fetch relevant
    passages ... and put them in the prompt", which is where materials say what X is."""
    subject = definition_subject(question)
    acronym = asked_acronym(question)
    out = [False] * len(quotes)
    if not subject:
        return out
    seen: set[tuple[int, str]] = set()
    for i, quote in enumerate(quotes):
        heading = quote.heading or _opening_section(hits[quote.passage].chunk, quote)
        key = (quote.passage, heading)
        if not heading or key in seen:
            continue
        seen.add(key)
        # A piece naming half of X is about a neighbour of X ("Static batching waits ..."
        # opening "Continuous batching"): it is not where X is said.
        named = subject & terms(quote.text)
        out[i] = (titles(heading, subject, acronym) and quote.kind in ("sentence", "item")
                  and named in (set(), subject))
    return out


def titles(heading: str, subject: set[str], acronym: str) -> bool:
    """Whether a heading is the title of X, not a heading that mentions it ("How BPE is
    trained"): X itself ("Perplexity", "3.1 Beam search", "b) Self-Attention"), X with its
    acronym or spelled-out name in brackets ("Byte-Pair Encoding (BPE)", "RLHF (Reinforcement
    Learning from Human Feedback)"), or X before a colon ("LoRA: Low-Rank Adaptation")."""
    heading = re.sub(r"^\W*(?:[\d.]+|[a-z]\)|[ivx]+\.)?\s*", "", heading)
    name = re.sub(r"\s*[(:].*$", "", heading).strip()
    if acronym and re.fullmatch(rf"{re.escape(acronym)}s?", name):
        return True
    if acronym and expands(heading, acronym):
        return re.sub(rf"\s*\(\s*{re.escape(acronym)}s?\s*\)\s*$", "", heading) != heading
    # Every word of the name is X's: "Why Self-Attention" is about X, not its title.
    words = [w for w in _WORD.findall(name.lower()) if w not in ("the", "a", "an")]
    return bool(words) and len(words) == len(subject) and terms(name) == subject


def _opening_section(chunk: Chunk, quote: Quote) -> str:
    """The title of the section a passage starts with, when the passage opens on its title
    line (a paper's "2.2 LLM Service ..."); else "". Its first piece opens that section."""
    title = chunk.section.rsplit(" > ", 1)[-1]
    return title if title and chunk.text.lstrip("# ").startswith(title) else ""


def asked_acronym(question: str) -> str:
    """The acronym a definition question asks about ("What does PPO stand for?", "What is
    RLHF?", "what are LLMs", "What is the KV cache?"): the one word with two capitals or more
    of a subject of one or two words; "" for other questions."""
    match = _DEFINITION_QUESTION.match(question)
    words = match["subject"].split() if match else []
    found = []
    for word in words if len(words) <= ACRONYM_SUBJECT_WORDS else []:
        word = word.strip("?.,;:!'\"")
        if word.endswith("s") and word[:-1].isupper():
            word = word[:-1]
        if word.isalpha() and sum(c.isupper() for c in word) >= 2:
            found.append(word)
    return found[0] if len(found) == 1 else ""


def expands(text: str, acronym: str) -> bool:
    """Whether a piece spells an acronym out: "Proximal Policy Optimization (PPO)", "Low-Rank
    Adaptation (LoRA)", "key-value (KV) cache", "Low-Rank Adaptation, or LoRA", "PPO (Proximal
    Policy Optimization)": one word per capital letter, small words ("from", "of") between
    them."""
    letters = [c.lower() for c in acronym if c.isupper()]
    name = re.escape(acronym)
    for m in re.finditer(rf"\(\s*{name}s?\s*\)|,?\s+or\s+{name}s?\b", text):
        before = _WORD.findall(text[: m.start()])[::-1]
        if _spells(before, letters[::-1]):
            return True
    for m in re.finditer(rf"\b{name}s?\s*\(([^)]{{3,80}})\)", text):
        if _spells(_WORD.findall(m.group(1)), letters):
            return True
    return False


def _spells(words: Sequence[str], letters: Sequence[str]) -> bool:
    """Whether the words start with one word per letter, in order (small words between)."""
    matched = 0
    for word in words:
        if matched == len(letters):
            break
        if word[0].lower() == letters[matched]:
            matched += 1
        elif not (matched and word.lower() in _SMALL_WORDS):
            return False
    return matched == len(letters)


def is_pointer(quote: Quote) -> bool:
    """Whether a piece points to other material (a video, an article, a link) under a
    "Learn more:" or "Resources:" lead-in or heading, or names one itself."""
    return bool(_POINTER_TEXT.search(quote.text)
                or (quote.kind != "sentence" and (_POINTER_LEAD.search(quote.lead)
                                                  or _POINTER_HEADING.fullmatch(quote.heading))))


def lists_contents(quote: Quote) -> bool:
    """Whether a piece is an entry of a document's table of contents or agenda ("Test-Time
    Scaling (O1, O3)" under "Agenda"): the name of a part, not what the part says."""
    return quote.kind == "item" and bool(_CONTENTS_HEADING.search(quote.heading))


def maps_the_document(quote: Quote) -> bool:
    """Whether a sentence only says where a paper presents what (`_MAPS_THE_DOCUMENT`,
    `_ONLY_DESCRIBES`)."""
    return quote.kind == "sentence" and bool(
        _MAPS_THE_DOCUMENT.search(quote.text)
        or _ONLY_DESCRIBES.search(_PART_POINTER.sub("", quote.text)))


def joins_sides(heading: str, sides: Sequence[str]) -> bool:
    """Whether a heading is the two things a question compares joined into one name
    ("Encoder–Decoder" for "encoders" and "decoders"), each part naming one side only."""
    found = _COMPOUND_HEADING.fullmatch(heading.strip()) if len(sides) == 2 else None
    if found is None:
        return False
    a, b = (terms(side) for side in sides)
    x, y = (terms(part) for part in found.groups())
    return any(one & a and not one & b and other & b and not other & a
               for one, other in ((x, y), (y, x)))


def points_to_reading(quote: Quote) -> bool:
    """A pointer to other material that names it ("Video: ...", "IBM: Why LLMs Hallucinate"
    under "Learn more:"); a bare address ("http://localhost:8000") can be a fact."""
    return is_pointer(quote) and not _ADDRESS.search(quote.text)


def all_quotes(hits: Sequence[Hit]) -> list[Quote]:
    """The quotable pieces of every passage, without text that tries to instruct a model
    (the same filter the prompt uses: it is never shown as an answer)."""
    return [q for i, hit in enumerate(hits)
            for q in quotes_of(hit.chunk.text, i, hit.chunk.fence, pdf=hit.chunk.page is not None)
            if not is_instruction(q.text)]


def sets_a_task(quote: Quote) -> bool:
    """Whether a piece asks the reader to do something ("Explain why ...", "Name three ...")."""
    return quote.kind in ("sentence", "item") and bool(_TASK.match(quote.text))


def with_subsections(hits: Sequence[Hit], titles: Sequence[int]) -> list[int]:
    """The passages `titles`, and the retrieved passages of their documents' numbered
    subsections ("3.2.1 Scaled Dot-Product Attention" under "3.2 Attention"): a paper's
    section about X goes on in its subsections, and a PDF's section path holds only the
    nearest heading. "why is the attention scaled?" was quoted from "3.2 Attention" alone,
    whose one piece is a figure's caption; the reason is in 3.2.1."""
    numbered = {(hits[i].chunk.source, found.group(1)) for i in titles
                if (found := _SECTION_NUMBER.match(_own_heading(hits[i]))) is not None}
    return [i for i, hit in enumerate(hits) if i in titles or any(
        hit.chunk.source == source and _own_heading(hit).startswith(f"{number}.")
        for source, number in numbered)]


def _own_heading(hit: Hit) -> str:
    """The nearest heading of a passage's section path."""
    return hit.chunk.section.rsplit(" > ", 1)[-1]


def back_matter(hits: Sequence[Hit], question: str = "") -> list[int]:
    """The passages from a paper's acknowledgements or references, none when the question
    asks about thanks, funding or citations; and those of an appendix of what models wrote
    ("C Generations from LLaMA-65B", "F Model samples", "D.2 Sample Responses and GPT-4
    Judgments", "A.2.1 Illustrative user prompts ..."), unless the question asks for samples:
    a model's output printed as an example is not what the paper says."""
    thanks = not _ASKS_FOR_BACK_MATTER.search(question)
    samples = not _ASKS_FOR_SAMPLES.search(question)
    out = []
    for i, hit in enumerate(hits):
        heading = _own_heading(hit)
        if (thanks and BACK_MATTER.match(heading)) or (samples and _SAMPLES.match(heading)):
            out.append(i)
    return out


def select(
    quotes: Sequence[Quote], p: np.ndarray, question: str = "",
    scope: Collection[int] | None = None, aside: Collection[int] = (),
    defining: Sequence[bool] = (),
    idf: TermWeights | None = None,
) -> list[int]:
    """The pieces to quote, most likely first (a piece that spells out the acronym a
    definition question asks about, or one of the `defining` pieces that open by defining its
    subject, leads; for "What is X?" one from outside `scope` when none inside says what X
    is); a list item brings its siblings; a leading sentence that announces what follows,
    sets up an inquiry ("we investigate ...") or only restates the question brings the next
    sentence, and the answer to a why-question the reason that follows its leading statement.
    With `idf`, a rare question term no chosen piece holds brings the likeliest piece that
    does (`_with_uncovered_terms`). A question after a judgement ("which are best?") none of
    whose chosen pieces states one brings the likeliest piece that does (`_with_degree`).

    Left out, each only while something else is left: pieces of the passages `aside` (a
    paper's acknowledgements and references, `back_matter`), pieces of passages outside
    `scope` (the passages the question names, `rag.retrieval.references`), pieces that set
    the reader a task unless the question asks about tasks, pointers to reading unless it
    asks for material, entries of a table of contents or agenda and a paper's sentences about
    where it presents what unless it asks what a document covers (`lists_contents`,
    `maps_the_document`), and pieces without a number of their own when it asks for a quantity
    ("how many", "how much", "what percentage"): the 13 of "OPT-13B" in a caption that only
    restates "how much memory did sharing save when serving OPT-13B?" answers nothing; and
    pieces that open with a thing the question sets aside ("besides X, what else ...?",
    `things_set_aside`)."""
    allowed = _narrowed([True] * len(quotes), (q.passage not in aside for q in quotes))
    # "What is self-attention?": a piece that says what X is may lead from outside the
    # passages under headings naming X ("4 Why Self-Attention") when none of those says it.
    unscoped = allowed
    if scope is not None:
        allowed = _narrowed(allowed, (q.passage in scope for q in quotes))
    if not _ASKS_FOR_TASKS.search(question):
        allowed = _narrowed(allowed, (not sets_a_task(q) for q in quotes))
    if not _ASKS_FOR_MATERIAL.search(question):
        allowed = _narrowed(allowed, (not points_to_reading(q) for q in quotes))
    if not _ASKS_FOR_CONTENTS.search(question):
        allowed = _narrowed(allowed, (not lists_contents(q) and not maps_the_document(q)
                                      for q in quotes))
    sides = comparison_sides(question)
    if sides:
        allowed = _narrowed(allowed, (not joins_sides(q.heading, sides) for q in quotes))
    if set_aside := things_set_aside(question):
        allowed = _narrowed(allowed, (not opens_with_any(q.text, set_aside) for q in quotes))
    if _ASKS_FOR_QUANTITY.search(question):
        asked = _values(question)
        allowed = _narrowed(allowed, (bool(_values(q.text) - asked) or states_an_amount(q.text)
                                      for q in quotes))
    chosen = _by_probability(quotes, p, None if all(allowed) else allowed)
    acronym = asked_acronym(question)
    # "What is the KV cache?": spelled out with "cache" too ("a key-value (KV) cache").
    rest = definition_subject(question) - terms(acronym)
    spelled = [i for i, q in enumerate(quotes)
               if unscoped[i] and q.kind in ("sentence", "item") and (
                   (acronym and expands(q.text, acronym) and rest <= terms(q.text))
                   or (i < len(defining) and defining[i]))]
    if any(allowed[i] for i in spelled):
        spelled = [i for i in spelled if allowed[i]]
    lead = max(spelled, key=lambda i: p[i]) if spelled else None
    # "What does PPO stand for?" is answered by the spelled-out name alone; for "What is
    # PPO?" it, or a definition, leads only when it scores with the pieces that would be
    # quoted anyway.
    if lead is not None and (_ASKS_FOR_EXPANSION.search(question)
                             or p[lead] >= KEEP_RATIO * p.max()):
        chosen = _led_by(quotes, chosen, lead)
        # "SAMSum is introduced in ... It consists of staged chat conversations ...": the
        # definition goes on in the sentence after it.
        if definition_subject(question) and not _ASKS_FOR_EXPANSION.search(question):
            chosen = _with_next(quotes, chosen, lambda after: bool(_GOES_ON.match(after.text)))
    if idf is not None:
        chosen = _with_uncovered_terms(quotes, p, chosen, question, idf,
                                       None if all(allowed) else allowed)
    if _ASKS_FOR_DEGREE.search(question):
        chosen = _with_degree(quotes, p, chosen, None if all(allowed) else allowed)
    if sides:
        chosen = _with_each_side(quotes, p, chosen, sides, None if all(allowed) else allowed)
    chosen = _with_finding(quotes, _with_what_it_announces(quotes, chosen))
    if _WHY_QUESTION.search(question):
        chosen = _with_reason(quotes, chosen)
    chosen = _with_antecedents(quotes, _with_what_follows_a_restatement(quotes, chosen, question))
    return _without_dangling_announcements(quotes, _in_reading_order(quotes, chosen))


def opens_with_any(text: str, things: Sequence[frozenset[str]]) -> bool:
    """Whether a piece opens with one of the things (within its first `ASIDE_OPENING_WORDS`
    words): "Deduplication at document and line level ..." is about deduplication, while
    "This week you'll get hands-on with LLMs, understand their architecture, learn how
    they're trained, and perform model inference ..." goes on past the architecture and the
    training a question set aside."""
    opening = terms(" ".join(text.split()[:ASIDE_OPENING_WORDS]))
    return any(thing <= opening for thing in things)


def things_set_aside(question: str) -> list[frozenset[str]]:
    """The terms of each thing a question sets aside ("Besides deduplication, language ID
    and quality filtering, what else ...?": deduplication; language, id; quality, filter):
    the student has them already, and a piece that names one only repeats the question."""
    found = _SETS_ASIDE.search(question)
    if found is None:
        return []
    rest = question[found.end():found.end() + ASIDE_CHARS]
    end = _ASIDE_END.search(rest)
    clause = rest[:end.start()] if end else rest
    return [thing for item in _ASIDE_ITEM.split(clause) if (thing := frozenset(terms(item)))]


def opening_pieces(quotes: Sequence[Quote]) -> list[int]:
    """The first passage's pieces in its order, as many as fit the quotes and words (a short
    list whole), without code, the reader's tasks or pointers to reading: how a document
    introduces itself. When that leaves out the sentence where a paper says what it presents
    ("We propose ...", "In this paper we introduce ..."), from that sentence on."""
    own = [i for i, q in enumerate(quotes) if q.passage == 0 and q.kind != "code"
           and not sets_a_task(q) and not points_to_reading(q) and not is_pointer(q)]
    out = _in_order_within_words(quotes, own)
    # A paper's abstract sets the scene first; what the paper itself does must be in it.
    presents = next((n for n, i in enumerate(own) if _PRESENTS.match(quotes[i].text)), None)
    if presents is not None and own[presents] not in out:
        out = _in_order_within_words(quotes, own[presents:])
    return out


def _in_order_within_words(quotes: Sequence[Quote], own: Sequence[int]) -> list[int]:
    """`own` in order while they fit the quotes and words (the first always; a short list
    whole)."""
    out: list[int] = []
    words = 0
    for i in own:
        if i in out:
            continue
        family = [j for j in (siblings(quotes, i) if is_short_list(quotes, i) else [i])
                  if j in own and j not in out]
        cost = sum(quotes[j].words for j in family)
        if out and (_count(quotes, out) >= MAX_QUOTES or words + cost > MAX_WORDS):
            break
        out += family
        words += cost
    return out


def title_block(hits: Sequence[Hit], scope: Collection[int] | None = None) -> Quote | None:
    """A paper's title and authors as one quote: the text of its first passage before
    "Abstract" ("LORA: LOW-RANK ADAPTATION OF LARGE LANGUAGE MODELS Edward Hu∗ Yelong Shen∗
    ..."; the whole passage when the heading starts the next one), or when that is longer than
    an answer its first paragraph, from the first passage of a PDF's first page among the hits (one
    the question names first: `scope`). None when the hits hold no such passage or its
    block is longer than an answer. Sentence splitting would cut it at every initial
    ("Aidan N. Gomez") and drop its last part, which has no end mark."""
    firsts = [i for i, hit in enumerate(hits) if hit.chunk.page == 1 and hit.chunk.start == 0
              and hit.chunk.source.casefold().endswith(".pdf")]
    firsts = [i for i in firsts if scope is None or i in scope] or firsts
    for passage in firsts:
        text = hits[passage].chunk.text
        end = _ABSTRACT.search(text)
        block = plain(text[:end.start()] if end else text)
        if len(block.split()) > MAX_WORDS and (blank := _BLANK_LINE.search(text)):
            block = plain(text[:blank.start()])
        # Text that tries to instruct a model is never shown, as in `all_quotes`.
        if block and len(block.split()) <= MAX_WORDS and not is_instruction(block):
            return Quote(block, "sentence", passage, 0, 0)
    return None


def _values(text: str) -> set[float]:
    """The numbers a text states, by value, without those that only point to a part of a
    paper ("section 5.4", "Table 10", "Fig. 16 (b)", "[20]", a quoted "[ref 20]"): "We
    performed only a small number of experiments to select the dropout, both attention and
    residual (section 5.4)" states no dropout rate."""
    return {value for value, _ in numbers(_POINTS_TO_A_PART.sub(" ", text))}


def states_an_amount(text: str) -> bool:
    """Whether a text states an amount in words, not digits: "hundreds to thousands" of
    examples answers "how much data does fine-tuning need?" as a figure would."""
    return _AMOUNT_IN_WORDS.search(text) is not None


def _narrowed(allowed: list[bool], keep: Iterable[bool]) -> list[bool]:
    """The pieces both allowed and kept, unless that leaves none."""
    narrowed = [a and k for a, k in zip(allowed, keep, strict=True)]
    return narrowed if any(narrowed) else allowed


def _in_reading_order(quotes: Sequence[Quote], chosen: list[int]) -> list[int]:
    """Sentences quoted from one paragraph that follow each other there are read in its order,
    together, where the first of them was chosen: "Keep only the k highest-probability tokens
    ..., and sample." before "Simple, but a fixed k is too many ...", which only makes sense
    after it. A lead that does not refer back to what precedes it keeps its place."""
    def run_of(i: int) -> list[int]:
        q = quotes[i]
        if q.kind != "sentence":
            return [i]
        at = {quotes[j].position: j for j in chosen if quotes[j].kind == "sentence"
              and (quotes[j].passage, quotes[j].group) == (q.passage, q.group)}
        start = q.position
        while start - 1 in at:
            start -= 1
        end = q.position
        while end + 1 in at:
            end += 1
        return [at[n] for n in range(start, end + 1)]

    out: list[int] = []
    for n, i in enumerate(chosen):
        run = [j for j in run_of(i) if j not in out]
        if n == 0 and not _REFERS_BACK.match(quotes[i].text):
            # A lead that stands on its own stays first (the spelled-out acronym, the
            # definition, the figure); what follows it in the paragraph comes right after.
            run = [j for j in run if quotes[j].position >= quotes[i].position]
        out += run
    return out


def _with_antecedents(quotes: Sequence[Quote], chosen: list[int]) -> list[int]:
    """Before a quoted sentence that opens with a pronoun standing for what the sentence
    before it said ("They are both pure memory waste.", "This means that training ... takes
    approximately 21 days."), that sentence, when it is not quoted and fits the quotes and
    words, if need be once the pieces chosen after the pronoun's sentence are left out: alone,
    the pronoun points at nothing the student can read."""
    def fits(pieces: list[int], added: int) -> bool:
        return _count(quotes, pieces) < MAX_QUOTES and sum(
            quotes[j].words for j in pieces) + quotes[added].words <= MAX_WORDS

    out = list(chosen)
    for i in chosen:
        q = quotes[i]
        if i not in out or q.kind != "sentence" or not _PRONOUN_LEAD.match(q.text):
            continue
        before = next((j for j, o in enumerate(quotes) if (o.passage, o.group) == (
            q.passage, q.group) and o.position == q.position - 1 and o.kind == "sentence"), None)
        if before is None or before in out or _repeats(quotes, before, out):
            continue
        # Room is made by leaving out the last-chosen pieces after it, if that is enough.
        kept = list(out)
        while not fits(kept, before) and kept[-1] != i:
            kept.pop()
        if fits(kept, before):
            out = kept
            out.insert(out.index(i), before)
    return out


def _with_uncovered_terms(
    quotes: Sequence[Quote], p: np.ndarray, chosen: list[int], question: str,
    idf: TermWeights, allowed: Sequence[bool] | None,
) -> list[int]:
    """For a question of several parts ("What optimizer and learning-rate schedule did the
    LLaMA paper use?", answered with the schedule alone), the likeliest piece that holds a
    rare term of the question (idf at least `COMPLEMENT_IDF`; the words naming a document,
    and its "authors" unless it asks who they are, aside) that no chosen piece, its lead-in,
    header or heading holds ("optimizer"), when it scores at least `COMPLEMENT_RATIO` of the
    best: after the chosen pieces, or in place of the least likely chosen sentence when the
    quotes or words are full (`_added`). Code is not added."""
    if not chosen:
        return chosen
    held: set[str] = set()
    for i in chosen:
        q = quotes[i]
        text = f"{q.lead} {q.header} {q.text} {q.heading}"
        # "pre-trained" holds the question's "pretrained".
        held |= terms(text) | terms(text.replace("-", ""))
    aside = held | _ASKING if asks_for_authors(question) else held | _ASKING | _ABOUT_THE_SOURCE
    rare = {t for t in terms(without_named_documents(question)) - aside
            if idf.idf(t) >= COMPLEMENT_IDF}
    if not rare:
        return chosen
    return _with_likeliest(quotes, p, chosen, allowed, lambda q: bool(rare & terms(q.text)))


def _with_degree(
    quotes: Sequence[Quote], p: np.ndarray, chosen: list[int], allowed: Sequence[bool] | None,
) -> list[int]:
    """For a question after a judgement ("which attention weights are best to adapt?", "is
    DPO better than PPO?") none of whose chosen pieces states one, the likeliest piece that
    does ("... while adapting both Wq and Wv yields the best result."; `_STATES_DEGREE`),
    when it scores at least `COMPLEMENT_RATIO` of the best: after the chosen pieces, or in
    place of the least likely chosen sentence when the quotes or words are full."""
    if not chosen or any(states_degree(quotes[i].text) for i in chosen):
        return chosen
    return _with_likeliest(quotes, p, chosen, allowed, lambda q: states_degree(q.text))


def states_degree(text: str) -> bool:
    """Whether a piece states a judgement (`_STATES_DEGREE`), not only bounds an amount."""
    return bool(_STATES_DEGREE.search(_AMOUNT_BOUND.sub(" ", text)))


def _with_each_side(
    quotes: Sequence[Quote], p: np.ndarray, chosen: list[int], sides: Sequence[str],
    allowed: Sequence[bool] | None,
) -> list[int]:
    """For a comparison ("how do beam search and sampling differ?") whose chosen pieces
    speak of one side only (their text, lead-in, header or heading), the likeliest piece that
    names the other, when it scores at least `COMPLEMENT_RATIO` of the best: after the chosen
    pieces, or in place of the least likely chosen sentence when the quotes or words are full."""
    def names(q: Quote, side: str) -> bool:
        # Half of a side's terms: a side as the question phrased it may carry a word more
        # ("NF4 compare with Int4 on perplexity").
        wanted = terms(side)
        found = wanted & terms(f"{q.lead} {q.header} {q.text} {q.heading}")
        return bool(wanted) and 2 * len(found) >= len(wanted)

    def fits(q: Quote, side: str, out: list[int]) -> bool:
        # At most `MAX_TABLE_ROWS` rows of one flattened table, as `_by_probability` quotes.
        return names(q, side) and _table_rows_chosen(quotes, quotes.index(q), out) < MAX_TABLE_ROWS

    def held(out: list[int]) -> set[str]:
        return {side for side in sides if any(names(quotes[i], side) for i in out)}

    for side in sides:
        if not chosen or side in held(chosen) or not terms(side):
            continue
        more = _with_likeliest(quotes, p, chosen, allowed, partial(fits, side=side, out=chosen))
        # Not in place of the one piece that named the other side.
        if held(chosen) <= held(more):
            chosen = more
    return chosen


def _with_likeliest(
    quotes: Sequence[Quote], p: np.ndarray, chosen: list[int], allowed: Sequence[bool] | None,
    wanted: Callable[[Quote], bool],
) -> list[int]:
    """The chosen pieces with the likeliest other `wanted` piece (allowed, not code, not a
    repeat of a chosen one) that scores at least `COMPLEMENT_RATIO` of the best and fits
    (`_added`); as chosen when none does."""
    best = p[chosen[0]]
    for i in (int(i) for i in np.argsort(-p, kind="stable")):
        if p[i] < COMPLEMENT_RATIO * best:
            break
        q = quotes[i]
        if i in chosen or (allowed is not None and not allowed[i]) or q.kind == "code" \
                or not wanted(q) or _repeats(quotes, i, chosen):
            continue
        added = _added(quotes, chosen, i)
        if added:
            return added
    return chosen


def _added(quotes: Sequence[Quote], chosen: list[int], i: int) -> list[int]:
    """The chosen pieces and piece i after them, or in place of the last chosen sentence
    (the least likely; never the leading piece) when the quotes or words are full; empty when
    neither fits."""
    q = quotes[i]
    last = next((k for k in range(len(chosen) - 1, 0, -1)
                 if quotes[chosen[k]].kind == "sentence"), None)
    for out in (list(chosen), [] if last is None else chosen[:last] + chosen[last + 1:]):
        if out and _count(quotes, out) < MAX_QUOTES and sum(
                quotes[j].words for j in out) + q.words <= MAX_WORDS:
            return [*out, i]
    return []


def _without_dangling_announcements(quotes: Sequence[Quote], chosen: list[int]) -> list[int]:
    """Without a sentence after the first that announces what follows ("We then apply the
    following three steps (Figure 2).") when what it announces is not quoted right after it."""
    return [i for n, i in enumerate(chosen) if n == 0 or quotes[i].kind != "sentence"
            or not ANNOUNCES.search(quotes[i].text) or _follows(quotes, i, chosen[n + 1:n + 2])]


def _follows(quotes: Sequence[Quote], i: int, after: Sequence[int]) -> bool:
    """Whether the piece quoted after piece i is the next one in i's passage."""
    return bool(after) and quotes[after[0]].passage == quotes[i].passage \
        and quotes[after[0]].position == quotes[i].position + 1


def _with_what_follows_a_restatement(
    quotes: Sequence[Quote], chosen: list[int], question: str
) -> list[int]:
    """The sentence right after a leading one that mostly restates the question (at least
    half its terms are the question's: "Comparisons are also not necessarily the most
    efficient way of providing an alignment signal." for "...what alternatives does it
    suggest?"): what is new is more likely in the sentence that follows."""
    if not chosen:
        return chosen
    own = terms(quotes[chosen[0]].text)
    if len(own - terms(question)) > RESTATES_NEW_TERMS * len(own):
        return chosen
    return _with_next(quotes, chosen, lambda after: True)


def _with_reason(quotes: Sequence[Quote], chosen: list[int]) -> list[int]:
    """The sentence right after the leading one when it gives a reason the leading one does
    not ("... is behind both ..." then "A potential explanation is that ...")."""
    lead = quotes[chosen[0]] if chosen else None
    if lead is None or _REASON.search(lead.text):
        return chosen
    return _with_next(quotes, chosen, lambda after: bool(_REASON.search(after.text)))


def _with_finding(quotes: Sequence[Quote], chosen: list[int]) -> list[int]:
    """The sentence right after a leading one that only sets up an inquiry ("Given the strong
    performance of Guanaco models, we investigate any data leakage ..." then "We do not find
    overlapping prompts after performing fuzzy string matching ..."): the finding follows."""
    lead = quotes[chosen[0]] if chosen else None
    if lead is None or not _INQUIRY.search(lead.text) or _FINDING.search(lead.text):
        return chosen
    return _with_next(quotes, chosen, lambda after: True)


def _with_what_it_announces(quotes: Sequence[Quote], chosen: list[int]) -> list[int]:
    """The sentence right after a leading one that only announces it ("We then apply the
    following three steps (Figure 2)." then "Step 1: Collect demonstration data ...")."""
    lead = quotes[chosen[0]] if chosen else None
    if lead is None or not ANNOUNCES.search(lead.text):
        return chosen
    return _with_next(quotes, chosen, lambda after: True, same_group=False)


def _with_next(
    quotes: Sequence[Quote], chosen: list[int], wanted: Callable[[Quote], bool],
    same_group: bool = True,
) -> list[int]:
    """The leading sentence's next piece in its passage (in its paragraph when `same_group`)
    goes second when `wanted`; pieces at the end make room for it."""
    lead = quotes[chosen[0]]
    if lead.kind != "sentence":
        return chosen
    after = next((j for j, q in enumerate(quotes) if q.passage == lead.passage
                  and (q.group == lead.group or not same_group)
                  and q.position == lead.position + 1), None)
    if after is None or not wanted(quotes[after]) or _repeats(quotes, after, chosen):
        return chosen
    return _trimmed(quotes, [chosen[0], after, *chosen[1:]], kept=2)


def _led_by(quotes: Sequence[Quote], chosen: list[int], lead: int) -> list[int]:
    """`lead` first, then the rest as chosen; pieces at the end make room for it."""
    if chosen and chosen[0] == lead:
        return chosen
    return _trimmed(quotes, [lead, *(j for j in chosen if j != lead)], kept=1)


def _trimmed(quotes: Sequence[Quote], out: list[int], kept: int) -> list[int]:
    """The first `kept` pieces, then the rest while they fit the quotes and words (a list
    or table is dropped whole)."""
    while len(out) > kept and (_count(quotes, out) > MAX_QUOTES
                               or sum(quotes[j].words for j in out) > MAX_WORDS):
        last = quotes[out[-1]]
        out = out[:kept] + [j for j in out[kept:] if (quotes[j].passage, quotes[j].group)
                            != (last.passage, last.group)]
    return out


def _by_probability(
    quotes: Sequence[Quote], p: np.ndarray, allowed: Sequence[bool] | None = None
) -> list[int]:
    """The most likely pieces while they score at least half the best and fit the words. Only
    `allowed` pieces are quoted, when given; a piece that is not still brings the allowed
    entries of its short list."""
    chosen: list[int] = []
    words = 0
    best: float | None = None
    for i in (int(i) for i in np.argsort(-p, kind="stable")):
        if _count(quotes, chosen) >= MAX_QUOTES or (best is not None
                                                    and p[i] < KEEP_RATIO * best):
            break
        if i in chosen or _repeats(quotes, i, chosen) or (
                chosen and words + quotes[i].words > MAX_WORDS) or (
                _table_rows_chosen(quotes, i, chosen) >= MAX_TABLE_ROWS):
            continue
        family = siblings(quotes, i) if is_short_list(quotes, i) else [i]
        family = [j for j in family if allowed is None or allowed[j]]
        if not family:
            continue
        best = p[i] if best is None else best
        for j in family:
            # The best piece is quoted whole even when it alone is long: never cut mid-way.
            if j not in chosen and (not chosen or words + quotes[j].words <= MAX_WORDS):
                chosen.append(j)
                words += quotes[j].words
    return chosen


def _table_rows_chosen(quotes: Sequence[Quote], i: int, chosen: Sequence[int]) -> int:
    """How many rows of the table a PDF flattened that piece i is a row of are chosen (0 for
    any other piece)."""
    q = quotes[i]
    return 0 if not q.table else sum(
        1 for j in chosen if quotes[j].table == q.table and quotes[j].passage == q.passage)


def _said(quote: Quote) -> str:
    """What a piece says, for spotting the same words quoted twice."""
    return " ".join(quote.text.casefold().split())


def _repeats(quotes: Sequence[Quote], i: int, chosen: Sequence[int]) -> bool:
    """Whether piece i says what a chosen piece already says: the same words, or (for a
    sentence) a sentence holding most of its terms: a paper and our notes often state one
    fact twice ("vLLM's default block size is 16" and "vLLM sets its default block size as
    16"). List entries and table rows are never dropped this way: their siblings need them."""
    said = _said(quotes[i])
    if any(_said(quotes[j]) == said for j in chosen):
        return True
    own = terms(quotes[i].text)
    return quotes[i].kind == "sentence" and bool(own) and any(
        quotes[j].kind == "sentence"
        and len(own & terms(quotes[j].text)) >= REPEATS_SHARED_TERMS * len(own)
        for j in chosen)


def _count(quotes: Sequence[Quote], pieces: Sequence[int]) -> int:
    """How many quotes `pieces` make: a list or table quoted whole (`is_short_list`) is one,
    like the sentence it stands in for."""
    seen: set[tuple[object, ...]] = set()
    for j in pieces:
        q = quotes[j]
        if q.table:
            # Rows of one table a PDF flattened: each its own group, one table all the same.
            seen.add(("table", q.passage, q.table))
        else:
            seen.add((q.passage, q.group) if is_short_list(quotes, j) else ("piece", j))
    return len(seen)


def is_short_list(quotes: Sequence[Quote], i: int) -> bool:
    """Whether piece i belongs to a list or table of short entries (bullets under a heading,
    table rows) or to short numbered steps ("1. Start with ... 2. Count every pair ..."):
    quoted whole, since the entries only make sense together."""
    if quotes[i].kind in ("sentence", "code"):
        return False
    family = [quotes[j].words for j in siblings(quotes, i)]
    return (quotes[i].kind == "row" or sum(family) / len(family) <= SHORT_ITEM_WORDS
            or (quotes[i].step > 0 and sum(family) <= STEPS_WORDS))


def siblings(quotes: Sequence[Quote], i: int) -> list[int]:
    """Piece i and the other pieces of its list or table, piece i first."""
    q = quotes[i]
    rest = [j for j, o in enumerate(quotes)
            if j != i and o.passage == q.passage and o.group == q.group]
    return [i, *rest]


def compose(quotes: Sequence[Quote], chosen: Sequence[int], more: Sequence[int]) -> Extract:
    """The answer text: blocks in the order chosen, a list's items in document order under
    its lead-in, a table's rows under their header; each block followed by its citation."""
    blocks: list[list[int]] = []
    for i in chosen:
        q = quotes[i]
        block = next((b for b in blocks if is_short_list(quotes, i)
                      and quotes[b[0]].passage == q.passage and quotes[b[0]].group == q.group),
                     None)
        if block is None:
            blocks.append([i])
        else:
            block.append(i)
    lines: list[str] = []
    sentences: list[AnswerSentence] = []
    for block in blocks:
        block.sort(key=lambda j: quotes[j].position)
        lines += _render(quotes, block, sentences, is_short_list(quotes, block[0]),
                         {s.text for s in sentences})
    cited = tuple(dict.fromkeys(s.citation for s in sentences if s.citation is not None))
    pointers = [n + 1 for n in more if n + 1 not in cited][:MAX_POINTERS]
    if pointers:
        lines.append("More in " + ", ".join(f"[{n}]" for n in pointers) + ".")
    return Extract("\n".join(lines), tuple(sentences), cited + tuple(pointers))


def _render(
    quotes: Sequence[Quote], block: list[int], sentences: list[AnswerSentence], as_list: bool,
    shown: Collection[str] = (),
) -> list[str]:
    """The lines of one block (a sentence, or a list under its lead-in, or table rows under
    their header), recording its sentences; a lead-in or header already `shown` (two rows of
    one table's caption) is not repeated."""
    first = quotes[block[0]]
    number = first.passage + 1
    if first.kind == "code":
        # The citation goes on the lead-in (or a line of its own): text after a closing
        # fence would not close the code block.
        if first.lead:
            sentences.append(AnswerSentence(first.lead, number, QUOTED))
        sentences.append(AnswerSentence(first.text, number, QUOTED))
        return [f"{first.lead} [{number}]" if first.lead else f"From [{number}]:",
                "```", *first.text.splitlines(), "```"]
    if not as_list:
        sentences.append(AnswerSentence(first.text, number, QUOTED))
        return [f"{first.text} [{number}]"]
    lines = []
    for extra in (first.lead, first.header):
        if extra and extra not in shown:
            sentences.append(AnswerSentence(extra, number, QUOTED))
            lines.append(extra)
    for j in block:
        # A step keeps its number as written.
        step = quotes[j].step
        marker = "" if first.kind != "item" else f"{step}. " if step else "- "
        sentences.append(AnswerSentence(quotes[j].text, number, QUOTED))
        lines.append(f"{marker}{quotes[j].text}")
    lines[-1] += f" [{number}]"
    return lines


# About 1.5 KB each with all-MiniLM-L6-v2: the course guides, papers and our notes make
# 8,560 texts (13 MB), so a course several times larger still fits.
MAX_CACHED_TEXTS = 40_000


class PieceVectors:
    """The vectors of the texts the selector embeds for a passage (its pieces, paragraphs and
    section paths), kept by text, least recently used dropped first; safe to share between
    threads.

    They depend on the passage alone, so after the first question that retrieves a passage
    (or after `warm`, run at start-up) a quote-first answer embeds only its question. That
    work was most of an extractive answer's time (docs/benchmarks.md, "Faithfulness").
    """

    def __init__(self, embedder: Embedder, max_texts: int = MAX_CACHED_TEXTS) -> None:
        self.embedder = embedder
        self.max_texts = max_texts
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def __call__(self, texts: list[str]) -> np.ndarray:
        """The vectors of `texts`, embedding only those not kept yet."""
        with self._lock:
            known = {t: self._vectors[t] for t in texts if t in self._vectors}
            for t in known:
                self._vectors.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            fresh = self.embedder.embed_documents(missing)
            known.update(zip(missing, fresh, strict=True))
            self._keep(missing, fresh)
        return np.stack([known[t] for t in texts])

    def _keep(self, texts: list[str], vectors: np.ndarray) -> None:
        with self._lock:
            for t, v in zip(texts, vectors, strict=True):
                self._vectors[t] = v
                self._vectors.move_to_end(t)
            while len(self._vectors) > self.max_texts:
                self._vectors.popitem(last=False)

    def warm(self, chunks: Iterable[Chunk], batch: int = 512,
             stop: Callable[[], bool] = lambda: False) -> int:
        """Embed the pieces of these chunks ahead of any question, `batch` texts at a time,
        until the cache is full or `stop()` says so; returns how many texts were embedded.
        `stop()` is asked every `STOP_CHECK_TEXTS` texts: a bot closing mid-batch waits for
        a few of them (well under a second), not for the whole batch (about ten seconds on
        two cores)."""
        done = 0
        pending: dict[str, None] = {}

        def embed(texts: list[str]) -> int:
            for at in range(0, len(texts), STOP_CHECK_TEXTS):
                if stop():
                    return at
                part = texts[at:at + STOP_CHECK_TEXTS]
                self._keep(part, self.embedder.embed_documents(part))
            return len(texts)

        for chunk in chunks:
            if stop() or len(self._vectors) + len(pending) >= self.max_texts:
                break
            hits = [Hit(chunk, 0.0)]
            texts, groups, sections = piece_texts(all_quotes(hits), hits)
            with self._lock:
                pending.update((t, None) for t in [*texts, *groups.values(), *sections]
                               if t not in self._vectors)
            if len(pending) >= batch:
                done, pending = done + embed(list(pending)), {}
        return done + embed(list(pending))


# How many texts `PieceVectors.warm` embeds between two looks at whether to stop.
STOP_CHECK_TEXTS = 64


# How much a piece the last answer already quoted weighs: a follow-up ("how is it different
# from pretraining?") searched with the last question's terms finds the same passages, and
# its answer repeated the last one word for word.
REPEATED_WEIGHT = 0.25


def _spoken(text: str) -> str:
    """Text as compared for repeats: no Markdown, quote marks or citations; lower case."""
    lines = (line.removeprefix(">").strip() for line in text.splitlines())
    return " ".join(plain(CITATION.sub(" ", " ".join(lines))).lower().split())


def already_said(quotes: Sequence[Quote], said: str) -> list[bool]:
    """Per piece, whether an earlier answer's text holds it whole."""
    told = _spoken(said)
    return [len(q.text) > 20 and _spoken(q.text) in told for q in quotes]


class QuoteSelector:
    """Builds quote-first answers from retrieved passages."""

    def __init__(self, embedder: Embedder, weights: QuoteWeights = FITTED_QUOTE_WEIGHTS) -> None:
        self.embedder = embedder
        self.weights = weights
        self.vectors = PieceVectors(embedder)

    def extract(self, question: str, hits: Sequence[Hit], idf: TermWeights,
                said: str = "") -> Extract:
        """The quote-first answer to a question from its passages; in a conversation, the
        pieces the last answer (`said`) already quoted weigh less (`REPEATED_WEIGHT`)."""
        quotes = all_quotes(hits)
        if not quotes:
            return Extract("", (), ())
        features = quote_features(question, quotes, hits, self.embedder, idf, self.vectors)
        p = self.weights.probability(features)
        if said:
            p = np.where(already_said(quotes, said), p * REPEATED_WEIGHT, p)
        defining = ((features[:, FEATURES.index("defines")] > 0)
                    | np.array(opens_section_on(quotes, hits, question), dtype=bool))
        aside = back_matter(hits, question)
        # The passages the question names, else those under a heading that names it, else,
        # for a question that is only a term, the first passage when it alone names the term
        # (gate.names_term; Assistant.with_term_passage puts one there when the search found
        # only passages that use the word). A heading naming half of a term of several words
        # ("3.2 Attention" for "paged attention?") titles it only when no passage names the
        # whole term ("greedy decoding downside" and a section "Greedy decoding").
        scope = referenced(question, hits)
        topic = asked_topic(question)
        if scope is not None and topic:
            # "What does the week 2 guide say about hallucination?": of the guide's passages,
            # those that use the word, not its welcome.
            scope = [i for i in scope if not topic_unused(topic, [hits[i].chunk])] or scope
        if scope is None:
            asked = asked_term(question)
            naming = [i for i, hit in enumerate(hits) if names_term(hit, asked)]
            titles = titled(question, hits)
            if len(set(asked)) > 1 and naming:
                titles = [i for i in titles if i in naming]
            titles = with_subsections(hits, titles)
            scope = titles or (naming if naming == [0] else None)
        title = title_block(hits, scope) if asks_for_authors(question) else None
        if title is not None:
            return compose([title], [0], [])
        if asks_for_overview(question) and scope is not None and 0 in scope:
            # What a named document is about: its opening, which Assistant.with_opening puts
            # first, read in order.
            opening = opening_pieces(quotes)
            if opening:
                return compose(quotes, opening, [n for n in scope if n != 0])
        chosen = select(quotes, p, question, scope, aside, list(defining), idf)
        best = float(p[chosen[0]])
        owner = np.array([q.passage for q in quotes])
        quoted = {quotes[i].passage for i in chosen}
        # "More in [n]" never points to a paper's references or acknowledgements either.
        strong = [n for n in range(len(hits)) if n not in quoted and n not in aside
                  and p[owner == n].max(initial=0.0) >= KEEP_RATIO * best]
        return compose(quotes, chosen, strong)

    def nearest_pieces(self, question: str, hits: Sequence[Hit]) -> np.ndarray:
        """Per passage, the highest cosine of the question with one of its pieces (each
        sentence, item or row as the selector embeds it, with its section): how near its
        nearest sentence is, where the passage's own vector averages all it says. -1 for a
        passage without pieces."""
        nearest = np.full(len(hits), -1.0)
        quotes = all_quotes(hits)
        if not quotes:
            return nearest
        texts, _, _ = piece_texts(quotes, hits)
        cosine = self.vectors(texts) @ self.embedder.embed_query(question)
        np.maximum.at(nearest, [q.passage for q in quotes], cosine)
        return nearest


def by_nearest_piece(hits: Sequence[Hit], nearest: np.ndarray, k: int) -> list[Hit]:
    """The k of a deeper search's passages (best first) that rank best by both the search
    and their nearest piece (`QuoteSelector.nearest_pieces`), fused by reciprocal rank, then
    the lexical retriever's best when it is not among them: a passage whose one sentence
    answers the question ("To improve the training stability, we normalize the input of each
    transformer sub-layer") ranks low by its whole text when the rest of it is about
    something else."""
    piece_rank = np.empty(len(hits), dtype=int)
    piece_rank[np.argsort(-np.asarray(nearest), kind="stable")] = np.arange(len(hits))
    fused = [1 / (PIECE_RRF + n) + 1 / (PIECE_RRF + piece_rank[n]) for n in range(len(hits))]
    kept = [hits[n] for n in sorted(range(len(hits)), key=lambda n: -fused[n])[:k]]
    return kept + [hit for hit in hits if hit.lexical_rank == 0 and hit not in kept]
