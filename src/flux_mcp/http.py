"""Serving over streamable HTTP: the MCP endpoint behind auth, a health check, and the callback receiver.

    GET  /healthz                    no auth; version, and whether an upstream token is configured
    POST /mcp (and GET/DELETE)       MCP streamable HTTP, behind bearer auth
    POST /callbacks/flux/{secret}    the upstream's task callbacks; the per-task secret is the auth

Auth has two modes. With server tokens (`FLUX_MCP_AUTH_TOKENS`) a client must present one of them and
the server pays upstream with its own `ACEDATACLOUD_API_TOKEN`. With pass-through
(`FLUX_MCP_AUTH=passthrough`) each client presents its own AceDataCloud token, which is used for its
calls only and never logged or stored. Either way a request without valid credentials gets a 401
before any MCP processing.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import socket
from types import FrameType
from typing import Any

import anyio
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flux_mcp import __version__
from flux_mcp.server import bearer_token, build_server
from flux_mcp.settings import Settings
from flux_mcp.tasks import CallbackHub

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

    Setting `stop` (on shutdown) makes every waiting call answer `pending` at once.
    """
    check_http_settings(settings, allow_unauthenticated=allow_unauthenticated)
    if settings.auth_mode() != "passthrough" and settings.api_token is None:
        logger.warning("ACEDATACLOUD_API_TOKEN is not set: every tool call will fail until it is")
    hub = CallbackHub(settings.public_url) if settings.public_url else None
    app = build_server(settings, callbacks=hub, stop=stop).streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=settings.stateless,
        transport_security=transport_security(settings),
        host=settings.host,
    )
    app.router.routes.extend(_routes(settings, hub))
    return BearerGate(app, settings)


def check_http_settings(settings: Settings, *, allow_unauthenticated: bool) -> None:
    mode = settings.auth_mode()
    if mode == "tokens" and not settings.client_tokens():
        raise StartupError("FLUX_MCP_AUTH=tokens needs FLUX_MCP_AUTH_TOKENS (comma-separated bearer tokens).")
    if mode == "none" and not is_loopback(settings.host) and not allow_unauthenticated:
        raise StartupError(
            f"Refusing to serve {settings.host} without authentication: anyone who can reach it could spend "
            "your AceDataCloud balance. Set FLUX_MCP_AUTH_TOKENS (or FLUX_MCP_AUTH=passthrough), bind to "
            "127.0.0.1, or pass --allow-unauthenticated if a proxy in front does the auth."
        )


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_security(settings: Settings) -> TransportSecuritySettings | None:
    """DNS-rebinding protection: on for loopback binds; for others, on when the public URL is known."""
    if is_loopback(settings.host):
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    if settings.public_url:
        netloc = settings.public_url.split("://", 1)[1].split("/", 1)[0]
        origin = settings.public_url.split("://", 1)[0] + "://" + netloc
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=[netloc], allowed_origins=[origin]
        )
    # Behind a proxy with an unknown name: bearer auth, which a rebinding page cannot supply, guards it.
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


class BearerGate:
    """Pure ASGI middleware: the MCP endpoint needs a valid bearer token; other paths pass."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.mode = settings.auth_mode()
        self.tokens = [token.encode() for token in settings.client_tokens()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The path as routing sees it (without a root path): the gate guards exactly what reaches /mcp.
        if scope["type"] == "http" and _route_path(scope).rstrip("/") == MCP_PATH and self.mode != "none":
            headers = dict(scope.get("headers") or [])
            presented = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
            if presented is None or not self._accepts(presented):
                await _unauthorized(presented is None)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _accepts(self, presented: str) -> bool:
        if self.mode == "passthrough":
            return True  # the upstream judges the caller's own token
        candidate = presented.encode()
        # Compare against every token without stopping early, in constant time per comparison.
        matches = [hmac.compare_digest(candidate, token) for token in self.tokens]
        return any(matches)


def _route_path(scope: Scope) -> str:
    """The request path below the app's root path, as Starlette routes it (mounted or behind a prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def _unauthorized(missing: bool) -> Response:
    message = "missing bearer token" if missing else "invalid bearer token"
    return JSONResponse(
        {"error": "unauthorized", "message": f"{message}; send Authorization: Bearer <token>"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="flux-mcp"'},
    )


def _routes(settings: Settings, hub: CallbackHub | None) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "upstream_token_configured": settings.api_token is not None,
                "auth": settings.auth_mode(),
                "stateless": settings.stateless,
                "callbacks": hub is not None,
            }
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
        slot = hub.deliver(secret, payload)
        if slot is None:
            return _not_found()
        logger.info("callback received for task %s", slot.task_id or "(submission not yet answered)")
        return JSONResponse({"ok": True})

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/callbacks/flux/{secret}", callback, methods=["POST"]),
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
