"""Serving over streamable HTTP: the MCP endpoint behind auth, a health check, and the callback receiver.

    GET  /healthz                    no auth; version, whether an upstream token is configured, and
                                     whether the history answers (503 with the reason when it does not)
    POST /mcp (and GET/DELETE)       MCP streamable HTTP, behind bearer auth
    POST /callbacks/flux/{secret}    the upstream's task callbacks; the signed per-task secret is the auth
                                     (with PostgreSQL, any replica accepts it and wakes the one waiting)
    GET  /.well-known/oauth-protected-resource[/mcp]
                                     with FLUX_MCP_AUTH=oauth: RFC 9728 metadata naming the issuer
    /.well-known/oauth-…, /register, /authorize, /token
                                     404 saying this server takes a static bearer token, or (oauth)
                                     where the authorization server is (auth.py)

Every request meets the Host/Origin rules (DNS rebinding), whatever its route. Auth has three
modes (auth.py). With server tokens (`FLUX_MCP_AUTH_TOKENS`) a client must present one of them and the
server pays upstream with its own `ACEDATACLOUD_API_TOKEN`. With pass-through (`FLUX_MCP_AUTH=passthrough`)
each client presents its own AceDataCloud token, verified once with the upstream and then used for its
calls only, never logged or stored. In both, a request without valid credentials gets a 401 before any
MCP processing, each session belongs to the credential that opened it, and one credential holds at most
FLUX_MCP_MAX_SESSIONS_PER_CLIENT sessions. With OAuth (`FLUX_MCP_AUTH=oauth`, oauth.py) clients present
access tokens of the organisation's authorization server; sessions, limits and history are per person,
and the server's own token pays. `none` (loopback, or behind a proxy that authenticates) checks nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Container
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import anyio
import uvicorn
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flux_mcp import __version__
from flux_mcp.auth import Credentials, Verdict, bearer_token
from flux_mcp.callbacks import CallbackHub
from flux_mcp.logs import hold_back_payload_loggers
from flux_mcp.refusals import discovery_routes, undecided
from flux_mcp.server import HistoryProbe, build_server
from flux_mcp.settings import Settings
from flux_mcp.store import HistoryUnavailableError

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
# On SIGTERM/SIGINT, every call waiting for images first returns its task as `pending` (the `stop`
# event given to the server); DRAIN_SECONDS later uvicorn starts its own shutdown (which ends open SSE
# streams at once), and whatever still runs SHUTDOWN_GRACE_SECONDS after that (a submit or download in
# flight) is cancelled. Without these, uvicorn waits for every open call (each up to
# FLUX_MCP_WAIT_SECONDS), or it cuts the streams before the waiting calls could answer.
DRAIN_SECONDS = 0.5
SHUTDOWN_GRACE_SECONDS = 10
MAX_CALLBACK_BYTES = 1_000_000
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
PRUNE_EVERY = 256  # session openings between two sweeps of the whole SessionLedger
LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


class StartupError(Exception):
    """The HTTP settings are unsafe or inconsistent; the message says what to change."""


async def serve_http(settings: Settings, *, allow_unauthenticated: bool = False) -> None:
    """Serve until SIGTERM/SIGINT: `flux-mcp serve --transport http`."""
    stopping = anyio.Event()
    app = build_http_app(settings, allow_unauthenticated=allow_unauthenticated, stop=stopping)
    where = f"http://{settings.host}:{settings.port}{MCP_PATH}"
    logger.info("serving MCP over streamable HTTP at %s (auth: %s)", where, settings.auth_mode())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    await DrainingServer(config, stopping, asyncio.get_running_loop()).serve()


class DrainingServer(uvicorn.Server):
    """uvicorn that, on a signal, first ends every wait, so open calls answer `pending` before it stops."""

    def __init__(
        self, config: uvicorn.Config, stopping: anyio.Event, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(config)
        self._stopping = stopping
        self._loop = loop

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
    hold_back_payload_loggers()
    if settings.auth_mode() != "passthrough" and settings.api_token is None:
        logger.warning("ACEDATACLOUD_API_TOKEN is not set: every tool call will fail until it is")
    hub = CallbackHub(settings.public_url, key=settings.callback_secret()) if settings.public_url else None
    probe = HistoryProbe()
    server = build_server(settings, callbacks=hub, stop=stop, probe=probe)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=settings.stateless,
        transport_security=transport_security(settings),
        host=settings.host,
    )
    app.router.routes.extend(_routes(settings, hub, probe))
    credentials = Credentials(settings)
    _run_beside(app, credentials.running)
    sessions = None
    if not settings.stateless and credentials.mode != "none":
        sessions = SessionLedger(settings.max_sessions_per_client, open_session_ids(server.session_manager))
    return BearerGate(app, settings, credentials, sessions)


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


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection: on for loopback binds, and for others when the public URL is known.

    Loopback names are always allowed (a rebinding page can only send its own name), so a health check
    on 127.0.0.1 works wherever the service runs; so is the public URL's host, so callbacks arriving
    through a tunnel to a loopback bind are not refused.
    """
    hosts, origins = list(LOOPBACK_HOSTS), list(LOOPBACK_ORIGINS)
    if settings.public_url:
        scheme, rest = settings.public_url.split("://", 1)
        netloc = rest.split("/", 1)[0]
        hosts.append(netloc)
        origins.append(f"{scheme}://{netloc}")
    if is_loopback(settings.host) or settings.public_url:
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
        )
    # Behind a proxy with an unknown name: bearer auth, which a rebinding page cannot supply, guards it.
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


