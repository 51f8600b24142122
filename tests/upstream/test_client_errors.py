"""How FluxClient and PlatformClient classify each kind of upstream answer, in process over a MockTransport.

One row per answer an upstream (or a proxy in front of it) can give: the error class the caller
decides on, words of the message the assistant is shown, and how many requests were made, which
is where "a retry never pays twice" shows: a submission or upload is repeated only when the
upstream provably did not take it (429, 503 with Retry-After, no connection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from flux_mcp.domain.errors import (
    AuthenticationError,
    FluxError,
    MalformedResponseError,
    NotSentError,
    RateLimitedError,
    RequestRejectedError,
    ResponseLostError,
    ServerError,
    TaskNotFoundError,
    may_have_been_accepted,
)
from flux_mcp.domain.tasks import ImageRequest
from flux_mcp.upstream.call import RetryPolicy
from flux_mcp.upstream.flux import FluxClient
from flux_mcp.upstream.platform import PlatformClient
from tests.support import TOKEN

pytestmark = pytest.mark.anyio

BASE_URL = "http://flux.test"
RETRIES = 2
NGINX_413 = "<html><head><title>413 Request Entity Too Large</title></head><body>nginx</body></html>"
BAD_GATEWAY = "<html><body><h1>502 Bad Gateway</h1></body></html>"
TOO_BIG = 2_000_001  # one byte over MAX_RESPONSE_BYTES
Answer = Callable[[httpx2.Request], httpx2.Response]


def error(status: int, code: str, message: str, **headers: str) -> Answer:
    body = {"success": False, "error": {"code": code, "message": message}, "trace_id": "tr-1"}
    return lambda request: httpx2.Response(status, json=body, headers=headers)


def raw(status: int, content: bytes | str, **headers: str) -> Answer:
    return lambda request: httpx2.Response(status, content=content, headers=headers)


def json_answer(status: int, body: Any) -> Answer:
    return lambda request: httpx2.Response(status, json=body)


def fails(exc: type[httpx2.TransportError]) -> Answer:
    def answer(request: httpx2.Request) -> httpx2.Response:
        raise exc("emulated", request=request)

    return answer


class _Trickle(httpx2.AsyncByteStream):
    """A body with no content-length, larger than the cap only once read."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(TOO_BIG // 100_000 + 1):
            yield b" " * 100_000


def streamed_too_big(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, stream=_Trickle())


@dataclass
class Row:
    answer: Answer
    error: type[FluxError]
    says: str
    requests: int = 1  # of a submission (or an upload) with RETRIES retries allowed
    retry_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


