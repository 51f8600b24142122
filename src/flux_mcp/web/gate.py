"""What a request must pass before it reaches the service: the Host/Origin rules on every route, valid
credentials on /mcp, and a bounded number of open sessions per credential
(FLUX_MCP_MAX_SESSIONS_PER_TEAM_TOKEN for a server token, shared by a team;
FLUX_MCP_MAX_SESSIONS_PER_CLIENT for a person's own credential).

`BearerGate` is the outermost ASGI app of `app.build_http_app`; whom a credential belongs to, and
what a refusal says, are `credentials.Credentials`' business.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container
from typing import Any

from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.authentication import AuthCredentials
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flux_mcp.domain.inputs import MAX_IMAGE_URL_CHARS, MAX_INPUT_BYTES
from flux_mcp.domain.settings import Settings
from flux_mcp.server.caller import bearer_token
from flux_mcp.server.sdk import sdk_internal, unsupported_sdk
from flux_mcp.web.challenges import MCP_PATH as MCP_PATH  # where the gate stands; app and routes use it
from flux_mcp.web.challenges import undecided
from flux_mcp.web.credentials import Credentials, Verdict

logger = logging.getLogger(__name__)

# A request over HTTP: room for the largest data: URL an edit takes (20 MB in base64), and the call around it.
MAX_BODY_BYTES = MAX_IMAGE_URL_CHARS + 1024 * 1024
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
PRUNE_EVERY = 256  # session openings between two sweeps of the whole SessionLedger
LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


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
    open a session beyond the credential's limit ends its least recently used one (`SessionLedger`).
    Then every request, whatever its path, meets the Host/Origin rules (`HostGuard`) before it reaches `app`.

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
        if self.sessions is None:
            await self._guarded(scope, receive, send)
            return
        session_id = _header(scope, MCP_SESSION_ID_HEADER.encode())
        if session_id is not None:
            identity = admission.identity
            await self.sessions.serve_request(identity, session_id, self._guarded, scope, receive, send)
        elif _may_open_session(scope):
            await self.sessions.serve_opening(admission.identity, self._guarded, scope, receive, send)
        else:
            await self._guarded(scope, receive, send)


class SessionLedger:
    """Open MCP sessions per identity, so that one credential holds at most `limit` of them, and a new
    one past the limit ends that credential's least recently used session instead of being refused.

    A session is used by the requests that carry its id (`serve_request`), so the least recently used
    one is the session nobody has sent anything to for longest; one with a POST in flight (a tool call
    running) is ended only if every one has. The ended session's id then answers 404 (the SDK forgets
    it), and its client opens a new session, as the spec says it must. A request that may open a
    session reserves a place first (no await between the count and the reservation, so concurrent
    openings cannot overshoot); the reservation becomes the session when the answer carries its id, and
    is given back otherwise. Sessions also end in the SDK (DELETE, idle timeout, crash): `open_ids` is
    the SDK's own registry, consulted before each count; `end` ends one there.
    """

    def __init__(self, limit: int, open_ids: Container[str], end: Callable[[str], Awaitable[None]]) -> None:
        self.limit = limit
        self._open_ids = open_ids
        self._end = end
        self._sessions: dict[str, OrderedDict[str, None]] = {}  # least recently used first
        self._busy: dict[str, int] = {}  # session id -> POST requests in flight
        self._reserved: dict[str, int] = {}
        self._openings = 0

    def count(self, identity: str) -> int:
        """Sessions this identity holds, with the openings it has in flight."""
        return len(self._still_open(identity)) + self._reserved.get(identity, 0)

    def _still_open(self, identity: str) -> OrderedDict[str, None]:
        known = self._sessions.get(identity, OrderedDict())
        sessions = OrderedDict((sid, None) for sid in known if sid in self._open_ids)
        if sessions:
            self._sessions[identity] = sessions
        else:
            self._sessions.pop(identity, None)
        return sessions

    async def serve_request(
        self, identity: str, session_id: str, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A request to an open session: it becomes this identity's most recently used one."""
        sessions = self._sessions.get(identity)
        if sessions is None or session_id not in sessions:  # not this identity's: the SDK answers 404
            await app(scope, receive, send)
            return
        sessions.move_to_end(session_id)
        if scope.get("method") != "POST":
            await app(scope, receive, send)
            return
        self._busy[session_id] = self._busy.get(session_id, 0) + 1
        try:
            await app(scope, receive, send)
        finally:
            self._busy[session_id] -= 1
            if not self._busy[session_id]:
                del self._busy[session_id]

    async def serve_opening(
        self, identity: str, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self._openings += 1
        if self._openings % PRUNE_EVERY == 0:  # identities that never came back: forget their ended sessions
            for known in list(self._sessions):
                self._still_open(known)
        ending = None
        if self.count(identity) >= self.limit:
            ending = self._least_recently_used(identity)
            if ending is None:  # every place is an opening still in flight
                logger.warning("refused a new session: one credential is opening %d at once", self.limit)
                await _too_many_sessions(self.limit)(scope, receive, send)
                return
            del self._sessions[identity][ending]
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
                self._sessions.setdefault(identity, OrderedDict())[session_id] = None

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                settle(_opened_session(message))
            await send(message)

        try:
            if ending is not None:
                logger.info("a credential reached %d sessions: ended its least recently used one", self.limit)
                await self._end(ending)
            await app(scope, receive, watch)
        finally:
            settle(None)

    def _least_recently_used(self, identity: str) -> str | None:
        sessions = self._still_open(identity)
        idle = (sid for sid in sessions if sid not in self._busy)
        return next(idle, next(iter(sessions), None))


def session_ender(manager: StreamableHTTPSessionManager) -> Callable[[str], Awaitable[None]]:
    """What ends one open session in the SDK, as a DELETE would: forgotten (its id answers 404 from then
    on) and its transport terminated (server/sdk.py: `_discard_session` is not public)."""
    registry = open_session_ids(manager)
    discard = sdk_internal(manager, "_discard_session")

    async def end(session_id: str) -> None:
        transport = registry.get(session_id)
        if transport is not None:
            await discard(session_id, transport)

    return end


def open_session_ids(manager: StreamableHTTPSessionManager) -> dict[str, Any]:
    """The ids of the sessions the SDK holds right now.

    The SDK has no public list of its sessions (nor a limit per credential); its registry is the one
    truth about which have ended (server/sdk.py).
    """
    registry = sdk_internal(manager, "_server_instances")
    if not isinstance(registry, dict):
        raise unsupported_sdk(f"{type(manager).__name__}._server_instances as a dict")
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
        f"This credential is opening {limit} MCP sessions at once, the most it may hold. Try again in a "
        "moment, once they are open."
    )
    return JSONResponse({"error": "too_many_sessions", "message": message}, status_code=429)


