"""Issue 12, items 5 and 10: what one upstream answer can do to the server and to other users.

A hostile upstream on loopback sets cookies, answers with tens of megabytes, or trickles its answer a
byte at a time. It is a raw TCP server here, so it can tell how much it managed to send before the
client hung up: the tests judge by that, never by the clock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.domain.errors import (
    MalformedResponseError,
    NotSentError,
    ResponseLostError,
    may_have_been_accepted,
)
from flux_mcp.emulator import serve_asgi
from flux_mcp.net.clients import build_download_client, build_http_client
from flux_mcp.net.downloads import Downloader
from flux_mcp.server.build import build_server
from flux_mcp.upstream.call import MAX_RESPONSE_BYTES, RetryPolicy
from flux_mcp.upstream.flux import FluxClient
from tests.support import fetch_picture, png_bytes, settings_for, structured, text

pytestmark = pytest.mark.anyio

PENDING = {"id": "t1", "request": {"prompt": "a cat", "model": "flux-dev"}}
HUGE = 62_000_000
TRICKLE_BYTES = 400
Mode = Literal["pending", "huge", "huge-chunked", "trickle"]


@dataclass
class RawUpstream:
    """A Flux API that answers as told, counting the body bytes it got out before the client left."""

    port: int
    mode: Mode = "pending"
    requests: int = 0
    sent: int = 0
    completed: bool = False  # the whole body went out
    ended: anyio.Event = field(default_factory=anyio.Event)  # the hostile answer finished or was cut
    asked: anyio.Event = field(default_factory=anyio.Event)  # a request arrived

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, stream: SocketStream) -> None:
        async with stream:
            with suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                while True:  # keep-alive: one request after another on this connection
                    await _read_request(stream)
                    self.requests += 1
                    self.asked.set()
                    mode = self.mode
                    if mode == "pending":
                        await stream.send(_response(json.dumps(PENDING).encode()))
                        continue
                    try:
                        await self._hostile(stream, mode)
                        self.completed = True
                    finally:
                        self.ended.set()

    async def _hostile(self, stream: SocketStream, mode: Mode) -> None:
        if mode == "trickle":
            body = json.dumps(PENDING).encode().ljust(TRICKLE_BYTES)
            await stream.send(_head(f"content-length: {len(body)}"))
            for index in range(len(body)):
                await stream.send(body[index : index + 1])
                self.sent += 1
                await anyio.sleep(0.05)  # each byte restarts httpx's read timeout
            return
        chunked = mode == "huge-chunked"
        await stream.send(_head("transfer-encoding: chunked" if chunked else f"content-length: {HUGE}"))
        block = b" " * 65_536
        while self.sent < HUGE:
            await stream.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            self.sent += len(block)


async def _read_request(stream: SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(body) < length:
        body += await stream.receive()
    return body


def _head(framing: str) -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\n\r\n".encode()


def _response(body: bytes) -> bytes:
    return _head(f"content-length: {len(body)}") + body


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    upstream = RawUpstream(port=listener.extra(SocketAttribute.local_port))
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, upstream.handle)
        yield upstream
        group.cancel_scope.cancel()


def client_for(upstream: RawUpstream, http: Any, token: str = "sk-a", **kwargs: Any) -> FluxClient:
    return FluxClient(http, upstream.base_url, token, retry=RetryPolicy(max_retries=0), **kwargs)


# --- item 10: a cap on every answer ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["huge", "huge-chunked"])
async def test_a_huge_answer_is_cut_off_not_read(raw_upstream: RawUpstream, mode: Mode) -> None:
    raw_upstream.mode = mode
    async with build_http_client(settings_for(raw_upstream.base_url)) as http:
        with pytest.raises(MalformedResponseError, match="more than 2 MB") as refused:
            await client_for(raw_upstream, http).retrieve("t1")
    with anyio.fail_after(30):  # only a bound against hanging: the server notices the client left
        await raw_upstream.ended.wait()
    assert not raw_upstream.completed
    print(f"\n{mode}: the upstream got {raw_upstream.sent / 1e6:.1f} MB of {HUGE / 1e6:.0f} MB out")
    assert raw_upstream.sent < HUGE // 4  # what the cap let through, plus socket buffers
    assert refused.value.status == 200 and MAX_RESPONSE_BYTES == 2_000_000


async def test_a_huge_answer_to_a_submit_may_have_been_billed_and_is_not_resent(
    raw_upstream: RawUpstream,
) -> None:
    from flux_mcp.domain.tasks import ImageRequest

    raw_upstream.mode = "huge"
    request = ImageRequest.model_validate({"action": "generate", "prompt": "a cat", "model": "flux-dev"})
    async with build_http_client(settings_for(raw_upstream.base_url)) as http:
        client = FluxClient(http, raw_upstream.base_url, "sk-a", retry=RetryPolicy(max_retries=3))
        with pytest.raises(MalformedResponseError) as refused:
            await client.submit(request)
    assert may_have_been_accepted(refused.value) and raw_upstream.requests == 1


# --- item 10: a deadline on every request ---------------------------------------------------------


async def test_a_trickling_answer_ends_at_the_deadline(raw_upstream: RawUpstream) -> None:
    raw_upstream.mode = "trickle"
    async with build_http_client(settings_for(raw_upstream.base_url, http_timeout_seconds=0.5)) as http:
        with pytest.raises(ResponseLostError, match=r"did not answer within 0\.5 s"):
            await client_for(raw_upstream, http).retrieve("t1")
    assert raw_upstream.sent < TRICKLE_BYTES  # the call returned before the body was out


async def test_get_task_against_a_trickling_upstream_returns_and_frees_its_slot(
    raw_upstream: RawUpstream,
) -> None:
    raw_upstream.mode = "trickle"
    settings = settings_for(
        raw_upstream.base_url,
        http_timeout_seconds=0.5,
        max_concurrency=1,
        max_retries=1,
        retry_max_seconds=0.1,
    )
    with anyio.fail_after(60):  # only a bound against hanging
        async with Client(build_server(settings)) as client:
            stuck = await client.call_tool("get_task", {"task_id": "t1", "wait_seconds": 1})
            assert raw_upstream.sent < TRICKLE_BYTES and raw_upstream.requests == 2
            raw_upstream.mode = "pending"
            # One slot in all (FLUX_MCP_MAX_CONCURRENCY=1): this call only runs if the slow ones let go.
            after = await client.call_tool("get_task", {"task_id": "t1", "wait_seconds": 0})
    assert stuck.is_error and "did not answer within 0.5 s" in text(stuck)
    assert not after.is_error and structured(after)["status"] == "pending"


async def test_a_request_that_waited_for_a_connection_past_its_deadline_was_not_sent(
    raw_upstream: RawUpstream,
) -> None:
    # Two clients with their own gates share one single-connection pool: the second request is still
    # queued for the connection when its deadline passes, so it is safe to submit again.
    raw_upstream.mode = "trickle"
    settings = settings_for(raw_upstream.base_url, http_timeout_seconds=0.5, max_concurrency=1)
    async with build_http_client(settings) as http:
        slow = client_for(raw_upstream, http, gate=anyio.CapacityLimiter(1), deadline=30.0)
        queued = client_for(raw_upstream, http, gate=anyio.CapacityLimiter(1))
        async with anyio.create_task_group() as group:
            group.start_soon(slow.retrieve, "t1")
            await raw_upstream.asked.wait()
            with pytest.raises(NotSentError):
                await queued.retrieve("t1")
            group.cancel_scope.cancel()
    assert raw_upstream.requests == 1


# --- item 5: no cookies between users --------------------------------------------------------------


@dataclass
class CookieSetter:
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (token, cookie header)


@pytest.fixture
async def cookie_setter() -> AsyncIterator[tuple[str, CookieSetter]]:
    """An upstream (and image host) that hands every caller a session cookie."""
    record = CookieSetter()

    def remember(request: Request) -> str:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        record.seen.append((token, request.headers.get("cookie")))
        return token

    async def task(request: Request) -> Response:
        answer = JSONResponse(PENDING)
        answer.set_cookie("session", f"of-{remember(request)}")
        return answer

    async def image(request: Request) -> Response:
        remember(request)
        answer = Response(png_bytes(), media_type="image/png")
        answer.set_cookie("tracker", "first-viewer")
        return answer

    routes = [Route("/flux/tasks", task, methods=["POST"]), Route("/x.png", image)]
    async with serve_asgi(Starlette(routes=routes)) as base_url:
        yield base_url, record


async def test_a_cookie_set_for_one_user_never_reaches_another(
    cookie_setter: tuple[str, CookieSetter],
) -> None:
    base_url, record = cookie_setter
    async with build_http_client(settings_for(base_url)) as http:
        alice = FluxClient(http, base_url, "sk-alice", retry=RetryPolicy(max_retries=0))
        bob = FluxClient(http, base_url, "sk-bob", retry=RetryPolicy(max_retries=0))
        await alice.retrieve("t1")
        await bob.retrieve("t1")
        await alice.retrieve("t1")
        assert len(http.cookies.jar) == 0
    assert record.seen == [("sk-alice", None), ("sk-bob", None), ("sk-alice", None)]


async def test_image_downloads_keep_no_cookies_either(cookie_setter: tuple[str, CookieSetter]) -> None:
    base_url, record = cookie_setter
    async with build_download_client(settings_for(base_url)) as http:
        downloader = Downloader(http, anyio.CapacityLimiter(2), max_bytes=1_000_000, timeout=10)
        await fetch_picture(downloader, base_url + "/x.png")
        await fetch_picture(downloader, base_url + "/x.png")
        assert len(http.cookies.jar) == 0
    assert [cookie for _, cookie in record.seen] == [None, None]
