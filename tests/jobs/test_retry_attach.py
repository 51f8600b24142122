"""A client that times out never makes the user pay twice: an identical retry continues the same task.

Submissions are counted from the emulator's own records (`emulator.state`), never from the server.
Nothing here sleeps to wait for something: each step waits on a condition (progress seen, a task
finished upstream, a history row written) with a bound that only exists to avoid hanging.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ImageContent

from flux_mcp.domain.arguments import GenerateImageArgs
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.tasks import parse_task_record
from flux_mcp.emulator import EmulatorConfig, Fault, RunningEmulator, serve_emulator
from flux_mcp.history.schema import SCHEMA_VERSION
from flux_mcp.history.store import History
from flux_mcp.jobs.finishing import task_result
from flux_mcp.server.build import INSTRUCTIONS, build_server
from tests.support import (
    TOKEN,
    Recorder,
    emulator_env,
    finish_tasks_now,
    history_rows,
    http_service,
    make_settings,
    mcp_client,
    read_log,
    stderr_file,
    stdio_session,
    structured,
    text,
    wait_for,
)
from tests.support.stdio import raw_server

pytestmark = pytest.mark.anyio

CAT = {"prompt": "a ginger cat asleep on a windowsill"}


def submitted_progress() -> tuple[anyio.Event, ProgressFnT]:
    """An event set once the server reports the task as submitted, and the progress callback that sets it."""
    submitted = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if (message or "").startswith("Submitted task"):
            submitted.set()

    return submitted, on_progress


async def call_cancelled_after_submit(client: Client, arguments: dict[str, Any]) -> None:
    """Call generate_image and cancel the call (client side) once the task has been submitted."""
    submitted, on_progress = submitted_progress()

    async def call() -> None:
        await client.call_tool("generate_image", arguments, progress_callback=on_progress)
        pytest.fail("the call should have been cancelled")

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        with anyio.fail_after(15):
            await submitted.wait()
        group.cancel_scope.cancel()


def only_task(emulator: RunningEmulator) -> Any:
    (task,) = emulator.state.tasks.values()
    return task


def assert_attached(result: CallToolResult, task_id: str) -> dict[str, Any]:
    data = structured(result)
    assert data["attached"] is True and data["task_id"] == task_id, text(result)
    assert data["submitted_seconds_ago"] is not None and data["submitted_seconds_ago"] >= 0
    assert text(result).startswith(f"Continuing task {task_id} submitted "), text(result)
    return data


def assert_images(result: CallToolResult, count: int = 1) -> None:
    data = structured(result)
    assert not result.is_error and data["status"] == "succeeded", text(result)
    assert len(data["images"]) == count
    assert sum(isinstance(block, ImageContent) for block in result.content) == count


# --- a call that was cancelled or timed out, then retried -------------------------------------------


@pytest.mark.parametrize("finished_meanwhile", [False, True], ids=["still-pending", "finished-meanwhile"])
async def test_cancelled_call_then_identical_call_continues_the_task(
    emulator: RunningEmulator, finished_meanwhile: bool
) -> None:
    emulator.state.config.latency = 1.5
    async with Client(build_server(make_settings(emulator))) as client:
        await call_cancelled_after_submit(client, CAT)
        task = only_task(emulator)
        if finished_meanwhile:  # the result exists, but the call that asked for it is gone
            await wait_for(lambda: task.status == "succeeded")
        progress = Recorder()
        retry = await client.call_tool("generate_image", CAT, progress_callback=progress.on_progress)
    assert_attached(retry, task.id)
    assert_images(retry)
    assert any("Continuing task" in (message or "") for _, message in progress.progress)
    assert emulator.state.submissions == 1 and emulator.state.accepted == 1


async def test_client_read_timeout_then_retry_continues_the_task(emulator: RunningEmulator) -> None:
    """What openai-agents and google-adk do: the SDK client's own read timeout ends the call."""
    emulator.state.config.latency = 5.0
    async with Client(build_server(make_settings(emulator))) as client:
        with pytest.raises(MCPError, match=r"(?i)timed out"):
            await client.call_tool("generate_image", CAT, read_timeout_seconds=2.0)
        retry = await client.call_tool("generate_image", CAT)
    assert_attached(retry, only_task(emulator).id)
    assert_images(retry)
    assert emulator.state.submissions == 1


