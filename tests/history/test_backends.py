"""The two backends under the history: the tables each one holds, how SQLite opens a busy file, how
PostgreSQL closes, and the guards that stay under `python -O`."""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from flux_mcp.history import sqlite as sqlite_backend
from flux_mcp.history.postgres import PostgresBackend
from flux_mcp.history.schema import INDEXES, TABLES, Column, Table, add_column
from flux_mcp.history.store import History
from testkit.postgres import PostgresCluster
from tests.support import WAIT_BOUND

DATA = Path(__file__).resolve().parents[1] / "data"
# The tables as each earlier release left them: SQLite before retry attachment (0) and after (1),
# PostgreSQL as its first release created it (1).
SQLITE_DUMPS = {"version 0": DATA / "history-v0.sql", "version 1": DATA / "history-v1.sql"}
POSTGRES_DUMPS = {"version 1": DATA / "history-v1-postgres.sql"}

# A column as both databases describe it: its type's family and whether it may be NULL.
FAMILIES = {
    "integer": "integer",
    "bigint": "integer",
    "text": "text",
    "real": "real",
    "double precision": "real",
}
Shape = tuple[dict[str, dict[str, tuple[str, bool]]], set[str]]
DECLARED: Shape = (
    {
        table.name: {
            column.name: ("integer" if column.family == "id" else column.family, column.nullable)
            for column in table.columns
        }
        for table in TABLES
    },
    {index.name for index in INDEXES},
)


def sqlite_shape(path: Path) -> Shape:
    with closing(sqlite3.connect(path)) as db:
        tables = {
            table.name: {
                name: (FAMILIES[kind.lower()], not (notnull or primary))
                for _, name, kind, notnull, _, primary in db.execute(f"PRAGMA table_info({table.name})")
            }
            for table in TABLES
        }
        indexes = {
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql NOT NULL")
        }
    return tables, indexes


def postgres_shape(url: str) -> Shape:
    tables: dict[str, dict[str, tuple[str, bool]]] = {}
    with psycopg.connect(url) as db:
        for table, name, kind, nullable in db.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name <> 'flux_mcp_migrations'"
        ):
            tables.setdefault(table, {})[name] = (FAMILIES[kind], nullable == "YES")
        indexes = {
            name
            for (name,) in db.execute(  # those a constraint (primary key, unique) makes are not declared
                "SELECT indexname FROM pg_indexes AS i WHERE schemaname = current_schema() "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)"
            )
        }
    return tables, indexes


