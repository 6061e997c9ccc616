"""BM25 over the live chunks, as a sparse matrix so a query costs a few row sums.

Each chunk is indexed with its header (folder, file name and heading path, see
`Chunk.lexical_text`) so that "the week 6 guide's practical takeaway" finds the bullets under
that heading in that file even though the bullets never name either. Tokens are
number-aware: "2,638" and "2638" are one token, and a mixed token keeps its parts as well
("week6" also gives "week" and "6", "48gb" gives "48" and "gb").
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np
from scipy import sparse

_PLAIN = re.compile(r"[a-z0-9]+")
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)*")
_PARTS = re.compile(r"[a-z]+|[0-9]+(?:\.[0-9]+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "about",
        "also",
        "me",
        "my",
        "our",
        "us",
    ]
)
# Typo correction only considers words at least this long: shorter ones are too ambiguous.
_MIN_FUZZY_LEN = 4
# Words at least this long may be two edits from their correction ("halucinaton"); shorter
# ones one ("atention"): two edits from a short word reach too many other words.
_TWO_EDITS_LEN = 8
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Corrections an index remembers (then it forgets them all and starts again).
_MAX_CORRECTED = 4096


# Greek letters by name, as students type them ("dpo beta?") and the materials do not (β);
# Unicode spells lambda "lamda".
_GREEK_NAMES = {c: f" {unicodedata.name(chr(c)).split()[-1].lower().replace('lamda', 'lambda')} "
                for c in range(ord("α"), ord("ω") + 1)}


def normalise(text: str) -> str:
    """NFKC, lower case, Greek letters by name, and no thousands separators between digits."""
    return _THOUSANDS.sub("", unicodedata.normalize("NFKC", text).lower().translate(_GREEK_NAMES))


@lru_cache(maxsize=100_000)
def _stem(token: str) -> str:
    """Plural 's' stripped (heads → head); numbers and short words unchanged."""
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss") and token.isalpha():
        return token[:-1]
    return token


_SUFFIXES = ("isations", "izations", "isation", "ization", "ations", "ation", "ising", "izing",
             "ised", "ized", "ises", "izes", "ise", "ize", "ing", "ed", "es", "ly", "s")


@lru_cache(maxsize=1 << 16)
def stem(term: str) -> str:
    """A crude suffix stripper, so `quantised`, `quantization` and `quantizing` meet: the
    grounding checker's terms and the names a question gives documents and sections
    (references.py). The index's own terms use `_stem`."""
    for suffix in _SUFFIXES:
        if term.endswith(suffix) and len(term) - len(suffix) >= 4:
            return term[: -len(suffix)]
    return term


def words(text: str) -> list[str]:
    """The raw word tokens of a text after `normalise`, stopwords included."""
    return _WORD.findall(normalise(text))


def index_terms(text: str) -> list[str]:
    """Index terms: words without stopwords, stemmed, with the parts of mixed tokens."""
    out = []
    for word in words(text):
        parts = _PARTS.findall(word)
        for token in (word, *parts) if len(parts) > 1 else (word,):
            if token not in STOPWORDS:
                out.append(_stem(token))
    return out


def tokenize(text: str) -> list[str]:
    """Plain word tokens without stopwords, with plural 's' stripped (heads → head).

    The grounding checker's tokenizer; the lexical index uses the richer `index_terms`.
    """
    out = []
    for tok in _PLAIN.findall(text.lower().translate(_GREEK_NAMES)):
        if tok in STOPWORDS:
            continue
        if len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss"):
            tok = tok[:-1]
        out.append(tok)
    return out


