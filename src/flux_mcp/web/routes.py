"""The service's own HTTP routes beside /mcp: the health check, the upstream's callbacks, discovery.

GET  /healthz                    no auth; version, whether an upstream token is configured, and
                                 whether the history answers (503 with the reason when it does not)
POST /callbacks/flux/{secret}    a wake-up for the call waiting on that task (the secret is the auth)
/.well-known/…, /register, …     what a client looking for OAuth is told (`challenges.discovery_routes`)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp import __version__
from flux_mcp.domain.errors import HistoryUnavailableError
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.telemetry import NO_OBSERVER, Observer
from flux_mcp.jobs.callbacks import CallbackHub
from flux_mcp.server.build import HistoryProbe
from flux_mcp.web.challenges import discovery_routes
from flux_mcp.web.gate import MCP_PATH

logger = logging.getLogger(__name__)

MAX_CALLBACK_BYTES = 1_000_000


def service_routes(
    settings: Settings, hub: CallbackHub | None, probe: HistoryProbe, observer: Observer = NO_OBSERVER
) -> list[Route]:
    """/healthz, the callback receiver and the discovery answers, for the app beside its MCP endpoint."""

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
        observer.callback_received()
        answer = await receive(request)
        if 400 <= answer.status_code < 500:
            observer.callback_refused()
        return answer

    async def receive(request: Request) -> Response:
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
