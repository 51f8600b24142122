"""Callbacks are wake-ups, never results: forged bodies, echoed tokens, hostile JSON, image counts.

Everything runs over real loopback HTTP: the HTTP app in pass-through mode with a public URL, the
emulator as the upstream (it makes real callbacks), and an "internal" service on another loopback port
that counts every request it gets. The attacker is a pass-through user: they read their own task record
upstream, which holds the callback URL with its secret, and POST to it whatever they like.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.domain.catalogue import MAX_COUNT
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator, serve_asgi
from flux_mcp.emulator.images import render_png
from flux_mcp.jobs.callbacks import CALLBACK_TTL_SECONDS, RELAYS_PER_SLOT, WAKEUP_MIN_INTERVAL, CallbackHub
from flux_mcp.server.build import build_server
from flux_mcp.web.app import build_http_app
from tests.support import (
    listening_socket,
    make_settings,
    mcp_client,
    port_of,
    scan_files,
    structured,
    text,
    wait_for,
)
from tests.support.callbacks import SharedHistory

pytestmark = pytest.mark.anyio

FORGED_IMAGES = 29
PNG = render_png(32, 32, 1, "internal")


@dataclass
class Service:
    """The HTTP app as deployed with callbacks: its base URL and the settings it runs with."""

    base_url: str
    settings: Settings


@asynccontextmanager
async def callback_service(emulator: RunningEmulator, tmp_path: Path, token: str) -> AsyncIterator[Service]:
    """The HTTP app in pass-through mode with a public URL (so with callbacks), for `token`'s user."""
    emulator.state.config.tokens = frozenset({token})
    with listening_socket() as sock:  # the public URL must be known before the app is built
        settings = make_settings(
            emulator,
            auth="passthrough",
            api_token=None,
            public_url=f"http://127.0.0.1:{port_of(sock)}",
            db=tmp_path / "history.db",
            output_dir=tmp_path / "images",
            save=True,  # so that the secret scans also read the saved images and their sidecars
        )
        gate: Any = build_http_app(settings)
        async with gate.app.router.lifespan_context(gate.app), serve_asgi(gate, sock=sock) as base_url:
            yield Service(base_url, settings)