def _route_path(scope: Scope) -> str:
    """The request path below the app's root path, as Starlette routes it (mounted or behind a prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


class BodyCap:
    """Pure ASGI middleware: a POST to /mcp that declares a body over MAX_BODY_BYTES gets a 413 carrying a
    JSON-RPC error, which MCP clients pass on as the call's error, so the model can read what to do.

    The SDK's own limit is set to the same size (`build_http_app`): it still counts a body that does not
    declare its length, and answers such a one with a plain 413.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and _route_path(scope).rstrip("/") == MCP_PATH
        ):
            declared = _declared_size(scope)
            if declared is not None and declared > MAX_BODY_BYTES:
                await _too_large(declared)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _declared_size(scope: Scope) -> int | None:
    try:
        return int(_header(scope, b"content-length") or "")
    except ValueError:
        return None


def _too_large(declared: int) -> Response:
    message = (
        f"This request is {declared / 1_000_000:.1f} MB, and over HTTP flux-mcp takes requests of at most "
        f"{MAX_BODY_BYTES / 1_000_000:.0f} MB: room for one image of up to {MAX_INPUT_BYTES // 1_000_000} MB "
        "as a data: URL (base64 makes it a third larger). Send a smaller image (scale it down or save it as "
        "JPEG), fewer keyframes per call, or a public https:// URL of the image. Nothing was submitted."
    )
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    return JSONResponse(error, status_code=413)
