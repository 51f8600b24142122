"""Local history of every task this server submitted: the rules, over SQLite or PostgreSQL.

A row is written *before* the upstream is asked (status `submitting`), gets its task id the
moment the upstream answers, and follows the task to its end: status, result, saved file paths.
So a restart loses nothing: a pending task is still listed, and `get_task` completes it. A row
left in `submitting` means a server stopped between asking and hearing back (killed, crashed, power
cut): the upstream may or may not have the task. Opening a SQLite history turns such rows into `unknown`
("may have been billed"), the same status an ambiguous submit failure gets, so they are reported
honestly, never dropped. A process that is still submitting when another opens the same file is not
hurt by this: its own answer (task id, or failure) rewrites the row by its id a moment later. A shared
PostgreSQL history, which replicas open all the time, does that only to rows older than
STALE_SUBMITTING_SECONDS; younger ones are settled by the retry rule's own bound (`jobs.runner`).

A result is stored as a `TaskResult` and read back as one (parsed in `rows.stored_result`, nowhere
else). Each state a job reaches is recorded by one statement, an upsert (`record_state`): no lock, no read
first, so two processes or replicas recording one task at the same moment leave one row, and a finished
state is never replaced by the pending one a slower look wrote last. What a record keeps of earlier ones
(the saved files) is the job's business: `finishing.Finisher` writes it into the result it records.

Each row also says which request it is (`fingerprint`, `ImageRequest.fingerprint`) and whether any
caller has received its outcome yet (`delivered_at`). That is what lets an identical retry continue a
job instead of paying for it again (the rule is in `jobs.runner`); `claim_submission` decides it
atomically, in one transaction (SQLite's `BEGIN IMMEDIATE`; PostgreSQL's advisory lock on the owner and
fingerprint), so
two identical calls at the same moment (in one process, in two processes sharing a file, or on two
replicas) make one submission. Rows written before these columns existed have no fingerprint and are
never continued.

The rules live here once; a row's shape is `rows`, and the backends only run statements
(`backend` is their shape): `sqlite` (one file, the embedded default) and `postgres`
(`FLUX_MCP_DATABASE_URL`, shared by replicas, with LISTEN/NOTIFY to relay callbacks between them). When
PostgreSQL cannot be reached every call that needs it raises `HistoryUnavailableError`, except the
writes that follow a submission (`mark_submitted`, `mark_submit_failed`, `record_state`): those are
kept in order in memory and written first thing once the database answers, so a task id the upstream
gave is never lost to an outage the process outlives.

History is kept, not pruned: one row is about a kilobyte, so years of use stay small; delete the
file (FLUX_MCP_DB) to start over.

Rows belong to an owner. On stdio and with server tokens there is one owner (""). With pass-through
auth each caller's own API token identifies them, and the owner is a keyed hash of it (the key is
random and kept in the database), so users never see each other's rows and no token is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from flux_mcp.domain.errors import BudgetExceededError, HistoryUnavailableError
from flux_mcp.domain.tasks import TaskResult, TaskStatus, images_asked
from flux_mcp.domain.team import Spend, over_budget, refusal
from flux_mcp.history.backend import Backend, Statements
from flux_mcp.history.protocol_tasks import COLUMNS as PROTOCOL_TASK_COLUMNS
from flux_mcp.history.protocol_tasks import WORKING, ProtocolTask, protocol_task_from_row
from flux_mcp.history.rows import (
    FOLD,
    RECORD,
    SUBMITTING,
    UNFOLDED,
    UNKNOWN,
    Claim,
    HistoryEntry,
    contains,
    entry_from_row,
    fold_params,
    insert_row,
    record_params,
)
from flux_mcp.history.sqlite import SqliteBackend

logger = logging.getLogger(__name__)

# Rows an identical call may continue; a `rejected` submission never reached the upstream's books.
CONTINUABLE = (SUBMITTING, "pending", "succeeded", "failed", UNKNOWN)
INTERRUPTED = (
    "the server stopped while submitting this (killed or crashed before the Flux API answered); the API "
    "may have the task and may have billed it: check your AceDataCloud console before submitting it again"
)
# On a shared history a row this old still `submitting` belongs to a replica that died mid-submit.
STALE_SUBMITTING_SECONDS = 3600.0
READY_RETRY_SECONDS = (0.5, 10.0)  # first and longest pause between attempts to reach the database
MAX_DEFERRED_WRITES = 10_000

OWNER_KEY_INSERT = "INSERT INTO meta (key, value) VALUES ('owner_key', ?) ON CONFLICT (key) DO NOTHING"
OWNER_KEY_SELECT = "SELECT value FROM meta WHERE key='owner_key'"
SWEEP_INTERRUPTED = "UPDATE tasks SET status=?, error=?, updated_at=? WHERE status=? AND created_at<?"
# What a row has spent: the cost its result reported; nothing if it was refused or failed without one;
# else what was set aside for it at submission (pending, unknown, or succeeded without a reported cost).
SPENT = (
    "CASE WHEN cost IS NOT NULL THEN cost WHEN status IN ('rejected', 'failed') THEN 0 "
    "ELSE COALESCE(reserved, 0) END"
)
BUDGET_LOCK = "budget"  # one holder at a time of the check-and-reserve, across every caller and replica
ESTIMATE_SAMPLE = 20


async def _continuable(db: Statements, fingerprint: str, owner: str, since: float) -> HistoryEntry | None:
    """The newest row since `since` with this fingerprint whose outcome no caller has received, if any."""
    rows = await db.fetch(
        "SELECT * FROM tasks WHERE owner=? AND fingerprint=? AND delivered_at IS NULL "
        f"AND created_at>=? AND status IN ({', '.join('?' * len(CONTINUABLE))}) "
        "ORDER BY created_at DESC, id DESC LIMIT 1",
        (owner, fingerprint, since, *CONTINUABLE),
    )
    return entry_from_row(rows[0]) if rows else None


async def _check_budgets(db: Statements, spend: Spend) -> None:
    now = time.time()
    for budget, person in spend.limits():
        spent = await _spent(db, budget.starts(now), person)
        if over_budget(spent, budget, spend.estimate):
            message = refusal(spent, budget, spend.estimate, now, total=person is None)
            logger.info("refused a submission over %s budget", "the server's" if person is None else "a")
            raise BudgetExceededError(message)


async def _spent(db: Statements, since: float, person: str | None) -> float:
    sql = f"SELECT COALESCE(SUM({SPENT}), 0) AS spent FROM tasks WHERE created_at>=?"
    params: list[Any] = [since]
    if person is not None:
        sql += " AND person=?"
        params.append(person)
    rows = await db.fetch(sql, params)
    return float(rows[0]["spent"])


def _request(row: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        request = json.loads(row["request"])
    except (TypeError, ValueError):
        return None
    return request if isinstance(request, dict) else None


def person_owner(issuer: str, subject: str) -> str:
    """The owner of an OAuth user's rows: namespaced, so it can never equal a token hash (hex) or ""."""
    return f"oauth:{issuer} {subject}"


