"""BM25 over the live chunks, as a sparse matrix so a query costs a few row sums."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from scipy import sparse

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
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


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens without stopwords, with plural 's' stripped (heads → head)."""
    out = []
    for tok in _TOKEN.findall(text.lower()):
        if tok in _STOPWORDS:
            continue
        if len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss"):
            tok = tok[:-1]
        out.append(tok)
    return out


class BM25Index:
    """Okapi BM25 (k1=1.2, b=0.75) with precomputed per-term document weights."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str], k1: float = 1.2, b: float = 0.75):
        self.ids = list(ids)
        self.vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[int] = []
        lengths = np.zeros(len(texts), dtype=np.float32)
        for doc, text in enumerate(texts):
            counts: dict[int, int] = {}
            tokens = tokenize(text)
            lengths[doc] = len(tokens)
            for tok in tokens:
                tid = self.vocab.setdefault(tok, len(self.vocab))
                counts[tid] = counts.get(tid, 0) + 1
            rows.extend(counts)
            cols.extend([doc] * len(counts))
            tfs.extend(counts.values())
        self.weights = self._weights(rows, cols, tfs, lengths, k1, b)
        self._column = {doc_id: i for i, doc_id in enumerate(self.ids)}
        df = np.bincount(np.asarray(rows, dtype=np.int64), minlength=len(self.vocab))
        self._idf = np.log1p((len(texts) - df + 0.5) / (df + 0.5)).astype(np.float32)
        # A word the corpus never uses is the strongest sign a question is off-topic.
        self._unseen_idf = float(np.log1p((len(texts) + 0.5) / 0.5))

    def _weights(
        self,
        rows: list[int],
        cols: list[int],
        tfs: list[int],
        lengths: np.ndarray,
        k1: float,
        b: float,
    ) -> sparse.csr_matrix:
        n_docs = len(lengths)
        shape = (len(self.vocab), n_docs)
        if not rows:
            return sparse.csr_matrix(shape, dtype=np.float32)
        tf = np.asarray(tfs, dtype=np.float32)
        r = np.asarray(rows)
        c = np.asarray(cols)
        df = np.bincount(r, minlength=len(self.vocab)).astype(np.float32)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * lengths[c] / max(float(lengths.mean()), 1.0))
        data = idf[r] * tf * (k1 + 1) / (tf + norm)
        return sparse.csr_matrix((data, (r, c)), shape=shape, dtype=np.float32)

    def coverage(self, query: str, ids: Sequence[str]) -> dict[str, float]:
        """For each id: the idf-weighted share of the query's distinct terms the chunk contains.

        Unlike a raw BM25 score, this does not grow with the length of the question, so a
        short question and a long one can be judged on the same scale.
        """
        terms = list(dict.fromkeys(tokenize(query)))
        if not terms:
            return dict.fromkeys(ids, 0.0)
        known = [self.vocab[t] for t in terms if t in self.vocab]
        idf = self._idf[known] if known else np.zeros(0, dtype=np.float32)
        total = float(idf.sum()) + self._unseen_idf * (len(terms) - len(known))
        cols = [self._column.get(i, -1) for i in ids]
        present = self.weights[known][:, [c for c in cols if c >= 0]].toarray() > 0
        shares = (idf[:, None] * present).sum(axis=0) / total if known else None
        out, k = {}, 0
        for doc_id, col in zip(ids, cols, strict=True):
            if col < 0 or shares is None:
                out[doc_id] = 0.0
            else:
                out[doc_id] = float(shares[k])
                k += 1
        return out

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, n: int) -> list[tuple[str, float]]:
        """The n best (id, bm25 score) pairs with a positive score, best first."""
        terms = [self.vocab[t] for t in tokenize(query) if t in self.vocab]
        if not terms or n <= 0 or not self.ids:
            return []
        scores = np.asarray(self.weights[terms].sum(axis=0)).ravel()
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]
