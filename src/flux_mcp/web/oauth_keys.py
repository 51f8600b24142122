"""What flux-mcp fetches from the authorization server: its metadata, its signing keys, capped JSON.

`KeySet` finds the issuer's JWKS through its RFC 8414 or OpenID metadata, keeps only signing keys of
ALGORITHMS (never `none`, never HMAC, so a public key can never serve as a shared secret), holds them
for JWKS_MAX_AGE seconds and fetches them again when a token names an unknown `kid` (key rotation), at
most once every REFETCH_SECONDS however many made-up kids arrive. `fetch_json` reads any answer of the
issuer capped at MAX_DOCUMENT_BYTES; whatever goes wrong is `IssuerUnavailable`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import jwt

logger = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
JWKS_MAX_AGE = 3600.0
REFETCH_SECONDS = 30.0
MAX_DOCUMENT_BYTES = 512_000


class IssuerUnavailable(Exception):
    """The authorization server could not be asked (down, or answering garbage): nobody can be checked."""


class KeySet:
    """The issuer's signing keys: discovered, kept, fetched again on rotation (rate-limited)."""

    def __init__(self, issuer: str, clock: Callable[[], float]) -> None:
        self._issuer = issuer
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}  # kid -> key
        self._anonymous: list[jwt.PyJWK] = []  # keys without a kid
        self._fetched_at: float | None = None
        self._refetched_at: float | None = None
        self._jwks_uri: str | None = None
        self._lock = anyio.Lock()

    async def find(self, http: httpx2.AsyncClient, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        async with self._lock:  # one fetch at a time; the others find its keys
            if self._stale():
                await self._load(http)
            key = self._pick(kid, algorithm)
            if key is None and kid is not None and self._may_refetch():
                self._refetched_at = self._clock()
                await self._load(http)
                key = self._pick(kid, algorithm)
            return key

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > JWKS_MAX_AGE

    def _may_refetch(self) -> bool:
        return self._refetched_at is None or self._clock() - self._refetched_at >= REFETCH_SECONDS

    def _pick(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        candidates = [self._keys[kid]] if kid in self._keys else [] if kid else self._anonymous
        for key in candidates:
            if key.algorithm_name == algorithm:
                return key
        return None

    async def _load(self, http: httpx2.AsyncClient) -> None:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover(http)
        document = await fetch_json(http, self._jwks_uri)
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise IssuerUnavailable("the issuer's JWKS has no key list")
        keys: dict[str, jwt.PyJWK] = {}
        anonymous: list[jwt.PyJWK] = []
        for entry in entries:
            key = _usable_key(entry)
            if key is None:
                continue
            if key.key_id:
                keys[key.key_id] = key
            else:
                anonymous.append(key)
        self._keys, self._anonymous, self._fetched_at = keys, anonymous, self._clock()
        logger.info("loaded %d signing keys of the authorization server", len(keys) + len(anonymous))

    async def _discover(self, http: httpx2.AsyncClient) -> str:
        failures = []
        for url in metadata_urls(self._issuer):
            try:
                metadata = await fetch_json(http, url)
            except IssuerUnavailable as exc:
                failures.append(str(exc))
                continue
            if metadata.get("issuer") != self._issuer:
                failures.append(f"{url} names another issuer")
                continue
            jwks_uri = metadata.get("jwks_uri")
            if isinstance(jwks_uri, str) and jwks_uri.startswith(("https://", "http://")):
                return jwks_uri
            failures.append(f"{url} has no jwks_uri")
        raise IssuerUnavailable("no usable authorization server metadata: " + "; ".join(failures))


def _usable_key(entry: object) -> jwt.PyJWK | None:
    """A signing key of an accepted algorithm; encryption keys, HMAC secrets and garbage are skipped."""
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
        return None
    algorithm = entry.get("alg") or _default_algorithm(entry)
    if algorithm not in ALGORITHMS:
        return None
    try:
        return jwt.PyJWK(entry, algorithm=algorithm)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        return None


def _default_algorithm(entry: dict[str, Any]) -> str | None:
    """What a key without `alg` signs with, as most issuers use it."""
    kty, curve = entry.get("kty"), entry.get("crv")
    if kty == "RSA":
        return "RS256"
    if kty == "EC":
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(str(curve))
    if kty == "OKP" and curve in ("Ed25519", "Ed448"):
        return "EdDSA"
    return None


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer publishes its metadata: RFC 8414 (inserted) and OpenID Connect (appended)."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


async def fetch_json(
    http: httpx2.AsyncClient,
    url: str,
    *,
    data: dict[str, str] | None = None,
    auth: httpx2.BasicAuth | None = None,
) -> dict[str, Any]:
    """A JSON object from the authorization server (POST when `data`), capped; IssuerUnavailable otherwise."""
    method = "POST" if data is not None else "GET"
    where = _without_query(url)
    try:
        async with http.stream(method, url, data=data, auth=auth or httpx2.USE_CLIENT_DEFAULT) as response:
            if response.status_code != 200:
                raise IssuerUnavailable(f"{where} answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise IssuerUnavailable(f"{where} answered more than {MAX_DOCUMENT_BYTES} bytes")
    except httpx2.HTTPError as exc:
        raise IssuerUnavailable(f"cannot reach {where} ({type(exc).__name__})") from None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise IssuerUnavailable(f"{where} did not answer JSON") from None
    if not isinstance(document, dict):
        raise IssuerUnavailable(f"{where} did not answer a JSON object")
    return document


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
