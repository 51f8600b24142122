"""Who a request is for: an HTTP request's bearer token checked for the server's auth mode, the identity
its MCP sessions are bound to, and for each tool call the `Caller` (which token pays, whose history).

    tokens        the token must be one of FLUX_MCP_AUTH_TOKENS (each compared in constant time)
    passthrough   the token is the caller's own AceDataCloud token. A new one is verified once with a free
                  upstream lookup (`FluxClient.check_token`) and the verdict kept, under a keyed hash of
                  the token (never the token): an accepted token for ACCEPTED_SECONDS, a refused one for
                  REFUSED_SECONDS. Requests that arrive together with one new token share one lookup.
                  When the upstream cannot decide (down, rate limiting, garbled answer) the request is
                  answered 503 with Retry-After and nothing is kept: an outage neither locks real users
                  out for longer than it lasts nor lets an unknown token in.
    oauth         the token is an access token of FLUX_MCP_OAUTH_ISSUER for this server (oauth.py); the
                  person is its issuer and `sub`, and the server's own AceDataCloud token pays
    none          no credentials

With server tokens and pass-through an identity is a keyed hash of the credential (the key is random per
process), so two holders of different tokens never share a session, and nothing kept in memory can be
turned back into a token. With OAuth it is the person (`store.person_owner`), so a refreshed token keeps
its sessions and history.

OAuth clients (mcp-remote, hosts with OAuth built in) answer a 401 by probing the discovery paths below.
In oauth mode the RFC 9728 paths serve this resource's metadata, naming the authorization server, and
every 401 points at it (`resource_metadata`). Otherwise this server takes a static bearer token, and
every one of those paths says so in a 404 a bridge prints.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url, cors_middleware
from mcp.server.mcpserver import Context
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.client import (
    FluxClient,
    FluxError,
    PlatformClient,
    RateLimitedError,
    ServerError,
    build_http_client,
)
from flux_mcp.settings import AuthMode, Settings
from flux_mcp.state import AppState
from flux_mcp.store import person_owner
from flux_mcp.tasks import ImageJobs

if TYPE_CHECKING:
    from flux_mcp.oauth import OAuthVerifier, Refusal

logger = logging.getLogger(__name__)

CallContext = Context[AppState, Any]  # what a tool or resource of this server is given by the SDK

ACCEPTED_SECONDS = 600.0
REFUSED_SECONDS = 60.0
MAX_VERDICTS = 10_000  # per kind: a flood of made-up tokens cannot push out the accepted ones
PROBE_CONCURRENCY = 4  # token lookups in flight at once; a flood of new tokens waits behind these
PROBE_TIMEOUT_SECONDS = 10.0
UNDECIDED_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 60.0
REALM = "flux-mcp"
STATIC_BEARER = "flux-mcp takes a static bearer token, not OAuth"


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNDECIDED = "undecided"  # the upstream could not say; try again later


@dataclass(frozen=True)
class Admission:
    """The answer to one request's credentials."""

    verdict: Verdict
    identity: str = ""  # who the request is for, when accepted
    retry_after: float = UNDECIDED_RETRY_SECONDS  # when undecided
    reason: str = ""  # when undecided: what went wrong upstream (never carries the token)
    token: AccessToken | None = None  # oauth, when accepted: what the access token says
    refusal: Refusal | None = None  # oauth, when refused: why

    @property
    def user(self) -> AuthenticatedUser:
        """The identity as the MCP SDK's session manager compares it (the SDK binds sessions to it).

        Its `token` is a keyed hash (or the identity): the secret itself never leaves the request's header.
        """
        if self.token is not None:  # client, issuer and subject: the person, whichever token they present
            return AuthenticatedUser(self.token)
        return AuthenticatedUser(AccessToken(token=self.identity, client_id=self.identity, scopes=[]))


