"""The Flux API's client: submit a job, retrieve one task or a batch, and check a token for free.

It speaks through one `upstream.call.Upstream` (the retry loop, the reading of an error answer, the network's
failures, declared once) and keeps only what it sends and how the Flux API's statuses map to the errors of
`domain.errors`, whose rule decides what may be retried: a submission only when it provably was not taken,
a free lookup after any transient failure. No error message ever contains the token.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio
import httpx2

from flux_mcp.domain.errors import (
    AuthenticationError,
    MalformedResponseError,
    NotSentError,
    RequestRejectedError,
    ResponseLostError,
    TaskNotFoundError,
    UpstreamError,
)
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.tasks import ImageRequest, TaskError, TaskSnapshot, parse_task_record
from flux_mcp.domain.telemetry import NO_OBSERVER, Observer
from flux_mcp.domain.videos import VideoRequest
from flux_mcp.upstream.call import (
    ErrorAnswer,
    RetryPolicy,
    Upstream,
    answer_text,
    json_object,
    scrub,
    token_and_retry,
)

logger = logging.getLogger(__name__)

# A task id no one has (the nil UUID): looking it up costs nothing and tells whether the token is accepted.
TOKEN_PROBE_ID = "00000000-0000-0000-0000-000000000000"
# Error codes that, on a request the upstream otherwise judged, still mean the token itself is refused.
REFUSED_TOKEN_CODES = frozenset({"disabled"})


@dataclass(frozen=True)
class Submission:
    task_id: str
    trace_id: str | None


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
        observer: Observer = NO_OBSERVER,
    ) -> None:
        """`deadline` bounds each whole request; by default the HTTP client's timeout (from settings)."""
        self._http = http
        self._deadline = deadline if deadline is not None else http.timeout.read
        retry = retry or RetryPolicy()
        self._upstream = Upstream("Flux API", base_url.rstrip("/"), token, retry, sleep, observer=observer)
        self._gate = gate or anyio.CapacityLimiter(32)

    @classmethod
    def from_settings(
        cls,
        http: httpx2.AsyncClient,
        settings: Settings,
        *,
        gate: anyio.CapacityLimiter,
        token: str | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> FluxClient:
        """A client for these settings; `gate` is shared by every client of one server."""
        token, retry = token_and_retry(settings, token)
        return cls(http, settings.api_base_url, token, retry=retry, gate=gate, observer=observer)

    def token_key(self) -> str:
        """A name for this client's upstream and token that reveals neither: who may share a request."""
        upstream = self._upstream
        return hashlib.sha256(f"{upstream.base_url}\n{upstream.token or ''}".encode()).hexdigest()

    async def submit(
        self, request: ImageRequest | VideoRequest, *, callback_url: str | None = None
    ) -> Submission:
        """Submit a job to its endpoint without waiting. Never resubmits once the upstream may have it."""
        body = request.body(callback_url=callback_url)
        data = await self._upstream.with_retries(
            lambda: self._post(request.endpoint, body), retry_ambiguous=False
        )
        task_id = data.get("task_id")
        trace_id = self._upstream.clean(data.get("trace_id"))
        if not isinstance(task_id, str) or not task_id:
            # The upstream answered 2xx without a task id: we cannot know what it did, so say so.
            raise MalformedResponseError(
                "The Flux API accepted the request but returned no task_id; check your AceDataCloud "
                "console before retrying, the image may have been billed.",
                status=200,
                trace_id=trace_id,
            )
        return Submission(task_id=task_id, trace_id=trace_id)

    async def retrieve(self, task_id: str) -> TaskSnapshot:
        body = {"action": "retrieve", "id": task_id}
        try:
            data = await self._upstream.with_retries(
                lambda: self._post("/flux/tasks", body), retry_ambiguous=True
            )
        except TaskNotFoundError as exc:
            raise TaskNotFoundError.for_task(
                task_id, status=exc.status, code=exc.code, trace_id=exc.trace_id
            ) from None
        if not (data.get("id") or data.get("task_id") or data.get("response")):
            raise TaskNotFoundError.for_task(task_id, status=200)
        snapshot = self._scrubbed(parse_task_record(data))
        return snapshot if snapshot.task_id else _with_id(snapshot, task_id)

    async def retrieve_batch(self, task_ids: list[str]) -> list[TaskSnapshot]:
        body = {"action": "retrieve_batch", "ids": task_ids}
        data = await self._upstream.with_retries(
            lambda: self._post("/flux/tasks", body), retry_ambiguous=True
        )
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

    def queued(self) -> int:
        """How many requests a new one would wait behind (0 while FLUX_MCP_MAX_CONCURRENCY has room)."""
        if self._gate.available_tokens > 0:
            return 0
        stats = self._gate.statistics()
        return stats.borrowed_tokens + stats.tasks_waiting

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        upstream = self._upstream
        headers = {**upstream.authorization(), "content-type": "application/json"}
        url = upstream.base_url + path
        progress = _Progress()
        try:
            async with self._gate:
                # One bound on the whole exchange: httpx's timeouts are per read, so an upstream that
                # trickles a byte at a time would otherwise hold this slot for as long as it likes.
                with anyio.fail_after(self._deadline):
                    response, content = await upstream.exchange(
                        self._http,
                        "POST",
                        url,
                        json=body,
                        headers=headers,
                        extensions={"trace": progress.trace},
                    )
        except TimeoutError:
            if not progress.sent:
                raise NotSentError(
                    f"Could not reach the Flux API at {upstream.base_url} within {self._deadline:g} s."
                ) from None
            raise ResponseLostError(
                f"The Flux API did not answer within {self._deadline:g} s (FLUX_MCP_HTTP_TIMEOUT_SECONDS)."
            ) from None
        except httpx2.TransportError as exc:
            raise upstream.unreachable(exc) from None
        return self._decode(response, content)

    def _decode(self, response: httpx2.Response, content: bytes) -> dict[str, Any]:
        data = json_object(content)
        if response.is_success:
            if data is None:
                raise MalformedResponseError(
                    f"The Flux API answered {response.status_code} with something that is not JSON: "
                    f"{self._upstream.scrub(answer_text(response, content))!r}",
                    status=response.status_code,
                )
            if data.get("success") is False and not data.get("task_id") and "id" not in data:
                raise self._error(self._upstream.error_answer(response, data, content))
            return data
        raise self._error(self._upstream.error_answer(response, data, content))

    def _error(self, answer: ErrorAnswer) -> UpstreamError:
        """The error a Flux API error answer means (in a 2xx status: a JSON body saying `success: false`)."""
        status, code, detail, where, fields = (
            answer.status,
            answer.code,
            answer.detail,
            answer.where,
            answer.fields(),
        )
        if status == 401 or code in {"invalid_token", "token_expired", "no_token", "token_mismatched"}:
            return AuthenticationError(
                f"The Flux API rejected the token ({code or status}: {detail}). Check ACEDATACLOUD_API_TOKEN "
                "in this MCP server's environment.",
                **fields,
            )
        if code == "used_up" or status == 402:
            return RequestRejectedError(
                f"Your AceDataCloud balance is used up ({detail}); nothing was generated. Add credits at "
                "https://platform.acedata.cloud (your Flux application's page), then try again; get_credits "
                "shows what is left.",
                **fields,
            )
        if status == 429 or code == "too_many_requests":
            return self._upstream.rate_limited(answer)
        if status == 404 or code == "not_found":
            return TaskNotFoundError(f"Not found: {detail}{where}", **fields)
        if status == 403:
            return RequestRejectedError(
                f"The Flux API refused the request ({detail}); this is usually content moderation: "
                f"rephrase the prompt{where}.",
                **fields,
            )
        if 400 <= status < 500 or answer.answered_2xx:
            return RequestRejectedError(f"The Flux API rejected the request: {detail}{where}", **fields)
        return self._upstream.failed(answer)

    def _scrubbed(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        return scrub_snapshot(snapshot, self._upstream.secrets())


def scrub_snapshot(snapshot: TaskSnapshot, secrets: list[str]) -> TaskSnapshot:
    """A task record's error and trace id are upstream text too, shown and stored: scrub them."""
    error = snapshot.error
    if error is not None:
        error = TaskError(code=scrub(error.code, secrets), message=scrub(error.message, secrets))
    trace_id = scrub(snapshot.trace_id, secrets) or None if snapshot.trace_id else None
    return replace(snapshot, error=error, trace_id=trace_id)


class _Progress:
    """Follows one request through httpcore: once its headers start going out, it may have arrived."""

    def __init__(self) -> None:
        self.sent = False

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
            self.sent = True


def _with_id(snapshot: TaskSnapshot, task_id: str) -> TaskSnapshot:
    return replace(snapshot, task_id=task_id)
