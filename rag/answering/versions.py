"""Questions about something the materials never mention: a version of a model family, or a
name.

"How many parameters does GPT-5 have?" retrieves passages about GPT-3 that look relevant
enough to pass the abstention gate, and quoting them would answer a different question. The
materials name model families with versions ("GPT-3", "GPT-4", "LLaMA-65B" is a size, not a
version), so a question naming a version of a family the materials know, in a form they never
use, asks about something they don't cover; so does one naming a family they never name at
all with a version ("Phi-3"). Only written-together forms count ("GPT-5",
"gpt5", "Llama-4", "Qwen2.5"): "rank 8" or "week 6" are not names. Families of number formats
and hardware ("int4", "fp16", "top-5", "utf-8") are left alone, and a family the materials
name only once is not recognised as one.

The same holds for names: "How does XGBoost handle missing values?" retrieves the LoRA paper's
hyperparameter tables, close enough to pass the gate. A name here is a word with a capital
inside it ("XGBoost", "DoRA"), a capitalised word that does not open a sentence
("Kubernetes", "Stable Diffusion") or a compound joined by hyphens ("grouped-query"); it is
unknown when no word of the materials (their text and file names) is the same after
lower-casing and dropping hyphens and dots ("gpt4" is "GPT-4"), its singular, or one typing
slip away ("Chinchila": a letter missing, extra or changed, or two neighbours swapped; two
slips make another word, "ALiBi" is not "Albin"), and a compound is known when its parts
are ("human-labelled"). Words with digits are left to the version rule ("hw1", "A100"), and
greetings ("Hi", "Thanks") are not names.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable

from rag.index.chroma_store import ChromaStore

# A family name written with its version: "GPT-5", "gpt5", "Llama-3.1", "Qwen2.5", "GPT-4o".
_NAME = r"(?<![\w.-])([a-z]{{2,12}}){}(\d{{1,2}}(?:\.\d{{1,2}})?[a-z]?)(?![\w.]*\d)"
_VERSIONED = re.compile(_NAME.format("-?"), re.IGNORECASE)
# The materials' side also counts "Llama 2" written with a space as a mention of llama-2.
_VERSIONED_SPACED = re.compile(_NAME.format("[- ]?"), re.IGNORECASE)
# Prefixes of number formats, encodings, ranks and hardware rather than model families.
NOT_FAMILIES = frozenset({
    "int", "uint", "fp", "bf", "float", "top", "utf", "sha", "md", "rtx", "gtx", "cuda", "sm",
    "python", "py", "ubuntu", "torch", "pytorch", "cu", "rank", "layer", "step", "week",
    "class", "lab", "task", "part", "chapter", "section", "table", "fig", "figure", "eq", "page",
    # A student's coursework and chat: "hw1", "eli5".
    "hw", "homework", "assignment", "lecture", "lec", "project", "proj", "quiz", "exam", "ex",
    "exercise", "problem", "prob", "question", "unit", "module", "eli",
})
_SIZE_UNITS = frozenset("bmkt")
# A family must appear with this many distinct versions before an unseen one is refused.
MIN_VERSIONS = 2

_TOKEN = re.compile(r"[^\W\d_][\w'’.-]*[^\W_]|[^\W\d_]")
# What comes right before the first word of a sentence, a line, a quote or a bracket.
_OPENS = re.compile(r"(?:^|[.!?:;]\s+|\n\s*|[\"“(\[¿¡]\s*)$")
# Capitalised words that address or thank rather than name.
_NOT_NAMES = frozenset({"i", "im", "ive", "id", "hi", "hey", "hello", "thanks", "thank", "please",
                        "ok", "okay", "pls", "btw", "lol", "sorry", "bot"})
# A word in a sentence that ends in a full stop or "!" within 300 characters, not a question
# mark (bounded, so a long run of hyphenated words costs linear time).
_STATEMENT_END = re.compile(r"[^.!?]{0,300}[.!](?:\s|$)")
# Names at least this long may differ from a word of the materials by one slip.
_SLIP_MIN = 5
# A name the materials use in at most this many passages is what those passages are about
# (`VersionCatalogue.rare_names`); one of fewer letters and digits is too short to tell.
RARE_NAME_TEXTS, RARE_NAME_CHARS = 3, 4
# A question that opens by asking how a kind of thing works or what it is: "How does
# speculative decoding ...", "What is contrastive search?". Measured on our question sets
# (docs/benchmarks.md, run 50): no in-scope question of them opens so with a qualifier the
# materials never use, while off-topic ones about techniques they never name do.
KIND_QUALIFIER_CHARS = 5
_ASKS_ABOUT_KIND = re.compile(
    r"^\W*(?:(?:so|and|ok|okay)[, ]+)?(?:how\s+(?:does|do|is|are|can|would|could)|"
    r"what\s+(?:is|are)|what's|whats|explain|describe)\s+(?:an?\s+|the\s+)?"
    rf"(?P<qualifier>[A-Za-z]{{{KIND_QUALIFIER_CHARS},}})\s+(?P<thing>[A-Za-z][\w-]*)",
    re.IGNORECASE)
# Verbs that follow a subject of one word ("How does photosynthesis convert ..."): the word
# before them is the thing asked about, not a qualifier.
_ACTS = frozenset({
    "work", "works", "help", "handle", "compare", "differ", "affect", "improve", "reduce",
    "relate", "make", "use", "get", "add", "convert", "change", "fit", "scale", "learn",
    "perform", "speed", "avoid", "deal", "mean", "do", "cause", "lead", "replace", "stand",
    "need", "require", "increase", "decrease", "prevent", "solve", "compute", "generate",
    "produce", "create", "keep", "store", "run", "train", "decide", "choose", "select",
    "matter", "happen", "apply", "extend", "enable", "allow", "differs", "compares"})
# A word of letters and digits: "DeepSeek-R1", "OPT-175B", "GPT-3".
_LETTERS_AND_DIGITS = re.compile(r"[^\W\d_].*\d|\d.*[^\W\d_]")
_INNER_CAPITAL = re.compile(r"[a-z][A-Z]")


def _norm(word: str) -> str:
    """`GPT-4` and `gpt4` alike: lower case, letters and digits only."""
    return re.sub(r"[\W_]", "", word.lower())


def normalised_words(text: str) -> set[str]:
    """A text's words as written whole ("DeepSeek-R1"), normalised (`_norm`: "deepseekr1")."""
    return {_norm(token) for token in _TOKEN.findall(text)}


