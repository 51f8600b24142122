"""One call to an AceDataCloud service: retried as policy allows, its error answer read, secrets scrubbed."""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from flux_mcp.domain.errors import (
    TRANSIENT,
    FluxError,
    MalformedResponseError,
    MissingTokenError,
    NotSentError,
    RateLimitedError,
    ResponseLostError,
    ServerError,
    TransportError,
    may_retry,
)
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.tasks import json_integer
from flux_mcp.domain.telemetry import NO_OBSERVER, Observer
from flux_mcp.domain.text import storable

logger = logging.getLogger(__name__)

# A task record is a few KB; 50 of them with 4000-character prompts ~1 MB; a balance list far less.
MAX_RESPONSE_BYTES = 2_000_000
MAX_SHOWN_BODY = 300
MAX_SCRUBBED_DEPTH = 8  # an application item is 2 levels deep


_TAGS = re.compile(r"<[^>]*>")


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


def token_and_retry(settings: Settings, token: str | None) -> tuple[str | None, RetryPolicy]:
    """The token a client of these settings pays with (a caller's, else the server's) and its retries."""
    if token is None and settings.api_token is not None:
        token = settings.api_token.get_secret_value()
    return token, RetryPolicy(max_retries=settings.max_retries, max_delay=settings.retry_max_seconds)


@dataclass(frozen=True)
class ErrorAnswer:
    """What an upstream's error answer says, scrubbed: what a client builds its error from."""

    status: int
    code: str | None
    detail: str
    trace_id: str | None
    retry_after: float | None
    answered_2xx: bool  # an error answer in a success status (`success: false`, or a body that is not JSON)

    @property
    def where(self) -> str:
        return f" (trace id {self.trace_id})" if self.trace_id else ""

    def fields(self) -> dict[str, Any]:
        """The keyword arguments of every `UpstreamError` made from this answer."""
        return {"status": self.status, "code": self.code, "trace_id": self.trace_id}


