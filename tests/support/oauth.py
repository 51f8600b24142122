"""An OAuth 2.1 authorization server written for the tests, on loopback: what FLUX_MCP_AUTH=oauth trusts."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from flux_mcp.emulator import serve_asgi

AUDIENCE = "https://flux.example.com"
REALM_PATH = "/realms/flux"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issuer:
    """An authorization server like Keycloak's realm: issuer https?://host/realms/flux."""

    url: str = ""
    kid: str = "k1"
    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    jwks_fetches: int = 0
    opaque: dict[str, dict[str, Any]] = field(default_factory=dict)  # introspectable tokens
    introspected_as: list[str] = field(default_factory=list)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def claims(self, subject: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        values = {
            "iss": self.url,
            "sub": subject,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "azp": "claude",
            "scope": "openid flux",
        }
        values.update(overrides)
        return {name: value for name, value in values.items() if value is not None}

    def mint(
        self,
        subject: str,
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        algorithm: str = "RS256",
        **overrides: Any,
    ) -> str:
        return jwt.encode(
            self.claims(subject, **overrides),
            key or self.key,
            algorithm=algorithm,
            headers={"kid": kid or self.kid},
        )

    def rotate(self) -> None:
        self.kid, self.key = "k2", new_key()

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def app(self) -> Starlette:
        async def metadata(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.url,
                    "jwks_uri": f"{self.url}/protocol/openid-connect/certs",
                    "authorization_endpoint": f"{self.url}/protocol/openid-connect/auth",
                    "token_endpoint": f"{self.url}/protocol/openid-connect/token",
                    "introspection_endpoint": f"{self.url}/protocol/openid-connect/token/introspect",
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
                }
            )

        async def jwks(request: Request) -> Response:
            self.jwks_fetches += 1
            public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
            return JSONResponse({"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]})

        async def introspect(request: Request) -> Response:
            self.introspected_as.append(request.headers.get("authorization", ""))
            form = await request.form()
            claims = self.opaque.get(str(form.get("token")))
            answer = {"active": True, **claims} if claims else {"active": False}
            # json.dumps, not JSONResponse: a hostile server's NaN or Infinity must reach the verifier.
            return Response(json.dumps(answer), media_type="application/json")

        async def authorize(request: Request) -> Response:
            # Consent is implied: the person signing in here is always "alice".
            query = request.query_params
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"challenge": query["code_challenge"], "resource": query.get("resource")}
            target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
            return RedirectResponse(target, status_code=302)

        async def token(request: Request) -> Response:
            form = await request.form()
            grant = self.codes.pop(str(form.get("code")), None)
            verifier = str(form.get("code_verifier", "")).encode()
            if grant is None or b64(hashlib.sha256(verifier).digest()) != grant["challenge"]:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            access = self.mint("alice", aud=grant["resource"])
            return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": 300})

        realm = REALM_PATH
        return Starlette(
            routes=[
                Route(f"{realm}/.well-known/openid-configuration", metadata),
                Route(f"/.well-known/oauth-authorization-server{realm}", metadata),
                Route(f"{realm}/protocol/openid-connect/certs", jwks),
                Route(f"{realm}/protocol/openid-connect/token/introspect", introspect, methods=["POST"]),
                Route(f"{realm}/protocol/openid-connect/auth", authorize),
                Route(f"{realm}/protocol/openid-connect/token", token, methods=["POST"]),
            ]
        )


@asynccontextmanager
async def running_issuer() -> AsyncIterator[Issuer]:
    issuer = Issuer()
    async with serve_asgi(issuer.app()) as base_url:
        issuer.url = base_url + REALM_PATH
        yield issuer