class BM25Index:
    """Okapi BM25 (k1=1.2, b=0.75) with precomputed per-term document weights.

    Each chunk's term counts are kept beside its weights (4 bytes per weight), so that
    `updated` can make the index of the next version's chunks by tokenising only the chunks
    this one lacks.
    """

    def __init__(self, ids: Sequence[str], texts: Iterable[str], k1: float = 1.2, b: float = 0.75):
        vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[int] = []
        ids = list(ids)
        lengths = np.zeros(len(ids), dtype=np.float32)
        for doc, text in enumerate(texts):
            counts = _term_counts(text, vocab)
            lengths[doc] = sum(counts.values())
            rows.extend(counts)
            cols.extend([doc] * len(counts))
            tfs.extend(counts.values())
        self._fill(ids, vocab, (rows, cols, tfs), lengths, k1, b, _deletion_index(vocab))

    def _fill(
        self,
        ids: list[str],
        vocab: dict[str, int],
        entries: tuple[Sequence[int], Sequence[int], Sequence[int]],
        lengths: np.ndarray,
        k1: float,
        b: float,
        deletes: dict[str, tuple[str, ...]],
    ) -> None:
        """Set the index from (term id, doc, count) entries: idf, weights and lookups."""
        self.ids, self.vocab, self.k1, self.b = ids, vocab, k1, b
        rows, cols = (np.asarray(e, dtype=np.int64) for e in entries[:2])
        tfs = np.asarray(entries[2], dtype=np.float32)
        counts = sparse.csr_matrix((tfs, (rows, cols)), shape=(len(vocab), len(ids)),
                                   dtype=np.float32)
        n_docs = len(ids)
        df = np.bincount(rows, minlength=len(vocab))
        self._idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        self._lengths = lengths
        self._tf = counts.data  # aligned with self.weights.data (same indices and indptr)
        self.weights = self._weights(counts, lengths, k1, b)
        self._column = {doc_id: i for i, doc_id in enumerate(self.ids)}
        # A word the corpus never uses is the strongest sign a question is off-topic.
        self._unseen_idf = float(np.log1p((n_docs + 0.5) / 0.5))
        self._deletes = deletes
        # Corrections already found: a question is read by the search, the gate and the quote
        # selector, and a long unknown word costs milliseconds.
        self._corrected: dict[tuple[str, tuple[str, ...]], str | None] = {}

    def _weights(
        self, counts: sparse.csr_matrix, lengths: np.ndarray, k1: float, b: float
    ) -> sparse.csr_matrix:
        """BM25 weight of each (term, doc) count, in the counts' sparsity structure."""
        if not counts.nnz:
            return sparse.csr_matrix(counts.shape, dtype=np.float32)
        tf = counts.data
        r = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        c = counts.indices
        norm = k1 * (1 - b + b * lengths[c] / max(float(lengths.mean()), 1.0))
        data = self._idf[r] * tf * (k1 + 1) / (tf + norm)
        return sparse.csr_matrix((data, counts.indices.copy(), counts.indptr.copy()),
                                 shape=counts.shape, dtype=np.float32)

    def holds(self, ids: Iterable[str]) -> int:
        """How many of these chunk ids this index holds."""
        return sum(i in self._column for i in ids)

    def updated(
        self, ids: Sequence[str], texts_of: Callable[[list[str]], Iterable[tuple[str, str]]]
    ) -> BM25Index:
        """The index of the chunks `ids`, in that order: the same index as `BM25Index` built
        from their texts, but only the chunks this index lacks are read (`texts_of(missing)`
        yields their (id, text); an id it does not yield is left out) and tokenised.

        Chunk ids name content (a hash of source, page, section and text), so what this index
        knows of a chunk holds in any version that lists it.
        """
        wanted = list(dict.fromkeys(ids))
        if wanted == self.ids:
            return self
        missing = [i for i in wanted if i not in self._column]
        fresh = dict(texts_of(missing)) if missing else {}
        wanted = [i for i in wanted if i in self._column or i in fresh]
        old_cols = np.asarray([self._column.get(i, -1) for i in wanted], dtype=np.int64)
        vocab, kept_entries, lengths, gone = self._kept(old_cols)
        kept_terms = len(vocab)  # the new chunks' terms are added after these
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[int] = []
        for doc in np.flatnonzero(old_cols < 0).tolist():
            counts = _term_counts(fresh[wanted[doc]], vocab)
            lengths[doc] = sum(counts.values())
            rows.extend(counts)
            cols.extend([doc] * len(counts))
            tfs.extend(counts.values())
        entries = tuple(np.concatenate([old, np.asarray(new, dtype=old.dtype)])
                        for old, new in zip(kept_entries, (rows, cols, tfs), strict=True))
        added = list(itertools.islice(vocab, kept_terms, None))
        index = BM25Index.__new__(BM25Index)
        index._fill(wanted, vocab, entries, lengths, self.k1, self.b,  # type: ignore[arg-type]
                    _updated_deletions(self._deletes, gone, added))
        return index

    def _kept(
        self, old_cols: np.ndarray
    ) -> tuple[dict[str, int], tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, list[str]]:
        """For a new index whose doc i is this index's doc `old_cols[i]` (-1: a new doc): the
        vocabulary of the kept docs (in this index's order), their (term id, doc, count)
        entries, the doc lengths (0 for new docs), and the terms no kept doc uses."""
        kept = np.flatnonzero(old_cols >= 0)
        by_doc = sparse.csr_matrix((self._tf, self.weights.indices, self.weights.indptr),
                                   shape=self.weights.shape).tocsc()
        counts = by_doc[:, old_cols[kept]].tocoo()
        used = np.bincount(counts.row, minlength=len(self.vocab)) > 0
        lengths = np.zeros(len(old_cols), dtype=np.float32)
        lengths[kept] = self._lengths[old_cols[kept]]
        docs = kept[counts.col].astype(np.int64)
        if used.all():  # every term is still used: the same ids
            return dict(self.vocab), (counts.row.astype(np.int64), docs, counts.data), lengths, []
        terms = list(self.vocab)
        remap = np.cumsum(used) - 1
        names = list(itertools.compress(terms, used.tolist()))
        vocab = dict(zip(names, range(len(names)), strict=True))
        gone = list(itertools.compress(terms, (~used).tolist()))
        return vocab, (remap[counts.row], docs, counts.data), lengths, gone

    def __len__(self) -> int:
        return len(self.ids)

    def knows(self, term: str) -> bool:
        """Whether any indexed chunk contains the term."""
        return term in self.vocab

    def correction(self, term: str, context: Sequence[str] = ()) -> str | None:
        """The indexed term an unknown term most likely misspells, or None: the fewest edits
        away (one, or two for a word of `_TWO_EDITS_LEN` letters or more), then the one that
        meets more of the `context` (the question's other terms) in one passage ("chain of
        thougth": thought, not though), then the most common. An edit is a deleted, inserted,
        replaced or swapped letter ("temprature", "trainnig"). The first letter must stay:
        typists rarely miss it, and changing it turns words into others ("dinner", "inner").
        """
        if term in self.vocab or len(term) < _MIN_FUZZY_LEN or not term.isalpha():
            return None
        key = (term, tuple(context))
        if key not in self._corrected:
            if len(self._corrected) >= _MAX_CORRECTED:
                self._corrected.clear()
            self._corrected[key] = self._nearest(term, context)
        return self._corrected[key]

    def _nearest(self, term: str, context: Sequence[str]) -> str | None:
        """`correction` of an unknown term, worked out."""
        found = {t: 1 for t in self._near(term) if t[0] == term[0] and edits(term, t) == 1}
        if not found and len(term) >= _TWO_EDITS_LEN:
            # Two edits: one edit away from a word one edit away from the term.
            near = {t for word in _one_edit(term) if word[0] == term[0]
                    for t in self._near(word) if t[0] == term[0]}
            found = {t: 2 for t in near if edits(term, t) == 2}
        if not found:
            return None
        meets = self._meeting(found, context) if len(found) > 1 else {}
        return min(found, key=lambda t: (found[t], -meets.get(t, 0.0), self._idf[self.vocab[t]],
                                         t))

    def _meeting(self, candidates: Iterable[str], context: Sequence[str]) -> dict[str, float]:
        """For each candidate term, the summed idf of the context terms its best passage holds."""
        candidates = list(candidates)
        known = [self.vocab[t] for t in dict.fromkeys(context) if t in self.vocab]
        if not known:
            return {}
        present = (self.weights[known] > 0).astype(np.float32)
        together = np.asarray(present.T @ self._idf[known]).ravel()
        rows = self.weights[[self.vocab[t] for t in candidates]]
        return {t: float(together[rows.indices[rows.indptr[i]:rows.indptr[i + 1]]].max(
                    initial=0.0))
                for i, t in enumerate(candidates)}

    def _near(self, word: str) -> set[str]:
        """Indexed terms that may be one edit from a word, through the index of single-letter
        deletions: a superset (two deletions at different places are two edits), to check."""
        found = set(self._deletes.get(word, ()))
        for i in range(len(word)):
            shorter = word[:i] + word[i + 1 :]
            if len(shorter) >= _MIN_FUZZY_LEN and shorter in self.vocab:
                found.add(shorter)
            found.update(self._deletes.get(shorter, ()))
        return found

    def search(self, terms: Mapping[str, float], n: int) -> list[tuple[str, float]]:
        """The n best (id, score) pairs with a positive score for weighted query terms."""
        known = [(self.vocab[t], w) for t, w in terms.items() if t in self.vocab]
        if not known or n <= 0 or not self.ids:
            return []
        rows = [tid for tid, _ in known]
        weights = np.asarray([w for _, w in known], dtype=np.float32)
        scores = np.asarray(self.weights[rows].T @ weights).ravel()
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def coverage(self, terms: Sequence[str], ids: Sequence[str]) -> dict[str, float]:
        """For each id: the idf-weighted share of the query's distinct terms the chunk contains.

        Unlike a raw BM25 score, this does not grow with the length of the question, so a
        short question and a long one can be judged on the same scale.
        """
        terms = list(dict.fromkeys(terms))
        if not terms:
            return dict.fromkeys(ids, 0.0)
        known = [self.vocab[t] for t in terms if t in self.vocab]
        idf = self._idf[known]
        total = float(idf.sum()) + self._unseen_idf * (len(terms) - len(known))
        cols = [self._column.get(i, -1) for i in ids]
        present = self.weights[known][:, [c for c in cols if c >= 0]].toarray() > 0
        shares = (idf[:, None] * present).sum(axis=0) / total
        out, k = {}, 0
        for doc_id, col in zip(ids, cols, strict=True):
            if col < 0 or not known:
                out[doc_id] = 0.0
            else:
                out[doc_id] = float(shares[k])
                k += 1
        return out


