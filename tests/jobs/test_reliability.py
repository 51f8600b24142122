"""Reliability under faults, load and hostile input: nothing is lost, nothing is billed twice, nothing leaks.

Each test proves one promise of docs/reliability.md from records the server does not control: the
emulator's own log of what it accepted, the processes' exit codes, every byte a subprocess wrote to
stdout and stderr, and the bytes of every file the server left on disk.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp_types import CallToolResult, ImageContent
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from flux_mcp.domain.errors import (
    FluxError,
    MalformedResponseError,
    NotSentError,
    RateLimitedError,
    RequestRejectedError,
    ResponseLostError,
    ServerError,
    TaskNotFoundError,
)
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.tasks import ImageRequest, TaskStatus, parse_task_record
from flux_mcp.emulator import EmulatorConfig, Fault, RunningEmulator, serve_asgi, serve_emulator
from flux_mcp.server.build import build_server
from flux_mcp.upstream.call import RetryPolicy
from flux_mcp.upstream.flux import FluxClient
from tests.support import (
    TOKEN,
    WAIT_BOUND,
    Recorder,
    child_env,
    emulator_env,
    flux_command,
    free_port,
    history_rows,
    http_service,
    make_settings,
    mcp_client,
    noise_png,
    read_log,
    scan_files,
    stderr_file,
    stdio_session,
    structured,
    text,
    wait_for,
    wait_until_listening,
)
from tests.support.stdio import raw_server

pytestmark = pytest.mark.anyio

# --- helpers ------------------------------------------------------------------------------------------


# --- 1. fault soak: nothing lost, nothing billed twice ---------------------------------------------

SOAK_CALLS = 300
SOAK_CONCURRENCY = 30


def outcome_of(result: CallToolResult) -> str:
    """What one call ended in, by kind; `other` fails the soak."""
    message = text(result)
    data = result.structured_content or {}
    if not result.is_error:
        return "images" if data.get("status") == "succeeded" and data.get("images") else "other"
    if not message.strip() or "Traceback" in message:
        return "other"
    if data.get("status") == "failed" and data.get("error", {}).get("message"):
        return "task failed"
    if "rate limiting" in message:
        return "rate limited (429 after retries)"
    if "not resubmitted" in message:
        return "maybe billed (503 after retries)" if "HTTP 503" in message else "maybe billed"
    return "other"


@pytest.mark.slow
async def test_fault_soak_loses_nothing_and_never_bills_twice() -> None:
    config = EmulatorConfig(
        latency_range=(0.05, 0.4),
        fail_rate=0.05,
        error_rates={"429": 0.10, "500": 0.05, "503": 0.02, "drop_after": 0.05, "drop_before": 0.02},
        retry_after=0.05,
        tokens=frozenset({TOKEN}),
        seed=20261125,
    )
    async with serve_emulator(config) as emulator:
        settings = make_settings(
            emulator,
            poll_min_seconds=0.02,
            poll_max_seconds=0.1,
            wait_seconds=30,
            save=False,
            preview_size=0,
            retry_max_seconds=1.0,
        )
        limiter = anyio.CapacityLimiter(SOAK_CONCURRENCY)
        results: dict[str, CallToolResult] = {}
        async with Client(build_server(settings)) as client:

            async def one(index: int) -> None:
                prompt = f"soak {index:03d} {uuid.uuid4().hex[:8]}"
                async with limiter:
                    results[prompt] = await client.call_tool("generate_image", {"prompt": prompt})

            async with anyio.create_task_group() as group:
                for index in range(SOAK_CALLS):
                    group.start_soon(one, index)
        state = emulator.state
        rows = history_rows(settings.history_path())

    outcomes = {prompt: outcome_of(result) for prompt, result in results.items()}
    kinds = Counter(outcomes.values())
    faults = Counter(state.faults_applied)
    by_status = Counter(row["status"] for row in rows)
    retries = state.submissions - SOAK_CALLS
    lost_answers = faults["500"] + faults["drop_after"]  # accepted upstream, answer never reached us
    tally = {
        "calls": SOAK_CALLS,
        "submissions": state.submissions,
        "accepted": state.accepted,
        "retries": retries,
        "outcomes": dict(sorted(kinds.items())),
        "faults_injected": dict(sorted(faults.items())),
        "failed_tasks": sum(task.failed for task in state.tasks.values()),
        "history_rows": dict(sorted(by_status.items())),
        "unknown_rows_accepted_upstream": lost_answers,
    }
    print("\nsoak tally: " + json.dumps(tally))

    # Every call ended in images or a clear error.
    assert len(results) == SOAK_CALLS and kinds["other"] == 0, {
        prompt: text(results[prompt]) for prompt, kind in outcomes.items() if kind == "other"
    }
    # The faults really happened (a soak that injects nothing proves nothing).
    assert faults["429"] and faults["500"] and faults["drop_after"] and faults["drop_before"], faults
    assert kinds["task failed"] > 0

    # No double billing: a prompt is accepted at most once, and the only extra submissions are retries
    # after answers that prove the upstream did not take the request (429, 503 with Retry-After).
    # drop_before reaches httpx2 as RemoteProtocolError, which cannot prove that; it is never retried.
    accepted_per_prompt = Counter(task.prompt for task in state.tasks.values())
    assert max(accepted_per_prompt.values()) == 1
    assert set(accepted_per_prompt) <= set(results)
    final_429 = kinds["rate limited (429 after retries)"]
    final_503 = kinds["maybe billed (503 after retries)"]
    assert state.submissions == SOAK_CALLS + (faults["429"] - final_429) + (faults["503"] - final_503)
    assert state.accepted == state.submissions - faults["429"] - faults["503"] - faults["drop_before"]

    # Nothing lost: every task the emulator accepted is in the history, by its id when we heard it...
    by_task_id = {row["task_id"]: row for row in rows if row["task_id"]}
    unknown_prompts = Counter(row["prompt"] for row in rows if row["status"] == "unknown")
    answer_lost = 0
    for task in state.tasks.values():
        row = by_task_id.get(task.id)
        if row is not None:
            assert row["prompt"] == task.prompt
            assert row["status"] == ("failed" if task.failed else "succeeded"), row
        else:  # ...and as an `unknown` row with its prompt when the answer was lost.
            assert unknown_prompts[task.prompt] == 1, task.prompt
            answer_lost += 1
    assert answer_lost == lost_answers
    # One row per call; nothing left half-done; each ambiguous failure is `unknown`, each 429 `rejected`.
    assert len(rows) == SOAK_CALLS and len({row["prompt"] for row in rows}) == SOAK_CALLS
    assert by_status["submitting"] == 0 and by_status["pending"] == 0
    assert by_status["unknown"] == kinds["maybe billed"] + final_503
    assert by_status["rejected"] == final_429
    assert by_status["succeeded"] == kinds["images"]
    assert by_status["failed"] == kinds["task failed"]


async def test_connection_dropped_before_any_answer_is_not_resubmitted(emulator: RunningEmulator) -> None:
    """The emulator's drop_before closes the socket unanswered; httpx2 cannot tell that from a lost answer."""
    emulator.state.faults.append(Fault("drop_before"))
    async with httpx2.AsyncClient() as http:
        client = FluxClient(http, emulator.base_url, TOKEN, retry=RetryPolicy(base_delay=0.01))
        with pytest.raises(ResponseLostError, match="RemoteProtocolError"):
            await client.submit(ImageRequest(action="generate", prompt="a cat", model="flux-dev"))
    assert emulator.state.submissions == 1 and emulator.state.accepted == 0