async def test_pending_result_is_not_delivered_so_the_same_call_continues_it(
    emulator: RunningEmulator,
) -> None:
    emulator.state.config.latency = 1.0
    async with Client(build_server(make_settings(emulator))) as client:
        pending = await client.call_tool("generate_image", {**CAT, "wait_seconds": 0})
        assert structured(pending)["status"] == "pending" and structured(pending)["attached"] is False
        retry = await client.call_tool("generate_image", {**CAT, "wait_seconds": 30})  # waiting is no part
        assert_attached(retry, structured(pending)["task_id"])
        assert_images(retry)
        assert emulator.state.submissions == 1
        rerun = await client.call_tool("generate_image", CAT)  # the images were delivered: a new job
    assert structured(rerun)["attached"] is False and structured(rerun)["status"] == "succeeded"
    assert emulator.state.submissions == 2


async def test_delivered_result_makes_an_identical_call_a_rerun(
    client: Client, emulator: RunningEmulator
) -> None:
    first = await client.call_tool("generate_image", CAT)
    second = await client.call_tool("generate_image", CAT)
    assert_images(first)
    assert_images(second)
    assert structured(second)["attached"] is False
    assert structured(first)["task_id"] != structured(second)["task_id"]
    assert emulator.state.submissions == 2


@pytest.mark.parametrize(
    "lookup",
    [
        ("get_task", lambda task_id: {"task_id": task_id}),
        ("get_tasks", lambda task_id: {"task_ids": [task_id]}),
    ],
    ids=["get_task", "get_tasks"],
)
async def test_result_fetched_by_a_lookup_is_delivered(
    emulator: RunningEmulator, lookup: tuple[str, Callable[[str], dict[str, Any]]]
) -> None:
    emulator.state.config.latency = 0.5
    async with Client(build_server(make_settings(emulator))) as client:
        pending = await client.call_tool("generate_image", {**CAT, "wait_seconds": 0})
        task = only_task(emulator)
        await wait_for(lambda: task.status == "succeeded")
        tool, arguments = lookup
        seen = await client.call_tool(tool, arguments(task.id))
        assert not seen.is_error and task.id in text(seen), text(seen)
        again = await client.call_tool("generate_image", CAT)
    assert structured(pending)["status"] == "pending"
    assert structured(again)["attached"] is False and structured(again)["task_id"] != task.id
    assert emulator.state.submissions == 2