class CountingService:
    """An "internal" service on another loopback port: answers every request with a PNG, and counts."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.answer, methods=["GET", "HEAD", "POST"])])

    async def answer(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        return Response(PNG, media_type="image/png")


async def read_task_record(emulator: RunningEmulator, token: str, task_id: str) -> dict[str, Any]:
    """What any user can do with their own token: read their task record upstream."""
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            f"{emulator.base_url}/flux/tasks",
            json={"action": "retrieve", "id": task_id},
            headers={"authorization": f"Bearer {token}"},
        )
    record: dict[str, Any] = response.json()
    return record


async def post(url: str, body: bytes) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        return await http.post(url, content=body, headers={"content-type": "application/json"})


async def finish_now(emulator: RunningEmulator, task_id: str) -> None:
    """Make a long emulated job finish now and send its callback, as the emulator does at the end.

    (The answer is not checked: a server that already took a forged result has closed the slot.)
    """
    task = emulator.state.tasks[task_id]
    task.finish_monotonic = time.monotonic()
    assert task.callback_url is not None
    await post(task.callback_url, json.dumps(task.result()).encode())


async def pending_task(client: Client, **arguments: Any) -> str:
    result = structured(await client.call_tool("generate_image", {"prompt": "a cat", **arguments}))
    assert result["status"] == "pending", result
    task_id: str = result["task_id"]
    return task_id


async def get_task_while_the_job_finishes(
    emulator: RunningEmulator, client: Client, task_id: str, reads_before: int
) -> dict[str, Any]:
    """get_task, with the job finishing (and calling back) once get_task has read the task itself.

    The call waits at most 10 s and the callback fallback looks first after 20 s: a success can only
    come from the re-read the genuine callback woke.
    """
    results: list[dict[str, Any]] = []

    async def call() -> None:
        results.append(structured(await client.call_tool("get_task", {"task_id": task_id})))

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await wait_for(lambda: emulator.state.polls > reads_before or bool(results))
        await finish_now(emulator, task_id)
    return results[0]


# --- 12.1: a forged callback makes the server fetch nothing ---------------------------------------------


async def test_forged_callback_makes_the_server_fetch_nothing(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    token = "sk-forger-0123456789abcdef"
    emulator.state.config.latency = 600.0  # pending until the test finishes it
    internal = CountingService()
    async with (
        serve_asgi(internal.app) as internal_url,
        callback_service(emulator, tmp_path, token) as service,
        mcp_client(service.base_url, token) as client,
    ):
        task_id = await pending_task(client, count=2, wait_seconds=0)
        record = await read_task_record(emulator, token, task_id)
        forged = {
            "success": True,
            "task_id": task_id,
            "data": [{"image_url": f"{internal_url}/admin/{index}.png"} for index in range(FORGED_IMAGES)],
        }
        answer = await post(record["request"]["callback_url"], json.dumps(forged).encode())
        assert answer.status_code == 200  # accepted, as a wake-up only
        result = await get_task_while_the_job_finishes(emulator, client, task_id, emulator.state.polls)
    assert internal.requests == []
    assert result["status"] == "succeeded", result
    assert [image["url"] for image in result["images"]] == [
        f"{emulator.base_url}/files/{task_id}/{index}.png" for index in range(2)
    ]
    assert internal_url not in json.dumps(result) and "admin" not in json.dumps(result)


# --- 12.7: a token echoed in a callback is never shown, stored or logged ---------------------------------


async def test_token_echoed_in_a_callback_is_never_shown_stored_or_logged(
    emulator: RunningEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = f"sk-ECHO-{uuid.uuid4()}"
    emulator.state.config.latency = 600.0
    async with (
        callback_service(emulator, tmp_path, token) as service,
        mcp_client(service.base_url, token) as client,
    ):
        task_id = await pending_task(client, wait_seconds=0)
        record = await read_task_record(emulator, token, task_id)
        echo = {
            "success": False,
            "task_id": task_id,
            "trace_id": token,
            "error": {"code": token, "message": f"token {token} rejected"},
            "data": [{"image_url": f"https://cdn.example.com/{token}.png", "prompt": token}],
            token: token,
        }
        answer = await post(record["request"]["callback_url"], json.dumps(echo).encode())
        assert answer.status_code == 200
        result = await get_task_while_the_job_finishes(emulator, client, task_id, emulator.state.polls)
        listed = await client.call_tool("list_tasks", {})
    assert token not in json.dumps(result) and token not in listed.model_dump_json()
    assert scan_files(tmp_path, token) == []  # the history and its WAL
    assert token not in caplog.text
    assert result["status"] == "succeeded", result


# --- 12.11: hostile JSON gets a 400, never a 500 --------------------------------------------------------


@dataclass
class Target:
    """A callback URL that is valid (its task is pending) on a running service."""

    url: str
    task_id: str


@pytest.fixture
async def callback_target(emulator: RunningEmulator, tmp_path: Path) -> AsyncIterator[Target]:
    token = "sk-target-0123456789abcdef"
    emulator.state.config.latency = 600.0
    async with (
        callback_service(emulator, tmp_path, token) as service,
        mcp_client(service.base_url, token) as client,
    ):
        task_id = await pending_task(client, wait_seconds=0)
        record = await read_task_record(emulator, token, task_id)
        yield Target(record["request"]["callback_url"], task_id)


DEEP = 100_000


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * DEEP + b"]" * DEEP, id="deep-list"),
        pytest.param(b'{"a":' * DEEP + b"1" + b"}" * DEEP, id="deep-object"),
        pytest.param(b'{"task_id": ' + b"[" * DEEP, id="deep-unterminated"),
    ],
)
async def test_deeply_nested_callback_is_a_400_without_a_traceback(
    callback_target: Target, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    answer = await post(callback_target.url, body)
    assert answer.status_code == 400 and answer.json() == {"error": "body must be a JSON object"}
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
callback_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(["task_id", "id", "success", "data"]), json_values, max_size=4).map(
        lambda value: json.dumps(value).encode()
    ),
    st.tuples(st.sampled_from([b"[", b'{"a":', b'{"task_id":[']), st.integers(1, 5_000)).map(
        lambda opener_depth: opener_depth[0] * opener_depth[1]
    ),
)


@given(body=callback_bodies)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_bytes_posted_to_a_callback_url_get_a_clear_answer(
    callback_target: Target, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    """200 (a wake-up), 400 (not a JSON object), 404 (another task named): never a 500, never a traceback.

    One service and one pending task serve all examples (hence the fixture health check is suppressed).
    """
    answer = await post(callback_target.url, body)
    assert answer.status_code in (200, 400, 404, 413), (answer.status_code, body[:80])
    assert "Traceback" not in caplog.text


# --- wake-ups: early, many ------------------------------------------------------------------------------


async def test_callback_before_the_submit_answer_still_wakes_the_call(
    tmp_path: Path, loopback_socket: socket.socket
) -> None:
    """The upstream calls back (and hears 200) before it answers the submit; the call still wakes at once.

    Without the wake-up the call would wait for the fallback look at 20 s and time out as pending.
    """
    reads: list[str] = []
    submitted: dict[str, Any] = {}

    async def images(request: Request) -> Response:
        submitted.update(await request.json())
        answer = await post(submitted["callback_url"], b'{"task_id": "early-1", "success": true}')
        assert answer.status_code == 200, answer.text
        return JSONResponse({"task_id": "early-1"})

    async def tasks(request: Request) -> Response:
        reads.append((await request.json())["id"])
        response = {"success": True, "task_id": "early-1", "data": [{"image_url": f"{base}/0.png"}]}
        return JSONResponse(
            {"id": "early-1", "finished_at": "now", "request": submitted, "response": response}
        )

    upstream = Starlette(
        routes=[
            Route("/flux/images", images, methods=["POST"]),
            Route("/flux/tasks", tasks, methods=["POST"]),
            Route("/0.png", lambda request: Response(PNG, media_type="image/png")),
        ]
    )
    async with serve_asgi(upstream) as base:
        settings = Settings(
            api_token="sk-early-0123456789",
            api_base_url=base,
            public_url=f"http://127.0.0.1:{port_of(loopback_socket)}",
            wait_seconds=5.0,
            db=tmp_path / "history.db",
            output_dir=tmp_path / "images",
        )
        gate: Any = build_http_app(settings)
        async with (
            gate.app.router.lifespan_context(gate.app),
            serve_asgi(gate, sock=loopback_socket) as base_url,
            mcp_client(base_url, None) as client,
        ):
            result = structured(await client.call_tool("generate_image", {"prompt": "early"}))
    assert result["status"] == "succeeded", result
    assert reads == ["early-1"]  # one re-read, no polling


async def test_a_flood_of_callbacks_costs_a_bounded_number_of_reads(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    token = "sk-flood-0123456789abcdef"
    emulator.state.config.latency = 600.0
    wait = 4.0  # below the callback fallback's first look (20 s): every read here is a wake-up's
    async with (
        callback_service(emulator, tmp_path, token) as service,
        mcp_client(service.base_url, token) as client,
    ):
        task_id = await pending_task(client, wait_seconds=0)
        url = (await read_task_record(emulator, token, task_id))["request"]["callback_url"]
        reads_before = emulator.state.polls
        results: list[dict[str, Any]] = []
        accepted = 0

        async def call() -> None:
            arguments = {"task_id": task_id, "wait_seconds": wait}
            results.append(structured(await client.call_tool("get_task", arguments)))

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await wait_for(lambda: emulator.state.polls > reads_before)
            while not results:
                accepted += (await post(url, json.dumps({"task_id": task_id}).encode())).status_code == 200
    reads = emulator.state.polls - reads_before
    print(f"\n{accepted} forged callbacks during a {wait:.0f} s wait: {reads} task reads")
    assert results[0]["status"] == "pending"
    assert accepted >= 1
    # get_task's own first read, then at most one re-read per WAKEUP_MIN_INTERVAL within the wait.
    assert reads <= 1 + math.ceil(wait / WAKEUP_MIN_INTERVAL)


# --- a result never carries more images than its request asked for ----------------------------------


class GenerousUpstream:
    """An upstream that lists 29 images for every task, whatever was asked."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any] | None] = {"foreign-29": {"action": "generate", "count": 29}}
        self.requests["foreign-unknown"] = None
        self.downloads = 0
        self.base = ""
        self.app = Starlette(
            routes=[
                Route("/flux/images", self.images, methods=["POST"]),
                Route("/flux/tasks", self.tasks, methods=["POST"]),
                Route("/img/{index}.png", self.image),
            ]
        )

    async def images(self, request: Request) -> Response:
        task_id = f"generous-{len(self.requests)}"
        self.requests[task_id] = await request.json()
        return JSONResponse({"task_id": task_id})

    async def tasks(self, request: Request) -> Response:
        body = await request.json()
        if body["action"] == "retrieve_batch":
            return JSONResponse({"items": [self.record(task_id) for task_id in body["ids"]]})
        return JSONResponse(self.record(body["id"]))

    async def image(self, request: Request) -> Response:
        self.downloads += 1
        return Response(PNG, media_type="image/png")

    def record(self, task_id: str) -> dict[str, Any]:
        data = [{"image_url": f"{self.base}/img/{index}.png"} for index in range(FORGED_IMAGES)]
        record: dict[str, Any] = {
            "id": task_id,
            "finished_at": "now",
            "response": {"success": True, "data": data},
        }
        if self.requests[task_id] is not None:
            record["request"] = self.requests[task_id]
        return record


