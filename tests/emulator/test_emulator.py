"""The Flux API emulator, driven over real loopback HTTP as flux-mcp's client will drive it."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.emulator import (
    EmulatorConfig,
    EmulatorState,
    Fault,
    RunningEmulator,
    serve_asgi,
    serve_emulator,
)
from flux_mcp.emulator.app import EmulatorRuntime
from tests.support import TOKEN, WAIT_BOUND, finish_tasks_now, wait_for

SOURCE_DIR = Path(__file__).resolve().parents[2] / "src"
GENERATE = {"action": "generate", "prompt": "a white siamese cat", "model": "flux-dev", "size": "1:1"}


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with serve_emulator(EmulatorConfig(tokens=frozenset({TOKEN}), seed=1)) as running:
        yield running


@pytest.fixture
async def http(emu: RunningEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx2.AsyncClient(base_url=emu.base_url, headers=headers, timeout=10) as client:
        yield client


async def retrieve(http: httpx2.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await http.post("/flux/tasks", json={"action": "retrieve", "id": task_id})
    assert response.status_code == 200
    record: dict[str, Any] = response.json()
    return record


# -- happy paths -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_health(http: httpx2.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.json() == {"ok": True}


@pytest.mark.anyio
async def test_blocking_generate_returns_png_urls(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    response = await http.post("/flux/images", json={**GENERATE, "count": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["task_id"] in emu.state.tasks
    assert body["trace_id"]
    assert len(body["data"]) == 2
    for index, item in enumerate(body["data"]):
        assert item["prompt"] == GENERATE["prompt"]
        assert item["image_url"] == f"{emu.base_url}/files/{body['task_id']}/{index}.png"
        assert isinstance(item["seed"], int)
        assert isinstance(item["timings"]["inference"], float)
    assert emu.state.submissions == emu.state.accepted == 1
    assert emu.state.tokens_seen == [TOKEN]


@pytest.mark.anyio
@pytest.mark.parametrize(("size", "expected"), [("1024x1792", (1024, 1792)), ("16:9", (512, 288))])
async def test_downloaded_png_has_the_requested_size(
    http: httpx2.AsyncClient, size: str, expected: tuple[int, int]
) -> None:
    body = (await http.post("/flux/images", json={**GENERATE, "size": size})).json()
    async with httpx2.AsyncClient() as anonymous:  # no auth, like a CDN
        download = await anonymous.get(body["data"][0]["image_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(download.content)) as image:
        assert image.format == "PNG"
        assert image.size == expected


@pytest.mark.anyio
async def test_edit_makes_one_image_whatever_the_count(http: httpx2.AsyncClient) -> None:
    edit = {"action": "edit", "prompt": "make it blue", "model": "flux-kontext-pro"}
    body = (
        await http.post("/flux/images", json={**edit, "image_url": "https://x.test/a.png", "count": 3})
    ).json()
    assert len(body["data"]) == 1


@pytest.mark.anyio
async def test_async_task_is_pending_then_succeeds(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    emu.state.config.latency = 600.0  # pending for sure at the first look; shortened to 0.3 s below
    response = await http.post("/flux/images", json={**GENERATE, "async": True})
    assert response.status_code == 200
    task_id = response.json()["task_id"]

    pending = await retrieve(http, task_id)
    assert pending["id"] == task_id
    assert pending["type"] == "images"
    assert pending["request"] == {**GENERATE, "async": True}
    assert {"_id", "api_id", "application_id", "user_id", "created_at", "started_at", "trace_id"} <= set(
        pending
    )
    assert "finished_at" not in pending and "elapsed" not in pending and "response" not in pending

    task = emu.state.tasks[task_id]
    task.finish_monotonic = task.created_monotonic + 0.3
    await wait_for(lambda: task.status == "succeeded")
    done = await retrieve(http, task_id)
    assert done["response"]["success"] is True
    assert done["response"]["data"][0]["image_url"].endswith(f"/files/{task_id}/0.png")
    assert done["elapsed"] == pytest.approx(0.3, abs=0.01)
    assert done["finished_at"] > done["created_at"]
    assert emu.state.polls == 2


@pytest.mark.anyio
async def test_retrieve_batch_returns_known_tasks_only(
    emu: RunningEmulator, http: httpx2.AsyncClient
) -> None:
    ids = [
        (await http.post("/flux/images", json={**GENERATE, "async": True})).json()["task_id"]
        for _ in range(3)
    ]
    response = await http.post("/flux/tasks", json={"action": "retrieve_batch", "ids": [*ids, "nope"]})
    body = response.json()
    assert body["count"] == 3
    assert [item["id"] for item in body["items"]] == ids
    assert emu.state.batch_polls == 1


@pytest.mark.anyio
async def test_unknown_task_is_404(http: httpx2.AsyncClient) -> None:
    response = await http.post("/flux/tasks", json={"action": "retrieve", "id": "no-such-task"})
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found", "message": "task not found"}


@pytest.mark.anyio
async def test_unknown_file_and_unfinished_file_are_404(
    emu: RunningEmulator, http: httpx2.AsyncClient
) -> None:
    emu.state.config.latency = 5.0
    task_id = (await http.post("/flux/images", json={**GENERATE, "async": True})).json()["task_id"]
    assert (await http.get(f"/files/{task_id}/0.png")).status_code == 404
    assert (await http.get("/files/nope/0.png")).status_code == 404


@pytest.mark.anyio
async def test_failed_task_record(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    emu.state.config.fail_rate = 1.0
    task_id = (await http.post("/flux/images", json={**GENERATE, "async": True})).json()["task_id"]
    record = await retrieve(http, task_id)
    assert record["state"] == "failed"
    assert "finished_at" in record and isinstance(record["elapsed"], float)
    assert record["response"] == {
        "success": False,
        "task_id": task_id,
        "trace_id": record["trace_id"],
        "error": {"code": "api_error", "message": "content generation failed (emulated)"},
    }
    assert (await http.get(f"/files/{task_id}/0.png")).status_code == 404


@pytest.mark.anyio
async def test_many_concurrent_async_submits_are_all_accepted(
    emu: RunningEmulator, http: httpx2.AsyncClient
) -> None:
    emu.state.config.latency = 30.0
    statuses: list[int] = []

    async def submit() -> None:
        statuses.append((await http.post("/flux/images", json={**GENERATE, "async": True})).status_code)

    async with anyio.create_task_group() as tg:
        for _ in range(300):
            tg.start_soon(submit)
    assert statuses == [200] * 300
    assert emu.state.accepted == len(emu.state.tasks) == 300


# -- auth and validation ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
async def test_bad_or_missing_token_is_401(emu: RunningEmulator, headers: dict[str, str]) -> None:
    async with httpx2.AsyncClient(base_url=emu.base_url) as anonymous:
        for path in ("/flux/images", "/flux/tasks"):
            response = await anonymous.post(path, json=GENERATE, headers=headers)
            assert response.status_code == 401
            body = response.json()
            assert body["success"] is False and body["error"]["code"] == "invalid_token" and body["trace_id"]
    assert emu.state.accepted == 0
    assert emu.state.tokens_seen == (["wrong", "wrong"] if "wrong" in str(headers) else [])


@pytest.mark.anyio
async def test_any_token_is_accepted_when_none_configured() -> None:
    async with serve_emulator() as running, httpx2.AsyncClient(base_url=running.base_url) as client:
        response = await client.post(
            "/flux/images", json=GENERATE, headers={"AUTHORIZATION": "bearer whatever"}
        )
        assert response.status_code == 200
        assert running.state.tokens_seen == ["whatever"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {**GENERATE, "model": "flux-2-pro", "size": "1024x1024"},
        {"action": "generate", "prompt": "x", "model": "flux-2-pro"},
        {
            "action": "edit",
            "prompt": "x",
            "model": "flux-2-klein",
            "size": "1:1",
            "image_url": "https://x.test/a.png",
        },
        {"action": "edit", "prompt": "x", "model": "flux-kontext-pro"},
        {"action": "edit", "prompt": "x", "model": "flux-kontext-pro", "image_url": "ftp://x.test/a.png"},
        {**GENERATE, "model": "flux-9"},
        {**GENERATE, "size": "7:5"},
        {**GENERATE, "size": "1000x1000"},
        {**GENERATE, "count": 5},
        {**GENERATE, "count": True},
        {**GENERATE, "action": "upscale"},
        {**GENERATE, "prompt": ""},
        {**GENERATE, "callback_url": "not a url"},
        {**GENERATE, "async": "yes"},
        [1, 2],
    ],
)
async def test_invalid_requests_are_400(emu: RunningEmulator, http: httpx2.AsyncClient, body: Any) -> None:
    response = await http.post("/flux/images", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request" and error["message"]
    assert emu.state.accepted == 0
    assert emu.state.rejected == {"bad_request": 1}


@pytest.mark.anyio
async def test_body_that_is_not_json_is_400(http: httpx2.AsyncClient) -> None:
    response = await http.post("/flux/images", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {**GENERATE, "size": "1024x1792"},
        {**GENERATE, "size": "1440x256"},
        {**GENERATE, "model": "flux-2-klein", "size": "9:21"},
        {**GENERATE, "model": "flux-kontext-max", "size": "5:4", "unknown_field": 1},
        {"action": "generate", "prompt": "x", "model": "flux-kontext-max"},
        {
            "action": "edit",
            "prompt": "x",
            "model": "flux-2-max",
            "size": "1:1",
            "image_url": "http://x.test/a",
        },
    ],
)
async def test_valid_variants_are_accepted(http: httpx2.AsyncClient, body: dict[str, Any]) -> None:
    assert (await http.post("/flux/images", json={**body, "async": True})).status_code == 200


# -- callbacks -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_callback_posts_the_result(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    received: list[dict[str, Any]] = []
    arrived = anyio.Event()

    async def hook(request: Request) -> Response:
        received.append(await request.json())
        arrived.set()
        return JSONResponse({"ok": True})

    emu.state.config.latency = 0.1
    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_asgi(receiver) as receiver_url:
        response = await http.post("/flux/images", json={**GENERATE, "callback_url": f"{receiver_url}/hook"})
        assert response.json() == {"task_id": response.json()["task_id"]}
        with anyio.fail_after(WAIT_BOUND):
            await arrived.wait()
    assert received[0]["success"] is True
    assert received[0]["task_id"] == response.json()["task_id"]
    assert received[0]["data"][0]["image_url"].startswith(emu.base_url)
    assert emu.state.callbacks_sent == 1 and emu.state.callback_failures == 0


@pytest.mark.anyio
async def test_unreachable_callback_is_counted_not_raised(
    emu: RunningEmulator, http: httpx2.AsyncClient
) -> None:
    await http.post("/flux/images", json={**GENERATE, "callback_url": "http://127.0.0.1:9/hook"})
    await wait_for(lambda: emu.state.callback_failures > 0)
    assert (emu.state.callbacks_sent, emu.state.callback_failures) == (0, 1)


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("429", 429, "too_many_requests"),
        ("503", 503, "service_unavailable"),
        ("400", 400, "bad_request"),
        ("401", 401, "invalid_token"),
        ("403", 403, "forbidden"),
    ],
)
async def test_error_faults_reject_without_accepting(
    emu: RunningEmulator, http: httpx2.AsyncClient, kind: Any, status: int, code: str
) -> None:
    emu.state.config.retry_after = 2.5
    emu.state.faults.append(Fault(kind))
    response = await http.post("/flux/images", json=GENERATE)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["success"] is False
    if status in (429, 503):
        assert response.headers["retry-after"] == "2.5"
    assert emu.state.accepted == 0 and not emu.state.tasks
    assert (await http.post("/flux/images", json=GENERATE)).status_code == 200  # the fault was used up


@pytest.mark.anyio
async def test_500_fault_happens_after_the_task_was_accepted(
    emu: RunningEmulator, http: httpx2.AsyncClient
) -> None:
    emu.state.faults.append(Fault("500"))
    response = await http.post("/flux/images", json=GENERATE)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "api_error"
    assert "task_id" not in response.json()
    assert emu.state.accepted == 1 and len(emu.state.tasks) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "content_type", "content"),
    [
        ("502_html", "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
        ("empty", "application/json", b""),
        ("truncated_json", "application/json", b'{"task_id": "abc'),
        ("success_false_200", "application/json", b'{"success":false,"error":"plain string error"}'),
    ],
)
async def test_malformed_answer_faults(
    emu: RunningEmulator, http: httpx2.AsyncClient, kind: Any, content_type: str, content: bytes
) -> None:
    emu.state.faults.append(Fault(kind))
    response = await http.post("/flux/images", json=GENERATE)
    assert response.status_code == (502 if kind == "502_html" else 200)
    assert response.headers["content-type"].startswith(content_type)
    assert response.content == content
    assert not emu.state.tasks


@pytest.mark.anyio
async def test_not_json_200_fault(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    emu.state.faults.append(Fault("not_json_200"))
    response = await http.post("/flux/images", json=GENERATE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.anyio
async def test_drop_before_closes_without_accepting(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    emu.state.faults.append(Fault("drop_before"))
    with pytest.raises(httpx2.RemoteProtocolError):
        await http.post("/flux/images", json=GENERATE)
    assert emu.state.submissions == 1 and not emu.state.tasks


@pytest.mark.anyio
async def test_drop_after_accepts_then_kills_the_connection(
    emu: RunningEmulator, http: httpx2.AsyncClient
) -> None:
    emu.state.faults.append(Fault("drop_after"))
    with pytest.raises(httpx2.TransportError):
        await http.post("/flux/images", json=GENERATE)
    assert emu.state.accepted == 1 and len(emu.state.tasks) == 1
    (task_id,) = emu.state.tasks
    assert (await retrieve(http, task_id))["response"]["success"] is True


@pytest.mark.anyio
async def test_fail_task_fault_blocking_answer(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    emu.state.faults.append(Fault("fail_task"))
    response = await http.post("/flux/images", json=GENERATE)
    assert response.status_code == 500
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "api_error"
    assert body["task_id"] in emu.state.tasks and body["trace_id"]
    assert (await retrieve(http, body["task_id"]))["state"] == "failed"


@pytest.mark.anyio
async def test_slow_fault_delays_then_answers(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    emu.state.faults.append(Fault("slow", delay=2.0))
    answered: list[str] = []

    async def slow_submit() -> None:
        response = await http.post("/flux/images", json=GENERATE)
        assert response.status_code == 200
        answered.append("slow submit")

    async with anyio.create_task_group() as group:
        group.start_soon(slow_submit)
        await wait_for(lambda: emu.state.submissions == 1)
        assert (await http.get("/healthz")).status_code == 200  # the emulator answers others meanwhile
        answered.append("health check")
        assert emu.state.accepted == 0  # the held submit has not reached its task yet
    assert answered == ["health check", "slow submit"]
    assert emu.state.accepted == 1


@pytest.mark.anyio
async def test_faults_only_hit_their_endpoint(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    emu.state.faults.extend([Fault("429", "tasks"), Fault("drop_after", "files"), Fault("503", "files")])
    body = (await http.post("/flux/images", json=GENERATE)).json()
    task_id, url = body["task_id"], body["data"][0]["image_url"]
    assert (await http.post("/flux/tasks", json={"action": "retrieve", "id": task_id})).status_code == 429
    assert (await http.post("/flux/tasks", json={"action": "retrieve", "id": task_id})).status_code == 200
    with pytest.raises(httpx2.RemoteProtocolError):
        await http.get(url)
    assert (await http.get(url)).status_code == 503
    assert (await http.get(url)).status_code == 200
    assert emu.state.file_downloads == 3
    assert emu.state.faults_applied == {"429": 1, "drop_after": 1, "503": 1}


@pytest.mark.anyio
async def test_random_error_rates_are_reproducible() -> None:
    outcomes: list[list[int]] = []
    for _ in range(2):
        config = EmulatorConfig(seed=42, error_rates={"429": 0.3, "503": 0.3}, retry_after=1)
        async with serve_emulator(config) as running, httpx2.AsyncClient(base_url=running.base_url) as client:
            client.headers["authorization"] = "Bearer t"
            outcomes.append(
                [(await client.post("/flux/images", json=GENERATE)).status_code for _ in range(30)]
            )
    assert outcomes[0] == outcomes[1]
    assert {200, 429, 503} == set(outcomes[0])


@pytest.mark.anyio
async def test_reset_counters_keeps_tasks(emu: RunningEmulator, http: httpx2.AsyncClient) -> None:
    await http.post("/flux/images", json=GENERATE)
    await http.post("/flux/images", json={"bad": True})
    emu.state.reset_counters()
    assert (emu.state.submissions, emu.state.accepted, emu.state.rejected, emu.state.tokens_seen) == (
        0,
        0,
        {},
        [],
    )
    assert len(emu.state.tasks) == 1


@pytest.mark.anyio
async def test_reset_makes_a_used_emulator_the_one_that_started(tmp_path: Path) -> None:
    config = EmulatorConfig(tokens=frozenset({TOKEN}), seed=5)
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with (
        serve_emulator(config, journal=tmp_path / "journal.db") as emu,
        httpx2.AsyncClient(base_url=emu.base_url, headers=headers) as http,
    ):
        first_seed = (await http.post("/flux/images", json=GENERATE)).json()["data"][0]["seed"]
        await http.post("/flux/videos", json={"prompt": "a cat", "async": True})
        await http.post("/api/v1/files/", files={"file": ("a.png", b"png bytes", "image/png")})
        await http.get("/api/v1/applications/")
        await http.post("/flux/images", json={"bad": True})
        emu.state.faults.append(Fault("429", "tasks"))
        emu.state.config.latency, emu.state.config.tokens = 5.0, frozenset({"someone else"})
        emu.state.platform.balance = 0.0
        assert emu.state.tasks and emu.state.platform.uploads and emu.state.submissions

        await emu.reset()

        assert emu.state == EmulatorState(
            EmulatorConfig(tokens=frozenset({TOKEN}), seed=5), journal=emu.state.journal
        )
        assert emu.state.config is config  # restored in place: the test's own object says the same
        again = (await http.post("/flux/images", json=GENERATE)).json()  # same port, no fault, no wait
        assert again["data"][0]["seed"] == first_seed  # the random draws start over too
    with sqlite3.connect(tmp_path / "journal.db") as journal:  # another process sharing it sees one task
        assert [row[0] for row in journal.execute("SELECT id FROM tasks")] == [again["task_id"]]


@pytest.mark.anyio
async def test_nothing_begun_before_a_reset_changes_the_emulator_after_it(
    emu: RunningEmulator, http: httpx2.AsyncClient
) -> None:
    runtime: EmulatorRuntime = emu.app.state.runtime
    hooks: list[str] = []
    hooked = anyio.Event()

    async def hook(request: Request) -> Response:
        hooks.append((await request.json())["task_id"])
        hooked.set()
        return JSONResponse({"ok": True})

    dropped: list[str] = []

    async def call(body: dict[str, Any]) -> None:
        try:
            await http.post("/flux/images", json=body)
        except httpx2.TransportError:
            dropped.append(body["prompt"])

    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_asgi(receiver) as receiver_url, anyio.create_task_group() as tg:
        emu.state.config.latency = 600.0
        callback = {**GENERATE, "callback_url": f"{receiver_url}/hook"}
        await http.post("/flux/images", json=callback)  # its callback is due in 600 s
        tg.start_soon(call, {**GENERATE, "prompt": "blocking"})  # waits for its task
        emu.state.faults.append(Fault("slow", delay=600))
        tg.start_soon(call, {**GENERATE, "prompt": "slowed"})  # would be accepted after its delay
        await wait_for(lambda: emu.state.submissions == 3)
        assert runtime.pending_callbacks == 1

        await emu.reset()

        assert runtime.pending_callbacks == 0
        assert emu.state.tasks == {} and emu.state.accepted == 0
        new_callback = (await http.post("/flux/images", json={**callback, "async": True})).json()["task_id"]
        finish_tasks_now(emu)
        with anyio.fail_after(WAIT_BOUND):
            await hooked.wait()
    assert sorted(dropped) == ["blocking", "slowed"] and hooks == [new_callback]
    assert list(emu.state.tasks) == [new_callback] and emu.state.accepted == 1


# -- serving ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_exit_with_a_request_in_flight_is_quick_and_drops_it() -> None:
    errors: list[Exception] = []
    headers = {"authorization": "Bearer t"}
    async with httpx2.AsyncClient(headers=headers) as client, anyio.create_task_group() as tg:
        async with serve_emulator(EmulatorConfig(latency=30)) as running:

            async def blocking_call() -> None:
                try:
                    await client.post(f"{running.base_url}/flux/images", json=GENERATE)
                except httpx2.TransportError as exc:
                    errors.append(exc)

            tg.start_soon(blocking_call)
            await wait_for(lambda: running.state.accepted == 1)
            (task,) = running.state.tasks.values()
        # Stopping did not wait for the 30 s job (how long it took: `python -m benchmarks --only stops`).
        assert task.status == "running"
    assert len(errors) == 1


@pytest.mark.subprocess
@pytest.mark.anyio
async def test_the_emulator_command_logs_its_url_and_stops_on_sigint() -> None:
    source = str(SOURCE_DIR)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    code = "import sys; from flux_mcp.cli.main import main; sys.exit(main(['emulator', '--port', '0']))"
    async with await anyio.open_process([sys.executable, "-c", code], env=env) as process:
        assert process.stderr is not None
        seen = b""
        with anyio.fail_after(10):
            while b"listening on" not in seen or not seen.endswith(b"\n"):
                seen += await process.stderr.receive()
        url = re.search(rb"http://[\d.]+:\d+", seen)
        assert url is not None
        async with httpx2.AsyncClient() as client:
            assert (await client.get(f"{url.group().decode()}/healthz")).json() == {"ok": True}
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(5):
            assert await process.wait() == 0
        assert process.stdout is not None
        assert b"".join([chunk async for chunk in process.stdout]) == b""  # stdout may be an MCP channel