def _term_counts(text: str, vocab: dict[str, int]) -> dict[int, int]:
    """How often each index term occurs in a text, by term id (new terms join `vocab`)."""
    counts: dict[int, int] = {}
    for tok in index_terms(text):
        tid = vocab.setdefault(tok, len(vocab))
        counts[tid] = counts.get(tid, 0) + 1
    return counts


def edits(a: str, b: str) -> int:
    """The optimal string alignment distance: how many letters must be deleted, inserted,
    replaced or swapped with their neighbour to turn one word into the other."""
    previous, current = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        before, previous = previous, current
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if (before is not None and j > 1 and a[i - 1] == b[j - 2]
                    and a[i - 2] == b[j - 1]):
                current[j] = min(current[j], before[j - 2] + 1)
    return current[len(b)]


def _one_edit(word: str) -> set[str]:
    """Every string one deleted, swapped, replaced or inserted letter away from a word."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return ({a + b[1:] for a, b in splits if b}
            | {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
            | {a + c + b[1:] for a, b in splits if b for c in _LETTERS}
            | {a + c + b for a, b in splits for c in _LETTERS})


def _deletions(term: str) -> list[str]:
    """The single-letter deletions of a term typo correction considers (none if too short)."""
    if len(term) > _MIN_FUZZY_LEN and term.isalpha():
        return [term[:i] + term[i + 1 :] for i in range(len(term))]
    return []


def _deletion_index(vocab: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Every single-letter deletion of each alphabetic term, mapped back to its terms."""
    index: dict[str, list[str]] = {}
    for term in vocab:
        for shorter in _deletions(term):
            index.setdefault(shorter, []).append(term)
    return {k: tuple(v) for k, v in index.items()}


def _updated_deletions(
    index: Mapping[str, tuple[str, ...]], removed: Iterable[str], added: Iterable[str]
) -> dict[str, tuple[str, ...]]:
    """A deletion index with the removed terms taken out and the added ones put in (a new
    dict: the index it came from may still be searched)."""
    out = dict(index)
    gone = set(removed)
    for term in gone:
        for shorter in _deletions(term):
            if shorter in out:
                left = tuple(t for t in out[shorter] if t not in gone)
                if left:
                    out[shorter] = left
                else:
                    del out[shorter]
    for term in added:
        for shorter in _deletions(term):
            out[shorter] = (*out.get(shorter, ()), term)
    return out
