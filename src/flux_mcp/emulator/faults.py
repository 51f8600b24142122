"""The emulator's faults answered in place of a request: error statuses, broken bodies, a dropped socket."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import anyio
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

BAD_GATEWAY_HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"
ERROR_FAULTS: dict[str, tuple[int, str, str]] = {
    "429": (429, "too_many_requests", "too many requests, please slow down"),
    "500": (500, "api_error", "fetch failed"),
    "503": (503, "service_unavailable", "service temporarily unavailable"),
    "400": (400, "bad_request", "bad request (emulated fault)"),
    "401": (401, "invalid_token", "invalid token (emulated fault)"),
    "403": (403, "forbidden", "forbidden (emulated fault)"),
}


class Runtime(Protocol):
    server_state: Any  # uvicorn's server state, when the emulator's runner attached it


def find_transport(runtime: Runtime, scope: Scope) -> asyncio.BaseTransport | None:
    """The socket transport uvicorn uses for this request's connection, if the runner exposed it."""
    if runtime.server_state is None:
        return None
    client = scope.get("client")
    for connection in list(runtime.server_state.connections):
        if getattr(connection, "client", None) == client:
            transport = getattr(connection, "transport", None)
            if isinstance(transport, asyncio.BaseTransport):
                return transport
    return None


def broken_answer(kind: str) -> Response | None:
    """The answer of a fault that sends something broken (not an error status), if `kind` is one."""
    if kind == "502_html":
        return HTMLResponse(BAD_GATEWAY_HTML, status_code=502)
    if kind == "empty":
        return Response(b"", media_type="application/json")
    if kind == "truncated_json":
        return Response(b'{"task_id": "abc', media_type="application/json")
    if kind == "not_json_200":
        return HTMLResponse("<html><body>Welcome to nginx!</body></html>")
    if kind == "success_false_200":
        return JSONResponse({"success": False, "error": "plain string error"})
    return None


class DroppedConnection(Response):
    """Ends the exchange by closing the socket: with nothing sent, or after half of `cut_body`.

    With no access to the socket (the app served by something other than the runner) the drop
    degrades to headers announcing more body than is sent; uvicorn then closes the connection and
    logs "ASGI callable returned without completing response".
    """

    def __init__(
        self, runtime: Runtime, *, cut_body: bytes | None, media_type: str = "application/json"
    ) -> None:
        super().__init__(media_type=media_type)
        self.runtime = runtime
        self.cut_body = cut_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = find_transport(self.runtime, scope)
        body = self.cut_body
        if body is None and transport is None:
            body = b""
        if body is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", (self.media_type or "application/json").encode()),
                        (b"content-length", str(len(body) + 1).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        if transport is None:
            return
        # close() flushes what was written, then FIN: the client sees either no response or a short body.
        transport.close()
        # Waiting for uvicorn to notice the disconnect keeps it from logging an incomplete response.
        with anyio.move_on_after(2.0):
            while (await receive())["type"] != "http.disconnect":
                pass
