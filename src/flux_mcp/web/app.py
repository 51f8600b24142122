"""Serving over streamable HTTP: the service put together from its settings, and run until a signal.

    GET  /healthz                    no auth; version, whether an upstream token is configured, and
                                     whether the history answers (503 with the reason when it does not)
    POST /mcp (and GET/DELETE)       MCP streamable HTTP, behind bearer auth
    POST /callbacks/flux/{secret}    the upstream's task callbacks; the signed per-task secret is the auth
                                     (with PostgreSQL, any replica accepts it and wakes the one waiting)
    GET  /.well-known/oauth-protected-resource[/mcp]
                                     with FLUX_MCP_AUTH=oauth: RFC 9728 metadata naming the issuer
    /.well-known/oauth-…, /register, /authorize, /token
                                     404 saying this server takes a static bearer token, or (oauth)
                                     where the authorization server is (challenges.py)

`build_http_app` composes it: the MCP app, its own routes (`routes.service_routes`), all behind the gate
(`gate.BearerGate`). Every request meets the Host/Origin rules (DNS rebinding), whatever its route. Auth
has three modes (credentials.py). With server tokens (`FLUX_MCP_AUTH_TOKENS`) a client must present one of
them and the server pays upstream with its own `ACEDATACLOUD_API_TOKEN`. With pass-through
(`FLUX_MCP_AUTH=passthrough`) each client presents its own AceDataCloud token, verified once with the
upstream and then used for its calls only, never logged or stored. In both, a request without valid
credentials gets a 401 before any MCP processing, each session belongs to the credential that opened it,
and one credential holds at most FLUX_MCP_MAX_SESSIONS_PER_CLIENT sessions. With OAuth
(`FLUX_MCP_AUTH=oauth`, oauth.py) clients present access tokens of the organisation's authorization
server; sessions, limits and history are per person, and the server's own token pays. `none` (loopback, or
behind a proxy that authenticates) checks nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from flux_mcp.domain.errors import StartupError
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.telemetry import NO_OBSERVER
from flux_mcp.jobs.callbacks import CallbackHub
from flux_mcp.server.build import HistoryProbe, build_server
from flux_mcp.web.credentials import Credentials
from flux_mcp.web.gate import (
    MAX_BODY_BYTES,
    MCP_PATH,
    BearerGate,
    BodyCap,
    SessionLedger,
    is_loopback,
    open_session_ids,
    session_ender,
    transport_security,
)
from flux_mcp.web.routes import service_routes

if TYPE_CHECKING:
    from flux_mcp.web.metrics import PrometheusObserver

logger = logging.getLogger(__name__)

# On SIGTERM/SIGINT, every call waiting for images first returns its task as `pending` (the `stop`
# event given to the server); DRAIN_SECONDS later uvicorn starts its own shutdown (which ends open SSE
# streams at once), and whatever still runs SHUTDOWN_GRACE_SECONDS after that (a submit or download in
# flight) is cancelled. Without these, uvicorn waits for every open call (each up to
# FLUX_MCP_WAIT_SECONDS), or it cuts the streams before the waiting calls could answer.
DRAIN_SECONDS = 0.5
SHUTDOWN_GRACE_SECONDS = 10


async def serve_http(settings: Settings, *, allow_unauthenticated: bool = False) -> None:
    """Serve until SIGTERM/SIGINT: `flux-mcp serve --transport http`. Port 0: one the OS chooses (logged)."""
    stopping = anyio.Event()
    app = build_http_app(settings, allow_unauthenticated=allow_unauthenticated, stop=stopping)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    listening = partial(_log_listening, settings)
    await DrainingServer(config, stopping, asyncio.get_running_loop(), listening=listening).serve()


def _log_listening(settings: Settings, port: int) -> None:
    where = f"http://{settings.host}:{port}{MCP_PATH}"
    logger.info("serving MCP over streamable HTTP at %s (auth: %s)", where, settings.auth_mode())


class DrainingServer(uvicorn.Server):
    """uvicorn that, on a signal, first ends every wait, so open calls answer `pending` before it stops."""

    def __init__(
        self,
        config: uvicorn.Config,
        stopping: anyio.Event,
        loop: asyncio.AbstractEventLoop,
        *,
        listening: Callable[[int], None] = lambda port: None,
    ) -> None:
        super().__init__(config)
        self._stopping = stopping
        self._loop = loop
        self._listening = listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, then `listening(port)` with the port it listens on (the OS's choice for 0)."""
        await super().startup(sockets)
        if self.started:
            self._listening(self.servers[0].sockets[0].getsockname()[1])

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._stopping.is_set():  # a second signal: stop now
            super().handle_exit(sig, frame)
            return
        # This runs as a signal handler: hand the work to the event loop.
        self._loop.call_soon_threadsafe(self._drain_then_exit, sig, frame)

    def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        logger.info("shutting down: waiting calls return their tasks as pending")
        self._stopping.set()
        self._loop.call_later(DRAIN_SECONDS, super().handle_exit, sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stopping.set()  # however the shutdown began
        await super().shutdown(sockets)


def build_http_app(
    settings: Settings, *, allow_unauthenticated: bool = False, stop: anyio.Event | None = None
) -> ASGIApp:
    """The whole HTTP service for these settings; refuses unsafe ones with `StartupError`.

    It applies the HTTP defaults itself (`served_over_http`), so an app embedded in another ASGI server
    behaves like `flux-mcp serve --transport http`. Setting `stop` (on shutdown) makes every waiting call
    answer `pending` at once. Its `.app` is the Starlette app whose lifespan must run (uvicorn runs it
    with `lifespan="on"`).
    """
    settings = served_over_http(settings)
    check_http_settings(settings, allow_unauthenticated=allow_unauthenticated)
    if settings.auth_mode() != "passthrough" and settings.api_token is None:
        logger.warning("ACEDATACLOUD_API_TOKEN is not set: every tool call will fail until it is")
    hub = CallbackHub(settings.public_url, key=settings.callback_secret()) if settings.public_url else None
    probe = HistoryProbe()
    counters = prometheus_counters(settings)
    observer = counters if counters is not None else NO_OBSERVER
    server = build_server(settings, callbacks=hub, stop=stop, probe=probe, observer=observer)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=settings.stateless,
        transport_security=transport_security(settings),
        host=settings.host,
        max_request_body_size=MAX_BODY_BYTES,  # the SDK's 4 MiB default would refuse a 4 MB data: URL
    )
    app.add_middleware(BodyCap)
    app.router.routes.extend(service_routes(settings, hub, probe, observer))
    if counters is not None:
        from flux_mcp.web.metrics import metrics_route

        app.router.routes.append(metrics_route(settings, counters))
    credentials = Credentials(settings)
    _run_beside(app, credentials.running)
    sessions = None
    if not settings.stateless and credentials.mode != "none":
        manager = server.session_manager
        sessions = SessionLedger(session_bound(settings), open_session_ids(manager), session_ender(manager))
    return BearerGate(app, settings, credentials, sessions)