class HostGuard:
    """Pure ASGI middleware: the SDK's Host/Origin rules, for every route (421 or 403 otherwise)."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        self.app = app
        self._check = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = await self._check.validate_request(Request(scope, receive), is_post=False)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BearerGate:
    """Pure ASGI middleware in front of the whole service.

    Requests to /mcp need valid credentials for the auth mode; the caller's identity goes into
    `scope["user"]`, which the SDK's session manager binds each session to, and a request that would
    open a session beyond the credential's limit gets 429. Then every request, whatever its path,
    meets the Host/Origin rules (`HostGuard`) before it reaches `app`.

    `credentials` must be running (`Credentials.running`) while requests arrive; `build_http_app`
    ties it to the app's lifespan.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        credentials: Credentials | None = None,
        sessions: SessionLedger | None = None,
    ) -> None:
        self.app = app
        self.credentials = credentials or Credentials(settings)
        self.sessions = sessions
        self._guarded = HostGuard(app, transport_security(settings))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The path as routing sees it (without a root path): the gate guards exactly what reaches /mcp.
        mode = self.credentials.mode
        if scope["type"] != "http" or _route_path(scope).rstrip("/") != MCP_PATH or mode == "none":
            await self._guarded(scope, receive, send)
            return
        presented = bearer_token(_header(scope, b"authorization"))
        if presented is None:
            await self.credentials.refused(None)(scope, receive, send)
            return
        admission = await self.credentials.admit(presented)
        if admission.verdict is Verdict.REFUSED:
            await self.credentials.refused(admission)(scope, receive, send)
            return
        if admission.verdict is Verdict.UNDECIDED:
            await undecided(admission, mode)(scope, receive, send)
            return
        scope = {**scope, "user": admission.user, "auth": AuthCredentials()}
        if self.sessions is None or not _may_open_session(scope):
            await self._guarded(scope, receive, send)
            return
        await self.sessions.serve_opening(admission.identity, self._guarded, scope, receive, send)


