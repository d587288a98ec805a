"""The ratings database: readers, sessions, clips and answers in one SQLite file.

The storage rules are hldm.sqlite_store's (WAL, one durable transaction per
write, migrations by `PRAGMA user_version`): an answer is either stored whole
and durable when `record_answer` returns, or not at all; a file from a newer
version, a file that is not a ratings database, or a damaged one is refused
with `RatingsError` before anything is written to it.

One file, by default `hldm.paths.cache_dir() / "ratings.sqlite"`; never in the
repository. A `RatingStore` can be shared by threads (one connection per thread,
the Gradio worker pool included); several processes may open the same file.
"""
from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hldm.clinical.vocabulary import LOCATIONS, MURMUR_STATUS, TIMINGS, max_grade
from hldm.sqlite_store import SQLiteStore, StoreError, checked_name
from hldm.sqlite_store import now as _now

DB_NAME = "ratings.sqlite"
SOURCES = ("synthetic", "real")
PLAUSIBILITY = (1, 2, 3, 4, 5)  # 1 = clearly not a heart sound, 5 = indistinguishable from a patient
MAX_READER_NAME = 64

SCHEMA = """
CREATE TABLE readers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at TEXT NOT NULL
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    reader_id INTEGER NOT NULL REFERENCES readers(id),
    seed INTEGER NOT NULL,
    n_clips INTEGER NOT NULL,
    real_dir TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE clips (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    position INTEGER NOT NULL,
    clip_key TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('synthetic', 'real')),
    seconds REAL NOT NULL,
    findings TEXT NOT NULL,
    seed INTEGER,
    checkpoint TEXT,
    real_id TEXT,
    real_path TEXT,
    start_s REAL,
    UNIQUE (session_id, position)
);
CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    clip_id INTEGER NOT NULL REFERENCES clips(id),
    said_real INTEGER NOT NULL CHECK (said_real IN (0, 1)),
    plausibility INTEGER NOT NULL CHECK (plausibility BETWEEN 1 AND 5),
    murmur TEXT NOT NULL,
    timing TEXT,
    grade INTEGER,
    location TEXT,
    answered_at TEXT NOT NULL,
    UNIQUE (session_id, clip_id)
);
CREATE INDEX clips_key ON clips(clip_key);
"""
MIGRATIONS = (SCHEMA,)  # MIGRATIONS[k]: version k -> k + 1
SCHEMA_VERSION = len(MIGRATIONS)
TABLES = ("answers", "clips", "readers", "sessions")


class RatingsError(StoreError):
    """Anything the ratings layer refuses: bad input, unknown reader, duplicate answer, bad database."""


def default_db_path(data_dir: str | Path | None = None) -> Path:
    """`<data_dir>/ratings.sqlite`; data_dir defaults to hldm.paths.cache_dir()."""
    return RatingStore.default_path(data_dir)


@dataclass(frozen=True)
class Reader:
    id: int
    name: str


@dataclass(frozen=True)
class ClipSpec:
    """One clip to rate, before it is stored. Synthetic: findings + seed + checkpoint; real: the
    recording's id and path and the excerpt start. `findings` is what was requested (synthetic)
    or annotated (real), as a Findings.to_dict() with NaN replaced by None."""

    source: str
    seconds: float
    findings: dict
    seed: int | None = None
    checkpoint: str | None = None
    real_id: str | None = None
    real_path: str | None = None
    start_s: float | None = None

    @property
    def key(self) -> str:
        """Identity across sessions: the same key means readers heard the same audio."""
        if self.source == "synthetic":
            return json.dumps(["synthetic", self.checkpoint, self.seed, round(self.seconds, 3), self.findings],
                              sort_keys=True)
        return json.dumps(["real", self.real_id, round(float(self.start_s), 3), round(self.seconds, 3)])


@dataclass(frozen=True)
class Clip(ClipSpec):
    id: int = 0
    session_id: int = 0
    position: int = 0


@dataclass(frozen=True)
class Session:
    id: int
    reader: str
    seed: int
    n_clips: int
    n_answered: int
    real_dir: str | None
    created_at: str

    @property
    def done(self) -> bool:
        return self.n_answered >= self.n_clips


