"""The question log and feedback, in SQLite inside the data dir; statistics and export.

User ids are stored only as keyed hashes (HMAC under a secret key kept in the data dir).
Methods are synchronous and quick; the bot calls them through `asyncio.to_thread` so a slow
disk never stalls the event loop.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

SCHEMA = """
CREATE TABLE IF NOT EXISTS questions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    user_hash TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '',
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    sources TEXT NOT NULL,
    passages TEXT NOT NULL,
    model TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    abstained INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    question_id INTEGER NOT NULL REFERENCES questions(id),
    user_hash TEXT NOT NULL,
    vote INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (question_id, user_hash)
);
CREATE INDEX IF NOT EXISTS questions_created ON questions(created_at);
CREATE TABLE IF NOT EXISTS refusals (
    created_at REAL NOT NULL,
    user_hash TEXT NOT NULL,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    command TEXT NOT NULL
);
"""
USER_KEY_FILE = "user-hash.key"
EXPORT_FIELDS = (
    "id",
    "created_at",
    "user_hash",
    "channel",
    "question",
    "answer",
    "sources",
    "model",
    "latency_ms",
    "abstained",
    "up",
    "down",
)

QUESTION_LOG = "bot.sqlite3"


def question_log_path(data_dir: Path | str) -> Path:
    """Where the bot keeps its question log in a data dir."""
    return Path(data_dir) / QUESTION_LOG


def hash_user(user_id: int | str, key: bytes | str) -> str:
    """A stable pseudonym for a Discord user id: HMAC-SHA256 under the site's secret key, 16
    hex digits. Member ids are public, so without the key no one can test a guess."""
    secret = key.encode() if isinstance(key, str) else key
    return hmac.new(secret, str(user_id).encode(), hashlib.sha256).hexdigest()[:16]


def user_hash_key(data_dir: Path, configured: str | None = None) -> bytes:
    """The secret key of the user hashes: the configured one, else the data dir's own, made
    at random on first use and readable by its owner only (0600)."""
    if configured:
        return configured.encode()
    path = Path(data_dir) / USER_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".user-hash-")  # created 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(tmp, path)
        os.unlink(tmp)
    key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"{path} is damaged (shorter than 16 bytes); restore it from a backup")
    return key


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: one starting like a formula (= + - @,
    tab, carriage return) gets a leading apostrophe. Numbers are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@dataclass(frozen=True)
class LoggedAnswer:
    """What the log keeps of one answered question."""

    user_hash: str
    channel: str
    question: str
    answer: str
    sources: tuple[dict[str, Any], ...]
    passages: tuple[dict[str, Any], ...]
    model: str
    latency_ms: float
    abstained: bool


@dataclass(frozen=True)
class Stats:
    """Usage over a period."""

    since: float
    questions: int
    abstained: int
    up: int
    down: int
    top_sources: list[tuple[str, int]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    # Requests refused by a course rule ("exam"), by kind.
    refusals: dict[str, int] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """The bot's SQLite file (created with its folder if missing) in WAL mode, with `schema`
    applied: autocommit, rows by column name, usable from any thread (callers hold a lock),
    waiting up to 30 s for another writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    return db


