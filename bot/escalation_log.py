"""The escalation log: questions students sent to the TAs, the TAs' answers, and which answers
became FAQ entries. Kept in the question log's SQLite file (`<data dir>/bot.sqlite3`), next to
the question each escalation came from.

Unlike the question log, an escalation keeps the student's Discord id: the bot needs it to
deliver the TA's answer (by name in a channel, or by DM for a private answer), and a student
who asks a TA is asking a person, who sees who asked anyway.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.storage import open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS escalations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    question_id INTEGER NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    user_hash TEXT NOT NULL,
    user_id TEXT NOT NULL,
    guild_id TEXT NOT NULL DEFAULT '',
    channel_id TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    private INTEGER NOT NULL DEFAULT 0,
    ta_channel_id TEXT NOT NULL DEFAULT '',
    ta_thread_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'sending',
    answered_at REAL
);
CREATE INDEX IF NOT EXISTS escalations_thread ON escalations(ta_thread_id);
CREATE INDEX IF NOT EXISTS escalations_user ON escalations(user_hash, created_at);
CREATE TABLE IF NOT EXISTS escalation_answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    escalation_id INTEGER NOT NULL REFERENCES escalations(id),
    created_at REAL NOT NULL,
    ta_name TEXT NOT NULL,
    answer TEXT NOT NULL,
    faq_path TEXT NOT NULL DEFAULT '',
    approved_by TEXT NOT NULL DEFAULT '',
    approved_at REAL
);
"""
HOUR_S = 3600.0


class AlreadyEscalated(Exception):
    """The answer was sent to the TAs before; `escalation` is that earlier one."""

    def __init__(self, escalation: Escalation) -> None:
        super().__init__(f"question {escalation.question_id} was escalated already")
        self.escalation = escalation


class TooManyEscalations(Exception):
    """A user sent as many escalations in the last hour as allowed; `until` is when the
    oldest of them stops counting (Unix seconds)."""

    def __init__(self, count: int, until: float) -> None:
        super().__init__(f"{count} escalations in the last hour")
        self.count = count
        self.until = until


@dataclass(frozen=True)
class LoggedQuestion:
    """What an escalation shows the TAs of the logged question and its answer."""

    id: int
    question: str
    answer: str
    sources: tuple[dict[str, Any], ...]
    abstained: bool
    user_hash: str = ""  # the pseudonym of the student who asked


@dataclass(frozen=True)
class Escalation:
    """One question sent to the TAs: who asked, where to deliver the answer, its thread."""

    id: int
    question_id: int
    created_at: float
    user_hash: str
    user_id: int
    guild_id: int | None
    channel_id: int
    message_id: int | None
    private: bool
    ta_channel_id: int | None
    ta_thread_id: int | None
    status: str
    answered_at: float | None
    question: str = ""


@dataclass(frozen=True)
class TAAnswer:
    """One answer a TA gave to an escalation, and whether it became a FAQ entry."""

    id: int
    escalation_id: int
    created_at: float
    ta_name: str
    answer: str
    faq_path: str
    approved_by: str
    approved_at: float | None
    question: str = ""