@pytest.mark.parametrize(
    ("tool", "arguments", "kept"),
    [
        pytest.param("generate_image", {"prompt": "two cats", "count": 2}, 2, id="generate-count-2"),
        pytest.param("generate_image", {"prompt": "one cat"}, 1, id="generate-default-count"),
        pytest.param(
            "edit_image", {"prompt": "at night", "image_url": "https://cdn.example.com/a.png"}, 1, id="edit"
        ),
        pytest.param("get_task", {"task_id": "foreign-29"}, MAX_COUNT, id="upstream-request-says-29"),
        pytest.param("get_task", {"task_id": "foreign-unknown"}, MAX_COUNT, id="request-unknown"),
    ],
)
async def test_a_result_never_carries_more_images_than_asked(
    emulator: RunningEmulator, tool: str, arguments: dict[str, Any], kept: int
) -> None:
    upstream = GenerousUpstream()
    async with serve_asgi(upstream.app) as base:
        upstream.base = base
        settings = make_settings(emulator, api_base_url=base, save=False)
        async with Client(build_server(settings)) as client:
            result = await client.call_tool(tool, arguments)
            batch = structured(
                await client.call_tool("get_tasks", {"task_ids": ["foreign-29", "foreign-unknown"]})
            )
    assert len(structured(result)["images"]) == kept, text(result)
    assert upstream.downloads <= kept
    assert [len(task["images"]) for task in batch["tasks"]] == [MAX_COUNT, MAX_COUNT]


