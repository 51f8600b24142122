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
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from typing import Any, TypeVar

import anyio
import httpx2

from flux_mcp.addresses import DownloadTransport, PinnedTransport
from flux_mcp.models import ImageRequest, TaskError, TaskSnapshot, parse_task_record
from flux_mcp.probes import QuickProbeBackend
from flux_mcp.settings import Settings
from flux_mcp.tls import shared_context
from flux_mcp.videos import VideoRequest

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_SHOWN_BODY = 300
# A task id no one has (the nil UUID): looking it up costs nothing and tells whether the token is accepted.
TOKEN_PROBE_ID = "00000000-0000-0000-0000-000000000000"
# Error codes that, on a request the upstream otherwise judged, still mean the token itself is refused.
REFUSED_TOKEN_CODES = frozenset({"disabled"})
MAX_RESPONSE_BYTES = 2_000_000  # a task record is a few KB; 50 of them with 4000-character prompts ~1 MB
USER_AGENT = "flux-mcp"
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
    headers = {"accept": "application/json", "user-agent": USER_AGENT}
    # Without a proxy configured, the pool's idle-connection checks take one poll each (flux_mcp.probes);
    # with one, httpx2 builds the transports, proxies and all, as always.
    direct = (
        None
        if urllib.request.getproxies()
        else PinnedTransport(QuickProbeBackend(), limits=http_limits(settings))
    )
    return httpx2.AsyncClient(
        timeout=http_timeout(settings),
        limits=http_limits(settings),
        headers=headers,
        cookies=no_cookies(),
        follow_redirects=False,
        verify=shared_context(),  # the CA bundle is loaded at the first HTTPS connection, not here
        transport=direct,
    )


def build_download_client(settings: Settings) -> httpx2.AsyncClient:
    """The client image downloads use: connects only to public addresses (see `flux_mcp.addresses`).

    The configured upstream's own origin is the one exception; no proxy from the environment is used
    (a proxy would make the connection where the address rule cannot follow), nor any .netrc password.
    """
    transport = DownloadTransport(
        trusted=settings.api_base_url,
        allow_private=settings.allow_private_downloads,
        limits=http_limits(settings),
    )
    return httpx2.AsyncClient(
        transport=transport,
        timeout=http_timeout(settings),
        headers={"user-agent": USER_AGENT},
        cookies=no_cookies(),
        follow_redirects=False,
        trust_env=False,
    )


def http_timeout(settings: Settings) -> httpx2.Timeout:
    """Per-phase timeouts; FluxClient also bounds each whole request by FLUX_MCP_HTTP_TIMEOUT_SECONDS."""
    return httpx2.Timeout(settings.http_timeout_seconds, connect=min(10.0, settings.http_timeout_seconds))