class History:
    """The history: its rules, over one backend. `History(path)` opens a SQLite file (the default);
    `History.connect(url)` a shared PostgreSQL database."""

    def __init__(self, path: Path | None = None, *, backend: Backend | None = None) -> None:
        self.path = path
        self._owner_key: str | None = None
        if backend is None:
            if path is None:
                raise ValueError("History needs a path or a backend")
            sqlite = SqliteBackend(path)
            try:
                self._owner_key = _prepare_now(sqlite)
            except BaseException:
                sqlite.close()  # a history that failed to open keeps no connection to its file
                raise
            backend = sqlite
        self._backend: Backend = backend
        self._deferred: list[Callable[[], Awaitable[None]]] = []
        self._deferred_lock = anyio.Lock(fast_acquire=True)  # taken for every write: no loop pass

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str, *, on_notify: Callable[[str], Awaitable[None] | None] | None = None
    ) -> AsyncIterator[History]:
        """A history in the PostgreSQL database at `url`, for the duration of the block.

        It is returned at once, reachable or not; until the database answers, a background task keeps
        trying (and calls fail with HistoryUnavailableError). With `on_notify`, every `notify` any
        replica sends reaches it.
        """
        from flux_mcp.history.postgres import PostgresBackend  # the `postgres` extra, needed only here

        async with PostgresBackend(url).opened() as backend:
            history = cls(backend=backend)
            failure: BaseException | None = None
            async with anyio.create_task_group() as group:
                group.start_soon(history._keep_trying)
                if on_notify is not None:
                    group.start_soon(backend.listen, on_notify)
                try:
                    yield history
                except BaseException as exc:  # re-raised as itself, not inside an ExceptionGroup
                    failure = exc
                group.cancel_scope.cancel()
            if failure is not None:
                raise failure

    @property
    def kind(self) -> str:
        return self._backend.kind

    @property
    def shared(self) -> bool:
        """Whether other replicas share this history (and hear `notify`)."""
        return self._backend.shared

    @property
    def where(self) -> str:
        return self._backend.where

    def owner_of(self, token: str) -> str:
        """A stable name for whoever holds this token, from which the token cannot be recovered."""
        if self._owner_key is None:
            raise HistoryUnavailableError(self.where, "not reached since this server started")
        return hmac.new(self._owner_key.encode(), token.encode(), hashlib.sha256).hexdigest()[:32]

    def close(self) -> None:
        """Close a SQLite history, without an event loop; a PostgreSQL one closes with `aclose`."""
        self._sqlite().close()

    async def aclose(self) -> None:
        await self._backend.aclose()

    async def probe(self) -> None:
        """Raise HistoryUnavailableError unless the history answers (and has caught up) now."""
        await self._backend.probe()
        await self._ready()

    async def notify(self, payload: str) -> None:
        """Tell every replica sharing this history (`connect(on_notify=...)`); a no-op on SQLite."""
        await self._backend.notify(payload)

    async def record_submitting(self, request: dict[str, Any], owner: str = "") -> int:
        """Record a submission about to be made; returns the row id to complete it with."""
        await self._ready()
        return await insert_row(self._backend, request, owner, None)

    async def claim_submission(
        self,
        request: dict[str, Any],
        fingerprint: str,
        owner: str = "",
        *,
        since: float,
        spend: Spend | None = None,
        person: str | None = None,
    ) -> Claim:
        """The newest row since `since` with this fingerprint whose outcome no caller has received, if any;
        otherwise a new `submitting` row for this call to submit with. Atomic across processes.

        With `spend`, a new row is also the reservation of its estimate against the budgets, checked and
        written in the same transaction under one lock for every caller (raises BudgetExceededError), so
        two calls (in two processes, or on two replicas) cannot both take the last credits. Continuing an
        earlier submission is free, so it is never refused. `person` (the spend's, when there is one) is
        who a new row is for, in the report whether or not a budget is set.
        """
        await self._ready()
        lock = BUDGET_LOCK if spend is not None else f"claim:{owner}:{fingerprint}"
        async with self._backend.transaction(lock=lock) as tx:
            earlier = await _continuable(tx, fingerprint, owner, since)
            if earlier is not None:
                return Claim(earlier.row_id, earlier)
            if spend is None:
                return Claim(await insert_row(tx, request, owner, fingerprint, person), None)
            await _check_budgets(tx, spend)
            row = await insert_row(tx, request, owner, fingerprint, spend.person, spend.estimate)
            return Claim(row, None)

    async def check_budgets(self, spend: Spend, fingerprint: str, owner: str = "", *, since: float) -> None:
        """Raise BudgetExceededError if a new submission of `spend` would not fit now; nothing is reserved
        (`claim_submission` does that), and a call that would continue an earlier one is free."""
        await self._ready()
        async with self._backend.session() as session:
            if await _continuable(session, fingerprint, owner, since) is None:
                await _check_budgets(session, spend)

    async def spent(self, since: float, person: str | None = None) -> float:
        """Credits spent since `since` (a Unix time), by `person` or by everyone (`SPENT`)."""
        await self._ready()
        async with self._backend.session() as session:
            return await _spent(session, since, person)

    async def spending(self, since: float) -> list[tuple[HistoryEntry, float]]:
        """Every row submitted since `since` (a Unix time), oldest first, with what it spent (`SPENT`)."""
        await self._ready()
        rows = await self._backend.fetch(
            f"SELECT *, {SPENT} AS spent FROM tasks WHERE created_at>=? ORDER BY created_at, id", (since,)
        )
        return [(entry_from_row(row), float(row["spent"])) for row in rows]

    async def estimate_cost(self, model: str, size: str | None, count: int) -> float:
        """What a job of `count` images (or one video) of `model` is reckoned to cost: the highest cost per
        image among the last ESTIMATE_SAMPLE results of that model that reported one (those of the same
        size, when there are any), times `count`; 0 when none has (then the result's cost reconciles it)."""
        await self._ready()
        rows = await self._backend.fetch(
            "SELECT size, cost, request FROM tasks WHERE model=? AND cost IS NOT NULL "
            "ORDER BY updated_at DESC, id DESC LIMIT ?",
            (model, ESTIMATE_SAMPLE),
        )
        per_image = [(row["size"], float(row["cost"]) / images_asked(_request(row))) for row in rows]
        same_size = [cost for seen, cost in per_image if seen == size]
        candidates = same_size or [cost for _, cost in per_image]
        return max(candidates, default=0.0) * count

    async def find_row(self, row_id: int) -> HistoryEntry | None:
        await self._ready()
        rows = await self._backend.fetch("SELECT * FROM tasks WHERE id=?", (row_id,))
        return entry_from_row(rows[0]) if rows else None

    async def mark_delivered(
        self, owner: str = "", *, task_ids: Collection[str] = (), row_ids: Collection[int] = ()
    ) -> None:
        """Note that a caller is being given these rows' outcomes (called last, just before answering).

        A call cancelled while this runs will not send its answer, so it takes its own mark back. A mark
        that cannot be written (database locked or unreachable) only costs a later identical call a re-run
        it did not need, so it is logged, never allowed to fail the answer.
        """
        if not task_ids and not row_ids:
            return
        stamp = time.time()
        try:
            await self._ready()
            await self._mark_delivered(stamp, owner, list(task_ids), list(row_ids))
            await anyio.lowlevel.checkpoint_if_cancelled()
        except (sqlite3.Error, HistoryUnavailableError) as exc:
            logger.warning("could not note a delivered result in the history: %s", exc)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._backend.execute(
                    "UPDATE tasks SET delivered_at=NULL WHERE owner=? AND delivered_at=?", (owner, stamp)
                )
            raise

    async def mark_submitted(self, row_id: int, task_id: str, trace_id: str | None) -> None:
        # A task id is news no caller has had yet, even if one was told this submission's fate was unknown.
        stamp = time.time()
        await self._durable(
            "the task id of a submission",
            lambda: self._backend.execute(
                "UPDATE tasks SET task_id=?, status='pending', trace_id=?, error=NULL, delivered_at=NULL, "
                "updated_at=? WHERE id=?",
                (task_id, trace_id, stamp, row_id),
            ),
        )

    async def mark_submit_failed(self, row_id: int, error: str, *, maybe_accepted: bool) -> None:
        status, stamp = (UNKNOWN if maybe_accepted else "rejected"), time.time()
        await self._durable(
            "a failed submission",
            lambda: self._backend.execute(
                "UPDATE tasks SET status=?, error=?, updated_at=? WHERE id=?", (status, error, stamp, row_id)
            ),
        )

    async def mark_abandoned(self, row_id: int) -> None:
        """A row still `submitting` after any submission would have ended: its process died mid-submit."""
        await self._ready()
        await self._backend.execute(
            "UPDATE tasks SET status=?, error=?, updated_at=? WHERE id=? AND status=?",
            (UNKNOWN, INTERRUPTED, time.time(), row_id, SUBMITTING),
        )

    async def record_state(self, result: TaskResult, owner: str = "") -> None:
        """Store the latest known state of a task, as given (inserting it if this server never saw it)."""
        params = record_params(result, owner, time.time())
        await self._durable(
            f"the state of task {result.task_id}", lambda: self._backend.execute(RECORD, params)
        )

    async def find_task(self, task_id: str, owner: str = "") -> HistoryEntry | None:
        await self._ready()
        rows = await self._backend.fetch("SELECT * FROM tasks WHERE task_id=? AND owner=?", (task_id, owner))
        return entry_from_row(rows[0]) if rows else None

    async def task_pending(self, task_id: str) -> bool:
        """Whether any owner's row of this task says it is still pending (what a callback may wake)."""
        await self._ready()
        rows = await self._backend.fetch(
            "SELECT 1 AS pending FROM tasks WHERE task_id=? AND status=? LIMIT 1",
            (task_id, TaskStatus.PENDING.value),
        )
        return bool(rows)

    async def owned_task_ids(self, task_ids: Collection[str], owner: str = "") -> set[str]:
        """Those of `task_ids` that are in the owner's history."""
        if not task_ids:
            return set()
        await self._ready()
        rows = await self._backend.fetch(
            f"SELECT task_id FROM tasks WHERE owner=? AND task_id IN ({', '.join('?' * len(task_ids))})",
            (owner, *task_ids),
        )
        return {str(row["task_id"]) for row in rows}

    async def list_tasks(
        self, limit: int, status: str | None = None, query: str | None = None, owner: str = ""
    ) -> list[HistoryEntry]:
        """The owner's newest rows first, at most `limit`; `query` keeps the prompts that contain it, case
        ignored the same way on both backends (`rows.folded`), its `%` and `_` taken literally."""
        sql, params = "SELECT * FROM tasks WHERE owner=?", [owner]
        if status is not None:
            sql += " AND status=?"
            params.append(status)
        if query:
            sql += " AND prompt_folded LIKE ? ESCAPE '\\'"
            params.append(contains(query))
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        await self._ready()
        rows = await self._backend.fetch(sql, (*params, limit))
        return [entry_from_row(row) for row in rows]

    async def run_times(self, limit: int) -> list[tuple[dict[str, Any], float]]:
        """How long the newest `limit` jobs submitted here took, newest first: (request, seconds from the
        submission to the recorded success), every owner's (a model's pace is the upstream's)."""
        await self._ready()
        rows = await self._backend.fetch(
            "SELECT request, created_at, updated_at FROM tasks WHERE status=? AND action IS NOT NULL "
            "ORDER BY id DESC LIMIT ?",
            (TaskStatus.SUCCEEDED.value, limit),
        )
        return [(json.loads(row["request"]), row["updated_at"] - row["created_at"]) for row in rows]

    async def find_upload(self, sha256: str, owner: str = "", *, max_age: float) -> str | None:
        """The file URL an upload of this content got less than `max_age` seconds ago, if any."""
        await self._ready()
        rows = await self._backend.fetch(
            "SELECT file_url FROM uploads WHERE owner=? AND sha256=? AND uploaded_at>?",
            (owner, sha256, time.time() - max_age),
        )
        return str(rows[0]["file_url"]) if rows else None

    async def record_upload(self, sha256: str, file_url: str, owner: str = "") -> None:
        await self._ready()
        await self._backend.execute(
            "INSERT INTO uploads (owner, sha256, file_url, uploaded_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (owner, sha256) DO UPDATE SET file_url=excluded.file_url, "
            "uploaded_at=excluded.uploaded_at",
            (owner, sha256, file_url, time.time()),
        )

    # -- MCP Tasks (`protocol_tasks`): the handles clients poll, over the rows above --------------------

    async def add_protocol_task(self, task: ProtocolTask) -> None:
        await self._ready()
        marks = ", ".join("?" * len(task.params()))
        await self._backend.execute(
            f"INSERT INTO protocol_tasks ({PROTOCOL_TASK_COLUMNS}) VALUES ({marks})", task.params()
        )

    async def find_protocol_task(self, task_id: str, owner: str, person: str) -> ProtocolTask | None:
        """The task with this id if it is this caller's (owner and person); None otherwise, alike."""
        await self._ready()
        rows = await self._backend.fetch(
            "SELECT * FROM protocol_tasks WHERE id=? AND owner=? AND person=?", (task_id, owner, person)
        )
        return protocol_task_from_row(rows[0]) if rows else None

    async def list_protocol_tasks(
        self, owner: str, person: str, *, now: float, limit: int, offset: int = 0
    ) -> list[ProtocolTask]:
        """This caller's unexpired tasks, newest first."""
        await self._ready()
        rows = await self._backend.fetch(
            "SELECT * FROM protocol_tasks WHERE owner=? AND person=? AND expires_at>? "
            "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            (owner, person, now, limit, offset),
        )
        return [protocol_task_from_row(row) for row in rows]

    async def update_protocol_task(
        self, task_id: str, /, *, working_only: bool = True, **changes: Any
    ) -> bool:
        """Set these columns (named by the code, never by a caller); with `working_only`, only while the task
        is still working, so an end (or a cancel) is never overwritten. Whether the row changed."""
        columns = [*changes, "updated_at"]
        sql = f"UPDATE protocol_tasks SET {', '.join(f'{name}=?' for name in columns)} WHERE id=?"
        params: list[Any] = [*changes.values(), time.time(), task_id]
        if working_only:
            sql += " AND status=?"
            params.append(WORKING)
        await self._ready()
        return await self._backend.execute(sql, params) > 0

    async def drive_protocol_task(self, task_id: str, driver: str, *, stale_before: float) -> bool:
        """Make `driver` the one process driving this working task, unless another wrote it since
        `stale_before` (it is alive). Atomic: of replicas asking at once, one drives it."""
        await self._ready()
        changed = await self._backend.execute(
            "UPDATE protocol_tasks SET driver=? WHERE id=? AND status=? AND task_id IS NOT NULL "
            "AND (driver IS NULL OR driver=? OR updated_at<?)",
            (driver, task_id, WORKING, driver, stale_before),
        )
        return changed > 0

    async def delete_protocol_task(self, task_id: str) -> None:
        await self._ready()
        await self._backend.execute("DELETE FROM protocol_tasks WHERE id=?", (task_id,))

    def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        return self._sqlite().execute_now(sql, params)

    def _sqlite(self) -> SqliteBackend:
        if not isinstance(self._backend, SqliteBackend):
            raise TypeError("only a SQLite history is reachable synchronously")
        return self._backend

    # -- rules -------------------------------------------------------------------------------------

    async def _mark_delivered(
        self, stamp: float, owner: str, task_ids: list[str], row_ids: list[int]
    ) -> None:
        tasks, rows = ", ".join("?" * len(task_ids)) or "NULL", ", ".join("?" * len(row_ids)) or "NULL"
        await self._backend.execute(
            f"UPDATE tasks SET delivered_at=? WHERE owner=? AND delivered_at IS NULL "
            f"AND (task_id IN ({tasks}) OR id IN ({rows}))",
            (stamp, owner, *task_ids, *row_ids),
        )

    async def _durable(self, what: str, write: Callable[[], Awaitable[Any]]) -> None:
        """Write now, or (the database unreachable) keep the write, in order, until it answers again."""
        async with self._deferred_lock:
            if not self._deferred:
                try:
                    await write()
                    return
                except HistoryUnavailableError as exc:
                    logger.warning("history unreachable; %s is kept until it answers: %s", what, exc.reason)
            if len(self._deferred) >= MAX_DEFERRED_WRITES:
                raise HistoryUnavailableError(self.where, "too many writes waiting for it")
            self._deferred.append(write)

    async def _ready(self) -> None:
        """Before any use: the owner key read and every kept write written (raises while unreachable)."""
        if self._owner_key is not None and not self._deferred:
            return
        if self._owner_key is None:
            self._owner_key = await _prepare(self._backend)
        async with self._deferred_lock:
            while self._deferred:
                await self._deferred[0]()
                self._deferred.pop(0)
                if not self._deferred:
                    logger.info("history reachable again: every kept write is written")

    async def _keep_trying(self) -> None:
        """Reach the database until it answers once (the owner key), then catch up after outages."""
        pause = READY_RETRY_SECONDS[0]
        while True:
            try:
                await self._ready()
            except HistoryUnavailableError as exc:
                logger.warning("%s (retrying in %.1f s)", exc.message, pause)
                await anyio.sleep(pause)
                pause = min(pause * 2, READY_RETRY_SECONDS[1])
                continue
            pause = READY_RETRY_SECONDS[0]
            await anyio.sleep(READY_RETRY_SECONDS[1])