# --- slots expire on their own --------------------------------------------------------------------------


async def test_an_expired_callback_slot_is_refused_and_forgotten_without_another_slot_opening() -> None:
    now = 1000.0
    hub = CallbackHub("https://flux.example", key=b"k" * 32, clock=lambda: now)
    slot = hub.open()
    hub.bind(slot, "task-1")
    secret = slot.url.rsplit("/", 1)[1]
    slot_id = secret.split(".")[0]
    assert hub.knows(secret) and hub.for_task("task-1") is slot

    now += CALLBACK_TTL_SECONDS + 1  # a quiet server: nothing opens a slot in between
    assert not hub.knows(secret)
    assert hub.deliver(secret, {"task_id": "task-1"}) is None
    assert not await hub.receive(secret, {"task_id": "task-1"})
    hub.relayed(f"{slot_id} task-1")
    assert slot.wakeups == 0 and hub.for_task("task-1") is None


async def test_a_slot_younger_than_its_time_still_wakes_its_calls() -> None:
    now = 0.0
    hub = CallbackHub("https://flux.example", key=b"k" * 32, clock=lambda: now)
    old = hub.open()
    now += CALLBACK_TTL_SECONDS / 2
    young = hub.open()
    hub.bind(old, "task-old")
    hub.bind(young, "task-young")
    now += CALLBACK_TTL_SECONDS / 2 + 1  # past the first slot's time, not the second's
    assert hub.for_task("task-old") is None and hub.for_task("task-young") is young
    assert hub.deliver(young.url.rsplit("/", 1)[1], {"task_id": "task-young"}) is young
    assert young.wakeups == 1 and old.wakeups == 0


