"""Local history of every task this server submitted, in SQLite (stdlib, WAL mode).

A row is written *before* the upstream is asked (status `submitting`), gets its task id the
moment the upstream answers, and follows the task to its end: status, result, saved file paths.
So a restart loses nothing: a pending task is still listed, and `get_task` completes it. A row
left in `submitting` means a server stopped between asking and hearing back (killed, crashed, power
cut): the upstream may or may not have the task. Opening the history turns such rows into `unknown`
("may have been billed"), the same status an ambiguous submit failure gets, so they are reported
honestly, never dropped. A process that is still submitting when another opens the same file is not
hurt by this: its own answer (task id, or failure) rewrites the row by its id a moment later.

Each row also says which request it is (`fingerprint`, `ImageRequest.fingerprint`) and whether any
caller has received its outcome yet (`delivered_at`). That is what lets an identical retry continue a
job instead of paying for it again (the rule is in tasks.py); `claim` decides it atomically, in one
`BEGIN IMMEDIATE` transaction, so two identical calls at the same moment (in one process, or in two
processes sharing this file) make one submission. Rows written before these columns existed have no
fingerprint and are never continued.

The file carries its schema version (`PRAGMA user_version`); opening an older file migrates it in place,
one versioned step at a time, inside a write transaction (so processes racing to open it do not collide).

History is kept, not pruned: one row is about a kilobyte, so years of use stay small; delete the
file (FLUX_MCP_DB) to start over.

Prompts are private: the data folder is created 0700 and the database 0600 before SQLite opens it
(SQLite gives its -wal and -shm files the database's own mode). An existing folder keeps its mode
(it may be one the user chose, such as a shared parent); existing database files are narrowed to
0600. Saved images are the user's pictures and follow their umask like any file they create.

Rows belong to an owner. On stdio and with server tokens there is one owner (""). With pass-through
auth each caller's own API token identifies them, and the owner is a keyed hash of it (the key is
random and kept in the database), so users never see each other's rows and no token is stored. With
OAuth the owner is the person: `person_owner` of the issuer and the token's `sub` (readable, so that an
operator can find or delete one person's rows; never a token), the same on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from flux_mcp.models import TaskResult

logger = logging.getLogger(__name__)

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
IN_MEMORY = ":memory:"
PRIVATE_FOLDER_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
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
SUBMITTING = "submitting"
UNKNOWN = "unknown"  # submission failed in a way that leaves the upstream's state unknown
# Rows an identical call may continue; a `rejected` submission never reached the upstream's books.
CONTINUABLE = (SUBMITTING, "pending", "succeeded", "failed", UNKNOWN)


def person_owner(issuer: str, subject: str) -> str:
    """The owner of an OAuth user's rows: namespaced, so it can never equal a token hash (hex) or ""."""
    return f"oauth:{issuer} {subject}"


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
INTERRUPTED = (
    "the server stopped while submitting this (killed or crashed before the Flux API answered); the API "
    "may have the task and may have billed it: check your AceDataCloud console before submitting it again"
)


@dataclass(frozen=True)
class HistoryEntry:
    row_id: int
    task_id: str | None
    status: str
    model: str | None
    prompt: str | None
    size: str | None
    request: dict[str, Any]
    result: dict[str, Any] | None
    trace_id: str | None
    error: str | None
    created_at: float
    updated_at: float
    fingerprint: str | None = None
    delivered_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "status": self.status,
            "model": self.model,
            "prompt": self.prompt,
            "size": self.size,
            "request": self.request,
            "result": self.result,
            "trace_id": self.trace_id,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "delivered_at": _iso(self.delivered_at) if self.delivered_at is not None else None,
        }


@dataclass(frozen=True)
class Claim:
    """The answer to "may this call submit?": a fresh row to submit with, or the earlier row it repeats."""

    row_id: int
    earlier: HistoryEntry | None  # None: the row is new (status submitting) and this call submits


