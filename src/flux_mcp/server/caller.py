"""Who a tool call is for: the `Caller` (which upstream token pays, whose history it reads), from the request.

With OAuth the person (`history.store.person_owner`), with pass-through the holder of the bearer token, and
otherwise the server itself. Holders of server tokens (FLUX_MCP_AUTH_TOKENS) share one history (owner ""),
as a team does, but each token is its own person (its configured name) for budgets and the report.
How an HTTP request's credentials are checked is `web.credentials`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from starlette.requests import Request

from flux_mcp.domain.team import LOCAL_PERSON, token_named
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
    # Who the credential is, for budgets, the report and MCP task binding: an OAuth or pass-through caller's
    # owner, a server token's name (`domain.team`), "local" on stdio or without auth. Never a token.
    person: str = LOCAL_PERSON

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
    return caller_of_request(ctx.request_context)


def caller_of_request(request_context: ServerRequestContext[AppState, Any]) -> Caller:
    """`caller_of` for a request that is not a tool's (tasks/get, a middleware)."""
    state = request_context.lifespan_context
    headers: Mapping[str, str] | None = getattr(request_context.request, "headers", None)
    mode = state.settings.auth_mode()
    if mode == "oauth" and headers is not None:
        return _signed_in_caller(state, request_context.request)
    if mode == "tokens" and headers is not None:
        return _team_caller(state, bearer_token(headers.get("authorization")))
    if mode != "passthrough" or headers is None:
        return Caller(state, state.jobs)
    token = bearer_token(headers.get("authorization"))
    if token is None:  # the HTTP gate refuses such requests; this is the second line
        return _anonymous(state)
    owner = state.history.owner_of(token)
    return Caller(state, state.jobs_for(token, owner, owner), owner, token=token, person=owner)


def _team_caller(state: AppState, token: str | None) -> Caller:
    """A holder of a server token: the team's shared history (owner ""), the token's name as the person."""
    name = token_named(state.settings.server_tokens(), token) if token is not None else None
    if name is None:  # the HTTP gate refuses such requests; this is the second line
        return _anonymous(state)
    return Caller(state, state.jobs_for(None, "", name), person=name)


def _anonymous(state: AppState) -> Caller:
    """No valid credential: an empty token (nothing is billed) and a history of its own."""
    jobs = state.jobs_for("", "anonymous", "anonymous")
    return Caller(state, jobs, "anonymous", token="", person="anonymous")


def _signed_in_caller(state: AppState, request: object) -> Caller:
    user = request.scope.get("user") if isinstance(request, Request) else None
    access = user.access_token if isinstance(user, AuthenticatedUser) else None
    issuer = (access.claims or {}).get("iss") if access is not None else None
    if access is None or not access.subject or not isinstance(issuer, str):
        # The HTTP gate refuses such requests; this is the second line: no token, so nothing is billed.
        return _anonymous(state)
    owner = person_owner(issuer, access.subject)
    return Caller(state, state.jobs_for(None, owner, owner), owner, person=owner)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it is."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