FLUX_ROWS = {
    "400 json": Row(
        error(400, "bad_request", "prompt is required"),
        RequestRejectedError,
        "rejected the request: prompt is required (trace id tr-1)",
    ),
    "400 json list": Row(raw(400, b"[1, 2]"), RequestRejectedError, "rejected the request: [1, 2]"),
    "401 json": Row(
        error(401, "invalid_token", "the token is invalid"),
        AuthenticationError,
        "rejected the token (invalid_token: the token is invalid). Check ACEDATACLOUD_API_TOKEN",
    ),
    "401 not json": Row(
        raw(401, "Unauthorized"), AuthenticationError, "rejected the token (401: Unauthorized)"
    ),
    "200 token_expired": Row(
        json_answer(200, {"success": False, "error": {"code": "token_expired", "message": "expired"}}),
        AuthenticationError,
        "rejected the token (token_expired: expired)",
    ),
    "402": Row(raw(402, ""), RequestRejectedError, "balance is used up (Payment Required)"),
    "403 used_up": Row(
        error(403, "used_up", "the balance of this application is used up"),
        RequestRejectedError,
        "Your AceDataCloud balance is used up (the balance of this application is used up)",
    ),
    "403 moderation": Row(
        error(403, "forbidden", "content flagged"),
        RequestRejectedError,
        "refused the request (content flagged); this is usually content moderation: rephrase the prompt",
    ),
    "404": Row(error(404, "not_found", "no such route"), TaskNotFoundError, "Not found: no such route"),
    "409": Row(
        error(409, "conflict", "already exists"), RequestRejectedError, "rejected the request: already"
    ),
    "413 nginx html": Row(
        raw(413, NGINX_413, **{"content-type": "text/html"}),
        RequestRejectedError,
        "rejected the request: 413 Request Entity Too Large nginx",
    ),
    "422 error string": Row(
        json_answer(422, {"error": "prompt too long"}),
        RequestRejectedError,
        "rejected the request: prompt too long",
    ),
    "429 retry-after": Row(
        error(429, "too_many_requests", "slow down", **{"retry-after": "7"}),
        RateLimitedError,
        "rate limiting requests; try again in 7 s",
        requests=1 + RETRIES,
        retry_after=7.0,
    ),
    "429 without retry-after": Row(
        error(429, "too_many_requests", "slow down"),
        RateLimitedError,
        "try again in a minute",
        requests=1 + RETRIES,
    ),
    "429 retry-after too long": Row(
        error(429, "too_many_requests", "slow down", **{"retry-after": "120"}),
        RateLimitedError,
        "try again in 120 s",
        retry_after=120.0,
    ),
    "429 retry-after a date": Row(
        error(429, "too_many_requests", "slow down", **{"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}),
        RateLimitedError,
        "try again in a minute",
        requests=1 + RETRIES,
    ),
    "500 json": Row(
        error(500, "api_error", "fetch failed"),
        ServerError,
        "failed with HTTP 500: fetch failed (trace id tr-1)",
        extra={"maybe billed": True},
    ),
    "502 html": Row(
        raw(502, BAD_GATEWAY, **{"content-type": "text/html"}),
        ServerError,
        "failed with HTTP 502: 502 Bad Gateway",
        extra={"maybe billed": True},
    ),
    "503 retry-after": Row(
        error(503, "service_unavailable", "busy", **{"retry-after": "2"}),
        ServerError,
        "failed with HTTP 503: busy",
        requests=1 + RETRIES,
        retry_after=2.0,
        extra={"maybe billed": False},
    ),
    "503 without retry-after": Row(
        error(503, "service_unavailable", "busy"),
        ServerError,
        "failed with HTTP 503: busy",
        extra={"maybe billed": True},
    ),
    "504 empty": Row(raw(504, b""), ServerError, "failed with HTTP 504: Gateway Timeout"),
    "200 html": Row(
        raw(200, "<html><body>Welcome to nginx!</body></html>"),
        MalformedResponseError,
        "answered 200 with something that is not JSON: 'Welcome to nginx!'",
        extra={"maybe billed": True},
    ),
    "200 empty": Row(
        raw(200, b""), MalformedResponseError, "answered 200 with something that is not JSON: ''"
    ),
    "200 truncated": Row(
        raw(200, b'{"task_id": "abc'), MalformedResponseError, """not JSON: '{"task_id": "abc'"""
    ),
    "200 success false": Row(
        json_answer(200, {"success": False, "error": "plain string error"}),
        RequestRejectedError,
        "rejected the request: plain string error",
    ),
    "200 without task_id": Row(
        json_answer(200, {"success": True}),
        MalformedResponseError,
        "returned no task_id; check your AceDataCloud",
    ),
    "oversized, declared": Row(
        raw(200, b" " * TOO_BIG), MalformedResponseError, "answered with more than 2 MB"
    ),
    "oversized, streamed": Row(streamed_too_big, MalformedResponseError, "answered with more than 2 MB"),
    "no connection": Row(
        fails(httpx2.ConnectError),
        NotSentError,
        f"Could not connect to the Flux API at {BASE_URL}: ConnectError: emulated",
        requests=1 + RETRIES,
    ),
    "read timeout": Row(fails(httpx2.ReadTimeout), ResponseLostError, "did not answer in time (ReadTimeout"),
    "connection broke": Row(
        fails(httpx2.RemoteProtocolError), ResponseLostError, "connection to the Flux API broke"
    ),
}


@dataclass
class Upstream:
    """What the client under test sent, and the sleeps it asked for between retries."""

    requests: list[httpx2.Request] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@asynccontextmanager
async def mocked(answer: Answer) -> AsyncIterator[tuple[httpx2.AsyncClient, Upstream]]:
    upstream = Upstream()

    def handler(request: httpx2.Request) -> httpx2.Response:
        upstream.requests.append(request)
        return answer(request)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler), timeout=5) as http:
        yield http, upstream


