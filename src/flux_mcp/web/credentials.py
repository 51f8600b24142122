"""An HTTP request's credentials: its bearer token checked for the server's auth mode, and the identity its
MCP sessions are bound to. Which token a tool call then pays with is `server.caller`.

    tokens        the token must be one of FLUX_MCP_AUTH_TOKENS (each compared in constant time)
    passthrough   the token is the caller's own AceDataCloud token. A new one is verified once with a free
                  upstream lookup (`FluxClient.check_token`) and the verdict kept, under a keyed hash of
                  the token (never the token): an accepted token for ACCEPTED_SECONDS, a refused one for
                  REFUSED_SECONDS. Requests that arrive together with one new token share one lookup.
                  When the upstream cannot decide (down, rate limiting, garbled answer) the request is
                  answered 503 with Retry-After and nothing is kept: an outage neither locks real users
                  out for longer than it lasts nor lets an unknown token in.
    oauth         the token is an access token of FLUX_MCP_OAUTH_ISSUER for this server (`web.oauth`); the
                  person is its issuer and `sub`, and the server's own AceDataCloud token pays
    none          no credentials

With server tokens and pass-through an identity is a keyed hash of the credential (the key is random per
process), so two holders of different tokens never share a session, and nothing kept in memory can be
turned back into a token. With OAuth it is the person (`history.store.person_owner`), so a refreshed
token keeps its sessions and history.

What a refused request is told, and what the OAuth discovery paths answer, is in `challenges.py`.
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
from typing import TYPE_CHECKING

import anyio
import httpx2
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.responses import Response

from flux_mcp.domain.errors import FluxError
from flux_mcp.domain.settings import AuthMode, Settings
from flux_mcp.history.store import person_owner
from flux_mcp.net.clients import build_http_client
from flux_mcp.upstream.flux import FluxClient
from flux_mcp.web.challenges import oauth_refused, unauthorized

if TYPE_CHECKING:
    from flux_mcp.web.oauth import OAuthVerifier, TokenRejection

logger = logging.getLogger(__name__)

ACCEPTED_SECONDS = 600.0
REFUSED_SECONDS = 60.0
MAX_VERDICTS = 10_000  # per kind: a flood of made-up tokens cannot push out the accepted ones
PROBE_CONCURRENCY = 4  # token lookups in flight at once; a flood of new tokens waits behind these
PROBE_TIMEOUT_SECONDS = 10.0
UNDECIDED_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 60.0


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
    rejection: TokenRejection | None = None  # oauth, when refused: why

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
            from flux_mcp.web.oauth import (
                OAuthVerifier,  # PyJWT is the `oauth` extra: only this mode needs it
            )

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
        from flux_mcp.web.oauth_keys import IssuerUnavailable

        try:
            checked = await oauth.check(token)
        except IssuerUnavailable as exc:
            logger.warning("cannot check an access token now: %s", exc)
            return Admission(Verdict.UNDECIDED, reason=str(exc))
        if isinstance(checked, AccessToken):
            person = person_owner(oauth.issuer, checked.subject or "")
            return Admission(Verdict.ACCEPTED, identity=person, token=checked)
        logger.info("refused an access token: %s", checked.description)
        return Admission(Verdict.REFUSED, rejection=checked)

    def refused(self, admission: Admission | None) -> Response:
        """The answer to a request without a token (`admission` None) or with a refused one."""
        if self.mode == "oauth":
            return oauth_refused(self._settings, admission.rejection if admission else None)
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
        probe_settings = self._settings.with_changes(
            max_concurrency=PROBE_CONCURRENCY,
            http_timeout_seconds=min(self._settings.http_timeout_seconds, PROBE_TIMEOUT_SECONDS),
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
    hinted = exc.retry_after
    seconds = hinted if hinted is not None and math.isfinite(hinted) else UNDECIDED_RETRY_SECONDS
    return min(max(seconds, 1.0), MAX_RETRY_SECONDS)


# --- who a tool call is for ----------------------------------------------------------------------
