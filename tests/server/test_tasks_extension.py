"""MCP Tasks at 2026-07-28 (`io.modelcontextprotocol/tasks`) on the wire, in memory, against the emulator.

The answers are read as the raw wire dicts a SEP-2663 client gets (tests/support/tasks.py); the real
clients (FastMCP, pydantic-ai) are in tests/clients/test_tasks_*.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND
from mcp_types.jsonrpc import MISSING_REQUIRED_CLIENT_CAPABILITY

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import Fault, RunningEmulator
from flux_mcp.server.build import build_server
from testkit.tasks import TASKS, RawTasks, call_as_task, task_request
from tests.support import finish_tasks_now, history_rows, structured, wait_for
from tests.support.tasks import until_ended

pytestmark = pytest.mark.anyio

TASK_FIELDS = {"taskId", "status", "statusMessage", "createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs"}


@pytest.fixture
async def tasks_client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings), extensions=[RawTasks()]) as client:
        yield client


async def test_a_job_call_is_a_task_at_once_and_tasks_get_gives_the_tools_own_result(
    tasks_client: Client, client: Client, emulator: RunningEmulator
) -> None:
    emulator.state.config.latency = 600.0  # finished below, when the test says so
    created = await call_as_task(tasks_client, "generate_image", {"prompt": "a fox", "count": 2})
    assert created["resultType"] == "task" and created["status"] == "working"
    assert set(created) >= TASK_FIELDS and len(created["taskId"]) >= 32
    assert (
        "Submitted task" in created["statusMessage"]
        and created["ttlMs"] > 0
        and created["pollIntervalMs"] > 0
    )
    assert emulator.state.submissions == 1  # submitted before the id was returned (durable)

    working = await task_request(tasks_client, "tasks/get", created["taskId"])
    assert working["resultType"] == "complete" and working["status"] == "working" and "result" not in working

    finish_tasks_now(emulator)
    done = await until_ended(tasks_client, created["taskId"])
    assert done["status"] == "completed" and not done["result"].get("isError")
    result = done["result"]
    assert (
        result["structuredContent"]["status"] == "succeeded"
        and len(result["structuredContent"]["images"]) == 2
    )
    kinds = [block["type"] for block in result["content"]]
    assert kinds.count("image") == 2 and kinds.count("resource_link") == 2 and kinds[0] == "text"
    assert all(image["path"] for image in result["structuredContent"]["images"])  # downloaded and saved

    # The same result generate_image gives a client without Tasks: get_task on that task id shows it.
    plain = await client.call_tool("get_task", {"task_id": result["structuredContent"]["task_id"]})
    assert structured(plain)["images"] == result["structuredContent"]["images"]
    assert emulator.state.submissions == 1


async def test_a_bad_call_is_an_immediate_error_and_submits_nothing(
    tasks_client: Client, emulator: RunningEmulator
) -> None:
    answer = await call_as_task(tasks_client, "generate_image", {"prompt": ""})
    assert answer["isError"] is True and answer["resultType"] == "complete" and "taskId" not in answer
    assert "prompt" in answer["content"][0]["text"]
    emulator.state.faults.append(Fault("400"))  # the upstream refuses it: no task either
    refused = await call_as_task(tasks_client, "generate_image", {"prompt": "a fox"})
    assert refused["isError"] is True and "taskId" not in refused
    assert emulator.state.accepted == 0


async def test_a_tool_error_is_a_completed_task(tasks_client: Client, emulator: RunningEmulator) -> None:
    emulator.state.faults.append(Fault("fail_task"))
    created = await call_as_task(tasks_client, "generate_image", {"prompt": "a fox"})
    done = await until_ended(tasks_client, created["taskId"])
    assert done["status"] == "completed" and done["result"]["isError"] is True
    assert "failed" in done["result"]["content"][0]["text"]


async def test_unknown_ids_and_tasks_result_are_protocol_errors(tasks_client: Client) -> None:
    with pytest.raises(MCPError) as unknown:
        await task_request(tasks_client, "tasks/get", "no-such-task")
    assert unknown.value.code == INVALID_PARAMS
    with pytest.raises(MCPError) as cancel_unknown:
        await task_request(tasks_client, "tasks/cancel", "no-such-task")
    assert cancel_unknown.value.code == INVALID_PARAMS
    with pytest.raises(MCPError) as removed:
        await task_request(tasks_client, "tasks/result", "no-such-task")
    assert removed.value.code == METHOD_NOT_FOUND


@pytest.mark.parametrize("method", ["tasks/get", "tasks/cancel", "tasks/update"])
async def test_a_megabyte_task_id_is_not_sent_back_whole(tasks_client: Client, method: str) -> None:
    with pytest.raises(MCPError) as unknown:
        await task_request(tasks_client, method, "x" * 1_000_000)
    assert unknown.value.code == INVALID_PARAMS and len(unknown.value.message) < 200


async def test_a_client_that_did_not_declare_tasks_gets_todays_answers(
    client: Client, tasks_client: Client, emulator: RunningEmulator
) -> None:
    answer = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert structured(answer)["status"] == "succeeded"  # waited, as always
    created = await call_as_task(tasks_client, "generate_image", {"prompt": "a dog"})
    with pytest.raises(MCPError) as undeclared:
        await task_request(client, "tasks/get", created["taskId"])
    assert undeclared.value.code == MISSING_REQUIRED_CLIENT_CAPABILITY
    assert undeclared.value.data == {"requiredCapabilities": {"extensions": {TASKS: {}}}}
    assert TASKS in (client.server_capabilities.extensions or {})


async def test_tasks_can_be_turned_off(settings: Settings, emulator: RunningEmulator) -> None:
    server = build_server(settings.with_changes(tasks=False))
    async with Client(server, extensions=[RawTasks()]) as client:
        answer = await call_as_task(client, "generate_image", {"prompt": "a fox"})
        assert answer["structuredContent"]["status"] == "succeeded" and "taskId" not in answer
        assert TASKS not in (client.server_capabilities.extensions or {})
        with pytest.raises(MCPError) as off:
            await task_request(client, "tasks/get", "anything")
        assert off.value.code == METHOD_NOT_FOUND


async def test_only_job_tools_become_tasks(tasks_client: Client) -> None:
    answer = await call_as_task(tasks_client, "list_tasks", {})
    assert "taskId" not in answer and "tasks" in answer["structuredContent"]


async def test_a_task_is_not_cut_off_at_the_wait_limit(settings: Settings, emulator: RunningEmulator) -> None:
    """FLUX_MCP_WAIT_SECONDS bounds a tool call a client waits for; a task waits until the job ends."""
    emulator.state.config.latency = 600.0
    async with Client(
        build_server(settings.with_changes(wait_seconds=0.2)), extensions=[RawTasks()]
    ) as client:
        created = await call_as_task(client, "generate_image", {"prompt": "a fox"})
        await anyio.sleep(0.5)  # past the wait limit: a plain call would have returned pending by now
        assert (await task_request(client, "tasks/get", created["taskId"]))["status"] == "working"
        finish_tasks_now(emulator)
        done = await until_ended(client, created["taskId"])
        assert done["status"] == "completed" and done["result"]["structuredContent"]["status"] == "succeeded"


async def test_cancel_stops_waiting_and_keeps_the_images_when_the_job_finishes(
    tasks_client: Client, client: Client, emulator: RunningEmulator, settings: Settings
) -> None:
    emulator.state.config.latency = 600.0
    created = await call_as_task(tasks_client, "generate_image", {"prompt": "a fox"})
    assert (await task_request(tasks_client, "tasks/cancel", created["taskId"]))["resultType"] == "complete"
    cancelled = await task_request(tasks_client, "tasks/get", created["taskId"])
    assert cancelled["status"] == "cancelled" and "result" not in cancelled
    assert "cannot stop" in cancelled["statusMessage"] and "billed" in cancelled["statusMessage"]
    finish_tasks_now(emulator)
    # The server kept watching it: the images land in the history.
    await wait_for(lambda: any(row["status"] == "succeeded" for row in history_rows(settings.history_path())))
    assert (await task_request(tasks_client, "tasks/get", created["taskId"]))["status"] == "cancelled"
    listed = structured(await client.call_tool("list_tasks", {}))
    assert listed["tasks"][0]["status"] == "succeeded" and listed["tasks"][0]["images"][0]["path"]


async def test_an_identical_call_whose_result_nobody_received_continues_the_same_job(
    tasks_client: Client, emulator: RunningEmulator
) -> None:
    emulator.state.config.latency = 600.0
    first = await call_as_task(tasks_client, "generate_image", {"prompt": "a fox"})
    again = await call_as_task(tasks_client, "generate_image", {"prompt": "a fox"})
    assert again["taskId"] != first["taskId"] and "Continuing task" in again["statusMessage"]
    assert emulator.state.submissions == 1
    finish_tasks_now(emulator)
    one, other = (
        await until_ended(tasks_client, first["taskId"]),
        await until_ended(tasks_client, again["taskId"]),
    )
    assert one["result"]["structuredContent"]["task_id"] == other["result"]["structuredContent"]["task_id"]
    delivered = await call_as_task(tasks_client, "generate_image", {"prompt": "a fox"})  # a deliberate re-run
    assert "Submitted task" in delivered["statusMessage"] and emulator.state.submissions == 2


async def test_a_restarted_server_completes_a_task_it_was_running(
    settings: Settings, emulator: RunningEmulator
) -> None:
    emulator.state.config.latency = 600.0
    async with Client(build_server(settings), extensions=[RawTasks()]) as before:
        created = await call_as_task(before, "generate_image", {"prompt": "a fox"})
    finish_tasks_now(emulator)  # the job ends upstream while no server runs
    async with Client(build_server(settings), extensions=[RawTasks()]) as after:
        done = await until_ended(after, created["taskId"])
    assert done["status"] == "completed" and done["result"]["structuredContent"]["status"] == "succeeded"
    assert done["result"]["structuredContent"]["images"][0]["path"]
    assert emulator.state.submissions == 1


async def test_a_video_is_a_task_too(tasks_client: Client, emulator: RunningEmulator) -> None:
    arguments = {"prompt": "a kite flies away", "mode": "t2v"}
    created = await call_as_task(tasks_client, "generate_video", arguments)
    assert created["resultType"] == "task"
    finish_tasks_now(emulator)
    done = await until_ended(tasks_client, created["taskId"])
    assert done["status"] == "completed" and done["result"]["structuredContent"]["status"] == "succeeded"
    assert done["result"]["structuredContent"]["videos"] and "\n" not in done["statusMessage"]