@pytest.mark.parametrize("row", FLUX_ROWS.values(), ids=FLUX_ROWS.keys())
async def test_flux_client_classifies_each_answer_to_a_submission(row: Row) -> None:
    async with mocked(row.answer) as (http, upstream):
        client = FluxClient(
            http, BASE_URL, TOKEN, retry=RetryPolicy(max_retries=RETRIES), sleep=upstream.sleep
        )
        with pytest.raises(FluxError) as raised:
            await client.submit(ImageRequest(action="generate", prompt="a cat", model="flux-dev"))
    exc = raised.value
    assert type(exc) is row.error, exc.message
    assert row.says in exc.message, exc.message
    assert len(upstream.requests) == row.requests, [request.url for request in upstream.requests]
    if row.retry_after is not None:
        assert exc.retry_after == row.retry_after  # type: ignore[attr-defined]
        if row.requests > 1:
            assert upstream.sleeps == [row.retry_after] * RETRIES  # as the upstream asked, not our backoff
    if "maybe billed" in row.extra:
        assert may_have_been_accepted(exc) is row.extra["maybe billed"]
    assert TOKEN not in exc.message


@pytest.mark.parametrize("name", ["500 json", "503 without retry-after", "read timeout", "200 truncated"])
async def test_a_task_read_is_retried_after_answers_a_submission_is_not(name: str) -> None:
    """Reading a task costs nothing: what a submission must not repeat, a read simply tries again."""
    row = FLUX_ROWS[name]
    async with mocked(row.answer) as (http, upstream):
        client = FluxClient(
            http, BASE_URL, TOKEN, retry=RetryPolicy(max_retries=RETRIES), sleep=upstream.sleep
        )
        with pytest.raises(row.error):
            await client.retrieve("t-1")
    assert len(upstream.requests) == 1 + RETRIES


async def test_an_unknown_task_names_the_id() -> None:
    async with mocked(error(404, "not_found", "task not found")) as (http, _):
        client = FluxClient(http, BASE_URL, TOKEN, retry=RetryPolicy(max_retries=RETRIES))
        with pytest.raises(TaskNotFoundError, match="No task with id 't-1' is known to the Flux API"):
            await client.retrieve("t-1")


async def test_an_upstream_echoing_the_token_never_shows_it() -> None:
    answer = error(400, f"code-{TOKEN}", f"bad token {TOKEN} in header", **{"retry-after": "1"})
    async with mocked(answer) as (http, _):
        client = FluxClient(http, BASE_URL, TOKEN, retry=RetryPolicy(max_retries=0))
        with pytest.raises(RequestRejectedError) as raised:
            await client.submit(ImageRequest(action="generate", prompt="a cat", model="flux-dev"))
    exc = raised.value
    assert TOKEN not in exc.message and TOKEN not in str(exc.code)
    assert "bad token [redacted] in header" in exc.message


# --- the platform: uploads and balances -------------------------------------------------------------

