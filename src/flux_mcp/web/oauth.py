"""FLUX_MCP_AUTH=oauth: access tokens issued by the organisation's own authorization server.

A token is accepted when it was issued by FLUX_MCP_OAUTH_ISSUER for this server (its audience is
FLUX_MCP_OAUTH_AUDIENCE, by default FLUX_MCP_PUBLIC_URL, or the MCP endpoint under it: RFC 8707, and
`challenges.protected_resources`), is within its lifetime, carries the required scopes, and names a
person (a `sub` that is not blank) FLUX_MCP_OAUTH_ALLOWED admits. Two ways to know:

    JWT            the signature is checked against the issuer's JWKS (found through its RFC 8414 or OpenID
                   metadata), with the algorithms of ALGORITHMS only: never `none`, never HMAC, so a
                   public key can never serve as a shared secret. The key set is kept for JWKS_MAX_AGE
                   seconds and fetched again when a token names an unknown `kid` (key rotation), at most
                   once every REFETCH_SECONDS however many made-up kids arrive.
    introspection  with FLUX_MCP_OAUTH_INTROSPECTION_URL, the authorization server is asked (RFC 7662),
                   as FLUX_MCP_OAUTH_CLIENT_ID / _SECRET when they are set.

Verdicts are kept under a keyed hash of the token (never the token), bounded in number and in time (never
past the token's own expiry). When the issuer cannot be reached the caller hears 503 and nothing is kept.
Everything fetched from the issuer goes through the project's HTTP client: timeouts, no cookies, no
redirects, answers capped (`oauth_keys`: the issuer's metadata and keys).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import jwt
from mcp.server.auth.provider import AccessToken

from flux_mcp.domain.settings import Settings
from flux_mcp.net.clients import build_http_client
from flux_mcp.web.challenges import protected_resources
from flux_mcp.web.oauth_keys import ALGORITHMS, KeySet, fetch_json

logger = logging.getLogger(__name__)

LEEWAY_SECONDS = 30  # clocks of the issuer and this server may disagree by this much
ACCEPTED_SECONDS = 300.0  # a JWT verdict; its signature and claims cannot change
INTROSPECTED_SECONDS = 60.0  # an introspection verdict: short, revocation is why one introspects
REFUSED_SECONDS = 60.0
MAX_VERDICTS = 10_000
FETCH_TIMEOUT_SECONDS = 10.0
FETCH_CONCURRENCY = 4


@dataclass(frozen=True)
class TokenRejection:
    """Why a token is refused: 401 invalid_token, 403 insufficient_scope (RFC 6750), 403 access_denied."""

    status: int
    error: str
    description: str
    final: bool = True  # False: may change soon (an unknown key before a refetch), so it is not kept


Checked = AccessToken | TokenRejection


def invalid_token(description: str) -> TokenRejection:
    return TokenRejection(401, "invalid_token", description)


class OAuthVerifier:
    """Checks access tokens for one resource server; also the SDK's `TokenVerifier` (`verify_token`)."""

    def __init__(
        self,
        settings: Settings,
        fingerprint: Callable[[str], str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.oauth_issuer is None or settings.oauth_audience_url() is None:
            raise ValueError("FLUX_MCP_AUTH=oauth needs FLUX_MCP_OAUTH_ISSUER and an audience")
        self.issuer: str = settings.oauth_issuer
        self.audience: str = settings.oauth_audience_url() or ""
        self.resources = list(protected_resources(settings).values())  # the audience, and /mcp under it
        self._audiences = [url.rstrip("/") + slash for url in self.resources for slash in ("", "/")]
        self.scopes = settings.oauth_required_scopes()
        self.allowed = settings.oauth_allowed_people()
        self._settings = settings
        self._fingerprint = fingerprint
        self._clock = clock
        self._verdicts: OrderedDict[str, tuple[float, Checked]] = OrderedDict()
        self._keys = KeySet(self.issuer, clock)
        self._http: httpx2.AsyncClient | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        fetch_settings = self._settings.with_changes(
            max_concurrency=FETCH_CONCURRENCY,
            http_timeout_seconds=min(self._settings.http_timeout_seconds, FETCH_TIMEOUT_SECONDS),
        )
        async with build_http_client(fetch_settings) as http:
            self._http = http
            try:
                yield
            finally:
                self._http = None

    async def verify_token(self, token: str) -> AccessToken | None:
        """The SDK's TokenVerifier protocol: the token's facts, None when refused (raises when undecided)."""
        checked = await self.check(token)
        return checked if isinstance(checked, AccessToken) else None

    async def check(self, token: str) -> Checked:
        """The verdict on `token`; raises IssuerUnavailable when the issuer cannot be asked."""
        key = self._fingerprint(token)
        known = self._known(key)
        if known is not None:
            return known
        checked, keep_for = await self._decide(token, key)
        if keep_for > 0:
            self._remember(key, checked, keep_for)
        return checked

    def _known(self, key: str) -> Checked | None:
        entry = self._verdicts.get(key)
        if entry is None:
            return None
        until, checked = entry
        if until > self._clock():
            return checked
        del self._verdicts[key]
        return None

    def _remember(self, key: str, checked: Checked, seconds: float) -> None:
        self._verdicts[key] = (self._clock() + seconds, checked)
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > MAX_VERDICTS:
            self._verdicts.popitem(last=False)

    async def _decide(self, token: str, key: str) -> tuple[Checked, float]:
        """The verdict and how long it may be kept (0: not at all)."""
        http = self._require_http()
        if self._settings.oauth_introspection_url:
            claims_or_rejection = await self._introspect(http, token)
            keep = INTROSPECTED_SECONDS
        else:
            claims_or_rejection = await self._decode(http, token)
            keep = ACCEPTED_SECONDS
        if isinstance(claims_or_rejection, TokenRejection):
            return claims_or_rejection, REFUSED_SECONDS if claims_or_rejection.final else 0.0
        checked = self._admit(claims_or_rejection, key)
        if isinstance(checked, TokenRejection):
            return checked, REFUSED_SECONDS
        if checked.expires_at is None:
            return checked, keep
        return checked, max(0.0, min(keep, checked.expires_at - self._clock()))

    def _require_http(self) -> httpx2.AsyncClient:
        if self._http is None:
            raise RuntimeError("OAuth verification used outside the HTTP app's lifespan")
        return self._http

    # --- JWT ------------------------------------------------------------------------------------------

    async def _decode(self, http: httpx2.AsyncClient, token: str) -> dict[str, Any] | TokenRejection:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return invalid_token("The access token is not a well-formed JWT.")
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            return invalid_token(f"Tokens signed with {str(algorithm)[:20]!r} are not accepted.")
        kid = header.get("kid")
        jwk = await self._keys.find(http, kid if isinstance(kid, str) else None, algorithm)
        if jwk is None:
            shown = str(kid)[:64]
            description = f"The access token is signed with a key ({shown!r}) the issuer does not publish."
            return TokenRejection(401, "invalid_token", description, final=False)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=jwk,
                algorithms=[algorithm],
                audience=self._audiences,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            return invalid_token(_why(exc))
        return claims

    # --- introspection ---------------------------------------------------------------------------------

    async def _introspect(self, http: httpx2.AsyncClient, token: str) -> dict[str, Any] | TokenRejection:
        url = self._settings.oauth_introspection_url or ""
        secret = self._settings.oauth_client_secret
        auth = None
        if self._settings.oauth_client_id and secret is not None:
            auth = httpx2.BasicAuth(self._settings.oauth_client_id, secret.get_secret_value())
        form = {"token": token, "token_type_hint": "access_token"}
        answer = await fetch_json(http, url, data=form, auth=auth)
        if answer.get("active") is not True:
            return invalid_token("The access token is not active (expired, revoked, or never issued).")
        return self._check_introspected(answer)

    def _check_introspected(self, claims: dict[str, Any]) -> dict[str, Any] | TokenRejection:
        now = self._clock()
        if claims.get("iss", self.issuer) != self.issuer:
            return invalid_token("The access token was issued by another authorization server.")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or not any(
            _same_url(aud, resource) for aud in audiences for resource in self.resources
        ):
            return invalid_token(f"The access token was not issued for {self.audience}.")
        expires = claims.get("exp")
        if isinstance(expires, float) and not math.isfinite(expires):
            return invalid_token("The access token's expiry (exp) is not a finite number.")
        if isinstance(expires, int | float) and expires + LEEWAY_SECONDS < now:
            return invalid_token("The access token has expired.")
        not_before = claims.get("nbf")
        if isinstance(not_before, int | float) and not_before - LEEWAY_SECONDS > now:
            return invalid_token("The access token is not valid yet.")
        return claims

    # --- who, and may they --------------------------------------------------------------------------

    def _admit(self, claims: dict[str, Any], key: str) -> Checked:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():  # the owner of a history: never blank
            return invalid_token("The access token names no subject (sub).")
        granted = token_scopes(claims)
        missing = [scope for scope in self.scopes if scope not in granted]
        if missing:
            lacking = " ".join(missing)
            return TokenRejection(403, "insufficient_scope", f"The access token lacks the scope {lacking}.")
        email = claims.get("email") if claims.get("email_verified") is True else None
        if self.allowed and subject not in self.allowed and str(email or "").lower() not in self.allowed:
            shown = email or subject
            return TokenRejection(
                403,
                "access_denied",
                f"You are signed in as {shown}, who is not among the people this flux-mcp server admits "
                "(FLUX_MCP_OAUTH_ALLOWED). Ask its operator to add you, or sign in as someone else.",
            )
        expires = claims.get("exp")
        client = claims.get("azp") or claims.get("client_id") or ""
        return AccessToken(
            token=key,  # the keyed hash: the secret itself never leaves the request's header
            client_id=str(client),
            scopes=sorted(granted),
            expires_at=int(expires) if isinstance(expires, int | float) else None,
            resource=self.audience,
            subject=subject,
            claims={"iss": self.issuer, **({"email": email} if email else {})},
        )


def token_scopes(claims: dict[str, Any]) -> set[str]:
    """The scopes a token grants: a `scope` string (RFC 8693/9068) or an `scp` list (Entra, Okta)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return set(scope.split())
    listed = claims.get("scp")
    if isinstance(listed, str):
        return set(listed.split())
    if isinstance(listed, list):
        return {item for item in listed if isinstance(item, str)}
    return set()


def _why(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "The access token has expired."
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "The access token is not valid yet."
    if isinstance(exc, jwt.InvalidAudienceError):
        return "The access token was not issued for this server (wrong audience)."
    if isinstance(exc, jwt.InvalidIssuerError):
        return "The access token was issued by another authorization server."
    if isinstance(exc, jwt.InvalidSignatureError):
        return "The access token's signature does not verify."
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The access token lacks the {exc.claim} claim."
    return "The access token is not valid."


def _same_url(candidate: object, audience: str) -> bool:
    return isinstance(candidate, str) and candidate.rstrip("/") == audience.rstrip("/")