class Credentials:
    """Checks the bearer token of a request to /mcp for the server's auth mode."""

    def __init__(self, settings: Settings) -> None:
        self.mode: AuthMode = settings.auth_mode()
        self._settings = settings
        self._key = secrets.token_bytes(32)
        self._tokens = [token.encode() for token in settings.client_tokens()]
        self.verifier = PassThroughVerifier(settings, self.identity) if self.mode == "passthrough" else None
        self.oauth: OAuthVerifier | None = None
        if self.mode == "oauth":
            from flux_mcp.oauth import OAuthVerifier  # PyJWT is the `oauth` extra: only this mode needs it

            self.oauth = OAuthVerifier(settings, self.identity)

    def identity(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()[:32]

    async def admit(self, token: str) -> Admission:
        if self.verifier is not None:
            return await self.verifier.admit(token)
        if self.oauth is not None:
            return await self._admit_access_token(self.oauth, token)
        candidate = token.encode()
        # Compare against every token without stopping early, in constant time per comparison.
        matches = [hmac.compare_digest(candidate, known) for known in self._tokens]
        if any(matches):
            return Admission(Verdict.ACCEPTED, identity=self.identity(token))
        return Admission(Verdict.REFUSED)

    async def _admit_access_token(self, oauth: OAuthVerifier, token: str) -> Admission:
        from flux_mcp.oauth import IssuerUnavailable

        try:
            checked = await oauth.check(token)
        except IssuerUnavailable as exc:
            logger.warning("cannot check an access token now: %s", exc)
            return Admission(Verdict.UNDECIDED, reason=str(exc))
        if isinstance(checked, AccessToken):
            person = person_owner(oauth.issuer, checked.subject or "")
            return Admission(Verdict.ACCEPTED, identity=person, token=checked)
        logger.info("refused an access token: %s", checked.description)
        return Admission(Verdict.REFUSED, refusal=checked)

    def refused(self, admission: Admission | None) -> Response:
        """The answer to a request without a token (`admission` None) or with a refused one."""
        if self.mode == "oauth":
            return oauth_refused(self._settings, admission.refusal if admission else None)
        return unauthorized(self.mode, missing=admission is None)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """What the checks need while the service runs (the client of pass-through or of the issuer)."""
        checker = self.verifier or self.oauth
        if checker is None:
            yield
            return
        async with checker.running():
            yield


class PassThroughVerifier:
    """Pass-through tokens, each verified once against the upstream; the verdicts kept for a while."""

    def __init__(
        self,
        settings: Settings,
        identity: Callable[[str], str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._identity = identity
        self._clock = clock
        self._accepted: OrderedDict[str, float] = OrderedDict()  # identity -> when the verdict expires
        self._refused: OrderedDict[str, float] = OrderedDict()
        self._in_flight: dict[str, _Lookup] = {}
        self._gate = anyio.CapacityLimiter(PROBE_CONCURRENCY)
        self._http: httpx2.AsyncClient | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        # Its own small client: lookups of made-up tokens never take connections from real calls.
        probe_settings = self._settings.model_copy(
            update={
                "max_concurrency": PROBE_CONCURRENCY,
                "http_timeout_seconds": min(self._settings.http_timeout_seconds, PROBE_TIMEOUT_SECONDS),
            }
        )
        async with build_http_client(probe_settings) as http:
            self._http = http
            try:
                yield
            finally:
                self._http = None

    async def admit(self, token: str) -> Admission:
        identity = self._identity(token)
        while True:
            known = self._known(identity)
            if known is not None:
                return known
            lookup = self._in_flight.get(identity)
            if lookup is None:
                return await self._look_up(identity, token)
            await lookup.done.wait()
            if lookup.admission is not None:
                return lookup.admission
            # The request that was looking gave up (its client went away): look again.

    def _known(self, identity: str) -> Admission | None:
        now = self._clock()
        for verdicts, verdict in ((self._accepted, Verdict.ACCEPTED), (self._refused, Verdict.REFUSED)):
            expires = verdicts.get(identity)
            if expires is None:
                continue
            if expires > now:
                return Admission(verdict, identity=identity if verdict is Verdict.ACCEPTED else "")
            del verdicts[identity]
        return None

    async def _look_up(self, identity: str, token: str) -> Admission:
        lookup = self._in_flight[identity] = _Lookup()
        try:
            lookup.admission = await self._ask_upstream(identity, token)
        finally:
            del self._in_flight[identity]
            lookup.done.set()
        self._remember(identity, lookup.admission.verdict)
        return lookup.admission

    async def _ask_upstream(self, identity: str, token: str) -> Admission:
        if self._http is None:
            raise RuntimeError("pass-through verification used outside the HTTP app's lifespan")
        client = FluxClient(self._http, self._settings.api_base_url, token, gate=self._gate)
        try:
            accepted = await client.check_token()
        except FluxError as exc:
            logger.warning("cannot verify a pass-through token now: %s", exc.message)
            return Admission(Verdict.UNDECIDED, retry_after=_retry_after(exc), reason=exc.message)
        if not accepted:
            logger.info("refused a pass-through token the Flux API does not accept")
            return Admission(Verdict.REFUSED)
        return Admission(Verdict.ACCEPTED, identity=identity)

    def _remember(self, identity: str, verdict: Verdict) -> None:
        if verdict is Verdict.UNDECIDED:
            return
        accepted = verdict is Verdict.ACCEPTED
        verdicts = self._accepted if accepted else self._refused
        seconds = ACCEPTED_SECONDS if accepted else REFUSED_SECONDS
        verdicts[identity] = self._clock() + seconds
        verdicts.move_to_end(identity)
        while len(verdicts) > MAX_VERDICTS:
            verdicts.popitem(last=False)


class _Lookup:
    """One upstream lookup in flight, which other requests with the same token wait for."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.admission: Admission | None = None


def _retry_after(exc: FluxError) -> float:
    hinted = exc.retry_after if isinstance(exc, RateLimitedError | ServerError) else None
    seconds = hinted if hinted is not None and math.isfinite(hinted) else UNDECIDED_RETRY_SECONDS
    return min(max(seconds, 1.0), MAX_RETRY_SECONDS)


# --- what a refused request is told ------------------------------------------------------------------


def unauthorized(mode: AuthMode, *, missing: bool) -> Response:
    """401 with an RFC 6750 challenge. Without any token there is no error code (RFC 6750 §3.1)."""
    message = _missing_message(mode) if missing else _refused_message(mode)
    challenge = f'Bearer realm="{REALM}"'
    if not missing:
        challenge += f', error="invalid_token", error_description="{_header_safe(message)}"'
    return JSONResponse(
        {"error": "unauthorized", "message": message},
        status_code=401,
        headers={"WWW-Authenticate": challenge},
    )


def undecided(admission: Admission, mode: AuthMode) -> Response:
    seconds = math.ceil(admission.retry_after)
    token = "access token" if mode == "oauth" else "AceDataCloud token"
    message = f"flux-mcp cannot check your {token} right now ({admission.reason}). Try again in {seconds} s."

    return JSONResponse(
        {"error": "upstream_unavailable", "message": message},
        status_code=503,
        headers={"Retry-After": str(seconds)},
    )


def discovery_routes(settings: Settings, mcp_path: str) -> list[Route]:
    """What each OAuth discovery path answers in this auth mode.

    In oauth mode, the RFC 9728 paths serve the protected-resource metadata (with the SDK's handler and
    CORS, so browser-based clients can read it); the others say where the authorization server is.
    Otherwise every path answers a 404 that says what to send.
    """
    mode = settings.auth_mode()

    async def not_here(request: Request) -> Response:
        if mode == "oauth":
            message = (
                f"flux-mcp is an OAuth resource server, not an authorization server: sign in with "
                f"{settings.oauth_issuer} (see {resource_metadata_url(settings)})."
            )
        else:
            base = settings.public_url or str(request.base_url).rstrip("/")
            sent = "authorization" in request.headers  # OAuth bridges pass their custom headers here too
            message = _no_oauth_message(mode, base + mcp_path, token_sent=sent)
        return JSONResponse({"error": "not_found", "error_description": message}, status_code=404)

    metadata_paths = protected_resource_paths(settings, mcp_path) if mode == "oauth" else []
    routes = []
    if metadata_paths:
        handler = ProtectedResourceMetadataHandler(resource_metadata(settings))
        metadata = cors_middleware(handler.handle, ["GET"])
        routes = [Route(path, metadata, methods=["GET", "OPTIONS"]) for path in metadata_paths]
    others = [path for path in oauth_discovery_paths(mcp_path) if path not in metadata_paths]
    return [*routes, *(Route(path, not_here, methods=["GET", "POST"]) for path in others)]


def resource_metadata(settings: Settings) -> ProtectedResourceMetadata:
    """RFC 9728: this resource (the audience its tokens carry) and the authorization server for it."""
    scopes = settings.oauth_required_scopes()
    # Validated from strings, so that the model keeps the URLs exactly as configured (no added slash).
    return ProtectedResourceMetadata.model_validate(
        {
            "resource": settings.oauth_audience_url(),
            "authorization_servers": [settings.oauth_issuer],
            "scopes_supported": scopes or None,
            "resource_name": "Flux images (flux-mcp)",
        }
    )


def resource_metadata_url(settings: Settings) -> str:
    """Where the metadata is, as RFC 9728 §3.1 derives it from the resource (and `resource_metadata` says)."""
    return str(build_resource_metadata_url(AnyHttpUrl(settings.oauth_audience_url() or "")))


def protected_resource_paths(settings: Settings, mcp_path: str) -> list[str]:
    """The root and the /mcp-suffixed forms clients probe, and the form derived from the resource."""
    paths = ["/.well-known/oauth-protected-resource", f"/.well-known/oauth-protected-resource{mcp_path}"]
    derived = urlsplit(resource_metadata_url(settings)).path
    return paths if derived in paths else [*paths, derived]


def oauth_refused(settings: Settings, refusal: Refusal | None) -> Response:
    """401/403 with an RFC 6750 challenge that points at the metadata (RFC 9728 §5.1).

    Without any token there is no error code (RFC 6750 §3.1). A person the server does not admit gets a
    403 without a challenge: signing in again, or with more scopes, would not change the answer.
    """
    scopes = settings.oauth_required_scopes()
    challenge = f'Bearer realm="{REALM}", resource_metadata="{resource_metadata_url(settings)}"'
    if scopes:
        challenge += f', scope="{" ".join(scopes)}"'
    if refusal is None:
        message = (
            f"No access token was sent. Sign in with {settings.oauth_issuer}: OAuth clients discover how "
            f"at {resource_metadata_url(settings)}."
        )
        return JSONResponse(
            {"error": "unauthorized", "message": message},
            status_code=401,
            headers={"WWW-Authenticate": challenge},
        )
    headers = {}
    if refusal.error != "access_denied":
        description = _header_safe(refusal.description)
        error = f'error="{refusal.error}", error_description="{description}"'
        headers["WWW-Authenticate"] = f"{challenge}, {error}"
    body = {"error": refusal.error, "error_description": refusal.description, "message": refusal.description}
    return JSONResponse(body, status_code=refusal.status, headers=headers)


def oauth_discovery_paths(mcp_path: str) -> tuple[str, ...]:
    """Where OAuth clients look for metadata and registration (RFC 9728, RFC 8414, OIDC, MCP defaults)."""
    return (
        "/.well-known/oauth-protected-resource",
        f"/.well-known/oauth-protected-resource{mcp_path}",
        "/.well-known/oauth-authorization-server",
        f"/.well-known/oauth-authorization-server{mcp_path}",
        "/.well-known/openid-configuration",
        f"/.well-known/openid-configuration{mcp_path}",
        f"{mcp_path}/.well-known/openid-configuration",
        "/register",
        "/authorize",
        "/token",
    )


def _missing_message(mode: AuthMode) -> str:
    return f"No bearer token was sent. {STATIC_BEARER}. {_what_to_send(mode)}"


def _refused_message(mode: AuthMode) -> str:
    if mode == "passthrough":
        return f"The Flux API does not accept this token. {STATIC_BEARER}. {_what_to_send(mode)}"
    return f"This bearer token is not one this server accepts. {STATIC_BEARER}. {_what_to_send(mode)}"


def _no_oauth_message(mode: AuthMode, mcp_url: str, *, token_sent: bool) -> str:
    if mode == "none":
        return f"flux-mcp does not use OAuth, and this server needs no credentials: connect to {mcp_url}"
    why = (
        "The bearer token that was sent is not accepted (that is why /mcp answered 401)."
        if token_sent
        else "No bearer token was sent."
    )
    return (
        f"{STATIC_BEARER}: there is nothing to discover or register. {why} {_what_to_send(mode)} "
        f'With mcp-remote: npx mcp-remote {mcp_url} --header "Authorization: Bearer ${{TOKEN}}"'
    )


def _what_to_send(mode: AuthMode) -> str:
    token = (
        "your own AceDataCloud API token (https://platform.acedata.cloud)"
        if mode == "passthrough"
        else "a token this server's operator gave you"
    )
    return f"Send the header Authorization: Bearer <token> with {token}."


def _header_safe(text: str) -> str:
    """Text as an RFC 6750 quoted string may carry it: printable ASCII without quote or backslash."""
    return "".join(char if " " <= char <= "~" and char not in '"\\' else " " for char in text)


# --- who a tool call is for ----------------------------------------------------------------------


@dataclass
class Caller:
    """Who a call is for: which token pays upstream, and whose history it sees."""

    state: AppState
    jobs: ImageJobs
    owner: str = ""
    token: str | None = None  # a pass-through caller's own token; None: the server's

    def platform(self) -> PlatformClient:
        return self.state.platform_for(self.token)


def caller_of(ctx: CallContext) -> Caller:
    """The server's own token, or with pass-through auth over HTTP the caller's bearer token.

    With OAuth the server's token pays, and the history is the signed-in person's (the HTTP gate put
    their verified access token into the request as the SDK's `AuthenticatedUser`).
    """
    state = ctx.request_context.lifespan_context
    mode = state.settings.auth_mode()
    if mode == "oauth" and ctx.headers is not None:
        return _signed_in_caller(state, ctx)
    if mode != "passthrough" or ctx.headers is None:
        return Caller(state, state.jobs)
    token = bearer_token(ctx.headers.get("authorization"))
    if token is None:  # the HTTP gate refuses such requests; this is the second line
        return Caller(state, state.jobs_for("", "anonymous"), "anonymous", token="")
    owner = state.history.owner_of(token)
    return Caller(state, state.jobs_for(token, owner), owner, token=token)


def _signed_in_caller(state: AppState, ctx: CallContext) -> Caller:
    request = ctx.request_context.request
    user = request.scope.get("user") if isinstance(request, Request) else None
    access = user.access_token if isinstance(user, AuthenticatedUser) else None
    issuer = (access.claims or {}).get("iss") if access is not None else None
    if access is None or not access.subject or not isinstance(issuer, str):
        # The HTTP gate refuses such requests; this is the second line: no token, so nothing is billed.
        return Caller(state, state.jobs_for("", "anonymous"), "anonymous", token="")
    owner = person_owner(issuer, access.subject)
    return Caller(state, state.jobs_for(None, owner), owner)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it is."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