PLATFORM_ROWS = {
    "400 detail": Row(
        json_answer(400, {"detail": "file is empty"}),
        RequestRejectedError,
        "refused the request: file is empty",
    ),
    "401": Row(
        error(401, "invalid_token", "no such token"),
        AuthenticationError,
        "refused the token (invalid_token: no such token). Check ACEDATACLOUD_API_TOKEN",
    ),
    "403": Row(
        error(403, "forbidden", "disabled"), AuthenticationError, "refused the token (forbidden: disabled)"
    ),
    "403 used_up": Row(
        error(403, "used_up", "balance used up"), RequestRejectedError, "refused the request: balance used up"
    ),
    "404": Row(raw(404, "Not Found"), RequestRejectedError, "refused the request: Not Found"),
    "409": Row(error(409, "conflict", "duplicate"), RequestRejectedError, "refused the request: duplicate"),
    "413": Row(
        raw(413, NGINX_413, **{"content-type": "text/html"}),
        RequestRejectedError,
        "refused the file as too large (413 Request Entity Too Large nginx)",
    ),
    "422": Row(
        error(422, "invalid", "not an image"), RequestRejectedError, "refused the request: not an image"
    ),
    "429 retry-after": Row(
        error(429, "too_many_requests", "slow", **{"retry-after": "3"}),
        RateLimitedError,
        "rate limiting requests; try again in 3 s",
        requests=1 + RETRIES,
        retry_after=3.0,
    ),
    "429 without retry-after": Row(
        raw(429, ""), RateLimitedError, "try again in a minute", requests=1 + RETRIES
    ),
    "500": Row(error(500, "api_error", "boom"), ServerError, "failed with HTTP 500: boom"),
    "502 html": Row(raw(502, BAD_GATEWAY), ServerError, "failed with HTTP 502: 502 Bad Gateway"),
    "503 retry-after": Row(
        error(503, "busy", "later", **{"retry-after": "1"}),
        ServerError,
        "failed with HTTP 503: later",
        requests=1 + RETRIES,
        retry_after=1.0,
    ),
    "503 without retry-after": Row(error(503, "busy", "later"), ServerError, "failed with HTTP 503: later"),
    "504 empty": Row(raw(504, b""), ServerError, "failed with HTTP 504: Gateway Timeout"),
    "200 html": Row(
        raw(200, "<html><body>Welcome to nginx!</body></html>"),
        MalformedResponseError,
        "answered 200 with something that is not JSON: 'Welcome to nginx!'",
    ),
    "200 truncated": Row(raw(200, b'{"file_url": "http'), MalformedResponseError, "not JSON"),
    "200 without file_url": Row(
        json_answer(200, {"id": "u1"}), MalformedResponseError, "took the upload but returned no file_url"
    ),
    "200 file_url not a url": Row(
        json_answer(200, {"file_url": "file:///etc/passwd"}), MalformedResponseError, "returned no file_url"
    ),
    "oversized, declared": Row(
        raw(200, b" " * TOO_BIG), MalformedResponseError, "platform answered with more than 2 MB"
    ),
    "oversized, streamed": Row(
        streamed_too_big, MalformedResponseError, "platform answered with more than 2 MB"
    ),
    "no connection": Row(
        fails(httpx2.ConnectError),
        NotSentError,
        f"Could not connect to the AceDataCloud platform at {BASE_URL}",
        requests=1 + RETRIES,
    ),
    "read timeout": Row(fails(httpx2.ReadTimeout), ResponseLostError, "platform did not answer in time"),
    "connection broke": Row(fails(httpx2.RemoteProtocolError), ResponseLostError, "platform broke"),
}


@pytest.mark.parametrize("row", PLATFORM_ROWS.values(), ids=PLATFORM_ROWS.keys())
async def test_platform_client_classifies_each_answer_to_an_upload(row: Row) -> None:
    async with mocked(row.answer) as (http, upstream):
        client = PlatformClient(
            http, BASE_URL, TOKEN, retry=RetryPolicy(max_retries=RETRIES), sleep=upstream.sleep
        )
        with pytest.raises(FluxError) as raised:
            await client.upload(b"\x89PNG...", "cat.png", "image/png")
    exc = raised.value
    assert type(exc) is row.error, exc.message
    assert row.says in exc.message, exc.message
    assert len(upstream.requests) == row.requests
    if row.retry_after is not None:
        assert exc.retry_after == row.retry_after  # type: ignore[attr-defined]
    assert TOKEN not in exc.message


@pytest.mark.parametrize(
    ("name", "requests"),
    [("500", 1 + RETRIES), ("read timeout", 1 + RETRIES), ("401", 1), ("200 html", 1)],
)
async def test_reading_the_balance_is_retried_where_an_upload_is_not(name: str, requests: int) -> None:
    row = PLATFORM_ROWS[name]
    async with mocked(row.answer) as (http, upstream):
        client = PlatformClient(
            http, BASE_URL, TOKEN, retry=RetryPolicy(max_retries=RETRIES), sleep=upstream.sleep
        )
        with pytest.raises(row.error):
            await client.applications()
    assert len(upstream.requests) == requests


async def test_the_applications_list_may_be_a_bare_list_or_paged() -> None:
    for body in ([{"id": "a"}], {"count": 1, "items": [{"id": "a"}]}, {"results": [{"id": "a"}]}):
        async with mocked(json_answer(200, body)) as (http, _):
            assert await PlatformClient(http, BASE_URL, TOKEN).applications() == [{"id": "a"}]
    async with mocked(json_answer(200, {"count": 1})) as (http, _):
        with pytest.raises(MalformedResponseError, match="in a shape flux-mcp does not know"):
            await PlatformClient(http, BASE_URL, TOKEN).applications()