@dataclass(frozen=True)
class Answer:
    """What a reader reported for one clip. Murmur fields are None when murmur is "absent";
    timing / grade / location may be None ("not sure")."""

    said_real: bool
    plausibility: int
    murmur: str
    timing: str | None = None
    grade: int | None = None
    location: str | None = None

    def validated(self) -> "Answer":
        """The same answer with types normalised; RatingsError names the bad field and the allowed values."""
        if not isinstance(self.said_real, (bool, int)) or self.said_real not in (0, 1, True, False):
            raise RatingsError(f"said_real: {self.said_real!r}; allowed: True (real) or False (synthetic)")
        if _as_int(self.plausibility) not in PLAUSIBILITY:
            raise RatingsError(f"plausibility: {self.plausibility!r}; allowed: 1..5")
        if self.murmur not in MURMUR_STATUS:
            raise RatingsError(f"murmur: {self.murmur!r}; allowed: {', '.join(MURMUR_STATUS)}")
        if self.location is not None and self.location not in LOCATIONS:
            raise RatingsError(f"location: {self.location!r}; allowed: {', '.join(LOCATIONS)} or None (not sure)")
        timing, grade = self.timing, self.grade
        if self.murmur == "absent":
            if timing is not None or grade is not None:
                raise RatingsError("timing/grade: given with murmur 'absent'; leave them empty or answer 'present'")
        else:
            if timing is not None and timing not in TIMINGS:
                raise RatingsError(f"timing: {timing!r}; allowed: {', '.join(TIMINGS)} or None (not sure)")
            if grade is not None:
                top = max_grade(timing) if timing else 6
                if _as_int(grade) not in range(1, top + 1):
                    raise RatingsError(f"grade: {grade!r}; allowed: 1..{top}"
                                       + (f" for a {timing} murmur" if timing else "") + " or None (not sure)")
                grade = _as_int(grade)
        return Answer(bool(self.said_real), _as_int(self.plausibility), self.murmur, timing, grade, self.location)


def _as_int(x) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return None


@dataclass(frozen=True)
class AnswerRow:
    """One stored answer joined with its clip and reader: the unit every statistic counts."""

    answer_id: int
    session_id: int
    reader: str
    clip_key: str
    source: str
    truth: dict  # findings requested (synthetic) or annotated (real)
    said_real: bool
    plausibility: int
    murmur: str
    timing: str | None
    grade: int | None
    location: str | None
    answered_at: str
    seed: int | None = None
    checkpoint: str | None = None
    real_id: str | None = None


