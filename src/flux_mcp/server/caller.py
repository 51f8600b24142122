"""Who a tool call is for: the `Caller` (which upstream token pays, whose history it reads), from the request.

With OAuth the person (`history.store.person_owner`), with pass-through the holder of the bearer token, and
otherwise the server itself. How an HTTP request's credentials are checked is `web.credentials`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from starlette.requests import Request

from flux_mcp.history.store import person_owner
from flux_mcp.jobs.runner import Jobs
from flux_mcp.server.state import AppState
from flux_mcp.upstream.platform import PlatformClient

CallContext = Context[AppState, Any]  # what a tool or resource of this server is given by the SDK
LOCAL_PERSON = "local"  # stdio, or HTTP without auth: whoever runs the server


@dataclass
class Caller:
    """Who a call is for: which token pays upstream, and whose history it sees."""

    state: AppState
    jobs: Jobs
    owner: str = ""
    token: str | None = None  # a pass-through caller's own token; None: the server's
    # Who the credential is, for budgets, reports and MCP task binding: OAuth and pass-through: the owner;
    # a server token (FLUX_MCP_AUTH_TOKENS): "token-" + a short sha256 of it; stdio / no auth: "local".
    person: str = LOCAL_PERSON

    def platform(self) -> PlatformClient:
        return self.state.platform_for(self.token)


def caller_of(ctx: CallContext) -> Caller:
    """The server's own token, or with pass-through auth over HTTP the caller's bearer token.

    With OAuth the server's token pays, and the history is the signed-in person's (the HTTP gate put
    their verified access token into the request as the SDK's `AuthenticatedUser`).
    """
    return caller_of_request(ctx.request_context)


def caller_of_request(request_context: ServerRequestContext[AppState, Any]) -> Caller:
    """`caller_of` for a request that is not a tool's (tasks/get, a middleware)."""
    state = request_context.lifespan_context
    headers: Mapping[str, str] | None = getattr(request_context.request, "headers", None)
    mode = state.settings.auth_mode()
    if mode == "oauth" and headers is not None:
        return _signed_in_caller(state, request_context.request)
    if mode != "passthrough" or headers is None:
        return Caller(state, state.jobs, person=_server_token_person(mode, headers))
    token = bearer_token(headers.get("authorization"))
    if token is None:  # the HTTP gate refuses such requests; this is the second line
        return Caller(state, state.jobs_for("", "anonymous"), "anonymous", token="", person="anonymous")
    owner = state.history.owner_of(token)
    return Caller(state, state.jobs_for(token, owner), owner, token=token, person=owner)


def _server_token_person(mode: str, headers: Mapping[str, str] | None) -> str:
    token = bearer_token(headers.get("authorization")) if mode == "tokens" and headers is not None else None
    if token is None:
        return LOCAL_PERSON
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _signed_in_caller(state: AppState, request: object) -> Caller:
    user = request.scope.get("user") if isinstance(request, Request) else None
    access = user.access_token if isinstance(user, AuthenticatedUser) else None
    issuer = (access.claims or {}).get("iss") if access is not None else None
    if access is None or not access.subject or not isinstance(issuer, str):
        # The HTTP gate refuses such requests; this is the second line: no token, so nothing is billed.
        return Caller(state, state.jobs_for("", "anonymous"), "anonymous", token="", person="anonymous")
    owner = person_owner(issuer, access.subject)
    return Caller(state, state.jobs_for(None, owner), owner, person=owner)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it is."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
