"""The history's PostgreSQL backend: one database shared by every replica (`FLUX_MCP_DATABASE_URL`).

psycopg 3 with psycopg_pool (the `postgres` extra): the driver PostgreSQL's own community maintains,
async and typed, with a pool that replaces connections a restarted server broke (`check`), and
LISTEN/NOTIFY as an async iterator (`AsyncConnection.notifies`). Statements come from `store.History`
with `?` placeholders and run here as `%s`.

The tables are `schema`'s; the version a database reached is stamped in `flux_mcp_migrations`, and the
first connection of a process brings an older database up to the schema in one transaction under an
advisory lock, so replicas starting together migrate once. The server starts
whether or not the database answers: until it does, every history call raises
`HistoryUnavailableError` (after at most CONNECT_TIMEOUT_SECONDS) and `/healthz` says why.

Callbacks reach the replica holding the waiting call through NOTIFY on CALLBACK_CHANNEL: the payload
names a callback slot (and the task a callback body named), never a secret.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from flux_mcp.domain.errors import HistoryUnavailableError
from flux_mcp.history.backend import Backend, bound
from flux_mcp.history.schema import SCHEMA_VERSION, TABLES, upgrade

logger = logging.getLogger(__name__)

CALLBACK_CHANNEL = "flux_mcp_callbacks"
CONNECT_TIMEOUT_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 2.0
LISTEN_RETRY_SECONDS = (0.2, 5.0)  # first and longest pause before the listener reconnects
POOL_SIZE = (1, 10)
MIGRATION_LOCK = 0x666C7578  # "flux": the advisory lock replicas migrate under
LOCK_BY_NAME = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"


def describe(url: str) -> str:
    """`PostgreSQL at host:port/db`: where the database is, without user or password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "PostgreSQL (unparsable FLUX_MCP_DATABASE_URL)"
    host = parts.get("host") or "localhost"
    return f"PostgreSQL at {host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


