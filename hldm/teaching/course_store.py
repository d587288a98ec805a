"""The course database: learners, their attempts (a practice run, a screening test, a teacher's set, drills),
every answer with its case and score, and the teachers' case sets, in one SQLite file.

Storage rules are hldm.sqlite_store's, the ratings database's: WAL, one durable transaction per
answer (an answer is stored whole when `record` returns, or not at all: a kill between answers
loses nothing answered), migrations by `PRAGMA user_version`. By default
`hldm.paths.cache_dir() / "course.sqlite"`, never in the repository. Learners pick a name; no password.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from hldm.sqlite_store import SQLiteStore, StoreError, checked_name, now
from hldm.teaching.scoring import Scored

KINDS = ("practice", "screening", "set", "drill")
SCHEMA_V1 = """
CREATE TABLE learners (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at TEXT NOT NULL
);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    learner_id INTEGER NOT NULL REFERENCES learners(id),
    kind TEXT NOT NULL CHECK (kind IN ('practice', 'screening', 'set', 'drill')),
    name TEXT NOT NULL,
    seed INTEGER,
    n_cases INTEGER,
    created_at TEXT NOT NULL
);
CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    attempt_id INTEGER NOT NULL REFERENCES attempts(id),
    position INTEGER NOT NULL,
    case_json TEXT NOT NULL,
    answer_json TEXT NOT NULL,
    result_json TEXT NOT NULL,
    answered_at TEXT NOT NULL,
    UNIQUE (attempt_id, position)
);
CREATE TABLE case_sets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX attempts_learner ON attempts(learner_id, kind)
"""


class CourseError(StoreError):
    """Anything the course store refuses: unknown learner or attempt, a position answered twice, a bad file."""


@dataclass(frozen=True)
class Learner:
    id: int
    name: str


@dataclass(frozen=True)
class Attempt:
    """One run through cases: kind (KINDS), name (the set's, or e.g. "screening 7"), seed, n_cases
    (None: open-ended practice), n_answered."""

    id: int
    learner: str
    kind: str
    name: str
    seed: int | None
    n_cases: int | None
    n_answered: int
    created_at: str

    @property
    def done(self) -> bool:
        return self.n_cases is not None and self.n_answered >= self.n_cases


@dataclass(frozen=True)
class AnswerRecord:
    """A stored answer with its attempt: the case (spec, source, ...), what the learner said, the score."""

    attempt_id: int
    kind: str
    name: str
    position: int
    case: dict
    answer: dict
    result: Scored
    answered_at: str


class CourseStore(SQLiteStore):
    """Learners, attempts, answers and case sets (see module docstring)."""

    KIND = "course"
    DB_NAME = "course.sqlite"
    MIGRATIONS = (SCHEMA_V1,)
    TABLES = ("learners", "attempts", "answers", "case_sets")
    Error = CourseError

    # -- learners ------------------------------------------------------------------

    def add_learner(self, name: str) -> Learner:
        """The learner of that name (any case), registered now if new."""
        name = checked_name(name, "learner", CourseError)
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO learners (name, created_at) VALUES (?, ?)", (name, now()))
            row = con.execute("SELECT id, name FROM learners WHERE name = ?", (name,)).fetchone()
        return Learner(row["id"], row["name"])

    def learner(self, name: str) -> Learner:
        row = self._con().execute("SELECT id, name FROM learners WHERE name = ?", (str(name or "").strip(),)).fetchone()
        if row is None:
            raise CourseError(f"learner: unknown {name!r}; type your name and press *Sign in* first")
        return Learner(row["id"], row["name"])

    # -- attempts and answers --------------------------------------------------------

    def start_attempt(self, learner: str, kind: str, name: str, seed: int | None = None,
                      n_cases: int | None = None) -> Attempt:
        if kind not in KINDS:
            raise CourseError(f"kind: {kind!r}; allowed: {', '.join(KINDS)}")
        lid = self.learner(learner).id
        with self._write() as con:
            aid = con.execute("INSERT INTO attempts (learner_id, kind, name, seed, n_cases, created_at) "
                              "VALUES (?, ?, ?, ?, ?, ?)", (lid, kind, str(name), seed, n_cases, now())).lastrowid
        return self.attempt(aid)

    def attempt(self, attempt_id: int) -> Attempt:
        row = self._con().execute(_ATTEMPT_SQL + " WHERE t.id = ?", (int(attempt_id),)).fetchone()
        if row is None:
            raise CourseError(f"attempt: no attempt {attempt_id!r}")
        return _attempt(row)

    def attempts(self, learner: str, kind: str | None = None) -> list[Attempt]:
        lid = self.learner(learner).id
        rows = self._con().execute(_ATTEMPT_SQL + " WHERE t.learner_id = ? AND (? IS NULL OR t.kind = ?) ORDER BY t.id",
                                   (lid, kind, kind)).fetchall()
        return [_attempt(r) for r in rows]

    def open_attempt(self, learner: str, kind: str, name: str) -> Attempt | None:
        """The learner's latest unfinished attempt of that kind and name: what a resume picks up."""
        open_ = [a for a in self.attempts(learner, kind) if a.name == name and not a.done]
        return open_[-1] if open_ else None

    def record(self, attempt_id: int, position: int, case: dict, answer: dict, result: Scored) -> int:
        """Store one answer (durable on return). CourseError for a position answered already (the first
        answer is kept) or beyond the attempt's cases."""
        att = self.attempt(attempt_id)
        if position < 0 or (att.n_cases is not None and position >= att.n_cases):
            raise CourseError(f"position: {position} outside attempt {attempt_id}'s {att.n_cases} cases")
        try:
            with self._write() as con:
                return con.execute(
                    "INSERT INTO answers (attempt_id, position, case_json, answer_json, result_json, answered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (int(attempt_id), int(position), json.dumps(case), json.dumps(answer),
                                                  json.dumps(result.to_dict()), now())).lastrowid
        except sqlite3.IntegrityError:
            raise CourseError(f"case {position + 1} of this attempt is already answered; "
                              "the first answer is kept") from None

    def answers(self, learner: str, attempt_id: int | None = None) -> list[AnswerRecord]:
        """The learner's answers, oldest first (only one attempt's with attempt_id)."""
        lid = self.learner(learner).id
        rows = self._con().execute(
            "SELECT a.*, t.kind, t.name FROM answers a JOIN attempts t ON t.id = a.attempt_id "
            "WHERE t.learner_id = ? AND (? IS NULL OR t.id = ?) ORDER BY a.id", (lid, attempt_id, attempt_id))
        return [AnswerRecord(r["attempt_id"], r["kind"], r["name"], r["position"], json.loads(r["case_json"]),
                             json.loads(r["answer_json"]), Scored.from_dict(json.loads(r["result_json"])),
                             r["answered_at"]) for r in rows]

    # -- case sets -------------------------------------------------------------------

    def save_set(self, name: str, body: dict) -> None:
        """Store (or replace) a case set under its name."""
        name = checked_name(name, "case set name", CourseError)
        with self._write() as con:
            con.execute("INSERT INTO case_sets (name, body, created_at) VALUES (?, ?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET body = excluded.body", (name, json.dumps(body), now()))

    def case_set(self, name: str) -> dict:
        row = self._con().execute("SELECT body FROM case_sets WHERE name = ?", (str(name or "").strip(),)).fetchone()
        if row is None:
            raise CourseError(f"case set: unknown {name!r}; known: {', '.join(self.set_names()) or 'none yet'}")
        return json.loads(row["body"])

    def set_names(self) -> list[str]:
        return [r["name"] for r in self._con().execute("SELECT name FROM case_sets ORDER BY id")]


_ATTEMPT_SQL = ("SELECT t.*, l.name AS learner, (SELECT COUNT(*) FROM answers a WHERE a.attempt_id = t.id) "
                "AS n_answered FROM attempts t JOIN learners l ON l.id = t.learner_id")


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(row["id"], row["learner"], row["kind"], row["name"], row["seed"], row["n_cases"],
                   row["n_answered"], row["created_at"])