def http_limits(settings: Settings) -> httpx2.Limits:
    # The pool matches the request gate in FluxClient. httpcore2 assigns requests in O(N+M), but each
    # request start and end still probes every idle pooled connection (`has_expired`, a socket poll):
    # re-measured with httpx2 2.16, 200 calls at once take 1.75x the latency with the gate at 16 and
    # 2.13x at 1024 (docs/benchmarks.md, measurement 2), so the gate and pool of 16 stay.
    return httpx2.Limits(
        max_connections=settings.max_concurrency,
        max_keepalive_connections=settings.max_concurrency,
        keepalive_expiry=30.0,
    )


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing: one client serves every user, so no answer may set state."""
    return CookieJar(policy=_RefuseCookies())


class _RefuseCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: urllib.request.Request) -> bool:
        return False

    def path_return_ok(self, path: str, request: urllib.request.Request) -> bool:
        return False


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


def _token_and_retry(settings: Settings, token: str | None) -> tuple[str | None, RetryPolicy]:
    """The token a client of these settings pays with (a caller's, else the server's) and its retries."""
    if token is None and settings.api_token is not None:
        token = settings.api_token.get_secret_value()
    return token, RetryPolicy(max_retries=settings.max_retries, max_delay=settings.retry_max_seconds)


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
        deadline: float | None = None,
    ) -> None:
        """`deadline` bounds each whole request; by default the HTTP client's timeout (from settings)."""
        self._http = http
        self._deadline = deadline if deadline is not None else http.timeout.read
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
        token, retry = _token_and_retry(settings, token)
        return cls(http, settings.api_base_url, token, retry=retry, gate=gate)

    def token_key(self) -> str:
        """A name for this client's upstream and token that reveals neither: who may share a request."""
        return hashlib.sha256(f"{self._base_url}\n{self._token or ''}".encode()).hexdigest()

    async def submit(
        self, request: ImageRequest | VideoRequest, *, callback_url: str | None = None
    ) -> Submission:
        """Submit a job to its endpoint without waiting. Never resubmits once the upstream may have it."""
        body = request.body(callback_url=callback_url)
        data = await self._with_retries(lambda: self._post(request.endpoint, body), retry_ambiguous=False)
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

    async def check_token(self) -> bool:
        """Whether the upstream accepts this client's token: one free lookup of a task that cannot exist.

        One request, no retries. True when the upstream judged the lookup itself (no such task, or a
        refusal for another reason such as a spent balance); False when it refused the token. Raises the
        errors that leave the question open: rate limiting, 5xx, garbled answers, network failures.
        """
        body = {"action": "retrieve", "id": TOKEN_PROBE_ID}
        try:
            await self._post("/flux/tasks", body)
        except AuthenticationError:
            return False
        except (TaskNotFoundError, RequestRejectedError) as exc:
            return exc.code not in REFUSED_TOKEN_CODES
        return True

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
        progress = _Progress()
        try:
            async with self._gate:
                # One bound on the whole exchange: httpx's timeouts are per read, so an upstream that
                # trickles a byte at a time would otherwise hold this slot for as long as it likes.
                with anyio.fail_after(self._deadline):
                    response, content = await self._exchange(url, body, headers, progress)
        except TimeoutError:
            if not progress.sent:
                raise NotSentError(
                    f"Could not reach the Flux API at {self._base_url} within {self._deadline:g} s."
                ) from None
            raise ResponseLostError(
                f"The Flux API did not answer within {self._deadline:g} s (FLUX_MCP_HTTP_TIMEOUT_SECONDS)."
            ) from None
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            raise NotSentError(
                f"Could not connect to the Flux API at {self._base_url}: {_describe(exc)}"
            ) from None
        except httpx2.TimeoutException as exc:
            raise ResponseLostError(f"The Flux API did not answer in time ({_describe(exc)}).") from None
        except httpx2.TransportError as exc:
            raise ResponseLostError(f"The connection to the Flux API broke: {_describe(exc)}") from None
        return self._decode(response, content)

    async def _exchange(
        self, url: str, body: dict[str, Any], headers: dict[str, str], progress: _Progress
    ) -> tuple[httpx2.Response, bytes]:
        """Send the request and read the answer, refusing one larger than MAX_RESPONSE_BYTES."""
        extensions = {"trace": progress.trace}
        async with self._http.stream(
            "POST", url, json=body, headers=headers, extensions=extensions
        ) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                raise self._too_large(response)
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise self._too_large(response)  # leaving the block drops the connection
                chunks.append(chunk)
        return response, b"".join(chunks)

    def _too_large(self, response: httpx2.Response) -> MalformedResponseError:
        return MalformedResponseError(
            f"The Flux API answered with more than {MAX_RESPONSE_BYTES // 1_000_000} MB, far more than a "
            "task record takes; the answer was not read.",
            status=response.status_code,
        )

    def _decode(self, response: httpx2.Response, content: bytes) -> dict[str, Any]:
        data = _json_object(content)
        if response.is_success:
            if data is None:
                raise MalformedResponseError(
                    f"The Flux API answered {response.status_code} with something that is not JSON: "
                    f"{self._scrub(_text(response, content))!r}",
                    status=response.status_code,
                )
            if data.get("success") is False and not data.get("task_id") and "id" not in data:
                raise self._error(response, data, content)
            return data
        raise self._error(response, data, content)

    def _error(self, response: httpx2.Response, data: dict[str, Any] | None, content: bytes) -> UpstreamError:
        status = response.status_code
        error = (data or {}).get("error")
        code = self._clean(error.get("code") if isinstance(error, dict) else None)
        detail = error.get("message") if isinstance(error, dict) else error
        if not isinstance(detail, str) or not detail:
            detail = code or (_text(response, content) if data is None else "") or response.reason_phrase
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
                f"Your AceDataCloud balance is used up ({detail}); nothing was generated. Add credits at "
                "https://platform.acedata.cloud (your Flux application's page), then try again; get_credits "
                "shows what is left.",
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


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(content) if content else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser follows
        return None
    return data if isinstance(data, dict) else None


def _text(response: httpx2.Response, content: bytes) -> str:
    return content.decode(response.charset_encoding or "utf-8", errors="replace")


class _Progress:
    """Follows one request through httpcore: once its headers start going out, it may have arrived."""

    def __init__(self) -> None:
        self.sent = False

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
            self.sent = True


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


# --- The AceDataCloud platform: file uploads and balances ------------------------------------------