class History:
    """The history database. Every method runs the SQL in a worker thread, one at a time."""

    def __init__(self, path: Path) -> None:
        if str(path) != IN_MEMORY:
            make_private_folder(path.parent)
            _prepare_private_files(path)
        self.path = path
        self._lock = threading.RLock()  # re-entrant: _record holds it across its statements
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
            self._db.executescript(UPLOADS_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('owner_key', ?)", (secrets.token_hex(32),))
            self._owner_key = self._db.execute("SELECT value FROM meta WHERE key='owner_key'").fetchone()[0]
            self._db.execute(
                "UPDATE tasks SET status=?, error=?, updated_at=? WHERE status=?",
                (UNKNOWN, INTERRUPTED, time.time(), SUBMITTING),
            )

    def owner_of(self, token: str) -> str:
        """A stable name for whoever holds this token, from which the token cannot be recovered."""
        return hmac.new(self._owner_key.encode(), token.encode(), hashlib.sha256).hexdigest()[:32]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def begin(self, request: dict[str, Any], owner: str = "") -> int:
        """Record a submission about to be made; returns the row id to complete it with."""
        row_id: int = await self._run(self._insert, request, owner, None)
        return row_id

    async def claim(
        self, request: dict[str, Any], fingerprint: str, owner: str = "", *, since: float
    ) -> Claim:
        """The newest row since `since` with this fingerprint whose outcome no caller has received, if any;
        otherwise a new `submitting` row for this call to submit with. Atomic across processes."""
        claim: Claim = await self._run(self._claim, request, fingerprint, owner, since)
        return claim

    async def row(self, row_id: int) -> HistoryEntry | None:
        rows = await self._run(self._query, "SELECT * FROM tasks WHERE id=?", (row_id,))
        return _entry(rows[0]) if rows else None

    async def deliver(
        self, owner: str = "", *, task_ids: Collection[str] = (), row_ids: Collection[int] = ()
    ) -> None:
        """Note that a caller is being given these rows' outcomes (called last, just before answering).

        A call cancelled while this runs will not send its answer, so it takes its own mark back. A mark
        that cannot be written (database locked) only costs a later identical call a re-run it did not
        need, so it is logged, never allowed to fail the answer.
        """
        if not task_ids and not row_ids:
            return
        stamp = time.time()
        try:
            await self._run(self._deliver, stamp, owner, list(task_ids), list(row_ids))
            await anyio.lowlevel.checkpoint_if_cancelled()
        except sqlite3.Error as exc:
            logger.warning("could not note a delivered result in the history: %s", exc)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._run(
                    self._execute,
                    "UPDATE tasks SET delivered_at=NULL WHERE owner=? AND delivered_at=?",
                    (owner, stamp),
                )
            raise

    async def submitted(self, row_id: int, task_id: str, trace_id: str | None) -> None:
        await self._run(self._submitted, row_id, task_id, trace_id)

    async def submit_failed(self, row_id: int, error: str, *, maybe_accepted: bool) -> None:
        status = UNKNOWN if maybe_accepted else "rejected"
        await self._run(
            self._execute,
            "UPDATE tasks SET status=?, error=?, updated_at=? WHERE id=?",
            (status, error, time.time(), row_id),
        )

    async def abandoned(self, row_id: int) -> None:
        """A row still `submitting` after any submission would have ended: its process died mid-submit."""
        await self._run(
            self._execute,
            "UPDATE tasks SET status=?, error=?, updated_at=? WHERE id=? AND status=?",
            (UNKNOWN, INTERRUPTED, time.time(), row_id, SUBMITTING),
        )

    async def record(self, result: TaskResult, owner: str = "") -> None:
        """Store the latest known state of a task (inserting it if this server never saw it)."""
        await self._run(self._record, result, owner)

    async def get(self, task_id: str, owner: str = "") -> HistoryEntry | None:
        rows = await self._run(
            self._query, "SELECT * FROM tasks WHERE task_id=? AND owner=?", (task_id, owner)
        )
        return _entry(rows[0]) if rows else None

    async def recent(
        self, limit: int, status: str | None = None, query: str | None = None, owner: str = ""
    ) -> list[HistoryEntry]:
        sql, params = "SELECT * FROM tasks WHERE owner=?", [owner]
        if status is not None:
            sql += " AND status=?"
            params.append(status)
        if query:
            sql += " AND prompt LIKE ? ESCAPE '\\'"
            params.append("%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = await self._run(self._query, sql, (*params, limit))
        return [_entry(row) for row in rows]

    async def _run(self, function: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, *args)

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

    def _insert(self, request: dict[str, Any], owner: str, fingerprint: str | None) -> int:
        now = time.time()
        cursor = self._execute(
            "INSERT INTO tasks (owner, status, action, model, prompt, size, request, fingerprint, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                owner,
                SUBMITTING,
                request.get("action"),
                request.get("model"),
                request.get("prompt"),
                request.get("size"),
                json.dumps(request),
                fingerprint,
                now,
                now,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _claim(self, request: dict[str, Any], fingerprint: str, owner: str, since: float) -> Claim:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._query(
                    "SELECT * FROM tasks WHERE owner=? AND fingerprint=? AND delivered_at IS NULL "
                    f"AND created_at>=? AND status IN ({', '.join('?' * len(CONTINUABLE))}) "
                    "ORDER BY created_at DESC, id DESC LIMIT 1",
                    (owner, fingerprint, since, *CONTINUABLE),
                )
                claim = Claim(rows[0]["id"], _entry(rows[0])) if rows else None
                if claim is None:
                    claim = Claim(self._insert(request, owner, fingerprint), None)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return claim

    def _submitted(self, row_id: int, task_id: str, trace_id: str | None) -> None:
        # A task id is news no caller has had yet, even if one was told this submission's fate was unknown.
        self._execute(
            "UPDATE tasks SET task_id=?, status='pending', trace_id=?, error=NULL, delivered_at=NULL, "
            "updated_at=? WHERE id=?",
            (task_id, trace_id, time.time(), row_id),
        )

    def _deliver(self, stamp: float, owner: str, task_ids: list[str], row_ids: list[int]) -> None:
        tasks, rows = ", ".join("?" * len(task_ids)) or "NULL", ", ".join("?" * len(row_ids)) or "NULL"
        self._execute(
            f"UPDATE tasks SET delivered_at=? WHERE owner=? AND delivered_at IS NULL "
            f"AND (task_id IN ({tasks}) OR id IN ({rows}))",
            (stamp, owner, *task_ids, *row_ids),
        )

    def _record(self, result: TaskResult, owner: str) -> None:
        with self._lock:  # read, update or insert as one step: concurrent records of a task must not race
            self._record_locked(result, owner)

    def _record_locked(self, result: TaskResult, owner: str) -> None:
        now = time.time()
        payload = json.dumps(self._keep_files(result, owner))
        error = result.error.message if result.error else None
        updated = self._execute(
            "UPDATE tasks SET status=?, result=?, trace_id=COALESCE(?, trace_id), error=?, "
            "model=COALESCE(model, ?), prompt=COALESCE(prompt, ?), size=COALESCE(size, ?), updated_at=? "
            "WHERE task_id=? AND owner=?",
            (
                result.status.value,
                payload,
                result.trace_id,
                error,
                result.model,
                result.prompt,
                result.size,
                now,
                result.task_id,
                owner,
            ),
        )
        if updated.rowcount == 0:
            request = {"model": result.model, "prompt": result.prompt, "size": result.size}
            self._execute(
                "INSERT INTO tasks (owner, task_id, status, model, prompt, size, request, result, trace_id, "
                "error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    owner,
                    result.task_id,
                    result.status.value,
                    result.model,
                    result.prompt,
                    result.size,
                    json.dumps(request),
                    payload,
                    result.trace_id,
                    error,
                    now,
                    now,
                ),
            )

    def _keep_files(self, result: TaskResult, owner: str) -> dict[str, Any]:
        """The result to store, still naming the files an earlier record of it saved."""
        fresh = result.model_dump(mode="json")
        rows = self._query("SELECT result FROM tasks WHERE task_id=? AND owner=?", (result.task_id, owner))
        earlier = json.loads(rows[0]["result"]) if rows and rows[0]["result"] else {}
        for files in ("images", "videos"):
            known = {item["index"]: item for item in earlier.get(files, [])}
            for item in fresh.get(files, []):
                for key in ("path", "resource_uri", "width", "height", "size_bytes"):
                    if item.get(key) is None and known.get(item["index"], {}).get(key) is not None:
                        item[key] = known[item["index"]][key]
        return fresh

    def _execute(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    async def uploaded(self, sha256: str, owner: str = "", *, max_age: float) -> str | None:
        """The file URL an upload of this content got less than `max_age` seconds ago, if any."""
        rows = await self._run(
            self._query,
            "SELECT file_url FROM uploads WHERE owner=? AND sha256=? AND uploaded_at>?",
            (owner, sha256, time.time() - max_age),
        )
        return str(rows[0]["file_url"]) if rows else None

    async def remember_upload(self, sha256: str, file_url: str, owner: str = "") -> None:
        await self._run(
            self._execute,
            "INSERT OR REPLACE INTO uploads (owner, sha256, file_url, uploaded_at) VALUES (?, ?, ?, ?)",
            (owner, sha256, file_url, time.time()),
        )


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


def _entry(row: sqlite3.Row) -> HistoryEntry:
    return HistoryEntry(
        row_id=row["id"],
        task_id=row["task_id"],
        status=row["status"],
        model=row["model"],
        prompt=row["prompt"],
        size=row["size"],
        request=json.loads(row["request"]),
        result=json.loads(row["result"]) if row["result"] else None,
        trace_id=row["trace_id"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        fingerprint=row["fingerprint"],
        delivered_at=row["delivered_at"],
    )


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