def clean_findings(d: dict) -> dict:
    """JSON-safe findings: NaN (CirCor's unknown heart rate) becomes None, tuples lists."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else list(v) if isinstance(v, tuple) else v)
            for k, v in d.items()}


class RatingStore(SQLiteStore):
    """Readers, sessions, clips and answers in one SQLite file (see module docstring)."""

    KIND = "ratings"
    DB_NAME = DB_NAME
    MIGRATIONS = MIGRATIONS
    TABLES = TABLES
    Error = RatingsError

    # -- readers ------------------------------------------------------------------

    def add_reader(self, name: str) -> Reader:
        """Register a reader (name or code); an existing name (any case) returns that reader."""
        name = _reader_name(name)
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO readers (name, created_at) VALUES (?, ?)", (name, _now()))
            row = con.execute("SELECT id, name FROM readers WHERE name = ?", (name,)).fetchone()
        return Reader(row["id"], row["name"])

    def reader(self, name: str) -> Reader:
        """The registered reader of that name; RatingsError naming the known readers otherwise."""
        row = self._con().execute("SELECT id, name FROM readers WHERE name = ?", (str(name).strip(),)).fetchone()
        if row is None:
            known = [r.name for r in self.readers()]
            raise RatingsError(f"reader: unknown {name!r}; register it first"
                               + (f" (known: {', '.join(known)})" if known else " (no readers yet)"))
        return Reader(row["id"], row["name"])

    def readers(self) -> list[Reader]:
        return [Reader(r["id"], r["name"]) for r in self._con().execute("SELECT id, name FROM readers ORDER BY id")]

    # -- sessions and clips ---------------------------------------------------------

    def create_session(self, reader: str, clips: list[ClipSpec], seed: int, real_dir: str | None = None) -> Session:
        """A session of `clips` in the order given (already shuffled), stored in one transaction."""
        r = self.reader(reader)
        if not clips:
            raise RatingsError("clips: a session needs at least one clip")
        bad = sorted({c.source for c in clips} - set(SOURCES))
        if bad:
            raise RatingsError(f"source: {bad}; allowed: {', '.join(SOURCES)}")
        with self._write() as con:
            sid = con.execute("INSERT INTO sessions (reader_id, seed, n_clips, real_dir, created_at) "
                              "VALUES (?, ?, ?, ?, ?)", (r.id, int(seed), len(clips), real_dir, _now())).lastrowid
            con.executemany(
                "INSERT INTO clips (session_id, position, clip_key, source, seconds, findings, seed, checkpoint, "
                "real_id, real_path, start_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(sid, k, c.key, c.source, float(c.seconds), json.dumps(clean_findings(c.findings)), c.seed,
                  c.checkpoint, c.real_id, c.real_path, c.start_s) for k, c in enumerate(clips)])
        return self.session(sid)

    def session(self, session_id: int) -> Session:
        row = self._con().execute(_SESSION_SQL + " WHERE s.id = ?", (int(session_id),)).fetchone()
        if row is None:
            raise RatingsError(f"session: no session {session_id!r}")
        return _session(row)

    def sessions(self, reader: str | None = None) -> list[Session]:
        if reader is None:
            rows = self._con().execute(_SESSION_SQL + " ORDER BY s.id").fetchall()
        else:
            rows = self._con().execute(_SESSION_SQL + " WHERE s.reader_id = ? ORDER BY s.id",
                                       (self.reader(reader).id,)).fetchall()
        return [_session(r) for r in rows]

    def open_session(self, reader: str) -> Session | None:
        """The reader's latest session with clips left to answer (what a resume picks up)."""
        open_ = [s for s in self.sessions(reader) if not s.done]
        return open_[-1] if open_ else None

    def clips(self, session_id: int) -> list[Clip]:
        return [_clip(r) for r in self._con().execute(
            "SELECT * FROM clips WHERE session_id = ? ORDER BY position", (int(session_id),))]

    def next_clip(self, session_id: int) -> Clip | None:
        """The first clip of the session (in its shuffled order) not answered yet; None when done."""
        row = self._con().execute(
            "SELECT * FROM clips c WHERE c.session_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM answers a WHERE a.clip_id = c.id) ORDER BY c.position LIMIT 1",
            (int(session_id),)).fetchone()
        return None if row is None else _clip(row)

    # -- answers ------------------------------------------------------------------

    def record_answer(self, session_id: int, clip_id: int, answer: Answer) -> int:
        """Store one answer (durable on return); RatingsError for a clip already answered,
        a clip not in the session, or an invalid answer. Returns the answer id."""
        a = answer.validated()
        with self._write() as con:
            clip = con.execute("SELECT session_id FROM clips WHERE id = ?", (int(clip_id),)).fetchone()
            if clip is None or clip["session_id"] != int(session_id):
                raise RatingsError(f"clip: {clip_id!r} is not a clip of session {session_id!r}")
            try:
                return con.execute(
                    "INSERT INTO answers (session_id, clip_id, said_real, plausibility, murmur, timing, grade, "
                    "location, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (int(session_id), int(clip_id), int(a.said_real), a.plausibility, a.murmur, a.timing, a.grade,
                     a.location, _now())).lastrowid
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise
                raise RatingsError(f"clip {clip_id} of session {session_id} is already answered; "
                                   "the first answer is kept") from None

    def answer_rows(self) -> list[AnswerRow]:
        """Every stored answer with its clip and reader, oldest first."""
        rows = self._con().execute(
            "SELECT a.*, r.name AS reader, c.clip_key, c.source, c.findings, c.seed, c.checkpoint, c.real_id "
            "FROM answers a JOIN clips c ON c.id = a.clip_id JOIN sessions s ON s.id = a.session_id "
            "JOIN readers r ON r.id = s.reader_id ORDER BY a.id").fetchall()
        return [AnswerRow(r["id"], r["session_id"], r["reader"], r["clip_key"], r["source"], json.loads(r["findings"]),
                          bool(r["said_real"]), r["plausibility"], r["murmur"], r["timing"], r["grade"],
                          r["location"], r["answered_at"], r["seed"], r["checkpoint"], r["real_id"])
                for r in rows]


_SESSION_SQL = ("SELECT s.*, r.name AS reader, (SELECT COUNT(*) FROM answers a WHERE a.session_id = s.id) "
                "AS n_answered FROM sessions s JOIN readers r ON r.id = s.reader_id")


def _session(row: sqlite3.Row) -> Session:
    return Session(row["id"], row["reader"], row["seed"], row["n_clips"], row["n_answered"], row["real_dir"],
                   row["created_at"])


def _clip(row: sqlite3.Row) -> Clip:
    return Clip(source=row["source"], seconds=row["seconds"], findings=json.loads(row["findings"]), seed=row["seed"],
                checkpoint=row["checkpoint"], real_id=row["real_id"], real_path=row["real_path"],
                start_s=row["start_s"], id=row["id"], session_id=row["session_id"], position=row["position"])


def _reader_name(name) -> str:
    return checked_name(name, "reader", RatingsError, MAX_READER_NAME)
