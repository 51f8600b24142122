"""Network streams whose "has the server closed this idle connection?" check costs one poll, not three calls.

httpcore2's pool asks that of every idle pooled connection at the start and at the end of every request
(`has_expired`). Its anyio stream answers through anyio's attribute map, which is rebuilt for each
question, a `getpeername()` system call included, before the one poll that answers it: with 200 calls
at once that was ~9,000 questions and the largest single item of httpcore2's share of the server's time
(docs/benchmarks.md, measurement 9). `QuickProbeBackend` wraps a backend
so that its streams look the socket up once and answer with the poll alone; everything else is the
wrapped stream's.
"""

from __future__ import annotations

import select
import socket
import ssl
import sys
from collections.abc import Iterable
from typing import Any

import httpcore2


class QuickProbeBackend(httpcore2.AsyncNetworkBackend):
    """`inner`'s connections, as `QuickProbeStream`s."""

    def __init__(self, inner: httpcore2.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return QuickProbeStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)
        return QuickProbeStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class QuickProbeStream(httpcore2.AsyncNetworkStream):
    """A stream that knows its socket: `is_readable` is one poll of it."""

    def __init__(self, inner: httpcore2.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore2.AsyncNetworkStream:
        return QuickProbeStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return readable(self._socket)
        if info == "socket":
            return self._socket
        return self._inner.get_extra_info(info)


def readable(sock: socket.socket | None) -> bool:
    """Whether reading `sock` would return at once (data, or the b"" of a closed connection).

    A socket that is gone counts as readable, as httpcore2 counts it: its next read ends the connection.
    """
    fd = sock.fileno() if sock is not None else -1
    if fd < 0:
        return True
    if sys.platform == "win32" or not hasattr(select, "poll"):
        ready, _, _ = select.select([fd], [], [], 0)
        return bool(ready)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