async def test_refused_connection_is_retried_because_nothing_was_sent() -> None:
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    async with httpx2.AsyncClient() as http:
        client = FluxClient(
            http, f"http://127.0.0.1:{free_port()}", TOKEN, retry=RetryPolicy(max_retries=3), sleep=sleep
        )
        with pytest.raises(NotSentError, match="Could not connect"):
            await client.submit(ImageRequest(action="generate", prompt="a cat", model="flux-dev"))
    assert len(sleeps) == 3 and all(0 < delay <= 20 for delay in sleeps)  # bounded exponential backoff


async def test_upstream_requests_in_flight_never_exceed_max_concurrency(tmp_path: Path) -> None:
    """Submissions, polls and image downloads share one gate of FLUX_MCP_MAX_CONCURRENCY requests."""
    in_flight = peak = 0
    limit = 4
    png = noise_png(64, 64)
    gate_filled = anyio.Event()

    async def slowly(answer: Response) -> Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == limit:
            gate_filled.set()
        try:
            await gate_filled.wait()  # the first requests wait for each other: the gate surely fills
            await anyio.sleep(0.05)  # each request holds its slot a while, so an overfull gate shows
            return answer
        finally:
            in_flight -= 1

    async def images(request: Request) -> Response:
        return await slowly(JSONResponse({"task_id": (await request.json())["prompt"]}))

    def record(base_url: str, task_id: str) -> dict[str, Any]:
        data = [{"image_url": f"{base_url.rstrip('/')}/img/{task_id}.png", "seed": 1}]
        return {"id": task_id, "finished_at": "x", "response": {"success": True, "data": data}}

    async def tasks(request: Request) -> Response:
        body = await request.json()
        if body["action"] == "retrieve_batch":  # the poller reads waiting tasks together
            items = [record(str(request.base_url), task_id) for task_id in body["ids"]]
            return await slowly(JSONResponse({"items": items, "count": len(items)}))
        return await slowly(JSONResponse(record(str(request.base_url), body["id"])))

    async def image(request: Request) -> Response:
        return await slowly(Response(png, media_type="image/png"))

    routes = [
        Route("/flux/images", images, methods=["POST"]),
        Route("/flux/tasks", tasks, methods=["POST"]),
        Route("/img/{name}", image),
    ]
    async with serve_asgi(Starlette(routes=routes)) as base_url:
        settings = Settings(
            api_token=SecretStr(TOKEN),
            api_base_url=base_url,
            db=tmp_path / "history.db",
            output_dir=tmp_path / "images",
            poll_min_seconds=0.02,
            poll_max_seconds=0.05,
            max_concurrency=limit,
        )
        async with Client(build_server(settings)) as client, anyio.create_task_group() as group:
            results: list[CallToolResult] = []

            async def one(index: int) -> None:
                results.append(await client.call_tool("generate_image", {"prompt": f"task-{index}"}))

            for index in range(40):
                group.start_soon(one, index)
    assert all(structured(result)["images"][0]["path"] for result in results)  # downloaded and saved
    assert len(results) == 40 and peak == limit, peak  # the gate was full, and never overfull