# --- a replica that does not hold the slot (issue 24 item 4) --------------------------------------------


def two_replicas(now: list[float], pending: set[str]) -> tuple[CallbackHub, CallbackHub, SharedHistory]:
    """The hub of the replica that submits, and another one's, sharing a key and a history."""
    key = b"k" * 32
    holder = CallbackHub("https://flux.example", key=key, clock=lambda: now[0])
    other = CallbackHub("https://flux.example", key=key, clock=lambda: now[0])
    shared = SharedHistory(pending)
    holder.relay = other.relay = shared
    return holder, other, shared


async def test_another_replica_relays_a_callback_only_for_a_task_the_history_shows_pending() -> None:
    now = [1_000_000.0]
    holder, other, shared = two_replicas(now, pending={"task-1"})
    slot = holder.open()
    holder.bind(slot, "task-1")
    secret = slot.url.rsplit("/", 1)[1]
    assert not await other.receive(secret, {})  # no task named: nothing to check, nothing relayed
    assert await other.receive(secret, {"task_id": "task-1"})
    shared.pending.clear()  # the task ended (recorded by whichever replica saw it)
    assert not await other.receive(secret, {"task_id": "task-1"})
    assert shared.notified == [f"{secret.split('.')[0]} task-1"]


async def test_another_replica_relays_each_slot_a_bounded_number_of_times() -> None:
    now = [1_000_000.0]
    holder, other, shared = two_replicas(now, pending={"task-1"})
    slot = holder.open()
    holder.bind(slot, "task-1")
    secret = slot.url.rsplit("/", 1)[1]
    answers = [await other.receive(secret, {"task_id": "task-1"}) for _ in range(500)]
    assert answers == [True] * RELAYS_PER_SLOT + [False] * (500 - RELAYS_PER_SLOT)
    assert len(shared.notified) == RELAYS_PER_SLOT and not other.knows(secret)
    assert holder.deliver(secret, {"task_id": "task-1"}) is slot  # its holder still takes it


async def test_another_replica_refuses_a_slot_past_its_time_which_the_url_signs() -> None:
    now = [1_000_000.0]
    holder, other, shared = two_replicas(now, pending={"task-1"})
    slot = holder.open()
    secret = slot.url.rsplit("/", 1)[1]
    slot_id, issued, mac = secret.split(".")
    now[0] += CALLBACK_TTL_SECONDS + 1
    assert not other.knows(secret) and not await other.receive(secret, {"task_id": "task-1"})
    moved = f"{slot_id}.{int(issued) + 3600}.{mac}"  # a later issue time under the same signature
    assert not other.knows(moved) and not await other.receive(moved, {"task_id": "task-1"})
    assert shared.notified == []


async def test_a_url_signed_without_its_time_still_wakes_its_holder_but_is_not_relayed() -> None:
    now = [1_000_000.0]
    holder, other, shared = two_replicas(now, pending={"task-1"})
    slot = holder.open()
    holder.bind(slot, "task-1")
    slot_id = slot.secret.split(".")[0]
    # The URL as it was issued before the time was signed: the slot id alone under the MAC.
    legacy = f"{slot_id}.{hmac.new(b'k' * 32, slot_id.encode(), hashlib.sha256).hexdigest()[:32]}"
    assert holder.knows(legacy) and await holder.receive(legacy, {"task_id": "task-1"})
    assert slot.wakeups == 1
    assert not other.knows(legacy) and not await other.receive(legacy, {"task_id": "task-1"})
    assert shared.notified == []
