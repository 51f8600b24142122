"""What an HTTP request without acceptable credentials is told, and what the OAuth discovery paths answer.

OAuth clients (mcp-remote, hosts with OAuth built in) answer a 401 by probing the discovery paths below.
In oauth mode the RFC 9728 paths serve this resource's metadata, naming the authorization server, and
every 401 points at it (`resource_metadata`). Otherwise this server takes a static bearer token, and
every one of those paths says so in a 404 a bridge prints. Which requests are refused is `credentials.py`'s.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.routes import build_resource_metadata_url, cors_middleware
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.domain.settings import AuthMode, Settings

if TYPE_CHECKING:
    from flux_mcp.web.credentials import Admission
    from flux_mcp.web.oauth import TokenRejection

MCP_PATH = "/mcp"  # where the MCP endpoint is served
REALM = "flux-mcp"
STATIC_BEARER = "flux-mcp takes a static bearer token, not OAuth"


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

    resources = protected_resources(settings, mcp_path) if mode == "oauth" else {}
    routes = []
    for path, resource in resources.items():
        handler = ProtectedResourceMetadataHandler(resource_metadata(settings, resource))
        routes.append(Route(path, cors_middleware(handler.handle, ["GET"]), methods=["GET", "OPTIONS"]))
    others = [path for path in oauth_discovery_paths(mcp_path) if path not in resources]
    return [*routes, *(Route(path, not_here, methods=["GET", "POST"]) for path in others)]


def resource_metadata(settings: Settings, resource: str) -> ProtectedResourceMetadata:
    """RFC 9728: this resource (as `protected_resources` names it) and the authorization server for it."""
    scopes = settings.oauth_required_scopes()
    # Validated from strings, so that the model keeps the URLs exactly as configured (no added slash).
    return ProtectedResourceMetadata.model_validate(
        {
            "resource": resource,
            "authorization_servers": [settings.oauth_issuer],
            "scopes_supported": scopes or None,
            "resource_name": "Flux images (flux-mcp)",
        }
    )


def resource_metadata_url(settings: Settings) -> str:
    """Where the metadata is, as RFC 9728 §3.1 derives it from the resource (and `resource_metadata` says)."""
    return str(build_resource_metadata_url(AnyHttpUrl(settings.oauth_audience_url() or "")))


def protected_resources(settings: Settings, mcp_path: str = MCP_PATH) -> dict[str, str]:
    """Each metadata path served -> the resource its document names; tokens for any of them are accepted.

    The resources are the audience and the MCP endpoint under it (`https://host` and `https://host/mcp`:
    clients probe both). Each document is served where RFC 9728 §3.1 derives it from its own resource,
    and names that resource: a client must discard metadata whose `resource` is not the identifier it
    derived the URL from (§3.3).
    """
    audience = settings.oauth_audience_url() or ""
    resources = [audience]
    if not urlsplit(audience).path.rstrip("/").endswith(mcp_path):
        resources.append(audience.rstrip("/") + mcp_path)
    return {urlsplit(str(build_resource_metadata_url(AnyHttpUrl(r)))).path: r for r in resources}


def oauth_refused(settings: Settings, rejection: TokenRejection | None) -> Response:
    """401/403 with an RFC 6750 challenge that points at the metadata (RFC 9728 §5.1).

    Without any token there is no error code (RFC 6750 §3.1). A person the server does not admit gets a
    403 without a challenge: signing in again, or with more scopes, would not change the answer.
    """
    scopes = settings.oauth_required_scopes()
    challenge = f'Bearer realm="{REALM}", resource_metadata="{resource_metadata_url(settings)}"'
    if scopes:
        challenge += f', scope="{" ".join(scopes)}"'
    if rejection is None:
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
    if rejection.error != "access_denied":
        description = _header_safe(rejection.description)
        error = f'error="{rejection.error}", error_description="{description}"'
        headers["WWW-Authenticate"] = f"{challenge}, {error}"
    body = {
        "error": rejection.error,
        "error_description": rejection.description,
        "message": rejection.description,
    }
    return JSONResponse(body, status_code=rejection.status, headers=headers)


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
