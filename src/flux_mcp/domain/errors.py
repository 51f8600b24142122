"""Every failure flux-mcp raises on purpose, under one root; an upstream call's ordered by what the caller
must decide.

    FluxMcpError                   the root: its message is meant for the user and never holds a secret
    ├── ImageInputError            an edit's image input is refused (a ValueError: validators raise it)
    │   └── UploadFailedError      the input was fine, but uploading it failed
    ├── ImageError                 a download or decode was refused
    │   └── VideoError             a video download or check was refused
    ├── HistoryUnavailableError    the task history cannot be reached (where, reason)
    ├── StartupError               the server does not start: unsafe settings, or no usable history
    ├── UnsupportedSdkError        the installed MCP SDK lacks an internal flux-mcp relies on
    └── FluxError                  an upstream call failed; retry_after: the upstream's hint (seconds)
        ├── MissingTokenError      nothing was sent: configure ACEDATACLOUD_API_TOKEN
        ├── UndecidedRepeatError   nothing was sent: an identical earlier submission may have been billed
        ├── BudgetExceededError    nothing was sent: it would pass the person's or the server's budget
        ├── UpstreamError          the upstream answered, but not with what was asked (status, code, trace)
        │   ├── AuthenticationError     401 / token rejected, expired or used up: fix it, do not retry
        │   ├── RequestRejectedError    4xx: the request itself was refused (bad request, moderation, balance)
        │   ├── TaskNotFoundError       the task id is unknown: check the id
        │   ├── RateLimitedError        429: not taken; try again after retry_after
        │   ├── ServerError             5xx: MAY have been processed (not when 503 comes with Retry-After)
        │   └── MalformedResponseError  2xx that is not the JSON we expect (HTML, empty, cut): MAY have been
        └── TransportError         no usable HTTP answer
            ├── NotSentError       provably never reached the upstream: safe to retry
            └── ResponseLostError  sent, but the answer was lost (timeout, dropped): MAY have been processed

The rule that keeps users from paying twice (`may_have_been_accepted`, `may_retry`): a submission is
retried only after `NotSentError`, `RateLimitedError`, or a 503 carrying Retry-After; a lookup is free
and idempotent, so it is retried after any `TRANSIENT` failure. No error message ever contains the token.
"""

from __future__ import annotations

from typing import Any, Self


class FluxMcpError(Exception):
    """The root of every error flux-mcp raises on purpose: its message is for the user, never a secret."""


class ImageInputError(FluxMcpError, ValueError):
    """The image input is refused; the message says why and what would be accepted."""


class UploadFailedError(ImageInputError):
    """The input was fine, but uploading it failed; the message says what happened."""


class ImageError(FluxMcpError):
    """A download or decode was refused; the message says why, for the user."""


class VideoError(ImageError):
    """A video download or check was refused; the message says why, for the user."""


class HistoryUnavailableError(FluxMcpError):
    """The history does not answer; `message` says where and why (never a password).

    Tools turn it into the SDK's tool error with this message (`server.toolkit`), never "Error executing
    tool" alone."""

    def __init__(self, where: str, reason: str) -> None:
        self.where, self.reason = where, reason
        self.message = (
            f"The task history ({where}) cannot be reached: {reason}. Nothing was submitted or billed by "
            "this call, and every task recorded so far is kept there. Try again in a minute; if it "
            "persists, the server's operator should check the database (GET /healthz shows the reason)."
        )
        super().__init__(self.message)


class StartupError(FluxMcpError):
    """The server does not start: its settings are unsafe or inconsistent, or its history cannot be opened;
    the message says what to change."""


class UnsupportedSdkError(FluxMcpError):
    """The installed MCP SDK lacks an internal flux-mcp relies on (`server.sdk`): a version it does not
    support; the message names the versions it does."""


class FluxError(FluxMcpError):
    """Base of every error an upstream call raises; `message` is safe to show (it never holds a secret)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class MissingTokenError(FluxError):
    def __init__(self) -> None:
        super().__init__(
            "No AceDataCloud API token is configured. Set ACEDATACLOUD_API_TOKEN in this MCP server's "
            "environment (get a token at https://platform.acedata.cloud)."
        )


class UndecidedRepeatError(FluxError):
    """An identical earlier submission may have been billed, and nobody knows its task id: not resubmitted."""


class BudgetExceededError(FluxError):
    """Not submitted: it would pass a budget (FLUX_MCP_BUDGET_*); the message says spent, limit, reset."""


class UpstreamError(FluxError):
    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        trace_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status
        self.code = code
        self.trace_id = trace_id


class AuthenticationError(UpstreamError):
    pass


class RequestRejectedError(UpstreamError):
    pass


class TaskNotFoundError(UpstreamError):
    @classmethod
    def for_task(cls, task_id: str, **fields: Any) -> Self:
        """The upstream does not know `task_id`; `fields` are UpstreamError's (status, code, trace_id)."""
        return cls(f"No task with id {task_id!r} is known to the Flux API; check the id.", **fields)


class RateLimitedError(UpstreamError):
    def __init__(self, message: str, *, retry_after: float | None, **fields: Any) -> None:
        super().__init__(message, retry_after=retry_after, **fields)


class ServerError(UpstreamError):
    pass


class MalformedResponseError(UpstreamError):
    pass


class TransportError(FluxError):
    pass


class NotSentError(TransportError):
    pass


class ResponseLostError(TransportError):
    pass


# The failures that may pass if the same request is tried again (the upstream or the network, not the
# request, was the problem): lookups retry after them; a submission only when `may_retry` says so.
TRANSIENT = (TransportError, ServerError, MalformedResponseError, RateLimitedError)


def may_have_been_accepted(exc: FluxError) -> bool:
    """Whether a failed submission may still have been taken (and billed) by the upstream."""
    if isinstance(exc, ServerError):
        return not _declined_for_now(exc)
    return isinstance(exc, ResponseLostError | MalformedResponseError)


def may_retry(exc: FluxError, *, retry_ambiguous: bool) -> bool:
    """Whether a request that failed with `exc` may be sent again; `retry_ambiguous`: even if it may
    have been processed (true for free, idempotent lookups, never for a submission)."""
    if isinstance(exc, NotSentError | RateLimitedError) or _declined_for_now(exc):
        return True
    return retry_ambiguous


def _declined_for_now(exc: FluxError) -> bool:
    """A 503 with Retry-After: the upstream says it did not take the request."""
    return isinstance(exc, ServerError) and exc.status == 503 and exc.retry_after is not None
