"""The HTTP clients of flux-mcp: timeouts, pool limits, no cookies, shared TLS, guarded downloads."""

from __future__ import annotations

import urllib.request
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy

import httpx2

from flux_mcp.domain.settings import Settings
from flux_mcp.net.guard import DownloadTransport, PinnedTransport
from flux_mcp.net.probes import QuickProbeBackend
from flux_mcp.net.tls import shared_context

USER_AGENT = "flux-mcp"


def build_http_client(settings: Settings) -> httpx2.AsyncClient:
    """The one HTTP client a server shares across all calls: sized for hundreds of tasks at once."""
    headers = {"accept": "application/json", "user-agent": USER_AGENT}
    # Without a proxy configured, the pool's idle-connection checks take one poll each (flux_mcp.net.probes);
    # with one, httpx2 builds the transports, proxies and all, as always.
    direct = (
        None
        if urllib.request.getproxies()
        else PinnedTransport(QuickProbeBackend(), limits=http_limits(settings))
    )
    return httpx2.AsyncClient(
        timeout=http_timeout(settings),
        limits=http_limits(settings),
        headers=headers,
        cookies=no_cookies(),
        follow_redirects=False,
        verify=shared_context(),  # the CA bundle is loaded at the first HTTPS connection, not here
        transport=direct,
    )


def build_download_client(settings: Settings) -> httpx2.AsyncClient:
    """The client image downloads use: connects only to public addresses (see `flux_mcp.net.guard`).

    The configured upstream's own origin is the one exception; no proxy from the environment is used
    (a proxy would make the connection where the address rule cannot follow), nor any .netrc password.
    """
    transport = DownloadTransport(
        trusted=settings.api_base_url,
        allow_private=settings.allow_private_downloads,
        limits=http_limits(settings),
    )
    return httpx2.AsyncClient(
        transport=transport,
        timeout=http_timeout(settings),
        headers={"user-agent": USER_AGENT},
        cookies=no_cookies(),
        follow_redirects=False,
        trust_env=False,
    )


def http_timeout(settings: Settings) -> httpx2.Timeout:
    """Per-phase timeouts; FluxClient also bounds each whole request by FLUX_MCP_HTTP_TIMEOUT_SECONDS."""
    return httpx2.Timeout(settings.http_timeout_seconds, connect=min(10.0, settings.http_timeout_seconds))


def http_limits(settings: Settings) -> httpx2.Limits:
    # The pool matches the request gate in FluxClient. httpcore2 assigns requests in O(N+M), but each
    # request start and end still probes every idle pooled connection (`has_expired`, a socket poll):
    # re-measured with httpx2 2.16, 200 calls at once take 1.75x the latency with the gate at 16 and
    # 2.13x at 1024 (docs/benchmarks.md, measurement 2), so the gate and pool of 16 stay.
    return httpx2.Limits(
        max_connections=settings.max_concurrency,
        max_keepalive_connections=settings.max_concurrency,
        keepalive_expiry=30.0,
    )


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing: one client serves every user, so no answer may set state."""
    return CookieJar(policy=_RefuseCookies())


class _RefuseCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: urllib.request.Request) -> bool:
        return False

    def path_return_ok(self, path: str, request: urllib.request.Request) -> bool:
        return False