class PlatformClient:
    """The platform beside the Flux API, with the same token and the same retry rules.

    An upload makes an edit's local or inline image fetchable by the Flux API; the applications list
    carries the account's balances. Neither costs anything, but an upload is still not repeated
    blindly after it may have arrived: the caller is told what happened instead.
    """

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
    ) -> PlatformClient:
        """A platform client for these settings, with the same token and retry rules as the API's."""
        token, retry = _token_and_retry(settings, token)
        return cls(http, settings.platform_base_url, token, retry=retry, gate=gate)

    async def upload(self, data: bytes, filename: str, mime_type: str) -> str:
        """Upload one file; its public `file_url`. Retried only when it provably did not arrive."""
        files = {"file": (filename, data, mime_type)}
        answer = await self._with_retries(
            lambda: self._send("POST", "/api/v1/files/", files=files), retry_ambiguous=False
        )
        file_url = answer.get("file_url")
        if not isinstance(file_url, str) or not file_url.startswith(("http://", "https://")):
            raise MalformedResponseError(
                "The AceDataCloud platform took the upload but returned no file_url.", status=200
            )
        return file_url

    async def applications(self) -> list[dict[str, Any]]:
        """The account's applications (each with its balance), as the platform lists them."""
        answer = await self._with_retries(
            lambda: self._send("GET", "/api/v1/applications/"), retry_ambiguous=True
        )
        items = answer.get("items", answer.get("results"))
        if not isinstance(items, list):
            raise MalformedResponseError(
                "The AceDataCloud platform listed the applications in a shape flux-mcp does not know.",
                status=200,
            )
        return [item for item in items if isinstance(item, dict)]

    async def _with_retries(
        self, call: Callable[[], Awaitable[dict[str, Any]]], *, retry_ambiguous: bool
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await call()
            except (NotSentError, RateLimitedError, ServerError, ResponseLostError) as exc:
                retry_after = getattr(exc, "retry_after", None)
                too_long = retry_after is not None and retry_after > self._retry.max_delay
                if attempt >= self._retry.max_retries or too_long or not _may_retry(exc, retry_ambiguous):
                    raise
                delay = self._retry.delay(attempt, retry_after)
                logger.info("platform: retrying after %s (%.1fs)", type(exc).__name__, delay)
                await self._sleep(delay)
                attempt += 1

    async def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if not self._token:
            raise MissingTokenError()
        headers = {"authorization": f"Bearer {self._token}"}
        try:
            async with self._gate:
                response = await self._http.request(method, self._base_url + path, headers=headers, **kwargs)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            raise NotSentError(
                f"Could not connect to the AceDataCloud platform at {self._base_url}: {_describe(exc)}"
            ) from None
        except httpx2.TimeoutException as exc:
            raise ResponseLostError(
                f"The AceDataCloud platform did not answer in time ({_describe(exc)})."
            ) from None
        except httpx2.TransportError as exc:
            raise ResponseLostError(
                f"The connection to the AceDataCloud platform broke: {_describe(exc)}"
            ) from None
        data = _json_object(response.content)
        if response.is_success and data is None and _is_json_list(response):
            data = {"items": json.loads(response.content)}  # a bare list of items
        if response.is_success and data is not None:
            return data
        raise self._error(response, data)

    def _error(self, response: httpx2.Response, data: dict[str, Any] | None) -> UpstreamError:
        status = response.status_code
        error = (data or {}).get("error")
        code = error.get("code") if isinstance(error, dict) else None
        code = self._scrub(code) if isinstance(code, str) else None
        detail = error.get("message") if isinstance(error, dict) else error or (data or {}).get("detail")
        if not isinstance(detail, str) or not detail:
            detail = code or (response.text if data is None else "") or response.reason_phrase
        detail = self._scrub(detail)
        kwargs: dict[str, Any] = {"status": status, "code": code}
        if response.is_success:
            return MalformedResponseError(
                f"The AceDataCloud platform answered {status} with something that is not JSON: {detail!r}",
                **kwargs,
            )
        if status in (401, 403) and code != "used_up":
            return AuthenticationError(
                f"The AceDataCloud platform refused the token ({code or status}: {detail}). Check "
                "ACEDATACLOUD_API_TOKEN in this MCP server's environment.",
                **kwargs,
            )
        retry_after = _retry_after(response)
        if status == 429:
            wait = f"{retry_after:.0f} s" if retry_after is not None else "a minute"
            return RateLimitedError(
                f"The AceDataCloud platform is rate limiting requests; try again in {wait}.",
                retry_after=retry_after,
                **kwargs,
            )
        if status == 413:
            return RequestRejectedError(
                f"The AceDataCloud platform refused the file as too large ({detail}).", **kwargs
            )
        if 400 <= status < 500:
            return RequestRejectedError(f"The AceDataCloud platform refused the request: {detail}", **kwargs)
        return ServerError(
            f"The AceDataCloud platform failed with HTTP {status}: {detail}",
            retry_after=retry_after,
            **kwargs,
        )

    def _scrub(self, text: str) -> str:
        return scrub(text, [self._token] if self._token else [])


def _is_json_list(response: httpx2.Response) -> bool:
    try:
        return isinstance(json.loads(response.content), list)
    except (ValueError, RecursionError):
        return False