def names(question: str) -> list[str]:
    """The names a question uses, as written: words with an inner capital ("XGBoost"),
    capitalised words that do not open a sentence, line or quote ("Kubernetes") and words
    joined by hyphens in a sentence that asks ("grouped-query": a compound names a thing as
    a name does; one in a student's telling of their own story, "I found it mind-numbing.",
    names no topic); not words with digits (the version rule's) nor greetings."""
    found = []
    for match in _TOKEN.finditer(question):
        word = re.sub(r"['’]s$", "", match.group(0).rstrip(".'’"))
        if any(ch.isdigit() for ch in word) or _norm(word) in _NOT_NAMES:
            continue
        inner = any(ch.isupper() for ch in word[1:]) or (
            "-" in word.strip("-") and _STATEMENT_END.match(question, match.end()) is None)
        if inner or (word[0].isupper() and not _OPENS.search(question[: match.start()])):
            found.append(word)
    return list(dict.fromkeys(found))


class Vocabulary:
    """Every word of the materials, normalised, to tell a name they use from one they don't."""

    def __init__(self, texts: Iterable[str]) -> None:
        words: set[str] = set()
        # How many texts (passages, file names) use each word as written whole ("deepseekr1").
        self.texts_using: Counter[str] = Counter()
        for text in texts:
            whole = normalised_words(text)
            self.texts_using.update(whole)
            words |= whole
            for token in _TOKEN.findall(text):
                words.update(_norm(part) for part in re.split(r"[-.'’]", token) if part)
        words.discard("")
        self.words = frozenset(words)
        # Each long word with one letter dropped, and where: a name one slip away (a letter
        # missing or extra) is one of these, and one with a letter changed (or two neighbours
        # swapped) shares one with it, dropped at the same place (or the next).
        self._dropped_at = frozenset((w[:i] + w[i + 1:], i) for w in words
                                     if len(w) >= _SLIP_MIN for i in range(len(w)))
        self._dropped = frozenset(d for d, _ in self._dropped_at)

    def knows(self, name: str) -> bool:
        """Whether the materials use this name, its singular, or a word one slip away; a name
        joined by hyphens from words they use ("Chinchilla-optimal", "LoRA-style") too."""
        word = _norm(name)
        if word in self.words or (word.endswith("s") and word[:-1] in self.words):
            return True
        parts = [part for part in name.split("-") if part]
        if len(parts) > 1 and all(self.knows(part) for part in parts):
            return True
        if len(word) < _SLIP_MIN:
            return False
        if word in self._dropped:
            return True
        for i in range(len(word)):
            d = word[:i] + word[i + 1:]
            if d in self.words or any((d, j) in self._dropped_at for j in (i - 1, i, i + 1)):
                return True
        return False


def versioned_names(text: str, spaced: bool = False) -> set[tuple[str, str]]:
    """The (family, version) pairs a text names, lower case, written together ("GPT-4",
    "gpt4") or with `spaced` also apart ("GPT 4"); sizes ("LLaMA-65B", "7b") are not
    versions."""
    pattern = _VERSIONED_SPACED if spaced else _VERSIONED
    return {(f.lower(), v.lower()) for f, v in pattern.findall(text)
            if f.lower() not in NOT_FAMILIES and v[-1].lower() not in _SIZE_UNITS}


