"""The REST client for the Flux API: submit, retrieve, retrieve_batch, and the errors they raise.

Errors, drawn as a tree so every failure a caller must decide on is visible at once:

    FluxError
    ├── MissingTokenError          no ACEDATACLOUD_API_TOKEN configured
    ├── UpstreamError              the upstream answered, but not with what was asked
    │   ├── AuthenticationError    401 / token rejected, expired or used up
    │   ├── RateLimitedError       429 (has retry_after)
    │   ├── RequestRejectedError   4xx: the request itself was refused (bad request, moderation)
    │   ├── TaskNotFoundError      the task id is unknown
    │   ├── ServerError            5xx: the upstream failed, the request MAY have been processed
    │   └── MalformedResponseError 2xx that is not the JSON we expect (HTML, empty, truncated)
    └── TransportError             no usable HTTP answer
        ├── NotSentError           the request provably never reached the upstream (safe to retry)
        └── ResponseLostError      sent, but the answer was lost (timeout, dropped): MAY have been processed

The rule that keeps users from paying twice: a submission is retried only after `NotSentError`,
`RateLimitedError`, or a 503 carrying Retry-After; retrieval is free and idempotent, so it is
retried after any transient failure. No error message ever contains the token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio
import httpx2

from flux_mcp.models import ImageRequest, TaskError, TaskSnapshot, parse_task_record
from flux_mcp.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_SHOWN_BODY = 300
_TAGS = re.compile(r"<[^>]*>")


class FluxError(Exception):
    """Base of every error this client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingTokenError(FluxError):
    def __init__(self) -> None:
        super().__init__(
            "No AceDataCloud API token is configured. Set ACEDATACLOUD_API_TOKEN in this MCP server's "
            "environment (get a token at https://platform.acedata.cloud)."
        )