class PostgresBackend(Backend):
    """A pool of connections to one PostgreSQL database, opened without waiting for it."""

    kind = "postgresql"
    shared = True

    def __init__(self, url: str) -> None:
        self._url = url
        self.where = describe(url)
        self._migrated = False
        self._closed = False
        self._listening: anyio.CancelScope | None = None  # `listen`, while it runs
        self._listened = anyio.Event()  # set when `listen` has closed its connection and returned
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
            url,
            min_size=POOL_SIZE[0],
            max_size=POOL_SIZE[1],
            open=False,
            timeout=CONNECT_TIMEOUT_SECONDS,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 5},
            check=AsyncConnectionPool.check_connection,
            name="flux-mcp-history",
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def aclose(self) -> None:
        """Close the pool's connections and stop `listen` (its connection closed) before returning."""
        self._closed = True
        if self._listening is not None:
            self._listening.cancel()
            await self._listened.wait()
        await self._pool.close()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_Statements]:
        async with self._connection() as connection:
            yield _Statements(connection)

    @asynccontextmanager
    async def transaction(self, lock: str | None = None) -> AsyncIterator[_Statements]:
        """One transaction; with `lock`, held under that name's advisory lock (one holder at a time)."""
        async with self._connection() as connection:
            try:
                async with connection.transaction():
                    if lock is not None:
                        await connection.execute(LOCK_BY_NAME, (lock,))
                    yield _Statements(connection)
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from exc

    async def probe(self) -> None:
        """Raise HistoryUnavailableError unless the database answers now."""
        try:
            async with self._pool.connection(timeout=PROBE_TIMEOUT_SECONDS) as connection:
                await self._ensure_migrated(connection)
                await connection.execute("SELECT 1")
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    async def notify(self, payload: str) -> None:
        await self.execute("SELECT pg_notify(?, ?)", (CALLBACK_CHANNEL, payload))

    async def listen(self, handler: Callable[[str], Awaitable[None] | None]) -> None:
        """Hand every notification on CALLBACK_CHANNEL to `handler`, reconnecting until `aclose`."""
        if self._listening is not None:
            raise RuntimeError("this backend is already listening")
        if self._closed:
            return
        try:
            with anyio.CancelScope() as self._listening:
                await self._listen(handler)
        finally:
            self._listened.set()

    async def _listen(self, handler: Callable[[str], Awaitable[None] | None]) -> None:
        pause = LISTEN_RETRY_SECONDS[0]
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=5
                )
                try:
                    await connection.execute(f"LISTEN {CALLBACK_CHANNEL}")
                    pause = LISTEN_RETRY_SECONDS[0]
                    logger.info("listening for callbacks relayed by other replicas")
                    async for notification in connection.notifies():
                        outcome = handler(notification.payload)
                        if outcome is not None:
                            await outcome
                finally:  # not `async with`: its rollback, cancelled by `aclose`, would skip the close
                    with anyio.CancelScope(shield=True):
                        await connection.close()
            except psycopg.Error as exc:
                logger.warning(
                    "callback relay from %s interrupted (%s); reconnecting", self.where, _reason(exc)
                )
            await anyio.sleep(pause)
            pause = min(pause * 2, LISTEN_RETRY_SECONDS[1])

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        try:
            async with self._pool.connection() as connection:
                await self._ensure_migrated(connection)
                yield connection
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc

    async def _ensure_migrated(self, connection: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        if self._migrated:
            return
        async with connection.transaction():
            # Under the lock before anything else: CREATE ... IF NOT EXISTS itself races across sessions.
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS flux_mcp_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cursor = await connection.execute(
                "SELECT COALESCE(MAX(version), 0) AS version FROM flux_mcp_migrations"
            )
            row = await cursor.fetchone()
            version = int(row["version"]) if row is not None else 0
            if version < SCHEMA_VERSION:
                for statement in upgrade("postgresql", await _columns(connection)):
                    await connection.execute(statement.encode())
                for reached in range(version + 1, SCHEMA_VERSION + 1):
                    await connection.execute(
                        "INSERT INTO flux_mcp_migrations (version) VALUES (%s)", (reached,)
                    )
                logger.info("history schema migrated to version %d", SCHEMA_VERSION)
        self._migrated = True

    def _unavailable(self, exc: BaseException) -> HistoryUnavailableError:
        return HistoryUnavailableError(self.where, _reason(exc))


class _Statements:
    """Statements of a session or a transaction: on the one connection it holds."""

    def __init__(self, connection: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        self._connection = connection

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        return await _fetch(self._connection, sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await _execute(self._connection, sql, params)


async def _fetch(
    connection: psycopg.AsyncConnection[dict[str, Any]], sql: str, params: Sequence[Any]
) -> list[Mapping[str, Any]]:
    cursor = await connection.execute(_dialect(sql), bound(params))
    return list(await cursor.fetchall())


async def _execute(
    connection: psycopg.AsyncConnection[dict[str, Any]], sql: str, params: Sequence[Any]
) -> int:
    cursor = await connection.execute(_dialect(sql), bound(params))
    return cursor.rowcount


async def _columns(connection: psycopg.AsyncConnection[dict[str, Any]]) -> dict[str, set[str]]:
    cursor = await connection.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
        ([table.name for table in TABLES],),
    )
    present: dict[str, set[str]] = {}
    for row in await cursor.fetchall():
        present.setdefault(row["table_name"], set()).add(row["column_name"])
    return present


def _dialect(sql: str) -> bytes:
    """The history's `?` placeholders as psycopg's `%s`: its statements hold no other `?`, and no `%`
    (a `%` would be read as a placeholder: values such as LIKE patterns go in parameters)."""
    if "%" in sql:
        raise ValueError(f"a history statement holds a literal %: {sql[:80]!r}")
    return sql.replace("?", "%s").encode()


def _reason(exc: BaseException) -> str:
    """The first line of a driver error: what failed, never the connection string."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
