"""The one TLS client context the server's HTTP clients share, its trust store loaded at the first handshake.

Loading the OS's CA bundle into an SSL context takes 30-40 ms (144 certificates on the benchmark
machine), and httpx2 does it whenever a client or transport is built: three times before a stdio
server could list its tools, for connections that `tools/list`, a sandbox or an emulator never make.
`shared_context()` is built without it. The first TLS connection (anyio wraps any SSLContext subclass
in a worker thread) builds the real context with httpx2's own rules (SSL_CERT_FILE, SSL_CERT_DIR, else
the OS store, as `httpx2.create_ssl_context()`), and every connection after it uses that one.
"""

from __future__ import annotations

import functools
import socket
import ssl
import threading
from collections.abc import Iterable

import httpx2


class DeferredTrust(ssl.SSLContext):
    """A client context that builds its real one, with the trust store, at the first `wrap_*` call.

    httpcore2 only sets ALPN on the context it is given and hands it to the TLS layer, which wraps with
    it; both go to the real context. It is never used for anything else.
    """

    def __new__(cls) -> DeferredTrust:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self) -> None:
        self._real: ssl.SSLContext | None = None
        self._alpn: list[str] = []
        self._lock = threading.Lock()

    @property
    def trust_loaded(self) -> bool:
        """Whether the trust store has been loaded (by a TLS connection)."""
        return self._real is not None

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        self._alpn = list(alpn_protocols)

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        with self._lock:  # ALPN and the wrap together: another connection may set ALPN meanwhile
            return self._loaded().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        with self._lock:
            return self._loaded().wrap_socket(
                sock,
                server_side=server_side,
                do_handshake_on_connect=do_handshake_on_connect,
                suppress_ragged_eofs=suppress_ragged_eofs,
                server_hostname=server_hostname,
                session=session,
            )

    def _loaded(self) -> ssl.SSLContext:
        if self._real is None:
            self._real = httpx2.create_ssl_context()
        if self._alpn:
            self._real.set_alpn_protocols(self._alpn)
        return self._real


@functools.cache
def shared_context() -> DeferredTrust:
    """The process's one client TLS context (its trust store loaded at the first TLS connection)."""
    return DeferredTrust()
