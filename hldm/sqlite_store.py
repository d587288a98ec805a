"""One SQLite file of user data (ratings, course answers): WAL, durable writes, versioned migrations.

Standard-library `sqlite3`, WAL journal, `synchronous=FULL`: every write is one
`BEGIN IMMEDIATE ... COMMIT` transaction, so a write is either stored whole and
durable when it returns, or not at all (a crash or SIGKILL in between leaves the
previous state). The schema version lives in `PRAGMA user_version`; a subclass
lists its MIGRATIONS, where MIGRATIONS[k] takes a file from version k to k + 1,
and opening a store runs the ones the file lacks in one transaction. A file from
a newer version, a file that is not this kind of database, or a damaged one is
refused (the subclass's `Error`) before anything is written to it.

A store can be shared by threads (one connection per thread, the Gradio worker
pool included); several processes may open the same file. User data never lives
in the repository.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from hldm.paths import REPO, cache_dir

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 30.0


class StoreError(Exception):
    """Anything a store refuses: bad input, unknown names, a bad database file."""


def now() -> str:
    """UTC timestamp, milliseconds: what every stored row carries."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def checked_name(name, what: str, error: type[StoreError] = StoreError, max_len: int = 64) -> str:
    """A person's name or code as stored: stripped, 1..max_len printable characters; `error` otherwise."""
    name = str(name or "").strip()
    if not name or len(name) > max_len or not name.isprintable():
        raise error(f"{what}: {name!r}; allowed: 1..{max_len} printable characters (a name or code)")
    return name


def check_database(path: Path, kind: str, tables: tuple[str, ...], version_now: int,
                   error: type[StoreError] = StoreError) -> int:
    """Schema version of an existing `kind` database file (0 = empty), without writing to it.

    `error` when it is not SQLite, damaged, another kind of database, or newer than version_now."""
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if not head:
        return 0
    if head != SQLITE_MAGIC:
        raise error(f"{path}: not an SQLite database (header {head[:16]!r}); file left untouched. "
                    "Move it away or pass another --db path.")
    # Without a -wal file the main file is the whole database: open it immutable, which creates no
    # -wal/-shm side files. With one (a crash, or another process has it open) its pages count too.
    wal = path.with_name(path.name + "-wal").exists()
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}", uri=True,
                              timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise error(f"{path}: cannot be opened ({exc}); file left untouched") from exc
    try:
        problems = [" ".join(r[0].split()) for r in con.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise error(f"{path}: database is damaged ({'; '.join(problems[:3])}); file left untouched. "
                        "Restore a backup or pass another --db path.")
        version = con.execute("PRAGMA user_version").fetchone()[0]
        found = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise error(f"{path}: database is damaged or not a database ({exc}); file left untouched. "
                    "Restore a backup or pass another --db path.") from exc
    finally:
        con.close()
    if version > version_now:
        raise error(f"{path}: schema version {version} is newer than this code's {version_now}; "
                    "update H-LDM Studio")
    if version == 0 and found:
        raise error(f"{path}: an SQLite database that is not a {kind} database "
                    f"(tables {sorted(found)}); file left untouched")
    if version and not set(tables) <= found:
        raise error(f"{path}: {kind} database lacks tables {sorted(set(tables) - found)}; "
                    "file left untouched")
    return version


class SQLiteStore:
    """Base of the user-data stores. Subclasses set KIND (the word in messages), DB_NAME (the default
    file name under `cache_dir()`), MIGRATIONS (SQL scripts, version k -> k + 1), TABLES (what the
    latest version must have) and Error (what they raise)."""

    KIND = "user data"
    DB_NAME = "hldm.sqlite"
    MIGRATIONS: tuple[str, ...] = ()
    TABLES: tuple[str, ...] = ()
    Error: type[StoreError] = StoreError

    @classmethod
    def default_path(cls, data_dir: str | Path | None = None) -> Path:
        """`<data_dir>/<DB_NAME>`; data_dir defaults to hldm.paths.cache_dir()."""
        return (Path(data_dir) if data_dir is not None else cache_dir()) / cls.DB_NAME

    def __init__(self, path: str | Path | None = None):
        path = Path(path) if path is not None else self.default_path()
        if path.is_dir():
            raise self.Error(f"{path}: is a folder; give the database file (e.g. {path / self.DB_NAME})")
        if path.resolve().is_relative_to(REPO):
            raise self.Error(f"{path}: inside the repository; {self.KIND} data is about people and lives "
                             f"outside it (default {self.default_path()})")
        if not path.parent.is_dir():
            raise self.Error(f"{path}: folder {path.parent} does not exist")
        self.path = path
        version = (check_database(path, self.KIND, self.TABLES, len(self.MIGRATIONS), self.Error)
                   if path.exists() else 0)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []  # every thread's connection, so close() closes them all
        self._closed = False
        con = self._con()
        con.execute("PRAGMA journal_mode = WAL")
        if version < len(self.MIGRATIONS):
            with self._write() as con:
                # Read again inside the write lock: another process may have migrated meanwhile.
                done = con.execute("PRAGMA user_version").fetchone()[0]
                for script in self.MIGRATIONS[done:]:
                    for statement in script.split(";"):
                        if statement.strip():
                            con.execute(statement)
                con.execute(f"PRAGMA user_version = {len(self.MIGRATIONS)}")

    def _con(self) -> sqlite3.Connection:
        if self._closed:
            raise self.Error(f"{self.path}: store is closed")
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
            con.row_factory = sqlite3.Row
            self._local.con = con
            with self._lock:
                self._all.append(con)
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: taken with BEGIN IMMEDIATE (no lock upgrade deadlocks), all or nothing."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            cons, self._all, self._closed = self._all, [], True
        for con in cons:
            con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
