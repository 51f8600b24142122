"""What a history backend is: SQL statements run in sessions, and one way to open and close it.

`store.History` holds the rules and reaches its database only through this shape; `sqlite` (one
file, opened as it is built) and `postgres` (a pool, opened without waiting for the server) say
how a session is had and how a transaction is held. Statements use `?` placeholders and read rows by
column name whichever backend runs them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Protocol, Self

import anyio

from flux_mcp.domain.text import storable


def bound(params: Sequence[Any]) -> tuple[Any, ...]:
    """Statement parameters as every backend binds them: text made `storable` (a NUL or lone surrogate
    from an upstream, in a trace id say, must not fail the write that records a task), so the same text
    is stored, and found, on SQLite and PostgreSQL alike."""
    return tuple(storable(value) if isinstance(value, str) else value for value in params)


class Statements(Protocol):
    """Where statements run: a session, or a transaction."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...


class Backend(ABC):
    """One database the history lives in: opened, used in sessions and transactions, closed."""

    kind: ClassVar[str]  # "sqlite" or "postgresql"
    shared: ClassVar[bool]  # other replicas use the same database (and hear `notify`)
    where: str  # a description for messages: a path, or host/port/db; never a password

    @abstractmethod
    def session(self) -> AbstractAsyncContextManager[Statements]:
        """Statements outside any transaction: each one is written (or read) on its own."""

    @abstractmethod
    def transaction(self, lock: str | None = None) -> AbstractAsyncContextManager[Statements]:
        """Statements that commit together; with `lock`, one holder of that name at a time."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        async with self.session() as session:
            return await session.fetch(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.session() as session:
            return await session.execute(sql, params)

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[Self]:
        """The backend, open for the duration of the block, and closed however the block ends."""
        await self.open()
        try:
            yield self
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    @abstractmethod
    async def open(self) -> None:
        """Start reaching the database."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close every connection to the database, and stop whatever listens on one."""

    @abstractmethod
    async def probe(self) -> None:
        """Raise HistoryUnavailableError unless the database answers now."""

    @abstractmethod
    async def notify(self, payload: str) -> None:
        """Tell every replica sharing the database."""