class VersionCatalogue:
    """The model families the materials name with versions, the versions they name, and
    every word they use."""

    def __init__(self, texts: Iterable[str]) -> None:
        together: dict[str, set[str]] = defaultdict(set)
        apart: dict[str, set[str]] = defaultdict(set)
        texts = list(texts)
        self.vocabulary = Vocabulary(texts)
        for text in texts:
            for family, version in versioned_names(text):
                together[family].add(version)
            for family, version in versioned_names(text, spaced=True):
                apart[family].add(version)
        # A family is one the materials write with at least two versions ("GPT-3", "GPT-4");
        # its known versions include those written apart ("GPT 3.5").
        self.families = {f: frozenset(v | apart[f]) for f, v in together.items()
                         if len(v) >= MIN_VERSIONS}

    def unknown(self, question: str) -> list[str]:
        """The versions of known families that the question names and the materials don't
        ("gpt-5" when they speak of GPT-2, GPT-3 and GPT-4), and names written with a version
        whose family the materials never use ("Phi-3", "Qwen2.5": neither the family nor the
        name as written is a word of theirs; no typing slip is forgiven here, since "Gemma"
        is no slip of "gamma")."""
        return sorted(f"{family}-{version}" for family, version in versioned_names(question)
                      if (version not in self.families[family] if family in self.families
                          else not self.vocabulary.words & {family, _norm(family + version)}))

    def unknown_names(self, question: str) -> list[str]:
        """The names the question uses and the materials never do, as written."""
        return [n for n in names(question) if not self.vocabulary.knows(n)]

    def unknown_kinds(self, question: str) -> list[str]:
        """A kind of thing the question asks about (`asked_kind`: "How does speculative
        decoding speed up inference?") whose qualifier the materials never use while they
        use the thing ("decoding"): they discuss other kinds of it, not this one."""
        kind = asked_kind(question)
        if kind is None:
            return []
        qualifier, thing = kind
        if (self.vocabulary.knows(qualifier) or not self.vocabulary.knows(thing)
                or qualifier in self.unknown_names(question)):
            return []
        return [f"{qualifier} {thing}"]

    def rare_names(self, question: str) -> list[str]:
        """The names of things made the question uses (`asked_names`: "DeepSeek-R1",
        "OPT-175B") that at most `RARE_NAME_TEXTS` of the materials' passages use, written as
        the question writes them ("L2" is too short to tell anything)."""
        return [name for name in asked_names(question)
                if 0 < self.vocabulary.texts_using[_norm(name)] <= RARE_NAME_TEXTS]


def asked_kind(question: str) -> tuple[str, str] | None:
    """The qualifier and the thing a question opens by asking about ("How does speculative
    decoding work?", "What is contrastive search?": ("speculative", "decoding")), a qualifier
    of at least `KIND_QUALIFIER_CHARS` letters; None for other questions."""
    found = _ASKS_ABOUT_KIND.match(question)
    if found is None or found["thing"].lower() in _ACTS:
        return None
    return found["qualifier"], found["thing"]


def asked_names(question: str) -> list[str]:
    """The names of things made a question uses: words with a capital inside
    ("PagedAttention") or of letters and digits ("DeepSeek-R1", "OPT-175B"), at least
    `RARE_NAME_CHARS` letters and digits long. A capitalised word alone ("Eiffel") is as
    often a place or a person the materials mention in an example."""
    asked = (m.group(0) for m in _TOKEN.finditer(question))
    return [name for name in dict.fromkeys(asked) if len(_norm(name)) >= RARE_NAME_CHARS
            and (_LETTERS_AND_DIGITS.search(name) or _INNER_CAPITAL.search(name))]


MAX_CATALOGUES = 2


class VersionIndex:
    """A `VersionCatalogue` of an index's current chunks, rebuilt when the index changes or
    material is released."""

    def __init__(self, store: ChromaStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        # The index version the catalogues were built for, and one catalogue per set of
        # unreleased chunks (students' and an instructor's preview, which sees everything).
        self._version: object = None
        self._built: dict[frozenset[str], VersionCatalogue] = {}

    def catalogue(self, unreleased: frozenset[str] = frozenset()) -> VersionCatalogue:
        """The catalogue of the live index without the `unreleased` chunks (and the names of
        files with nothing released): a name only upcoming material uses is not known yet."""
        version = self.store.version()
        with self._lock:
            if version != self._version:
                self._version, self._built = version, {}
            if unreleased not in self._built:
                if len(self._built) >= MAX_CATALOGUES:  # a release time has passed
                    self._built.clear()
                manifest = self.store.manifest()
                ids = [cid for e in manifest.values() for cid in e.chunk_ids
                       if cid not in unreleased]
                files = [path for path, e in manifest.items()
                         if not e.chunk_ids or not unreleased.issuperset(e.chunk_ids)]
                texts = [*(t for _, t in self.store.iter_texts(ids)), *files]
                self._built[unreleased] = VersionCatalogue(texts)
            return self._built[unreleased]