class UpstreamError(FluxError):
    def __init__(
        self, message: str, *, status: int, code: str | None = None, trace_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.trace_id = trace_id


class AuthenticationError(UpstreamError):
    pass


class RateLimitedError(UpstreamError):
    def __init__(self, message: str, *, retry_after: float | None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RequestRejectedError(UpstreamError):
    pass


class TaskNotFoundError(UpstreamError):
    pass


class ServerError(UpstreamError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class MalformedResponseError(UpstreamError):
    pass


class TransportError(FluxError):
    pass


class NotSentError(TransportError):
    pass


class ResponseLostError(TransportError):
    pass


@dataclass(frozen=True)
class Submission:
    task_id: str
    trace_id: str | None


def build_http_client(settings: Settings) -> httpx2.AsyncClient:
    """The one HTTP client a server shares across all calls: sized for hundreds of tasks at once."""
    timeout = httpx2.Timeout(settings.http_timeout_seconds, connect=min(10.0, settings.http_timeout_seconds))
    # The pool matches the request gate in FluxClient. httpcore2 assigns requests in O(N+M), but each
    # request start and end still probes every idle pooled connection (`has_expired`, a socket poll):
    # re-measured with httpx2 2.16, 200 calls at once take 1.75x the latency with the gate at 16 and
    # 2.13x at 1024 (docs/benchmarks.md, measurement 2), so the gate and pool of 16 stay.
    limits = httpx2.Limits(
        max_connections=settings.max_concurrency,
        max_keepalive_connections=settings.max_concurrency,
        keepalive_expiry=30.0,
    )
    headers = {"accept": "application/json", "user-agent": "flux-mcp"}
    return httpx2.AsyncClient(timeout=timeout, limits=limits, headers=headers, follow_redirects=False)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff = self.base_delay * 2.0**attempt
        jitter: float = random.random()
        return min(backoff * (0.5 + jitter), self.max_delay)


class FluxClient:
    """Calls the Flux API with one token over a shared `httpx2.AsyncClient`."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        base_url: str,
        token: str | None,
        *,
        retry: RetryPolicy | None = None,
        gate: anyio.CapacityLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._retry = retry or RetryPolicy()
        self._gate = gate or anyio.CapacityLimiter(32)
        self._sleep = sleep

    @classmethod
    def from_settings(
        cls,
        http: httpx2.AsyncClient,
        settings: Settings,
        *,
        gate: anyio.CapacityLimiter,
        token: str | None = None,
    ) -> FluxClient:
        """A client for these settings; `gate` is shared by every client of one server."""
        if token is None and settings.api_token is not None:
            token = settings.api_token.get_secret_value()
        retry = RetryPolicy(max_retries=settings.max_retries, max_delay=settings.retry_max_seconds)
        return cls(http, settings.api_base_url, token, retry=retry, gate=gate)

    def token_key(self) -> str:
        """A name for this client's upstream and token that reveals neither: who may share a request."""
        return hashlib.sha256(f"{self._base_url}\n{self._token or ''}".encode()).hexdigest()

    async def submit(self, request: ImageRequest, *, callback_url: str | None = None) -> Submission:
        """Submit a job without waiting for it. Never resubmits after the upstream may have accepted."""
        body = request.body(callback_url=callback_url)
        data = await self._with_retries(lambda: self._post("/flux/images", body), retry_ambiguous=False)
        task_id = data.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            # The upstream answered 2xx without a task id: we cannot know what it did, so say so.
            raise MalformedResponseError(
                "The Flux API accepted the request but returned no task_id; check your AceDataCloud "
                "console before retrying, the image may have been billed.",
                status=200,
                trace_id=self._clean(data.get("trace_id")),
            )
        return Submission(task_id=task_id, trace_id=self._clean(data.get("trace_id")))

    async def retrieve(self, task_id: str) -> TaskSnapshot:
        body = {"action": "retrieve", "id": task_id}
        unknown = unknown_task_message(task_id)
        try:
            data = await self._with_retries(lambda: self._post("/flux/tasks", body), retry_ambiguous=True)
        except TaskNotFoundError as exc:
            raise TaskNotFoundError(
                unknown, status=exc.status, code=exc.code, trace_id=exc.trace_id
            ) from None
        if not (data.get("id") or data.get("task_id") or data.get("response")):
            raise TaskNotFoundError(unknown, status=200)
        snapshot = self._scrubbed(parse_task_record(data))
        return snapshot if snapshot.task_id else _with_id(snapshot, task_id)

    async def retrieve_batch(self, task_ids: list[str]) -> list[TaskSnapshot]:
        body = {"action": "retrieve_batch", "ids": task_ids}
        data = await self._with_retries(lambda: self._post("/flux/tasks", body), retry_ambiguous=True)
        items = data.get("items")
        if not isinstance(items, list):
            raise MalformedResponseError("The Flux API returned a batch without items.", status=200)
        return [self._scrubbed(parse_task_record(item)) for item in items if isinstance(item, dict)]

    async def _with_retries(
        self, call: Callable[[], Awaitable[dict[str, Any]]], *, retry_ambiguous: bool
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await call()
            except (
                NotSentError,
                RateLimitedError,
                ServerError,
                ResponseLostError,
                MalformedResponseError,
            ) as exc:
                retry_after = getattr(exc, "retry_after", None)
                too_long = retry_after is not None and retry_after > self._retry.max_delay
                if attempt >= self._retry.max_retries or too_long or not _may_retry(exc, retry_ambiguous):
                    raise
                delay = self._retry.delay(attempt, retry_after)
                logger.info("retrying after %s (%.1fs): %s", type(exc).__name__, delay, exc.message)
                await self._sleep(delay)
                attempt += 1

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if not self._token:
            raise MissingTokenError()
        headers = {"authorization": f"Bearer {self._token}", "content-type": "application/json"}
        url = self._base_url + path
        try:
            async with self._gate:
                response = await self._http.post(url, json=body, headers=headers)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            raise NotSentError(
                f"Could not connect to the Flux API at {self._base_url}: {_describe(exc)}"
            ) from None
        except httpx2.TimeoutException as exc:
            raise ResponseLostError(f"The Flux API did not answer in time ({_describe(exc)}).") from None
        except httpx2.TransportError as exc:
            raise ResponseLostError(f"The connection to the Flux API broke: {_describe(exc)}") from None
        return self._decode(response)

    def _decode(self, response: httpx2.Response) -> dict[str, Any]:
        data = _json_object(response)
        if response.is_success:
            if data is None:
                raise MalformedResponseError(
                    f"The Flux API answered {response.status_code} with something that is not JSON: "
                    f"{self._scrub(response.text)!r}",
                    status=response.status_code,
                )
            if data.get("success") is False and not data.get("task_id") and "id" not in data:
                raise self._error(response, data)
            return data
        raise self._error(response, data)

    def _error(self, response: httpx2.Response, data: dict[str, Any] | None) -> UpstreamError:
        status = response.status_code
        error = (data or {}).get("error")
        code = self._clean(error.get("code") if isinstance(error, dict) else None)
        detail = error.get("message") if isinstance(error, dict) else error
        if not isinstance(detail, str) or not detail:
            detail = code or (response.text if data is None else "") or response.reason_phrase
        detail = self._scrub(detail)
        trace_id = self._clean((data or {}).get("trace_id"))
        where = f" (trace id {trace_id})" if trace_id else ""
        kwargs: dict[str, Any] = {"status": status, "code": code, "trace_id": trace_id}
        if status == 401 or code in {"invalid_token", "token_expired", "no_token", "token_mismatched"}:
            return AuthenticationError(
                f"The Flux API rejected the token ({code or status}: {detail}). Check ACEDATACLOUD_API_TOKEN "
                "in this MCP server's environment.",
                **kwargs,
            )
        if code == "used_up" or status == 402:
            return RequestRejectedError(
                f"Your AceDataCloud balance is used up ({detail}). Top up at https://platform.acedata.cloud.",
                **kwargs,
            )
        retry_after = _retry_after(response)
        if status == 429 or code == "too_many_requests":
            wait = f"{retry_after:.0f} s" if retry_after is not None else "a minute"
            return RateLimitedError(
                f"The Flux API is rate limiting requests; try again in {wait}.",
                retry_after=retry_after,
                **kwargs,
            )
        if status == 404 or code == "not_found":
            return TaskNotFoundError(f"Not found: {detail}{where}", **kwargs)
        if status == 403:
            return RequestRejectedError(
                f"The Flux API refused the request ({detail}); this is usually content moderation: "
                f"rephrase the prompt{where}.",
                **kwargs,
            )
        if 400 <= status < 500 or (response.is_success and data is not None):
            return RequestRejectedError(f"The Flux API rejected the request: {detail}{where}", **kwargs)
        return ServerError(
            f"The Flux API failed with HTTP {status}: {detail}{where}", retry_after=retry_after, **kwargs
        )

    def queued(self) -> int:
        """How many requests a new one would wait behind (0 while FLUX_MCP_MAX_CONCURRENCY has room)."""
        if self._gate.available_tokens > 0:
            return 0
        stats = self._gate.statistics()
        return stats.borrowed_tokens + stats.tasks_waiting

    def _clean(self, value: Any) -> str | None:
        """A short upstream string (code, trace id) as it may be shown: scrubbed like any upstream text."""
        return (self._scrub(value) or None) if isinstance(value, str) else None

    def _scrubbed(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        return scrub_snapshot(snapshot, [self._token] if self._token else [])

    def _scrub(self, text: str) -> str:
        return scrub(text, [self._token] if self._token else [])


def scrub(text: str, secrets: list[str]) -> str:
    """Upstream text is shown to the model: trimmed, without markup, never carrying a secret."""
    text = " ".join(_TAGS.sub(" ", text).split())
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text[:MAX_SHOWN_BODY] + ("…" if len(text) > MAX_SHOWN_BODY else "")


def scrub_snapshot(snapshot: TaskSnapshot, secrets: list[str]) -> TaskSnapshot:
    """A task record's error and trace id are upstream text too, shown and stored: scrub them."""
    error = snapshot.error
    if error is not None:
        error = TaskError(code=scrub(error.code, secrets), message=scrub(error.message, secrets))
    trace_id = scrub(snapshot.trace_id, secrets) or None if snapshot.trace_id else None
    return replace(snapshot, error=error, trace_id=trace_id)


def unknown_task_message(task_id: str) -> str:
    return f"No task with id {task_id!r} is known to the Flux API; check the id."


def may_have_been_accepted(exc: FluxError) -> bool:
    """Whether a failed submission may still have been taken (and billed) by the upstream."""
    if isinstance(exc, ServerError):
        return not (exc.status == 503 and exc.retry_after is not None)
    return isinstance(exc, ResponseLostError | MalformedResponseError)


def _may_retry(exc: FluxError, retry_ambiguous: bool) -> bool:
    if isinstance(exc, NotSentError | RateLimitedError):
        return True
    if isinstance(exc, ServerError) and exc.status == 503 and exc.retry_after is not None:
        return True  # 503 with Retry-After: the upstream says it did not take the request.
    return retry_ambiguous


def _json_object(response: httpx2.Response) -> dict[str, Any] | None:
    try:
        data = json.loads(response.content) if response.content else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date or junk: fall back to our own backoff
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _describe(exc: httpx2.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _with_id(snapshot: TaskSnapshot, task_id: str) -> TaskSnapshot:
    return replace(snapshot, task_id=task_id)