def prometheus_counters(settings: Settings) -> PrometheusObserver | None:
    """This app's own counters with FLUX_MCP_METRICS=true; None (nothing counted) otherwise."""
    if not settings.metrics:
        return None
    from flux_mcp.web.metrics import PrometheusObserver  # prometheus-client is imported only when used

    return PrometheusObserver()


def session_bound(settings: Settings) -> int:
    """How many sessions one credential may hold: a server token is a team's, shared by design; a
    pass-through token or an OAuth subject is one person's."""
    if settings.auth_mode() == "tokens":
        return settings.max_sessions_per_team_token
    return settings.max_sessions_per_client


def served_over_http(settings: Settings) -> Settings:
    """The settings as the HTTP service runs with them: what FLUX_MCP_* leaves unset takes its HTTP default.

    FLUX_MCP_SAVE unset means no saving: over HTTP the users are remote, the server's disk is not theirs
    to fill (nor can they open what it holds).
    """
    return settings.with_changes(save=False) if settings.save is None else settings


def check_http_settings(settings: Settings, *, allow_unauthenticated: bool) -> None:
    if (problem := settings.history_problem()) is not None:
        raise StartupError(problem)
    mode = settings.auth_mode()
    if mode == "tokens" and not settings.client_tokens():
        raise StartupError("FLUX_MCP_AUTH=tokens needs FLUX_MCP_AUTH_TOKENS (comma-separated bearer tokens).")
    if mode == "oauth":
        check_oauth_settings(settings)
    if is_loopback(settings.host) or allow_unauthenticated:
        return
    if mode == "none":
        raise StartupError(
            f"Refusing to serve {settings.host} without authentication: anyone who can reach it could spend "
            "your AceDataCloud balance. Set FLUX_MCP_AUTH_TOKENS, bind to 127.0.0.1, or pass "
            "--allow-unauthenticated if a proxy in front does the auth."
        )
    if mode == "passthrough":
        raise StartupError(
            f"Refusing to serve {settings.host} with FLUX_MCP_AUTH=passthrough: anyone who can reach it and "
            "holds any AceDataCloud token could use this server and its address. Set FLUX_MCP_AUTH_TOKENS, "
            "bind to 127.0.0.1, or pass --allow-unauthenticated if a proxy in front authenticates your users."
        )


def check_oauth_settings(settings: Settings) -> None:
    """FLUX_MCP_AUTH=oauth needs an issuer and an audience, both URLs a token can be checked against."""
    if settings.oauth_issuer is None:
        raise StartupError(
            "FLUX_MCP_AUTH=oauth needs FLUX_MCP_OAUTH_ISSUER: the issuer URL of your authorization server "
            "(for Keycloak https://<host>/realms/<realm>), as its tokens carry it in `iss`."
        )
    audience = settings.oauth_audience_url()
    if audience is None:
        raise StartupError(
            "FLUX_MCP_AUTH=oauth needs this server's URL as the audience of its tokens: set "
            "FLUX_MCP_PUBLIC_URL (https://flux.example.com) or FLUX_MCP_OAUTH_AUDIENCE."
        )
    for name, url in (
        ("FLUX_MCP_OAUTH_ISSUER", settings.oauth_issuer),
        ("FLUX_MCP_OAUTH_AUDIENCE", audience),
        ("FLUX_MCP_OAUTH_INTROSPECTION_URL", settings.oauth_introspection_url),
    ):
        if url is not None and not _https_or_loopback(url):
            raise StartupError(f"{name} must be an https:// URL (http:// only on loopback); it is {url!r}.")
    if bool(settings.oauth_client_id) != (settings.oauth_client_secret is not None):
        raise StartupError("Set both FLUX_MCP_OAUTH_CLIENT_ID and FLUX_MCP_OAUTH_CLIENT_SECRET, or neither.")
    if importlib.util.find_spec("jwt") is None:
        raise StartupError("FLUX_MCP_AUTH=oauth needs PyJWT: pip install 'flux-mcp[oauth]'.")


def _https_or_loopback(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if scheme == "https":
        return bool(host)
    return scheme == "http" and is_loopback(host)


def _run_beside(app: Starlette, context: Callable[[], Any]) -> None:
    """Run `context()` (an async context manager) for as long as the app's own lifespan."""
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(starlette: Any) -> AsyncIterator[Any]:
        async with context(), original(starlette) as state:
            yield state

    app.router.lifespan_context = lifespan