@pytest.mark.anyio
async def test_both_backends_hold_the_declared_tables_whether_fresh_or_upgraded(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    shapes: dict[str, Shape] = {}
    for name, dump in {"fresh": None, **SQLITE_DUMPS}.items():
        path = tmp_path / f"{name}.db"
        if dump is not None:
            with closing(sqlite3.connect(path)) as db:
                db.executescript(dump.read_text())
        History(path).close()
        shapes[f"sqlite, {name}"] = sqlite_shape(path)
    for name, dump in {"fresh": None, **POSTGRES_DUMPS}.items():
        url = postgres_cluster.create_database()
        if dump is not None:
            with psycopg.connect(url, autocommit=True) as db:
                db.execute(dump.read_text().encode())
        async with History.connect(url) as history:
            await history.probe()
        shapes[f"postgresql, {name}"] = postgres_shape(url)
    assert shapes == dict.fromkeys(shapes, DECLARED)


def test_a_column_that_cannot_be_added_to_an_existing_table_is_refused() -> None:
    table = Table("tasks", (Column("id", "id", nullable=False),))
    with pytest.raises(ValueError, match=r"tasks\.status cannot be added"):
        add_column(table, Column("status", "text", nullable=False), "sqlite")
    assert add_column(table, Column("owner", "text", nullable=False, default="''"), "postgresql") == (
        "ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT ''"
    )


class Heard(logging.Handler):
    """Sets `event` when a record says `words`."""

    def __init__(self, words: str, event: threading.Event) -> None:
        super().__init__()
        self.words, self.event = words, event

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


def test_opening_a_file_another_process_is_writing_waits_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds the write lock of a new file (another process creating its tables): SQLite
    refuses `PRAGMA journal_mode=WAL` at once, busy timeout or not. Opening waits, and opens once it is
    released."""
    path = tmp_path / "history.db"
    caplog.set_level(logging.INFO, logger=sqlite_backend.logger.name)
    settled = threading.Event()  # the opener said it waits, or it ended
    heard = Heard("is busy", settled)
    sqlite_backend.logger.addHandler(heard)
    opened: list[Any] = []

    def open_history() -> None:
        try:
            opened.append(History(path))
        except BaseException as exc:
            opened.append(exc)
        finally:
            settled.set()

    holder = sqlite3.connect(path, isolation_level=None)
    opener = threading.Thread(target=open_history)
    try:
        holder.execute("BEGIN IMMEDIATE")
        opener.start()
        assert settled.wait(timeout=WAIT_BOUND)
        assert opened == []  # neither failed nor opened: waiting
        holder.execute("ROLLBACK")
        opener.join(timeout=WAIT_BOUND)
    finally:
        holder.close()
        sqlite_backend.logger.removeHandler(heard)
    (history,) = opened
    assert isinstance(history, History)
    try:
        assert history._sqlite().fetch_now("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    finally:
        history.close()


def test_a_file_that_stays_locked_fails_to_open_after_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_SECONDS", 0.05)
    path = tmp_path / "history.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            History(path)


async def connections_to(url: str) -> int:
    """Client sessions on the database of `url` (not the server's own workers), other than the one asking."""
    async with await psycopg.AsyncConnection.connect(url) as db:
        cursor = await db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else -1


@pytest.mark.anyio
async def test_closing_a_postgres_backend_closes_its_pool_and_its_listener(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url)
    heard: list[str] = []
    listening = anyio.Event()

    def hear(payload: str) -> None:
        heard.append(payload)
        listening.set()

    await backend.open()
    with anyio.fail_after(WAIT_BOUND):  # a listener `aclose` does not stop would hold the group for ever
        async with anyio.create_task_group() as group:
            group.start_soon(backend.listen, hear)
            await backend.probe()  # a pool connection in use
            # A notification sent before the listener's LISTEN is lost: send until one is heard.
            while not listening.is_set():
                await backend.notify("hello")
                with anyio.move_on_after(0.05):
                    await listening.wait()
            assert await connections_to(postgres_url) >= 2
            await backend.aclose()  # `listen` returns by itself: the group ends, nothing cancelled it
    assert heard[0] == "hello"
    with anyio.fail_after(WAIT_BOUND):  # none left: a session ends on the server a moment after its client
        while await connections_to(postgres_url):  # noqa: ASYNC110 - the server offers no event for it
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_statement_with_a_literal_percent_is_refused_not_misread(postgres_url: str) -> None:
    async with PostgresBackend(postgres_url).opened() as backend:
        with pytest.raises(ValueError, match="literal %"):
            await backend.fetch("SELECT '100%' AS share")
        assert await backend.fetch("SELECT ? AS share", ("100%",)) == [{"share": "100%"}]


@pytest.mark.anyio
async def test_a_statement_on_a_file_another_process_holds_waits_for_it(tmp_path: Path) -> None:
    """Statements run on the event loop when SQLite answers at once; one the other holder keeps busy is
    waited for in a worker thread, as SQLite's busy timeout did, and then written."""
    path = tmp_path / "history.db"
    history = History(path)
    written: list[int] = []

    async def write() -> None:
        written.append(await history.record_submitting({"action": "generate", "model": "flux-dev"}))

    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            async with anyio.create_task_group() as group:
                group.start_soon(write)
                for _ in range(20):  # the write has tried, found the file busy, and waits in a thread
                    await anyio.lowlevel.checkpoint()
                assert not written
                holder.execute("COMMIT")
        assert len(written) == 1
        assert history._sqlite().fetch_now("SELECT count(*) AS n FROM tasks")[0]["n"] == 1
    finally:
        history.close()


@pytest.mark.anyio
async def test_statements_on_a_file_nobody_else_holds_take_no_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker thread's round trip cost more than the statement (issue 27 §2: eight per call)."""
    history = History(tmp_path / "history.db")
    hops: list[object] = []
    real = anyio.to_thread.run_sync

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(function)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    try:
        claim = await history.claim_submission({"model": "flux-dev"}, "print", since=0.0)
        await history.mark_submitted(claim.row_id, "task-1", None)
        assert await history.find_task("task-1") is not None
        assert hops == []
    finally:
        history.close()
