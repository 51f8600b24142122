"""The history's SQLite backend: one file (stdlib `sqlite3`, WAL mode), the embedded default.

It runs the statements `store.History` gives it and knows nothing of the rules. Statements run one at
a time (an anyio lock in the process, SQLite's own locks across processes); a statement outside a
transaction commits on its own, and a transaction holds the lock throughout and starts with `BEGIN
IMMEDIATE`, so processes sharing the file decide one at a time. A statement runs on the event loop when
SQLite answers at once (in WAL mode reads never wait, and this process's writes are one at a time: tens
of microseconds, where a worker thread's round trip cost more than the statement, eight of them per
call); only when another process holds the file does it go to a worker thread, which waits for it
(`_patiently`, up to BUSY_TIMEOUT_SECONDS) as SQLite's own busy timeout did.

The file carries its schema version (`PRAGMA user_version`); opening an older file brings it up to the
tables `schema` declares, in place, inside a write transaction (so processes racing to open it do not
collide). Opening a file another process is opening or writing waits for it (`_open`), never fails at once.

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
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio

from flux_mcp.history.backend import Backend, bound
from flux_mcp.history.schema import SCHEMA_VERSION, TABLES, upgrade

logger = logging.getLogger(__name__)

T = TypeVar("T")
IN_MEMORY = ":memory:"
PRIVATE_FOLDER_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# How long a statement, and opening the file, waits for another process's lock before it fails.
BUSY_TIMEOUT_SECONDS = 10.0
OPEN_RETRY_PAUSES = (0.01, 0.25)  # first and longest pause between attempts to open a busy file
BUSY_RETRY_PAUSES = (0.001, 0.05)  # first and longest pause between tries of a statement on a busy file
UNOPENABLE_FIX = "set FLUX_MCP_DB to a file in a writable folder, or move a damaged file aside"


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
        self._lock = anyio.Lock(fast_acquire=True)  # no pass through the event loop when free
        self._db = _open(path)

    # -- what store.History uses -----------------------------------------------------------------

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_Statements]:
        async with self._lock:
            yield _Statements(self)

    @asynccontextmanager
    async def transaction(self, lock: str | None = None) -> AsyncIterator[_Statements]:
        """One write transaction; `lock` is moot here: SQLite takes the whole file's write lock."""
        async with self._lock:
            await self.run(self._execute_once, "BEGIN IMMEDIATE", ())
            try:
                yield _Statements(self)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.run(self._execute_once, "ROLLBACK", ())
                raise
            with anyio.CancelScope(shield=True):
                await self.run(self._execute_once, "COMMIT", ())

    async def run(self, once: Callable[[str, Sequence[Any]], T], sql: str, params: Sequence[Any]) -> T:
        """`once(sql, params)` here and now if SQLite answers at once; else in a worker thread that waits
        for the other process's lock."""
        try:
            return once(sql, params)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        return await anyio.to_thread.run_sync(_patiently, lambda: once(sql, params))

    async def open(self) -> None:
        """Opened as it was built: a file that cannot be opened fails there, at once."""

    def close(self) -> None:
        """Close the file (no event loop needed)."""
        with self._thread_lock:
            self._db.close()

    async def aclose(self) -> None:
        self.close()

    async def probe(self) -> None:
        """A file that opened stays usable; there is no server to lose."""

    async def notify(self, payload: str) -> None:
        """Nothing to relay to: one process holds its own waiting calls."""

    # -- synchronous access (opening, and tests that age rows) ----------------------------------

    def fetch_now(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        return _patiently(lambda: self._fetch_once(sql, params))

    def execute_now(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _patiently(lambda: self._execute_once(sql, params))

    def execute_many_now(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for each of `rows`, committed together."""
        _patiently(lambda: self._execute_once("BEGIN IMMEDIATE", ()))
        with self._thread_lock:
            try:
                self._db.executemany(sql, [bound(row) for row in rows])
            except BaseException:
                _rollback(self._db)
                raise
            self._db.execute("COMMIT")

    # One try, busy or not: the connection's own busy timeout is 0 (waiting is `_patiently`'s).
    def _fetch_once(self, sql: str, params: Sequence[Any]) -> list[Mapping[str, Any]]:
        with self._thread_lock:
            return list(self._db.execute(sql, bound(params)).fetchall())

    def _execute_once(self, sql: str, params: Sequence[Any]) -> int:
        with self._thread_lock:
            return self._db.execute(sql, bound(params)).rowcount


class _Statements:
    """Statements of a session or a transaction of `SqliteBackend` (its lock is already held)."""

    def __init__(self, backend: SqliteBackend) -> None:
        self._backend = backend

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        return await self._backend.run(self._backend._fetch_once, sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._backend.run(self._backend._execute_once, sql, params)


def _open(path: Path) -> sqlite3.Connection:
    """A connection to the file in WAL mode, its tables brought up to the schema.

    Another process opening or writing the file at the same moment can make SQLite answer "database is
    locked" without waiting for its busy timeout (`PRAGMA journal_mode=WAL` on a new file needs a lock
    SQLite will not wait for while another connection holds a write lock): opening tries again, with
    short pauses, for up to BUSY_TIMEOUT_SECONDS, and only then fails.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause, told = OPEN_RETRY_PAUSES[0], False
    while True:
        db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS
        )
        try:
            _prepare(db)
            db.execute("PRAGMA busy_timeout=0")  # from now on a busy file is waited for by `_patiently`
            return db
        except BaseException as exc:
            db.close()
            if not _busy(exc) or time.monotonic() + pause > deadline:
                raise
            if not told:
                logger.info(
                    "history file %s is busy (another process is opening or writing it); waiting", path
                )
                told = True
        time.sleep(pause)
        pause = min(pause * 2, OPEN_RETRY_PAUSES[1])


def _prepare(db: sqlite3.Connection) -> None:
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")  # re-read the version under the write lock: one process upgrades it
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for statement in upgrade("sqlite", _columns(db)):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        _rollback(db)
        raise
    db.execute("COMMIT")


def _columns(db: sqlite3.Connection) -> dict[str, set[str]]:
    return {
        table.name: {row["name"] for row in db.execute(f"PRAGMA table_info({table.name})")}
        for table in TABLES
    }


def _patiently(once: Callable[[], T]) -> T:
    """`once()`, tried again while another connection holds the lock, for up to BUSY_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = BUSY_RETRY_PAUSES[0]
    while True:
        try:
            return once()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, BUSY_RETRY_PAUSES[1])


def _busy(exc: BaseException) -> bool:
    """Whether SQLite refused for a lock another connection holds (a moment's wait may clear it)."""
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.OperationalError) else None
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _rollback(db: sqlite3.Connection) -> None:
    """End the transaction an error interrupted, unless SQLite already has (a second error would hide
    the first)."""
    if db.in_transaction:
        db.execute("ROLLBACK")


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