def _prepare_now(sqlite: SqliteBackend) -> str:
    """Opening a SQLite history: its owner key, rows a dead process left `submitting` made `unknown`, and
    the prompts of rows an older release wrote folded for search."""
    sqlite.execute_now(OWNER_KEY_INSERT, (secrets.token_hex(32),))
    key = str(sqlite.fetch_now(OWNER_KEY_SELECT)[0]["value"])
    now = time.time()
    sqlite.execute_now(SWEEP_INTERRUPTED, (UNKNOWN, INTERRUPTED, now, SUBMITTING, now + 1))
    if unfolded := sqlite.fetch_now(UNFOLDED):
        sqlite.execute_many_now(FOLD, fold_params(unfolded))
    return key


async def _prepare(backend: Backend) -> str:
    """Reaching a shared history: its owner key, only long-abandoned `submitting` rows made `unknown`, and
    the prompts of rows an older release wrote folded for search."""
    await backend.execute(OWNER_KEY_INSERT, (secrets.token_hex(32),))
    key = str((await backend.fetch(OWNER_KEY_SELECT))[0]["value"])
    now = time.time()
    stale = now - STALE_SUBMITTING_SECONDS
    await backend.execute(SWEEP_INTERRUPTED, (UNKNOWN, INTERRUPTED, now, SUBMITTING, stale))
    if unfolded := await backend.fetch(UNFOLDED):
        async with backend.transaction() as tx:
            for params in fold_params(unfolded):
                await tx.execute(FOLD, params)
    return key