# --- 2. crash recovery ----------------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_killed_server_loses_no_task(tmp_path: Path) -> None:
    config = EmulatorConfig(latency=3.0, tokens=frozenset({TOKEN}), seed=3)
    async with serve_emulator(config) as emulator:
        env = emulator_env(emulator, tmp_path)
        with stderr_file(tmp_path) as errlog:
            async with raw_server(env, errlog) as server:
                await server.initialize()
                task_ids = []
                for index in range(3):
                    result = await server.call(
                        "generate_image", {"prompt": f"survivor {index}", "wait_seconds": 0}
                    )
                    assert result["structuredContent"]["status"] == "pending", result
                    task_ids.append(result["structuredContent"]["task_id"])
                # A fourth call is killed while its submit is in flight: the upstream has the request.
                emulator.state.faults.append(Fault("slow", delay=30))
                call = {"name": "generate_image", "arguments": {"prompt": "cut off mid-submit"}}
                await server.send({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": call})
                await wait_for(lambda: emulator.state.submissions == 4)
                server.process.kill()  # SIGKILL: no cleanup of any kind
                with anyio.fail_after(10):
                    assert await server.process.wait() == -signal.SIGKILL

            # What the dead process left behind is already on disk, and honest.
            left = {row["prompt"]: row for row in history_rows(tmp_path / "history.db")}
            assert {left[f"survivor {index}"]["task_id"] for index in range(3)} == set(task_ids)
            assert {left[f"survivor {index}"]["status"] for index in range(3)} == {"pending"}
            assert left["cut off mid-submit"]["status"] == "submitting"
            assert left["cut off mid-submit"]["task_id"] is None

            # A new server over the same history finds every task and finishes it.
            async with stdio_session([], env, errlog, Recorder()) as client:
                pending = structured(await client.call_tool("list_tasks", {"status": "pending"}))
                assert sorted(task["task_id"] for task in pending["tasks"]) == sorted(task_ids)
                unknown = structured(await client.call_tool("list_tasks", {"status": "unknown"}))["tasks"]
                assert [task["prompt"] for task in unknown] == ["cut off mid-submit"]
                assert "stopped while submitting" in unknown[0]["error"]
                for index, task_id in enumerate(task_ids):
                    done = await client.call_tool("get_task", {"task_id": task_id})
                    assert structured(done)["status"] == "succeeded", text(done)
                    assert structured(done)["prompt"] == f"survivor {index}"
                everything = structured(await client.call_tool("list_tasks", {}))["tasks"]
            log = read_log(errlog)
        assert Counter(task["status"] for task in everything) == {"succeeded": 3, "unknown": 1}
        assert emulator.state.submissions == 4  # a restart never resubmits anything
        assert emulator.state.accepted == 3
    assert "Traceback" not in log, log[-3000:]


async def test_history_marks_an_interrupted_submission_unknown_on_open(tmp_path: Path) -> None:
    from flux_mcp.history.store import History

    first = History(tmp_path / "history.db")
    await first.record_submitting({"action": "generate", "prompt": "interrupted", "model": "flux-dev"})
    first.close()  # the process "dies" between asking and hearing back
    second = History(tmp_path / "history.db")
    try:
        (entry,) = await second.list_tasks(10)
        assert (
            entry.status == "unknown"
            and entry.task_id is None
            and "stopped while submitting" in (entry.error or "")
        )
        # A submit that does finish after another process opened the file still gets its task id.
        row = await second.record_submitting({"action": "generate", "prompt": "racing", "model": "flux-dev"})
        History(tmp_path / "history.db").close()  # another process starts meanwhile
        await second.mark_submitted(row, "task-1", None)
        racing = await second.find_task("task-1")
        assert racing is not None and racing.status == "pending" and racing.error is None
    finally:
        second.close()


# --- 3. graceful shutdown -----------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_closing_stdin_ends_a_long_wait_promptly(tmp_path: Path) -> None:
    config = EmulatorConfig(latency=60.0, tokens=frozenset({TOKEN}))
    async with serve_emulator(config) as emulator:
        env = {**emulator_env(emulator, tmp_path), "FLUX_MCP_WAIT_SECONDS": "120"}
        with stderr_file(tmp_path) as errlog:
            async with raw_server(env, errlog) as server:
                await server.initialize()
                params = {
                    "name": "generate_image",
                    "arguments": {"prompt": "a very slow cat", "wait_seconds": 100},
                    "_meta": {"progressToken": "p1"},
                }
                await server.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
                with anyio.fail_after(10):
                    while not any("Submitted" in str(m.get("params")) for m in server.received):
                        await server.read()
                (task_id,) = emulator.state.tasks
                await server.process.stdin.aclose()  # type: ignore[union-attr] - the host goes away
                with anyio.fail_after(WAIT_BOUND):
                    returncode = await server.process.wait()
                    with pytest.raises((anyio.EndOfStream, anyio.IncompleteRead)):
                        while True:
                            await server.read()  # whatever it still says is JSON-RPC
            log = read_log(errlog)
        assert returncode == 0, returncode
        # It ended without waiting out the 60 s job (how fast: `python -m benchmarks --only stops`).
        assert emulator.state.tasks[task_id].status == "running"
        assert "Traceback" not in log, log[-3000:]
        (row,) = history_rows(tmp_path / "history.db")
        assert row["task_id"] == task_id and row["status"] == "pending"

        emulator.state.tasks[task_id].finish_monotonic = time.monotonic()  # let the job finish now
        settings = make_settings(emulator, db=tmp_path / "history.db", output_dir=tmp_path / "images")
        async with Client(build_server(settings)) as client:
            done = await client.call_tool("get_task", {"task_id": task_id})
        assert structured(done)["status"] == "succeeded" and structured(done)["prompt"] == "a very slow cat"
        assert emulator.state.submissions == 1


@pytest.mark.subprocess
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sigterm_over_http_answers_waiting_calls_then_exits(tmp_path: Path, mode: str) -> None:
    config = EmulatorConfig(latency=60.0, tokens=frozenset({TOKEN}))
    async with serve_emulator(config) as emulator:
        port = free_port()
        env = {**emulator_env(emulator, tmp_path), "FLUX_MCP_WAIT_SECONDS": "120"}
        command = [*flux_command(), "serve", "--transport", "http", "--port", str(port)]
        with stderr_file(tmp_path) as errlog:
            process = await anyio.open_process(
                command, env=env, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog
            )
            try:
                await wait_until_listening(port, process)
                submitted = anyio.Event()

                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    if "Submitted" in (message or ""):
                        submitted.set()

                results: list[CallToolResult] = []
                async with Client(f"http://127.0.0.1:{port}/mcp", mode=mode) as client:
                    await client.list_tools()  # the output schemas, so the call needs nothing more
                    async with anyio.create_task_group() as group:

                        async def call() -> None:
                            arguments = {"prompt": "a slow cat over http", "wait_seconds": 100}
                            results.append(
                                await client.call_tool(
                                    "generate_image", arguments, progress_callback=on_progress
                                )
                            )

                        group.start_soon(call)
                        with anyio.fail_after(15):
                            await submitted.wait()
                        process.terminate()
                with anyio.fail_after(WAIT_BOUND):
                    returncode = await process.wait()
                still_running = emulator.state.tasks[next(iter(emulator.state.tasks))].status == "running"
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            log = read_log(errlog)
    (result,) = results
    data = structured(result)
    # The waiting call was answered, not cut: a normal pending result with its task id.
    assert not result.is_error and data["status"] == "pending", text(result)
    assert data["task_id"] in emulator.state.tasks and "get_task" in text(result)
    assert returncode in (0, -signal.SIGTERM), (returncode, log[-2000:])
    assert still_running  # it exited without waiting out the 60 s job (how fast: benchmarks, stops)
    assert "Application shutdown complete" in log, log[-2000:]
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    (row,) = history_rows(tmp_path / "history.db")
    assert row["task_id"] == data["task_id"] and row["status"] == "pending"


# --- 4. secret scan -------------------------------------------------------------------------------------


def echo_upstream() -> Starlette:
    """A broken upstream that echoes the caller's Authorization header in every way it can.

    The first word of the prompt picks the answer to POST /flux/images; POST /flux/tasks answers with
    a failed task whose error, code and trace id carry the header.
    """

    async def images(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        kind = str((await request.json()).get("prompt", "")).split()[0]
        error = {"code": "bad_request", "message": f"invalid header {auth!r}"}
        answers: dict[str, Response] = {
            "json400": JSONResponse({"success": False, "error": error, "trace_id": token}, 400),
            "json401": JSONResponse({"error": {"code": token, "message": f"{token} expired"}}, 401),
            "html500": HTMLResponse(f"<html><body><pre>Authorization: {auth}</pre></body></html>", 500),
            "text200": PlainTextResponse(f"debug dump: {auth}"),
            "false200": JSONResponse({"success": False, "error": f"bad token {token}"}),
            "text404": PlainTextResponse(f"{token} not found", 404),
            "rate429": JSONResponse({"error": {"message": token}}, 429, headers={"retry-after": "0"}),
            "long500": JSONResponse({"error": {"message": "x" * 290 + token + "y" * 5000}}, 500),
            "notaskid200": JSONResponse({"trace_id": token}),
            "ok": JSONResponse({"task_id": "echo-task-1", "trace_id": token}),
        }
        return answers.get(kind, JSONResponse({"error": "unknown"}, 400))

    async def tasks(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        body = await request.json()
        ids = body.get("ids") or [body.get("id")]
        records = [
            {
                "id": task_id,
                "trace_id": token,
                "finished_at": "2026-01-01T00:00:00Z",
                "state": "failed",
                "response": {"success": False, "error": {"code": token, "message": f"{token} " * 400}},
            }
            for task_id in ids
        ]
        return JSONResponse({"items": records} if "ids" in body else records[0])

    routes = [Route("/flux/images", images, methods=["POST"]), Route("/flux/tasks", tasks, methods=["POST"])]
    return Starlette(routes=routes)


ECHO_KINDS = ["json400", "json401", "html500", "text200", "false200", "text404", "rate429", "long500"]


@pytest.mark.subprocess
async def test_secret_scan_over_stdio_at_debug(tmp_path: Path) -> None:
    secret = f"sk-SCAN-{uuid.uuid4()}"
    config = EmulatorConfig(latency=0.2, tokens=frozenset({secret}), retry_after=0.05, seed=4)
    outputs: list[bytes] = []
    async with serve_emulator(config) as emulator, serve_asgi(echo_upstream()) as echo_url:
        env = child_env(
            tmp_path,
            ACEDATACLOUD_API_TOKEN=secret,
            ACEDATACLOUD_API_BASE_URL=emulator.base_url,
            FLUX_MCP_LOG_LEVEL="DEBUG",
            FLUX_MCP_POLL_MIN_SECONDS="0.05",
            FLUX_MCP_POLL_MAX_SECONDS="0.2",
            FLUX_MCP_RETRY_MAX_SECONDS="1",
        )
        with stderr_file(tmp_path) as errlog:
            async with raw_server(env, errlog) as server:  # against the emulator: every path it has
                await server.initialize()
                done = await server.call("generate_image", {"prompt": "a scanned cat", "count": 2})
                task_id = done["structuredContent"]["task_id"]
                assert done["structuredContent"]["images"][0]["path"], done
                emulator.state.faults.append(Fault("502_html", endpoint="tasks"))
                await server.call("get_task", {"task_id": task_id})
                await server.call("get_tasks", {"task_ids": [task_id, "nope"]})
                await server.call("list_tasks", {})
                for uri in (f"flux://tasks/{task_id}", f"flux://images/{task_id}/0"):
                    await server.request("resources/read", {"uri": uri})
                for faults in (["401"], ["429"] * 4, ["500"], ["fail_task"], ["drop_after"], ["403"]):
                    emulator.state.faults.extend(Fault(kind) for kind in faults)  # type: ignore[arg-type]
                    result = await server.call("generate_image", {"prompt": f"fault {faults[0]}"})
                    assert result["isError"], result
                outputs.append(bytes(server.stdout))
            env["ACEDATACLOUD_API_BASE_URL"] = echo_url
            async with raw_server(env, errlog) as server:  # against the upstream that echoes the token
                await server.initialize()
                for kind in [*ECHO_KINDS, "notaskid200", "ok"]:
                    result = await server.call("generate_image", {"prompt": f"{kind} please"})
                    assert result["isError"] or kind == "ok", result
                await server.call("get_task", {"task_id": "echo-task-1"})
                await server.call("get_tasks", {"task_ids": ["echo-task-1"]})
                await server.call("list_tasks", {})
                await server.request("resources/read", {"uri": "flux://tasks/echo-task-1"})
                outputs.append(bytes(server.stdout))
            log = read_log(errlog)
    assert secret in emulator.state.tokens_seen  # the token was really used...
    assert "DEBUG" in log and "submitted generate task" in log
    for output in outputs:  # ...and is nowhere in what the server said,
        assert secret.encode() not in output, [m for m in output.split(b"\n") if secret.encode() in m][:1]
    assert secret not in log  # logged at DEBUG,
    assert scan_files(tmp_path, secret) == []  # or wrote: history DB and WAL, images, sidecars, logs
    assert list((tmp_path / "images").glob("*.json"))  # (sidecars were written and scanned)


async def test_secret_scan_of_client_errors_logs_and_settings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    secret = f"sk-SCAN-{uuid.uuid4()}"
    seen: list[str] = []
    async with serve_asgi(echo_upstream()) as base_url, httpx2.AsyncClient() as http:
        client = FluxClient(http, base_url, secret, retry=RetryPolicy(max_retries=2, base_delay=0.01))
        for kind in [*ECHO_KINDS, "notaskid200"]:
            with pytest.raises(FluxError) as caught:
                await client.submit(ImageRequest(action="generate", prompt=f"{kind} x", model="flux-dev"))
            error = caught.value
            seen += [str(error), repr(error), error.message, repr(vars(error)), repr(error.args)]
            assert len(error.message) < 700, (kind, len(error.message))  # trimmed, not the whole body
        submission = await client.submit(ImageRequest(action="generate", prompt="ok", model="flux-dev"))
        snapshot = await client.retrieve(submission.task_id)
        (batch,) = await client.retrieve_batch([submission.task_id])
        seen += [repr(submission), repr(snapshot), repr(batch)]
        assert snapshot.status is TaskStatus.FAILED and snapshot.error is not None
        assert len(snapshot.error.message) < 700
    settings = Settings(api_token=SecretStr(secret), auth_tokens=SecretStr(f"{secret},other"))
    seen += [repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())]
    for item in seen:
        assert secret not in item, item
    assert secret not in caplog.text


async def test_secret_scan_with_pass_through_tokens(emulator: RunningEmulator, tmp_path: Path) -> None:
    secret = f"sk-SCAN-{uuid.uuid4()}"
    emulator.state.config.tokens = frozenset({secret})
    settings = make_settings(
        emulator, auth="passthrough", api_token=None, db=tmp_path / "h.db", output_dir=tmp_path / "images"
    )
    async with http_service(settings) as base_url, mcp_client(base_url, secret) as client:
        results = [await client.call_tool("generate_image", {"prompt": "a shared cat"})]
        emulator.state.faults.append(Fault("401"))
        results.append(await client.call_tool("generate_image", {"prompt": "refused"}))
        results.append(await client.call_tool("list_tasks", {}))
    assert structured(results[0])["status"] == "succeeded" and results[1].is_error
    assert emulator.state.tokens_seen.count(secret) >= 2
    assert all(secret not in result.model_dump_json() for result in results)
    assert scan_files(tmp_path, secret) == []  # the owner column holds a keyed hash, never the token


# --- 5. upstream weirdness ------------------------------------------------------------------------------

IMAGE = "https://cdn.example.com/a.png"


@pytest.mark.parametrize(
    ("record", "status", "seeds", "error"),
    [
        pytest.param(
            {
                "id": "t1",
                "finished_at": "x",
                "brand_new_field": {"nested": [1, 2]},
                "response": {
                    "success": True,
                    "extra": 1,
                    "data": [{"image_url": IMAGE, "seed": 5, "timings": 1.25, "whatever": None}],
                },
            },
            "succeeded",
            [5],
            None,
            id="extra-fields-and-timings-number",
        ),
        pytest.param(
            {"id": "t1", "response": {"success": True, "data": [{"image_url": IMAGE, "timings": {"a": 1}}]}},
            "succeeded",
            [None],
            None,
            id="timings-object-missing-seed-and-prompt",
        ),
        pytest.param(
            {
                "id": "t1",
                "response": {
                    "success": True,
                    "data": [
                        {"image_url": IMAGE, "seed": True},
                        {"image_url": IMAGE, "seed": "12"},
                        {"image_url": "file:///etc/passwd"},
                        {"image_url": None},
                        "junk",
                        None,
                    ],
                },
            },
            "succeeded",
            [None, None],
            None,
            id="odd-seeds-and-unusable-urls-dropped",
        ),
        pytest.param(
            {"id": "t1", "state": "failed"}, "failed", [], "without a reason", id="state-failed-no-response"
        ),
        pytest.param(
            {"id": "t1", "finished_at": "x", "response": {"success": False, "error": "out of credits"}},
            "failed",
            [],
            "out of credits",
            id="error-string",
        ),
        pytest.param(
            {"id": "t1", "finished_at": "x", "response": {"success": False, "error": None}},
            "failed",
            [],
            "without a reason",
            id="error-null",
        ),
        pytest.param(
            {"id": "t1", "response": {"success": False, "error": {"code": "nsfw", "message": "blocked"}}},
            "failed",
            [],
            "blocked",
            id="error-object",
        ),
        pytest.param(
            {"id": "t1", "finished_at": "x", "response": {"success": False, "error": {"code": 7, "x": []}}},
            "failed",
            [],
            "api_error",
            id="error-object-without-strings",
        ),
        pytest.param(
            {"id": "t1", "finished_at": "x", "response": {"success": True, "data": []}},
            "failed",
            [],
            "without any image",
            id="finished-without-images",
        ),
        pytest.param({"id": "t1", "response": "garbage"}, "pending", [], None, id="response-not-object"),
        pytest.param({"id": "t1", "response": None, "elapsed": "soon"}, "pending", [], None, id="running"),
        pytest.param(
            {"success": True, "task_id": "t1", "data": [{"image_url": IMAGE, "seed": 1}]},
            "succeeded",
            [1],
            None,
            id="callback-shaped-result",
        ),
    ],
)
def test_odd_task_records_parse_to_a_clear_state(
    record: dict[str, Any], status: str, seeds: list[int | None], error: str | None
) -> None:
    snapshot = parse_task_record(record)
    assert snapshot.task_id == "t1" and snapshot.status.value == status
    assert [image.seed for image in snapshot.images] == seeds
    assert [image.index for image in snapshot.images] == list(range(len(seeds)))
    if error is None:
        assert snapshot.error is None
    else:
        assert snapshot.error is not None and error in f"{snapshot.error.code} {snapshot.error.message}"


class ScriptedUpstream:
    """An upstream that answers each request with the next scripted response; counts requests."""

    def __init__(self) -> None:
        self.script: list[Response] = []
        self.requests = 0
        self.app = Starlette(routes=[Route("/flux/{path}", self.answer, methods=["POST"])])

    async def answer(self, request: Request) -> Response:
        self.requests += 1
        return self.script.pop(0) if self.script else JSONResponse({"error": "script exhausted"}, 418)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedUpstream, FluxClient]]:
    upstream = ScriptedUpstream()
    async with serve_asgi(upstream.app) as base_url, httpx2.AsyncClient() as http:
        yield upstream, FluxClient(http, base_url, TOKEN, retry=RetryPolicy(max_retries=2, base_delay=0.01))


REQUEST = ImageRequest(action="generate", prompt="a cat", model="flux-dev")
HTML_PAGE = "<html><head><title>502</title></head><body><h1>502 Bad Gateway</h1>" + "<p>nginx</p>" * 500


@pytest.mark.parametrize(
    ("response", "error", "expected"),
    [
        (HTMLResponse(HTML_PAGE, 502), ServerError, "HTTP 502: 502 502 Bad Gateway nginx"),
        (HTMLResponse(HTML_PAGE, 200), MalformedResponseError, "not JSON"),
        (Response(b"", 200, media_type="application/json"), MalformedResponseError, "not JSON"),
        (Response(b"", 500), ServerError, "HTTP 500: Internal Server Error"),
        (
            Response(b'{"task_id": "ab', 200, media_type="application/json"),
            MalformedResponseError,
            "not JSON",
        ),
        (Response(b"[1, 2]", 200, media_type="application/json"), MalformedResponseError, "not JSON"),
        (
            JSONResponse({"success": False, "error": {"code": "x", "message": "nope"}}),
            RequestRejectedError,
            "nope",
        ),
        (JSONResponse({"success": False}), RequestRejectedError, "rejected"),
        (JSONResponse({"task_id": 123}), MalformedResponseError, "no task_id"),
        (JSONResponse({"data": "odd"}), MalformedResponseError, "may have been billed"),
        (JSONResponse({"error": "x" * 100_000}, 400), RequestRejectedError, "…"),
        (Response(status_code=503), ServerError, "HTTP 503"),  # without Retry-After: may have been taken
        (PlainTextResponse("gateway timeout", 504), ServerError, "gateway timeout"),
        (
            Response(b"<h1>down</h1>", 502, headers={"content-type": "text/html; charset=no-such-codec"}),
            ServerError,
            "HTTP 502: down",
        ),
    ],
)
async def test_odd_submit_answers_are_clear_errors_and_never_resubmitted(
    scripted: tuple[ScriptedUpstream, FluxClient], response: Response, error: type[FluxError], expected: str
) -> None:
    upstream, client = scripted
    upstream.script = [response, JSONResponse({"task_id": "second-try"})]
    with pytest.raises(error) as caught:
        await client.submit(REQUEST)
    message = caught.value.message
    assert expected in message and "<" not in message and len(message) < 700, message
    assert upstream.requests == 1


async def test_submit_retries_only_provable_refusals(scripted: tuple[ScriptedUpstream, FluxClient]) -> None:
    upstream, client = scripted
    upstream.script = [
        Response(status_code=503, headers={"retry-after": "0"}),
        JSONResponse({"error": "slow down"}, 429, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        JSONResponse({"task_id": "t-1", "trace_id": "tr", "unknown": {"field": True}}),
    ]
    submission = await client.submit(REQUEST)
    assert submission.task_id == "t-1" and upstream.requests == 3

    upstream.script = [JSONResponse({"error": "slow"}, 429, headers={"retry-after": "0"})] * 5
    with pytest.raises(RateLimitedError):
        await client.submit(REQUEST)
    assert upstream.requests == 3 + 3  # the first try and max_retries=2 more, then a clear error


async def test_retrieval_rides_out_garbage_then_reads_odd_records(
    scripted: tuple[ScriptedUpstream, FluxClient],
) -> None:
    upstream, client = scripted
    upstream.script = [
        Response(b'{"id": "t-1", "resp', 200, media_type="application/json"),
        HTMLResponse(HTML_PAGE, 502),
        JSONResponse({"id": "t-1", "state": "FAILED", "mystery": 1}),
    ]
    snapshot = await client.retrieve("t-1")
    assert snapshot.status is TaskStatus.FAILED and snapshot.error is not None
    assert upstream.requests == 3

    upstream.script = [HTMLResponse("<h1>Not Found</h1>", 404)]
    with pytest.raises(TaskNotFoundError, match="t-2"):
        await client.retrieve("t-2")
    upstream.script = [JSONResponse({"success": True})]
    with pytest.raises(TaskNotFoundError):
        await client.retrieve("t-3")
    upstream.script = [JSONResponse({"items": "nope"})]
    with pytest.raises(MalformedResponseError, match="without items"):
        await client.retrieve_batch(["t-1"])


async def test_images_that_404_still_give_a_result_with_a_warning_each(tmp_path: Path) -> None:
    """An upstream whose records are odd but usable, and whose image URLs have already expired."""

    async def images(request: Request) -> Response:
        return JSONResponse({"task_id": "odd-1", "trace_id": "tr-1", "surprise": [1]})

    async def tasks(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        data = [
            {"image_url": f"{base}/gone/0.png", "timings": 2.5},
            {"image_url": f"{base}/gone/1.png", "seed": 9, "timings": {"inference": 1}},
        ]
        record = {"id": "odd-1", "finished_at": "x", "response": {"success": True, "data": data}, "new": 1}
        return JSONResponse(record)

    async def gone(request: Request) -> Response:
        return PlainTextResponse("expired", 404)

    app = Starlette(
        routes=[
            Route("/flux/images", images, methods=["POST"]),
            Route("/flux/tasks", tasks, methods=["POST"]),
            Route("/gone/{name}", gone),
        ]
    )
    async with serve_asgi(app) as base_url:
        settings = Settings(
            api_token=SecretStr(TOKEN),
            api_base_url=base_url,
            db=tmp_path / "history.db",
            output_dir=tmp_path / "images",
            poll_min_seconds=0.05,
            poll_max_seconds=0.1,
        )
        async with Client(build_server(settings)) as client:
            result = await client.call_tool("generate_image", {"prompt": "a cat", "count": 2})
    data = structured(result)
    assert not result.is_error and data["status"] == "succeeded", text(result)
    assert [image["seed"] for image in data["images"]] == [None, 9]
    for image in data["images"]:
        assert image["path"] is None and "expired" in image["warning"]
    assert not [block for block in result.content if isinstance(block, ImageContent)]
    assert text(result).count("note:") == 2
    (row,) = history_rows(tmp_path / "history.db")
    assert row["status"] == "succeeded" and row["task_id"] == "odd-1"


# --- 6. hostile JSON-RPC over stdio -------------------------------------------------------------------

ANSWERED = [  # (request, what the answer must be)
    ({"method": "tools/call", "params": {"name": "generate_image", "arguments": ["a"]}}, "tool error"),
    ({"method": "tools/call", "params": {"name": "generate_image", "arguments": "a cat"}}, "tool error"),
    ({"method": "tools/call", "params": {"name": "generate_image", "arguments": None}}, "tool error"),
    ({"method": "tools/call", "params": {"name": "generate_image", "arguments": 7}}, "any"),
    ({"method": "tools/call", "params": {"arguments": {"prompt": "a cat"}}}, "error"),
    ({"method": "tools/call", "params": {"name": 12, "arguments": {}}}, "error"),
    ({"method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}}, "tool error"),
    ({"method": "tools/call"}, "error"),
    (
        {"method": "tools/call", "params": {"name": "get_task", "arguments": {"task_id": "../../etc"}}},
        "tool error",
    ),
    ({"method": "no/such/method"}, "error"),
    ({"method": "resources/read", "params": {"uri": "file:///etc/passwd"}}, "error"),
    ({"method": "resources/read", "params": {"uri": "flux://images/../../etc/passwd/0"}}, "error"),
    (
        {"method": "tools/call", "params": {"name": "list_tasks", "arguments": {"query": "%' OR 1=1 --"}}},
        "result",
    ),
]
# Lines the SDK cannot read as one JSON-RPC request. It drops them without an answer (JSON-RPC would
# want a parse error with id null; that is the SDK's choice, not ours); the server must stay up.
DROPPED = [
    "this is not json",
    '{"jsonrpc": "2.0", "id": 7.5, "method": "tools/list"}',
    '{"jsonrpc": "2.0", "id": null, "method": "tools/list"}',
    '{"id": 8, "method": "tools/list"}',
    '[{"jsonrpc": "2.0", "id": 9, "method": "tools/list"}]',
    '{"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": []}',
    '{"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "generate_image", '
    '"arguments": {"prompt": "\\ud800 lone surrogate"}}}',
    '{"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": {"name": "generate_image", "arguments": '
    + '{"x": ' * 3000
    + "1"
    + "}" * 3000
    + "}}",
    '{"jsonrpc": "2.0", "id": 13, "result": {}}',
    '{"jsonrpc": "2.0", "method": "notifications/no_such_thing"}',
]


@pytest.mark.subprocess
async def test_hostile_json_rpc_never_crashes_the_stdio_server(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    with stderr_file(tmp_path) as errlog:
        async with raw_server(emulator_env(emulator, tmp_path), errlog) as server:
            await server.initialize()
            for index, (request, expected) in enumerate(ANSWERED):
                await server.send({"jsonrpc": "2.0", "id": f"req-{index}", **request})
                answer = await server.response(f"req-{index}")
                if "error" in answer:
                    assert expected in ("error", "any"), (request, answer)
                    assert isinstance(answer["error"]["code"], int) and answer["error"]["message"]
                    continue
                result = answer["result"]
                assert expected in ("tool error", "result", "any"), (request, answer)
                assert result["isError"] == (expected == "tool error") or expected == "any", (request, result)
                assert result["content"][0]["text"] and "Traceback" not in json.dumps(result)

            # 1e400 is valid JSON for a number no float can hold.
            call = '{"name": "generate_image", "arguments": {"prompt": "a cat", "count": 1e400}}'
            await server.send(
                f'{{"jsonrpc": "2.0", "id": "overflow", "method": "tools/call", "params": {call}}}'
            )
            overflow = (await server.response("overflow"))["result"]
            assert overflow["isError"] and "count" in overflow["content"][0]["text"], overflow

            huge = await server.call("generate_image", {"prompt": "x" * 1_000_000})
            assert huge["isError"] and "at most 4000 characters" in huge["content"][0]["text"], huge
            assert len(json.dumps(huge)) < 2000  # the 1 MB prompt is not echoed back

            for line in DROPPED:
                await server.send(line)
            for request_id in ("string-id", 8.0, 0, -1, 2**53):
                await server.send({"jsonrpc": "2.0", "id": request_id, "method": "ping"})
            answers = [await server.response(request_id) for request_id in ("string-id", 0, -1, 2**53)]
            assert all(answer["result"] == {} for answer in answers)
            tools = await server.request("tools/list")  # still alive and answering
            assert {tool["name"] for tool in tools["result"]["tools"]} >= {"generate_image", "get_task"}
            assert server.process.returncode is None
            # Nothing answered any dropped line, and every line on stdout was JSON-RPC (checked by read).
            assert {message.get("id") for message in server.received if "method" not in message} <= {
                *(f"req-{index}" for index in range(len(ANSWERED))),
                "overflow",
                "string-id",
                0,
                -1,
                2**53,
                *range(1001, 1010),
            }
        log = read_log(errlog)
    assert emulator.state.submissions == 0  # nothing hostile reached the upstream
    assert "Traceback" not in log, log[-3000:]
