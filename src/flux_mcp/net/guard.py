"""Which network addresses image downloads may connect to, enforced where the connection is made.

Result image URLs come from the upstream (and, through a forged callback or a hostile redirect, from
anyone): fetched blindly they reach the server's own loopback services, the private network and the
cloud metadata address. So a download connects only to public internet addresses. The rule is
applied to the address a host name actually resolves to, once, and the socket is opened to that very
address (no second lookup a rebinding DNS server could answer differently); TLS still checks the
certificate against the URL's host name, because httpcore passes it to `start_tls` separately.

Exceptions, both explicit: the configured upstream's own origin (scheme, host and port of
ACEDATACLOUD_API_BASE_URL, exactly: the emulator and the sandbox serve their files there), and
FLUX_MCP_ALLOW_PRIVATE_DOWNLOADS, which turns the rule off for deployments whose image hosts are on
the private network. Downloads never go through an HTTP(S) proxy from the environment: a proxy makes
its own connection, where the rule could not follow.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import anyio
import httpcore2
import httpx2

from flux_mcp.net.probes import QuickProbeBackend
from flux_mcp.net.tls import shared_context

logger = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
Origin = tuple[str, str, int]  # scheme, host, port
DEFAULT_PORTS = {"http": 80, "https": 443}

# IPv6 spellings of an IPv4 address (mapped; NAT64, whose DNS64 answers are how IPv6-only networks
# reach IPv4 hosts): judged as that IPv4 address alone.
_TRANSLATED = (IPv6Network("::ffff:0:0/96"), IPv6Network("64:ff9b::/96"))
_COMPATIBLE = IPv6Network("::/96")  # deprecated IPv4-compatible form, ::127.0.0.1
_NOT_PUBLIC: tuple[tuple[str, IPv4Network | IPv6Network], ...] = (
    ("shared address space (CGNAT)", IPv4Network("100.64.0.0/10")),
    ("local-use NAT64", IPv6Network("64:ff9b:1::/48")),
)


class ForbiddenAddress(Exception):
    """A download was refused before connecting: its host is not a public internet address."""


def refusal(address: IPAddress) -> str | None:
    """Why a download may not connect to `address`; None for a public internet address."""
    if isinstance(address, IPv6Address):
        if any(address in network for network in _TRANSLATED):
            why = refusal(IPv4Address(int(address) & 0xFFFFFFFF))
            return None if why is None else f"{why} (as IPv6)"
        embedded = _embedded_ipv4(address)
        if embedded is not None and (why := refusal(embedded)) is not None:
            return f"{why} (inside an IPv6 address)"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("site-local", isinstance(address, IPv6Address) and address.is_site_local),
    )
    for name, applies in checks:
        if applies:
            return name
    for name, network in _NOT_PUBLIC:
        if address.version == network.version and address in network:
            return name
    return None if address.is_global else "not globally routable"


def origin_of(url: httpx2.URL) -> Origin:
    """Scheme, host and port of a URL, with the default port made explicit."""
    return url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme, 0)


async def resolve(host: str, port: int) -> list[str]:
    """The addresses a TCP connection to `host` would use, as the system resolver answers."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


Resolver = Callable[[str, int], Awaitable[list[str]]]


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Resolves a host once, refuses it unless every address is public, and connects to what it checked."""

    def __init__(
        self, inner: httpcore2.AsyncNetworkBackend | None = None, *, resolver: Resolver = resolve
    ) -> None:
        self._inner = inner or httpcore2.AnyIOBackend()
        self._resolve = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        addresses = await self._checked_addresses(host, port, timeout)
        failure: httpcore2.ConnectError | httpcore2.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore2.ConnectError(f"no address to connect to for {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise ForbiddenAddress("downloads never use a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    async def _checked_addresses(self, host: str, port: int, seconds: float | None) -> list[IPAddress]:
        try:
            with anyio.fail_after(seconds):
                answers = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"looking up {host} took too long") from None
        except (OSError, UnicodeError):
            # Said the same way as a refusal: whether an internal name exists is itself internal.
            raise ForbiddenAddress(f"{host} does not resolve") from None
        try:
            addresses = list(dict.fromkeys(ipaddress.ip_address(answer) for answer in answers))
        except ValueError:
            raise ForbiddenAddress(f"{host} resolves to something that is not an IP address") from None
        for address in addresses:
            if (why := refusal(address)) is not None:
                # One non-public answer refuses the host: a name answering both is a rebinding trick.
                logger.warning("refused a download from %s: it resolves to a %s address", host, why)
                raise ForbiddenAddress(f"{host} is a {why} address")
        if not addresses:
            raise ForbiddenAddress(f"{host} does not resolve")
        return addresses


class PinnedTransport(httpx2.AsyncHTTPTransport):
    """An ordinary httpx2 transport whose connections are made by `backend` (and never by a proxy)."""

    def __init__(self, backend: httpcore2.AsyncNetworkBackend, *, limits: httpx2.Limits) -> None:
        # AsyncHTTPTransport takes no network backend, so the pool is built here the way it builds its
        # own; every other method of the transport only talks to `self._pool`.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=shared_context(),  # the CA bundle is loaded at the first HTTPS connection
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class DownloadTransport(httpx2.AsyncBaseTransport):
    """Image downloads: the trusted origin connects as usual, every other URL only to public addresses."""

    def __init__(self, *, trusted: str | None, allow_private: bool, limits: httpx2.Limits) -> None:
        self._trusted_origin = origin_of(httpx2.URL(trusted)) if trusted else None
        self._open = PinnedTransport(QuickProbeBackend(), limits=limits)
        guarded = GuardedBackend(QuickProbeBackend())
        self._guarded = self._open if allow_private else PinnedTransport(guarded, limits=limits)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        trusted = origin_of(request.url) == self._trusted_origin
        transport = self._open if trusted else self._guarded
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._open.aclose()
        if self._guarded is not self._open:
            await self._guarded.aclose()


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries (6to4, Teredo, IPv4-compatible), judged as well."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _COMPATIBLE and int(address) > 1:  # :: and ::1 are judged as themselves
        return IPv4Address(int(address))
    return None