async def test_finished_result_listed_by_list_tasks_is_delivered(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 0.5
    settings = make_settings(emulator)
    async with Client(build_server(settings)) as client:
        await client.call_tool("generate_image", {**CAT, "wait_seconds": 0})
        task = only_task(emulator)
        await wait_for(lambda: task.status == "succeeded")
        # Another process waited for the task and recorded its images, but its client had gone away.
        other = History(settings.history_path())
        try:
            snapshot = parse_task_record(task.record())
            await other.record_state(task_result(snapshot, task.request, 1.0))
        finally:
            other.close()
        listed = structured(await client.call_tool("list_tasks", {}))["tasks"]
        assert [(item["task_id"], item["status"]) for item in listed] == [(task.id, "succeeded")]
        again = await client.call_tool("generate_image", CAT)
    assert structured(again)["attached"] is False
    assert emulator.state.submissions == 2


@pytest.mark.parametrize(
    "changed",
    [
        {"prompt": "a ginger cat asleep on a windowsill, at night"},
        {"size": "1792x1024"},
        {"count": 2},
        {"model": "flux-pro"},
    ],
    ids=["prompt", "size", "count", "model"],
)
async def test_different_arguments_submit_anew(emulator: RunningEmulator, changed: dict[str, Any]) -> None:
    emulator.state.config.latency = 1.0
    async with Client(build_server(make_settings(emulator))) as client:
        first = await client.call_tool("generate_image", {**CAT, "wait_seconds": 0})  # not delivered
        other = await client.call_tool("generate_image", {**CAT, **changed, "wait_seconds": 0})
    assert structured(first)["status"] == structured(other)["status"] == "pending"
    assert structured(other)["attached"] is False
    assert structured(other)["task_id"] != structured(first)["task_id"]
    assert emulator.state.submissions == 2


async def test_the_default_size_spelled_out_is_the_same_request(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 1.0
    async with Client(build_server(make_settings(emulator))) as client:
        first = await client.call_tool("generate_image", {**CAT, "wait_seconds": 0})
        same = await client.call_tool("generate_image", {**CAT, "size": "1024X1024", "model": "flux-dev"})
    assert_attached(same, structured(first)["task_id"])
    assert emulator.state.submissions == 1


async def test_edit_of_a_flux_uri_continues_an_edit_of_the_upstream_url(emulator: RunningEmulator) -> None:
    async with Client(build_server(make_settings(emulator))) as client:
        source = structured(await client.call_tool("generate_image", CAT))
        image = source["images"][0]
        emulator.state.config.latency = 1.0
        edit = {"prompt": "make it a tabby", "wait_seconds": 0}
        first = await client.call_tool("edit_image", {**edit, "image_url": image["resource_uri"]})
        same = await client.call_tool("edit_image", {**edit, "image_url": image["url"]})
    assert structured(first)["status"] == "pending", text(first)
    assert_attached(same, structured(first)["task_id"])
    assert emulator.state.submissions == 2  # the generation and one edit


async def test_unseen_failure_is_returned_to_the_retry_then_a_retry_submits(
    emulator: RunningEmulator,
) -> None:
    emulator.state.config.latency = 1.0
    emulator.state.faults.append(Fault("fail_task"))
    async with Client(build_server(make_settings(emulator))) as client:
        await call_cancelled_after_submit(client, CAT)
        failed = await client.call_tool("generate_image", CAT)
        again = await client.call_tool("generate_image", CAT)
    assert_attached(failed, only_task_id(emulator, failed))
    assert failed.is_error and structured(failed)["status"] == "failed" and "failed" in text(failed)
    assert structured(again)["attached"] is False and structured(again)["status"] == "succeeded"
    assert emulator.state.submissions == 2


def only_task_id(emulator: RunningEmulator, result: CallToolResult) -> str:
    task_id = structured(result)["task_id"]
    assert task_id in emulator.state.tasks
    return str(task_id)


async def test_old_submissions_are_not_continued(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 1.0
    settings = make_settings(emulator)
    async with Client(build_server(settings)) as client:
        await client.call_tool("generate_image", {**CAT, "wait_seconds": 0})
        with closing(sqlite3.connect(settings.history_path())) as db, db:
            db.execute("UPDATE tasks SET created_at = created_at - 25 * 3600")  # submitted yesterday
        fresh = await client.call_tool("generate_image", {**CAT, "wait_seconds": 0})
    assert structured(fresh)["attached"] is False
    assert emulator.state.submissions == 2


async def test_a_task_the_upstream_no_longer_knows_is_submitted_anew(emulator: RunningEmulator) -> None:
    settings = make_settings(emulator)
    request = GenerateImageArgs.model_validate(CAT).to_request()
    history = History(settings.history_path())
    try:  # an hour ago this request was submitted as t-gone, which the upstream has since forgotten
        claim = await history.claim_submission(
            request.model_dump(exclude_none=True), request.fingerprint(), since=0
        )
        await history.mark_submitted(claim.row_id, "t-gone", None)
    finally:
        history.close()
    with closing(sqlite3.connect(settings.history_path())) as db, db:
        db.execute("UPDATE tasks SET created_at = created_at - 3600")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_image", CAT)
    assert_images(result)
    assert structured(result)["attached"] is False
    assert emulator.state.submissions == 1


# --- submissions whose fate is unknown ----------------------------------------------------------------


async def test_call_cancelled_mid_submit_makes_the_retry_say_so_instead_of_paying_again(
    emulator: RunningEmulator,
) -> None:
    emulator.state.faults.append(Fault("slow", delay=30))  # the submit hangs: the call is cut off in it
    settings = make_settings(emulator)
    async with Client(build_server(settings)) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(client.call_tool, "generate_image", CAT)
            await wait_for(lambda: emulator.state.submissions == 1)
            group.cancel_scope.cancel()
        await wait_for(
            lambda: [row["status"] for row in history_rows(settings.history_path())] == ["unknown"]
        )
        told = await client.call_tool("generate_image", CAT)
        assert told.is_error and "Not submitted" in text(told) and "list_tasks" in text(told)
        assert "billed" in text(told)
        assert emulator.state.submissions == 1
        deliberate = await client.call_tool("generate_image", CAT)  # the caller was told: a real re-run
    assert structured(deliberate)["status"] == "succeeded" and structured(deliberate)["attached"] is False
    assert emulator.state.submissions == 2


async def test_lost_answer_told_to_its_own_caller_is_delivered(
    client: Client, emulator: RunningEmulator
) -> None:
    emulator.state.faults.append(Fault("drop_after"))  # accepted upstream, the answer never arrives
    lost = await client.call_tool("generate_image", CAT)
    assert lost.is_error and "may have" in text(lost)
    again = await client.call_tool("generate_image", CAT)
    assert structured(again)["status"] == "succeeded", text(again)
    assert emulator.state.submissions == 2


async def test_submission_left_half_done_by_a_dead_process_is_not_resubmitted(
    emulator: RunningEmulator,
) -> None:
    settings = make_settings(emulator)
    request = GenerateImageArgs.model_validate(CAT).to_request()
    async with Client(build_server(settings)) as client:
        # Another process claims this request, and dies an hour ago before the upstream answered.
        other = History(settings.history_path())
        try:
            body, fingerprint = request.model_dump(exclude_none=True), request.fingerprint()
            await other.claim_submission(body, fingerprint, since=0)
        finally:
            other.close()
        with closing(sqlite3.connect(settings.history_path())) as db, db:
            db.execute("UPDATE tasks SET created_at = created_at - 3600")
        told = await client.call_tool("generate_image", CAT)
    assert told.is_error and "Not submitted" in text(told), text(told)
    assert emulator.state.submissions == 0
    assert [row["status"] for row in history_rows(settings.history_path())] == ["unknown"]


# --- races ----------------------------------------------------------------------------------------------


async def test_concurrent_identical_calls_make_one_submission(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flux_mcp")
    emulator.state.config.latency = 3600  # until the test ends it: no call comes too late to find it
    emulator.state.faults.append(Fault("slow", delay=1.0))  # the others find the first still submitting
    results: list[CallToolResult] = []
    async with Client(build_server(make_settings(emulator))) as client:

        async def call() -> None:
            results.append(await client.call_tool("generate_image", CAT))

        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(call)
            await wait_for(lambda: caplog.text.count("continuing task") == 4)
            finish_tasks_now(emulator)
    assert emulator.state.submissions == 1
    for result in results:
        assert_images(result)
    assert sorted(structured(result)["attached"] for result in results) == [False] + [True] * 4
    assert len({structured(result)["task_id"] for result in results}) == 1
    assert "an identical request is being submitted" in caplog.text  # they waited for its task id


async def test_two_servers_sharing_a_history_make_one_submission(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flux_mcp")
    # The task runs until the test ends it, so each server, however slowly it starts, finds it undelivered.
    emulator.state.config.latency = 3600
    emulator.state.faults.append(Fault("slow", delay=1.0))
    settings = make_settings(emulator)
    results: list[CallToolResult] = []

    async def call() -> None:
        async with Client(build_server(settings)) as client:  # its own server, its own connection
            results.append(await client.call_tool("generate_image", CAT))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(call)
        await wait_for(lambda: caplog.text.count("continuing task") == 2)
        finish_tasks_now(emulator)
    assert emulator.state.submissions == 1
    assert all(structured(result)["status"] == "succeeded" for result in results)
    assert len({structured(result)["task_id"] for result in results}) == 1


async def test_pass_through_callers_never_continue_each_others_tasks(emulator: RunningEmulator) -> None:
    alice, bob = "sk-alice-1111111111", "sk-bob-2222222222"
    emulator.state.config.tokens = frozenset({alice, bob})
    emulator.state.config.latency = 1.0
    settings = make_settings(emulator, auth="passthrough", api_token=None)
    async with http_service(settings) as base_url:
        async with mcp_client(base_url, alice) as client:
            alices = structured(await client.call_tool("generate_image", {**CAT, "wait_seconds": 0}))
        async with mcp_client(base_url, bob) as client:
            bobs = structured(await client.call_tool("generate_image", {**CAT, "wait_seconds": 0}))
        async with mcp_client(base_url, alice) as client:
            alices_retry = await client.call_tool("generate_image", CAT)
    assert bobs["attached"] is False and bobs["task_id"] != alices["task_id"]
    assert_attached(alices_retry, alices["task_id"])
    assert emulator.state.submissions == 2 and emulator.state.tokens_seen.count(bob) >= 1


# --- across processes (stdio) -----------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_killed_stdio_process_then_a_new_process_continues_the_task(tmp_path: Path) -> None:
    config = EmulatorConfig(latency=3.0, tokens=frozenset({TOKEN}), seed=5)
    async with serve_emulator(config) as emulator:
        env = emulator_env(emulator, tmp_path)
        with stderr_file(tmp_path) as errlog:
            async with raw_server(env, errlog) as first:
                await first.initialize()
                call = {"name": "generate_image", "arguments": CAT}
                await first.send({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": call})
                await wait_for(
                    lambda: [row["status"] for row in history_rows(tmp_path / "history.db")] == ["pending"]
                )
                first.process.kill()  # the framework gives up on the process mid-wait
                with anyio.fail_after(10):
                    await first.process.wait()
            async with stdio_session([], env, errlog, Recorder()) as second:
                retry = await second.call_tool("generate_image", CAT)
            log = read_log(errlog)
        assert_attached(retry, only_task(emulator).id)
        assert structured(retry)["status"] == "succeeded", text(retry)
        assert emulator.state.submissions == 1
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.subprocess
async def test_two_stdio_processes_calling_at_once_make_one_submission(tmp_path: Path) -> None:
    # The task runs until the test ends it, so the second process, however slowly it gets to the call,
    # finds it undelivered.
    config = EmulatorConfig(latency=3600, tokens=frozenset({TOKEN}), seed=6)
    async with serve_emulator(config) as emulator:
        emulator.state.faults.append(Fault("slow", delay=1.5))
        env = emulator_env(emulator, tmp_path)
        results: list[CallToolResult] = []
        logs = [tmp_path / "one.log", tmp_path / "two.log"]
        with logs[0].open("w") as log_one, logs[1].open("w") as log_two:
            async with (
                stdio_session([], env, log_one, Recorder()) as one,
                stdio_session([], env, log_two, Recorder()) as two,
            ):

                async def call(client: Client) -> None:
                    results.append(await client.call_tool("generate_image", CAT))

                async with anyio.create_task_group() as group:
                    group.start_soon(call, one)
                    group.start_soon(call, two)
                    await wait_for(lambda: any("continuing task" in log.read_text() for log in logs))
                    finish_tasks_now(emulator)
        assert emulator.state.submissions == 1
        assert all(structured(result)["status"] == "succeeded" for result in results)
        assert sorted(structured(result)["attached"] for result in results) == [False, True]


@pytest.mark.subprocess
async def test_stdio_client_timeout_then_retry_in_the_same_session(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    emulator.state.config.latency = 5.0
    with stderr_file(tmp_path) as errlog:
        async with stdio_session([], emulator_env(emulator, tmp_path), errlog, Recorder()) as client:
            with pytest.raises(MCPError, match=r"(?i)timed out"):
                await client.call_tool("generate_image", CAT, read_timeout_seconds=3.0)
            retry = await client.call_tool("generate_image", CAT)
    assert_attached(retry, only_task(emulator).id)
    assert structured(retry)["status"] == "succeeded"
    assert emulator.state.submissions == 1


# --- the history file -------------------------------------------------------------------------------------


VERSION_0 = Path(__file__).resolve().parents[1] / "data" / "history-v0.sql"


def old_history(path: Path) -> None:
    """A history file as flux-mcp wrote it before retry attachment (schema version 0)."""
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(VERSION_0.read_text())
        now = time.time()
        db.execute(
            "INSERT INTO tasks (task_id, status, model, prompt, size, request, created_at, updated_at) "
            "VALUES ('t-old', 'pending', 'flux-dev', ?, '1024x1024', '{}', ?, ?)",
            (CAT["prompt"], now, now),
        )


async def test_an_older_history_file_is_migrated_and_its_rows_are_never_continued(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    old_history(tmp_path / "history.db")
    settings = make_settings(emulator, db=tmp_path / "history.db")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_image", CAT)
        listed = structured(await client.call_tool("list_tasks", {}))["tasks"]
    assert structured(result)["attached"] is False and emulator.state.submissions == 1
    assert {task["task_id"] for task in listed} == {"t-old", structured(result)["task_id"]}
    with closing(sqlite3.connect(tmp_path / "history.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
    assert {"fingerprint", "delivered_at"} <= columns


async def test_processes_opening_an_old_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    old_history(tmp_path / "history.db")

    def open_and_close() -> None:
        History(tmp_path / "history.db").close()

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(anyio.to_thread.run_sync, open_and_close)
    reopened = History(tmp_path / "history.db")
    try:
        (entry,) = await reopened.list_tasks(10)
        assert entry.task_id == "t-old" and entry.fingerprint is None and entry.delivered_at is None
    finally:
        reopened.close()


async def test_a_call_cancelled_while_marking_its_result_delivered_takes_the_mark_back(
    tmp_path: Path,
) -> None:
    history = History(tmp_path / "history.db")
    request = GenerateImageArgs.model_validate(CAT).to_request()
    try:
        claim = await history.claim_submission(
            request.model_dump(exclude_none=True), request.fingerprint(), since=0
        )
        await history.mark_submitted(claim.row_id, "t-1", None)
        with closing(sqlite3.connect(tmp_path / "history.db", isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")  # the mark's write has to wait for this lock
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:
                    group.start_soon(partial(history.mark_delivered, task_ids=["t-1"]))
                    await anyio.wait_all_tasks_blocked()  # the mark is being written, in its thread
                    scope.cancel()  # the client cancels: this answer will never be sent
                    other.execute("COMMIT")
        entry = await history.find_task("t-1")
        assert entry is not None and entry.delivered_at is None  # written, then taken back
        await history.mark_delivered(task_ids=["t-1"])
        entry = await history.find_task("t-1")
        assert entry is not None and entry.delivered_at is not None
    finally:
        history.close()


# --- what the model reads ---------------------------------------------------------------------------------


async def test_job_tools_tell_the_model_how_to_retry_a_timeout(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for text_seen in (tools["generate_image"].description, tools["edit_image"].description, INSTRUCTIONS):
        assert text_seen is not None
        assert "times out" in text_seen and "same arguments" in text_seen and "list_tasks" in text_seen
        assert "never change the prompt just to retry" in text_seen