def _int(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def _escalation(row: sqlite3.Row) -> Escalation:
    keys = row.keys()
    return Escalation(
        id=row["id"], question_id=row["question_id"], created_at=row["created_at"],
        user_hash=row["user_hash"], user_id=int(row["user_id"]), guild_id=_int(row["guild_id"]),
        channel_id=int(row["channel_id"]), message_id=_int(row["message_id"]),
        private=bool(row["private"]), ta_channel_id=_int(row["ta_channel_id"]),
        ta_thread_id=_int(row["ta_thread_id"]), status=row["status"],
        answered_at=row["answered_at"], question=row["question"] if "question" in keys else "",
    )


class EscalationLog:
    """SQLite-backed escalations and TA answers; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = open_database(self.path, SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def question(self, question_id: int) -> LoggedQuestion | None:
        """The logged question an answer's buttons refer to, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, question, answer, sources, abstained, user_hash FROM questions "
                "WHERE id = ?",
                (question_id,),
            ).fetchone()
        if row is None:
            return None
        return LoggedQuestion(row["id"], row["question"], row["answer"],
                              tuple(json.loads(row["sources"])), bool(row["abstained"]),
                              row["user_hash"])

    def claim(self, question_id: int, user_hash: str, user_id: int, per_hour: int, *,
              guild_id: int | None, channel_id: int, message_id: int | None,
              private: bool) -> int:
        """Reserve the escalation of one answered question (before its thread exists).

        AlreadyEscalated if the question has one; TooManyEscalations if the user sent
        `per_hour` in the last hour (counted here, under the lock, so two clicks at once
        cannot both slip through)."""
        now = time.time()
        row = (question_id, now, user_hash, str(user_id), str(guild_id or ""),
               str(channel_id), str(message_id or ""), int(private))
        with self._lock:
            earlier = self._db.execute(
                "SELECT e.*, q.question FROM escalations e JOIN questions q "
                "ON q.id = e.question_id WHERE e.question_id = ?", (question_id,)).fetchone()
            if earlier is not None:
                raise AlreadyEscalated(_escalation(earlier))
            count, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM escalations "
                "WHERE user_hash = ? AND created_at > ?", (user_hash, now - HOUR_S)).fetchone()
            if count >= per_hour:
                raise TooManyEscalations(int(count), float(oldest) + HOUR_S)
            cur = self._db.execute(
                "INSERT INTO escalations (question_id, created_at, user_hash, user_id, "
                "guild_id, channel_id, message_id, private) VALUES (?,?,?,?,?,?,?,?)", row)
            return int(cur.lastrowid or 0)

    def opened(self, escalation_id: int, ta_channel_id: int, ta_thread_id: int) -> None:
        """The escalation's thread exists: it is open for the TAs."""
        with self._lock:
            self._db.execute(
                "UPDATE escalations SET ta_channel_id = ?, ta_thread_id = ?, status = 'open' "
                "WHERE id = ?", (str(ta_channel_id), str(ta_thread_id), escalation_id))

    def follow(self, message_id: int, question_id: int) -> Escalation | None:
        """Point the open escalation raised from an answer message at the logged question
        that message now answers (the student edited the question and it was answered again);
        that escalation, or None. The new question cannot have one yet, unless the student
        pressed its button in the instant since: then the older one is left as it was."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM escalations WHERE message_id = ? AND status = 'open' AND NOT "
                "EXISTS (SELECT 1 FROM escalations WHERE question_id = ?) ORDER BY id LIMIT 1",
                (str(message_id), question_id)).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE escalations SET question_id = ? WHERE id = ?",
                             (question_id, row["id"]))
        return self.get(row["id"])

    def release(self, escalation_id: int) -> None:
        """Forget a claim whose thread could not be created (the student may try again)."""
        with self._lock:
            self._db.execute("DELETE FROM escalations WHERE id = ? AND status = 'sending'",
                             (escalation_id,))

    def _one(self, where: str, args: tuple[Any, ...]) -> Escalation | None:
        with self._lock:
            row = self._db.execute(
                "SELECT e.*, q.question FROM escalations e JOIN questions q "
                f"ON q.id = e.question_id WHERE {where}", args).fetchone()
        return None if row is None else _escalation(row)

    def get(self, escalation_id: int) -> Escalation | None:
        """One escalation by id."""
        return self._one("e.id = ?", (escalation_id,))

    def for_question(self, question_id: int) -> Escalation | None:
        """The escalation of a logged question, if any."""
        return self._one("e.question_id = ?", (question_id,))

    def for_thread(self, thread_id: int) -> Escalation | None:
        """The escalation a TA-channel thread belongs to, if any."""
        return self._one("e.ta_thread_id = ?", (str(thread_id),))

    def unanswered(self, limit: int = 25) -> list[Escalation]:
        """Open escalations, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT e.*, q.question FROM escalations e JOIN questions q "
                "ON q.id = e.question_id WHERE e.status = 'open' ORDER BY e.created_at "
                "LIMIT ?", (limit,)).fetchall()
        return [_escalation(r) for r in rows]

    def sent_since(self, since: float) -> list[float]:
        """When each escalation since a time reached the TAs (its thread was opened), oldest
        first: the usage chart counts them per day."""
        with self._lock:
            rows = self._db.execute(
                "SELECT created_at FROM escalations WHERE created_at >= ? "
                "AND status != 'sending' ORDER BY created_at", (since,)).fetchall()
        return [float(r["created_at"]) for r in rows]

    def add_answer(self, escalation_id: int, ta_name: str, answer: str) -> int:
        """Record a TA's answer (before it is delivered); return its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO escalation_answers (escalation_id, created_at, ta_name, answer) "
                "VALUES (?,?,?,?)", (escalation_id, time.time(), ta_name, answer))
            return int(cur.lastrowid or 0)

    def mark_answered(self, escalation_id: int) -> None:
        """An answer reached the student: the escalation is answered (at its first answer)."""
        with self._lock:
            self._db.execute(
                "UPDATE escalations SET status = 'answered', answered_at = COALESCE("
                "answered_at, ?) WHERE id = ?", (time.time(), escalation_id))

    def answer(self, answer_id: int) -> TAAnswer | None:
        """One TA answer, with its escalation's question."""
        with self._lock:
            row = self._db.execute(
                "SELECT a.*, q.question FROM escalation_answers a JOIN escalations e "
                "ON e.id = a.escalation_id JOIN questions q ON q.id = e.question_id "
                "WHERE a.id = ?", (answer_id,)).fetchone()
        if row is None:
            return None
        return TAAnswer(row["id"], row["escalation_id"], row["created_at"], row["ta_name"],
                        row["answer"], row["faq_path"], row["approved_by"], row["approved_at"],
                        row["question"])

    def approved(self, answer_id: int, faq_path: str, approved_by: str, at: float) -> None:
        """Record that a TA answer became a FAQ file."""
        with self._lock:
            self._db.execute(
                "UPDATE escalation_answers SET faq_path = ?, approved_by = ?, approved_at = ? "
                "WHERE id = ?", (faq_path, approved_by, at, answer_id))