@dataclass(frozen=True)
class Upstream:
    """One upstream service as a client calls it: the rules FluxClient and PlatformClient share.

    How a request is retried, how an error answer is read, what a network failure means for whether
    the request arrived, and that no text shown from it carries the token. The clients differ only in
    what they send and how their upstream's statuses map to errors.
    """

    name: str  # as messages name it: "Flux API", "AceDataCloud platform"
    base_url: str
    token: str | None
    retry: RetryPolicy
    sleep: Callable[[float], Awaitable[None]]
    detail_key: str | None = None  # a top-level field that carries the message when `error` does not
    reads_trace: bool = True  # whether error answers carry a `trace_id` worth quoting
    observer: Observer = NO_OBSERVER  # told of every exchange: its endpoint and status

    async def exchange(
        self, http: httpx2.AsyncClient, method: str, url: str, **kwargs: Any
    ) -> tuple[httpx2.Response, bytes]:
        """Send one request and read its answer, refusing one larger than MAX_RESPONSE_BYTES unread.

        The observer hears of it once: with the answer's status, or "no_answer" when none came.
        """
        endpoint, status = url.removeprefix(self.base_url).split("?", 1)[0] or "/", "no_answer"
        try:
            async with http.stream(method, url, **kwargs) as response:
                status = str(response.status_code)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                    raise self._too_large(response)
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise self._too_large(response)  # leaving the block drops the connection
                    chunks.append(chunk)
        finally:
            self.observer.upstream_request(endpoint, status)
        return response, b"".join(chunks)

    def _too_large(self, response: httpx2.Response) -> MalformedResponseError:
        return MalformedResponseError(
            f"The {self.name} answered with more than {MAX_RESPONSE_BYTES // 1_000_000} MB, far more than "
            "any of its answers takes; the answer was not read.",
            status=response.status_code,
        )

    def authorization(self) -> dict[str, str]:
        """The bearer header; MissingTokenError (nothing sent) when there is no token."""
        if not self.token:
            raise MissingTokenError()
        return {"authorization": f"Bearer {self.token}"}

    async def with_retries(
        self,
        call: Callable[[], Awaitable[dict[str, Any]]],
        *,
        retry_ambiguous: bool,
        retried: tuple[type[FluxError], ...] = TRANSIENT,
    ) -> dict[str, Any]:
        """`call()`, tried again after a failure in `retried` as far as the retry policy and
        `may_retry` allow (never after a pause longer than the policy's longest)."""
        attempt = 0
        while True:
            try:
                return await call()
            except retried as exc:
                too_long = exc.retry_after is not None and exc.retry_after > self.retry.max_delay
                if (
                    attempt >= self.retry.max_retries
                    or too_long
                    or not may_retry(exc, retry_ambiguous=retry_ambiguous)
                ):
                    raise
                delay = self.retry.delay(attempt, exc.retry_after)
                logger.info(
                    "%s: retrying after %s (%.1fs): %s", self.name, type(exc).__name__, delay, exc.message
                )
                await self.sleep(delay)
                attempt += 1

    def unreachable(self, exc: httpx2.TransportError) -> TransportError:
        """The network failed: whether the request can have arrived decides the error."""
        if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout):
            failure = describe_failure(exc)
            return NotSentError(f"Could not connect to the {self.name} at {self.base_url}: {failure}")
        if isinstance(exc, httpx2.TimeoutException):
            return ResponseLostError(f"The {self.name} did not answer in time ({describe_failure(exc)}).")
        return ResponseLostError(f"The connection to the {self.name} broke: {describe_failure(exc)}")

    def error_answer(
        self, response: httpx2.Response, data: dict[str, Any] | None, content: bytes
    ) -> ErrorAnswer:
        """Read an answer that is not what was asked: `data` is its JSON object, None if it has none."""
        body = data or {}
        error = body.get("error")
        code = self.clean(error.get("code") if isinstance(error, dict) else None)
        detail = error.get("message") if isinstance(error, dict) else error
        if not detail and not isinstance(error, dict) and self.detail_key is not None:
            detail = body.get(self.detail_key)
        if not isinstance(detail, str) or not detail:
            shown = answer_text(response, content) if data is None else ""
            detail = code or shown or response.reason_phrase
        return ErrorAnswer(
            status=response.status_code,
            code=code,
            detail=self.scrub(detail),
            trace_id=self.clean(body.get("trace_id")) if self.reads_trace else None,
            retry_after=retry_after_header(response),
            answered_2xx=response.is_success,
        )

    def rate_limited(self, answer: ErrorAnswer) -> RateLimitedError:
        wait = f"{answer.retry_after:.0f} s" if answer.retry_after is not None else "a minute"
        return RateLimitedError(
            f"The {self.name} is rate limiting requests; try again in {wait}.",
            retry_after=answer.retry_after,
            **answer.fields(),
        )

    def failed(self, answer: ErrorAnswer) -> ServerError:
        return ServerError(
            f"The {self.name} failed with HTTP {answer.status}: {answer.detail}{answer.where}",
            retry_after=answer.retry_after,
            **answer.fields(),
        )

    def clean(self, value: Any) -> str | None:
        """A short upstream string (code, trace id) as it may be shown: scrubbed like any upstream text."""
        return (self.scrub(value) or None) if isinstance(value, str) else None

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets())

    def secrets(self) -> list[str]:
        return [self.token] if self.token else []

    def scrubbed(self, value: Any, depth: int = 0) -> Any:
        """A JSON answer with every string in it scrubbed (`scrub`): all of it may be shown or stored.
        Nesting past a few levels (no answer of ours has it) is dropped rather than followed."""
        if isinstance(value, str):
            return self.scrub(value)
        if not isinstance(value, dict | list):
            return value
        if depth >= MAX_SCRUBBED_DEPTH:
            return None
        if isinstance(value, list):
            return [self.scrubbed(item, depth + 1) for item in value]
        return {self.scrub(str(key)): self.scrubbed(item, depth + 1) for key, item in value.items()}


def scrub(text: str, secrets: list[str]) -> str:
    """Upstream text is shown to the model: trimmed, without markup, never carrying a secret, storable."""
    text = " ".join(_TAGS.sub(" ", storable(text)).split())
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text[:MAX_SHOWN_BODY] + ("…" if len(text) > MAX_SHOWN_BODY else "")


def answer_text(response: httpx2.Response, content: bytes) -> str:
    # `encoding`, not the raw charset: an answer declaring a charset Python lacks is still shown.
    return content.decode(response.encoding or "utf-8", errors="replace")


def retry_after_header(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date or junk: fall back to our own backoff
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def describe_failure(exc: httpx2.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def json_value(content: bytes) -> Any:
    """An answer's JSON (None when it is not JSON), its integers read by the one rule for upstream figures."""
    try:
        return json.loads(content, parse_int=json_integer) if content else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser follows
        return None


def json_object(content: bytes) -> dict[str, Any] | None:
    data = json_value(content)
    return data if isinstance(data, dict) else None