class QuestionLog:
    """SQLite-backed log of questions, answers and feedback; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = open_database(self.path, SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def record(self, entry: LoggedAnswer, at: float | None = None) -> int:
        """Store one answered question; return its id."""
        row = (
            at if at is not None else time.time(),
            entry.user_hash,
            entry.channel,
            entry.question,
            entry.answer,
            json.dumps(list(entry.sources), ensure_ascii=False),
            json.dumps(list(entry.passages), ensure_ascii=False),
            entry.model,
            entry.latency_ms,
            int(entry.abstained),
        )
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO questions (created_at, user_hash, channel, question, answer, "
                "sources, passages, model, latency_ms, abstained) VALUES (?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            return int(cur.lastrowid or 0)

    def vote(self, question_id: int, user_hash: str, vote: int) -> bool:
        """Record (or change) one user's 👍 (+1) or 👎 (-1); False if the question is unknown."""
        if vote not in (1, -1):
            raise ValueError("vote must be +1 or -1")
        with self._lock:
            known = self._db.execute("SELECT 1 FROM questions WHERE id = ?", (question_id,))
            if known.fetchone() is None:
                return False
            self._db.execute(
                "INSERT INTO feedback (question_id, user_hash, vote, created_at) "
                "VALUES (?,?,?,?) ON CONFLICT(question_id, user_hash) "
                "DO UPDATE SET vote = excluded.vote, created_at = excluded.created_at",
                (question_id, user_hash, vote, time.time()),
            )
            return True

    def record_refusal(self, user_hash: str, channel: str, kind: str, command: str) -> None:
        """Log a request a course rule refused (e.g. a question during an exam)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO refusals (created_at, user_hash, channel, kind, command) "
                "VALUES (?,?,?,?,?)",
                (time.time(), user_hash, channel, kind, command),
            )

    def refusal_counts(self, since: float = 0.0) -> dict[str, int]:
        """How many requests each kind of course rule refused since a time."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, COUNT(*) AS n FROM refusals WHERE created_at >= ? GROUP BY kind",
                (since,),
            ).fetchall()
        return {r["kind"]: int(r["n"]) for r in rows}

    def passages(self, question_id: int) -> list[dict[str, Any]] | None:
        """The passages an answer was built from, or None for an unknown question."""
        with self._lock:
            row = self._db.execute(
                "SELECT passages FROM questions WHERE id = ?", (question_id,)
            ).fetchone()
        return None if row is None else list(json.loads(row["passages"]))

    def abstained(self, question_id: int) -> bool:
        """Whether the answer to a logged question was a refusal (False for an unknown one)."""
        with self._lock:
            row = self._db.execute(
                "SELECT abstained FROM questions WHERE id = ?", (question_id,)
            ).fetchone()
        return bool(row and row["abstained"])

    def rows(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Every logged question since a time, with its vote counts."""
        with self._lock:
            cur = self._db.execute(
                "SELECT q.*, "
                "COALESCE(SUM(CASE WHEN f.vote > 0 THEN 1 END), 0) AS up, "
                "COALESCE(SUM(CASE WHEN f.vote < 0 THEN 1 END), 0) AS down "
                "FROM questions q LEFT JOIN feedback f ON f.question_id = q.id "
                "WHERE q.created_at >= ? GROUP BY q.id ORDER BY q.id",
                (since,),
            )
            return [dict(r) for r in cur.fetchall()]

    def usage_rows(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Each question since a time, oldest first: id, created_at, question, abstained and
        its vote counts (up, down); what the usage chart and the coverage gaps need."""
        with self._lock:
            cur = self._db.execute(
                "SELECT q.id, q.created_at, q.question, q.abstained, "
                "COALESCE(SUM(CASE WHEN f.vote > 0 THEN 1 END), 0) AS up, "
                "COALESCE(SUM(CASE WHEN f.vote < 0 THEN 1 END), 0) AS down "
                "FROM questions q LEFT JOIN feedback f ON f.question_id = q.id "
                "WHERE q.created_at >= ? GROUP BY q.id ORDER BY q.created_at, q.id",
                (since,),
            )
            return [dict(r) for r in cur.fetchall()]

    def stats(self, since: float = 0.0, top: int = 5) -> Stats:
        """Questions, abstentions, feedback, top sources and latency percentiles since a time."""
        rows = self.rows(since)
        sources: Counter[str] = Counter()
        for r in rows:
            sources.update({s["source"] for s in json.loads(r["sources"])})
        latencies = [r["latency_ms"] for r in rows if not r["abstained"]]
        return Stats(
            since=since,
            questions=len(rows),
            abstained=sum(r["abstained"] for r in rows),
            up=sum(r["up"] for r in rows),
            down=sum(r["down"] for r in rows),
            top_sources=sources.most_common(top),
            latency_ms={f"p{q}": percentile(latencies, q) for q in (50, 90, 99)},
            refusals=self.refusal_counts(since),
        )

    def export(self, out: TextIO, fmt: str = "jsonl", since: float = 0.0) -> int:
        """Write the log as CSV or JSONL; return how many questions were written."""
        rows = list(self._export_rows(since))
        if fmt == "jsonl":
            for r in rows:
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
        elif fmt == "csv":
            writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
            writer.writeheader()
            for r in rows:
                cells = {**r, "sources": json.dumps(r["sources"], ensure_ascii=False)}
                writer.writerow({k: spreadsheet_safe(v) for k, v in cells.items()})
        else:
            raise ValueError(f"unknown export format '{fmt}' (csv or jsonl)")
        return len(rows)

    def _export_rows(self, since: float) -> Iterator[dict[str, Any]]:
        for r in self.rows(since):
            record = {k: r[k] for k in EXPORT_FIELDS}
            record["sources"] = json.loads(r["sources"])
            record["abstained"] = bool(r["abstained"])
            yield record
