"""Who a tool call is for: the `Caller` (which upstream token pays, whose history it reads), from the request.

With OAuth the person (`history.store.person_owner`), with pass-through the holder of the bearer token, and
otherwise the server itself. How an HTTP request's credentials are checked is `web.credentials`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.mcpserver import Context
from starlette.requests import Request

from flux_mcp.history.store import person_owner
from flux_mcp.jobs.runner import Jobs, may_read_unrecorded
from flux_mcp.server.state import AppState
from flux_mcp.upstream.platform import PlatformClient

CallContext = Context[AppState, Any]  # what a tool or resource of this server is given by the SDK


@dataclass
class Caller:
    """Who a call is for: which token pays upstream, and whose history it sees."""

    state: AppState
    jobs: Jobs
    owner: str = ""
    token: str | None = None  # a pass-through caller's own token; None: the server's

    def platform(self) -> PlatformClient:
        return self.state.platform_for(self.token)

    def may_read_unrecorded(self) -> bool:
        """Whether this caller may read a task its history does not show them (`jobs.runner`'s rule)."""
        return may_read_unrecorded(self.token, self.owner)


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
