"""The history's SQLite backend: one file (stdlib `sqlite3`, WAL mode), the embedded default.

It runs the statements `store.History` gives it and knows nothing of the rules. Every statement runs
in a worker thread, one at a time (an anyio lock in the process, SQLite's own locks across processes);
a statement outside a transaction commits on its own, and a transaction holds the lock throughout and
starts with `BEGIN IMMEDIATE`, so processes sharing the file decide one at a time.

The file carries its schema version (`PRAGMA user_version`); opening an older file migrates it in place,
one versioned step at a time, inside a write transaction (so processes racing to open it do not collide).

Prompts are private: the data folder is created 0700 and the database 0600 before SQLite opens it
(SQLite gives its -wal and -shm files the database's own mode). An existing folder keeps its mode
(it may be one the user chose, such as a shared parent); existing database files are narrowed to
0600. Saved images are the user's pictures and follow their umask like any file they create.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from flux_mcp.history.backend import Backend

logger = logging.getLogger(__name__)

IN_MEMORY = ":memory:"
PRIVATE_FOLDER_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL DEFAULT '',
    task_id TEXT,
    status TEXT NOT NULL,
    action TEXT,
    model TEXT,
    prompt TEXT,
    size TEXT,
    request TEXT NOT NULL,
    result TEXT,
    trace_id TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (task_id, owner)
);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (owner, created_at DESC);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Edit inputs uploaded to the platform, by content: one upload per distinct file while its URL is fresh.
UPLOADS_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    owner TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL,
    file_url TEXT NOT NULL,
    uploaded_at REAL NOT NULL,
    PRIMARY KEY (owner, sha256)
);
"""


@dataclass(frozen=True)
class Migration:
    """One step of the history file's schema: columns added to `tasks` when missing, then statements."""

    version: int
    columns: dict[str, str]
    statements: tuple[str, ...] = ()


MIGRATIONS = (
    Migration(
        1,  # retry attachment: which request a row is, and whether a caller has received its outcome
        {"fingerprint": "TEXT", "delivered_at": "REAL"},
        (
            "CREATE INDEX IF NOT EXISTS tasks_undelivered ON tasks (owner, fingerprint, created_at) "
            "WHERE delivered_at IS NULL",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


class SqliteBackend(Backend):
    """One SQLite file (or `:memory:`), opened, made private and migrated on construction."""

    kind = "sqlite"
    shared = False  # other processes may share the file, but nothing here relays between them

    def __init__(self, path: Path) -> None:
        if str(path) != IN_MEMORY:
            make_private_folder(path.parent)
            _prepare_private_files(path)
        self.path = path
        self.where = "in memory" if str(path) == IN_MEMORY else str(path)
        self._thread_lock = threading.RLock()
        self._lock = anyio.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._thread_lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
            self._db.executescript(UPLOADS_SCHEMA)

    # -- what store.History uses -----------------------------------------------------------------

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_Statements]:
        async with self._lock:
            yield _Statements(self)

    @asynccontextmanager
    async def transaction(self, lock: str | None = None) -> AsyncIterator[_Statements]:
        """One write transaction; `lock` is moot here: SQLite takes the whole file's write lock."""
        async with self._lock:
            await anyio.to_thread.run_sync(self.execute_now, "BEGIN IMMEDIATE", ())
            try:
                yield _Statements(self)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.execute_now, "ROLLBACK", ())
                raise
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.execute_now, "COMMIT", ())

    async def open(self) -> None:
        """Opened as it was built: a file that cannot be opened fails there, at once."""

    def close(self) -> None:
        with self._thread_lock:
            self._db.close()

    async def probe(self) -> None:
        """A file that opened stays usable; there is no server to lose."""

    async def notify(self, payload: str) -> None:
        """Nothing to relay to: one process holds its own waiting calls."""

    # -- synchronous access (opening, and tests that age rows) ----------------------------------

    def fetch_now(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        with self._thread_lock:
            return list(self._db.execute(sql, tuple(params)).fetchall())

    def execute_now(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._thread_lock:
            return self._db.execute(sql, tuple(params)).rowcount

    def _migrate(self) -> None:
        self._db.executescript(SCHEMA)
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")  # re-read the version under the write lock: one migrator wins
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS:
                if step.version > version:
                    self._apply(step)
            if version < SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _apply(self, step: Migration) -> None:
        present = {row["name"] for row in self._db.execute("PRAGMA table_info(tasks)")}
        for column, kind in step.columns.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE tasks ADD COLUMN {column} {kind}")
        for statement in step.statements:
            self._db.execute(statement)


class _Statements:
    """Statements of a session or a transaction of `SqliteBackend` (its lock is already held)."""

    def __init__(self, backend: SqliteBackend) -> None:
        self._backend = backend

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        return await anyio.to_thread.run_sync(self._backend.fetch_now, sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await anyio.to_thread.run_sync(self._backend.execute_now, sql, params)


def make_private_folder(folder: Path) -> None:
    """Create `folder` if needed, enterable by its owner only (missing parents get the default mode)."""
    folder.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)


def _prepare_private_files(path: Path) -> None:
    """The database and its -wal/-shm readable by their owner only, before SQLite opens them."""
    for existing in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        _narrow(existing)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE))  # an empty file is a new database


def _narrow(path: Path) -> None:
    if os.name != "posix":
        return  # Windows: the user's profile folder is already private; modes do not apply
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if mode & 0o077:
        try:
            path.chmod(PRIVATE_FILE_MODE)
        except PermissionError:
            logger.warning("history file %s is readable by others and is not ours to change", path)