class SessionLedger:
    """Open MCP sessions per identity, so that one credential cannot hold more than `limit` of them.

    A request that may open a session reserves a place first (no await between the count and the
    reservation, so concurrent openings cannot overshoot); the reservation becomes the session when the
    answer carries its id, and is given back otherwise. Sessions end in the SDK (DELETE, idle timeout,
    crash): `open_ids` is the SDK's own registry, consulted before each count.
    """

    def __init__(self, limit: int, open_ids: Container[str]) -> None:
        self.limit = limit
        self._open_ids = open_ids
        self._sessions: dict[str, set[str]] = {}
        self._reserved: dict[str, int] = {}
        self._openings = 0

    def count(self, identity: str) -> int:
        """Sessions this identity holds, with the openings it has in flight."""
        return len(self._still_open(identity)) + self._reserved.get(identity, 0)

    def _still_open(self, identity: str) -> set[str]:
        sessions = {sid for sid in self._sessions.get(identity, ()) if sid in self._open_ids}
        if sessions:
            self._sessions[identity] = sessions
        else:
            self._sessions.pop(identity, None)
        return sessions

    async def serve_opening(
        self, identity: str, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self._openings += 1
        if self._openings % PRUNE_EVERY == 0:  # identities that never came back: forget their ended sessions
            for known in list(self._sessions):
                self._still_open(known)
        if self.count(identity) >= self.limit:
            logger.warning("refused a new session: one credential already holds %d", self.limit)
            await _too_many_sessions(self.limit)(scope, receive, send)
            return
        self._reserved[identity] = self._reserved.get(identity, 0) + 1
        reserved = True

        def settle(session_id: str | None) -> None:
            nonlocal reserved
            if not reserved:
                return
            reserved = False
            self._reserved[identity] -= 1
            if not self._reserved[identity]:
                del self._reserved[identity]
            if session_id is not None:
                self._sessions.setdefault(identity, set()).add(session_id)

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                settle(_opened_session(message))
            await send(message)

        try:
            await app(scope, receive, watch)
        finally:
            settle(None)


def open_session_ids(manager: StreamableHTTPSessionManager) -> Container[str]:
    """The ids of the sessions the SDK holds right now.

    The SDK has no public list of its sessions (nor a limit per credential); its registry is the one
    truth about which have ended. tests/test_security_gate.py fails if it moves.
    """
    registry = getattr(manager, "_server_instances", None)
    if not isinstance(registry, dict):
        raise RuntimeError("this MCP SDK keeps no session registry flux-mcp can read; pin mcp to 2.3")
    return registry


def _may_open_session(scope: Scope) -> bool:
    """Whether the SDK would treat this request as opening a stateful session (see its session manager)."""
    if _header(scope, MCP_SESSION_ID_HEADER.encode()) is not None:
        return False
    version = _header(scope, MCP_PROTOCOL_VERSION_HEADER.encode())
    return version is None or version in HANDSHAKE_PROTOCOL_VERSIONS


def _opened_session(start: Message) -> str | None:
    if start["status"] >= 400:
        return None
    for name, value in start.get("headers", []):
        if bytes(name).lower() == MCP_SESSION_ID_HEADER.encode():
            return bytes(value).decode("latin-1")
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _too_many_sessions(limit: int) -> Response:
    message = (
        f"This credential already holds {limit} open MCP sessions, the most this server allows "
        "(FLUX_MCP_MAX_SESSIONS_PER_CLIENT). Close sessions you no longer use (clients end one with "
        "DELETE /mcp), or wait: idle sessions end after 30 minutes."
    )
    return JSONResponse({"error": "too_many_sessions", "message": message}, status_code=429)


def _run_beside(app: Starlette, context: Callable[[], Any]) -> None:
    """Run `context()` (an async context manager) for as long as the app's own lifespan."""
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(starlette: Any) -> AsyncIterator[Any]:
        async with context(), original(starlette) as state:
            yield state

    app.router.lifespan_context = lifespan


def _route_path(scope: Scope) -> str:
    """The request path below the app's root path, as Starlette routes it (mounted or behind a prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def _routes(settings: Settings, hub: CallbackHub | None, probe: HistoryProbe) -> list[Route]:
    async def healthz(request: Request) -> Response:
        history = await probe.report()
        return JSONResponse(
            {
                "status": "ok" if history["ok"] else "unavailable",
                "version": __version__,
                "upstream_token_configured": settings.api_token is not None,
                "auth": settings.auth_mode(),
                "stateless": settings.stateless,
                "callbacks": hub is not None,
                "history": history,
            },
            status_code=200 if history["ok"] else 503,
        )

    async def callback(request: Request) -> Response:
        secret = request.path_params["secret"]
        if hub is None or not hub.knows(secret):
            return _not_found()
        body = await _read_capped(request)
        if body is None:
            return JSONResponse({"error": "payload too large"}, status_code=413)
        payload = _json_object(body)
        if payload is None:
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        # Only a wake-up: the waiting call re-reads the task upstream; the body is never a result.
        try:
            accepted = await hub.receive(secret, payload)
        except HistoryUnavailableError as exc:  # the relay to the other replicas is down: ask for a retry
            logger.warning("callback not relayed: %s", exc.reason)
            return JSONResponse({"error": "history unavailable; retry later"}, status_code=503)
        if not accepted:
            return _not_found()
        logger.info("callback received")
        return JSONResponse({"ok": True})

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/callbacks/flux/{secret}", callback, methods=["POST"]),
        *discovery_routes(settings, MCP_PATH),
    ]


def _not_found() -> Response:
    return JSONResponse({"error": "not found"}, status_code=404)


async def _read_capped(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_CALLBACK_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CALLBACK_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser can follow
        return None
    return payload if isinstance(payload, dict) else None
