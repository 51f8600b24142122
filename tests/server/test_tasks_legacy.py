"""MCP Tasks as protocol 2025-11-25 has them (SEP-1686), on the wire, with the SDK client in legacy mode.

The Python SDK does not speak these shapes (its client checks a `tools/call` answer as a `CallToolResult`),
so the requests go out raw (`raw`) and the answers are read as JSON, as VS Code and the TypeScript SDK
read them (tests/clients/test_typescript_tasks.py drives that real client).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from flux_mcp.server.build import build_server
from flux_mcp.server.tasks import core as tasks_core
from flux_mcp.server.tasks import legacy as tasks_legacy
from flux_mcp.server.tasks.legacy import CAPABILITY, TASK_TOOLS
from tests.support import (
    child_env,
    finish_tasks_now,
    flux_command,
    http_service,
    initialize_request,
    make_settings,
    stdio_exchange,
    wait_for,
)

pytestmark = pytest.mark.anyio

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


async def raw(client: Client, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request as it goes on the wire, its answer as it came back (no result model in between)."""
    return await client.session._dispatcher.send_raw_request(method, params, {})  # type: ignore[attr-defined,no-any-return]


def legacy(settings: Settings) -> Client:
    return Client(build_server(settings), mode="legacy")


# --- what is published --------------------------------------------------------------------------


async def test_a_2025_11_25_session_is_told_tasks_and_which_tools_take_them(settings: Settings) -> None:
    async with legacy(settings) as client:
        assert client.session.protocol_version == "2025-11-25"
        capabilities = client.server_capabilities.model_dump(by_alias=True, exclude_none=True, mode="json")
        listing = await raw(client, "tools/list")
    assert (
        capabilities["tasks"] == CAPABILITY == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    )
    support = {tool["name"]: tool.get("execution") for tool in listing["tools"]}
    assert {name for name, execution in support.items() if execution} == set(TASK_TOOLS)
    assert {json.dumps(support[name]) for name in TASK_TOOLS} == {'{"taskSupport": "optional"}'}


async def test_the_legacy_listing_differs_from_the_one_without_tasks_only_by_the_execution_field(
    settings: Settings,
) -> None:
    """FLUX_MCP_TASKS=false gives a 2025-11-25 client exactly the listing it had before Tasks."""
    async with legacy(settings) as client:
        with_tasks = await raw(client, "tools/list")
    async with legacy(settings.with_changes(tasks=False)) as client:
        without = await raw(client, "tools/list")
        capabilities = client.server_capabilities.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert "tasks" not in capabilities
    assert all("execution" not in tool for tool in without["tools"])
    stripped = [{k: v for k, v in tool.items() if k != "execution"} for tool in with_tasks["tools"]]
    assert stripped == without["tools"]
    golden = json.loads((GOLDEN / "legacy.tools.json").read_text(encoding="utf-8"))
    assert [{k: v for k, v in tool.items() if k != "execution"} for tool in golden["tools"]] == [
        json.loads(json.dumps(tool, sort_keys=True)) for tool in without["tools"]
    ]


async def test_a_2026_session_sees_no_2025_11_25_tasks(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        assert client.session.protocol_version != "2025-11-25"
        assert client.server_capabilities.tasks is None
        listing = (await client.list_tools()).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert all("execution" not in tool for tool in listing["tools"])  # and plain.tools.json is unchanged


async def test_with_tasks_off_a_task_augmented_call_is_an_ordinary_call(
    settings: Settings, emulator: RunningEmulator
) -> None:
    """A receiver that does not declare tasks processes the request normally (spec), as flux-mcp did."""
    async with legacy(settings.with_changes(tasks=False)) as client:
        answer = await raw(
            client,
            "tools/call",
            {"name": "generate_image", "arguments": {"prompt": "a cat"}, "task": {"ttl": 60000}},
        )
        with pytest.raises(MCPError) as refused:
            await raw(client, "tasks/get", {"taskId": "anything"})
    assert "task" not in answer and answer["structuredContent"]["status"] == "succeeded"
    assert refused.value.error.code == METHOD_NOT_FOUND


async def test_a_tool_that_is_not_a_task_refuses_params_task_with_method_not_found(
    settings: Settings, emulator: RunningEmulator
) -> None:
    async with legacy(settings) as client:
        with pytest.raises(MCPError) as refused:
            await raw(client, "tools/call", {"name": "get_credits", "arguments": {}, "task": {}})
    assert refused.value.error.code == METHOD_NOT_FOUND
    assert "without params.task" in refused.value.error.message
    assert emulator.state.submissions == 0


@pytest.mark.parametrize("method", ["tasks/get", "tasks/result", "tasks/cancel"])
async def test_an_unknown_task_id_is_invalid_params(settings: Settings, method: str) -> None:
    async with legacy(settings) as client:
        with pytest.raises(MCPError) as refused:
            await raw(client, method, {"taskId": "no-such-task"})
        with pytest.raises(MCPError) as missing:
            await raw(client, method, {})
    assert refused.value.error.code == INVALID_PARAMS == missing.value.error.code
    assert "no-such-task" in refused.value.error.message


async def test_hostile_task_parameters_are_invalid_params_and_submit_nothing(
    settings: Settings, emulator: RunningEmulator
) -> None:
    """A tool name that is not a string, a ttl past any float, a cursor past any offset the history can
    take: each a clear -32602, never an internal error carrying the exception's text."""
    huge_offset = base64.urlsafe_b64encode(b"tasks:" + b"9" * 40).decode()
    async with legacy(settings) as client:
        refusals = []
        for method, params in (
            ("tools/call", {"name": ["generate_image"], "arguments": {"prompt": "a cat"}, "task": {}}),
            ("tools/call", {"name": {"tool": 1}, "arguments": {"prompt": "a cat"}, "task": {}}),
            ("tasks/list", {"cursor": huge_offset}),
        ):
            with pytest.raises(MCPError) as refused:
                await raw(client, method, params)
            refusals.append(refused.value.error)
        huge_ttl = await raw(client, "tools/call", generate("a cat kept long", ttl=10**400))
    assert [error.code for error in refusals] == [METHOD_NOT_FOUND, METHOD_NOT_FOUND, INVALID_PARAMS]
    assert "Invalid cursor" in refusals[2].message
    assert 0 < huge_ttl["task"]["ttl"] <= 24 * 3600 * 1000  # the server's own bound
    assert emulator.state.submissions == 1


# --- a task's life ------------------------------------------------------------------------------

TASK_FIELDS = {"taskId", "status", "statusMessage", "createdAt", "lastUpdatedAt", "ttl", "pollInterval"}


def generate(prompt: str, **task: Any) -> dict[str, Any]:
    return {"name": "generate_image", "arguments": {"prompt": prompt}, "task": task}


async def test_a_task_augmented_call_answers_a_task_at_once_and_tasks_result_gives_the_images(
    settings: Settings, emulator: RunningEmulator
) -> None:
    emulator.state.config.latency = 3600  # the job ends when the test says (finish_tasks_now)
    async with legacy(settings) as client:
        created = await raw(client, "tools/call", generate("a lighthouse at dusk", ttl=60000))
        task = created["task"]
        assert set(task) <= TASK_FIELDS and {"taskId", "status", "createdAt", "ttl", "pollInterval"} <= set(
            task
        )
        assert task["status"] == "working" and task["ttl"] == 60000 and task["pollInterval"] > 0
        assert created["_meta"]["io.modelcontextprotocol/model-immediate-response"]
        assert emulator.state.submissions == 1  # submitted (and durable) before the id was handed out
        polled = await raw(client, "tasks/get", {"taskId": task["taskId"]})
        assert polled["status"] == "working" and polled["taskId"] == task["taskId"]
        finish_tasks_now(emulator)
        result = await raw(client, "tasks/result", {"taskId": task["taskId"]})
        done = await raw(client, "tasks/get", {"taskId": task["taskId"]})
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}
    assert result["structuredContent"]["status"] == "succeeded" and not result.get("isError")
    assert any(block["type"] == "image" for block in result["content"])
    assert done["status"] == "completed" and done["lastUpdatedAt"] >= done["createdAt"]
    assert emulator.state.submissions == 1


async def test_tasks_result_blocks_until_the_task_ends(settings: Settings, emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 3600
    answers: list[dict[str, Any]] = []
    async with legacy(settings) as client:
        task_id = (await raw(client, "tools/call", generate("a slow fox")))["task"]["taskId"]

        async def wait_for_result() -> None:
            answers.append(await raw(client, "tasks/result", {"taskId": task_id}))

        async with anyio.create_task_group() as group:
            group.start_soon(wait_for_result)
            await wait_for(lambda: bool(emulator.state.polls))  # the job is being watched, no answer yet
            assert answers == []
            finish_tasks_now(emulator)
    assert answers[0]["structuredContent"]["status"] == "succeeded"


async def test_a_bad_call_is_an_immediate_error_and_no_task(
    settings: Settings, emulator: RunningEmulator
) -> None:
    async with legacy(settings) as client:
        with pytest.raises(MCPError) as refused:
            await raw(client, "tools/call", {**generate("x"), "arguments": {"prompt": "x", "count": 99}})
        with pytest.raises(MCPError) as not_an_object:
            await raw(client, "tools/call", {**generate("x"), "arguments": ["a cat"]})
        with pytest.raises(MCPError) as bad_ttl:
            await raw(client, "tools/call", generate("a cat", ttl="soon"))
        listed = await raw(client, "tasks/list")
    assert refused.value.error.code == INVALID_PARAMS and "count" in refused.value.error.message
    assert (
        not_an_object.value.error.code == INVALID_PARAMS
        and "JSON object" in not_an_object.value.error.message
    )
    assert bad_ttl.value.error.code == INVALID_PARAMS and "ttl" in bad_ttl.value.error.message
    assert listed == {"tasks": []}
    assert emulator.state.submissions == 0


async def test_cancel_stops_the_waiting_and_says_the_job_may_still_be_billed(
    settings: Settings, emulator: RunningEmulator
) -> None:
    emulator.state.config.latency = 3600
    async with legacy(settings) as client:
        task_id = (await raw(client, "tools/call", generate("a cancelled cat")))["task"]["taskId"]
        cancelled = await raw(client, "tasks/cancel", {"taskId": task_id})
        polled = await raw(client, "tasks/get", {"taskId": task_id})
        with pytest.raises(MCPError) as again:
            await raw(client, "tasks/cancel", {"taskId": task_id})
        result = await raw(client, "tasks/result", {"taskId": task_id})
    assert cancelled["status"] == "cancelled" == polled["status"]
    assert "billed" in cancelled["statusMessage"]
    assert again.value.error.code == INVALID_PARAMS and "already cancelled" in again.value.error.message
    assert result["isError"] is True and "billed" in result["content"][0]["text"]
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}


async def test_tasks_list_pages_through_the_callers_tasks_with_an_opaque_cursor(
    settings: Settings, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks_legacy, "LIST_PAGE", 2)
    async with legacy(settings) as client:
        made = [
            (await raw(client, "tools/call", generate(f"cat {index}")))["task"]["taskId"]
            for index in range(3)
        ]
        first = await raw(client, "tasks/list")
        second = await raw(client, "tasks/list", {"cursor": first["nextCursor"]})
        with pytest.raises(MCPError) as bad:
            await raw(client, "tasks/list", {"cursor": "not-a-cursor"})
    listed = [task["taskId"] for task in first["tasks"] + second["tasks"]]
    assert sorted(listed) == sorted(made) and len(first["tasks"]) == 2 and "nextCursor" not in second
    assert all(set(task) <= TASK_FIELDS for task in first["tasks"])
    assert bad.value.error.code == INVALID_PARAMS


# --- whose task, and after a restart ------------------------------------------------------------

ALICE, BOB = "sk-alice-legacy-0123456789abcdef", "sk-bob-legacy-fedcba9876543210"


@asynccontextmanager
async def legacy_over_http(base_url: str, token: str) -> AsyncIterator[Client]:
    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http), mode="legacy") as client,
    ):
        yield client


async def test_another_callers_task_is_exactly_an_unknown_one_over_http(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 3600
    settings = make_settings(emulator, auth_tokens=f"{ALICE},{BOB}")
    async with http_service(settings) as base_url, legacy_over_http(base_url, ALICE) as alice:
        task_id = (await raw(alice, "tools/call", generate("alice's cat")))["task"]["taskId"]
        assert (await raw(alice, "tasks/get", {"taskId": task_id}))["status"] == "working"
        async with legacy_over_http(base_url, BOB) as bob:
            answers = {}
            for method in ("tasks/get", "tasks/result", "tasks/cancel"):
                for asked in (task_id, "no-such-task"):
                    with pytest.raises(MCPError) as refused:
                        await raw(bob, method, {"taskId": asked})
                    error = refused.value.error
                    answers[method, asked] = (error.code, error.message.replace(asked, "ID"), error.data)
            bobs = await raw(bob, "tasks/list")
        alices = await raw(alice, "tasks/list")
        after = await raw(alice, "tasks/get", {"taskId": task_id})
    assert after["status"] == "working"  # Bob changed nothing
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):  # word for word, but for the id
        assert answers[method, task_id] == answers[method, "no-such-task"]
        assert answers[method, task_id][0] == INVALID_PARAMS
    assert bobs == {"tasks": []} and [task["taskId"] for task in alices["tasks"]] == [task_id]


async def test_a_task_left_running_by_a_stopped_server_is_finished_by_the_next_one(
    settings: Settings, emulator: RunningEmulator
) -> None:
    emulator.state.config.latency = 3600
    async with legacy(settings) as client:
        task_id = (await raw(client, "tools/call", generate("a cat across a restart")))["task"]["taskId"]
    finish_tasks_now(emulator)  # the job ends while no server runs
    async with legacy(settings) as client:  # the same history, a new process as far as tasks go
        result = await raw(client, "tasks/result", {"taskId": task_id})
        done = await raw(client, "tasks/get", {"taskId": task_id})
    assert done["status"] == "completed" and result["structuredContent"]["status"] == "succeeded"
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert emulator.state.submissions == 1


async def test_a_task_created_through_one_replica_is_polled_to_its_images_through_another(
    emulator: RunningEmulator, postgres_url: str
) -> None:
    """Two stateless HTTP replicas on one PostgreSQL history: the task is the history's, not a process's."""
    emulator.state.config.latency = 3600
    settings = make_settings(emulator, auth_tokens=ALICE, database_url=postgres_url, stateless=True)
    async with http_service(settings) as replica_a, http_service(settings) as replica_b:
        async with legacy_over_http(replica_a, ALICE) as through_a:
            task_id = (await raw(through_a, "tools/call", generate("a cat on two replicas")))["task"][
                "taskId"
            ]
        async with legacy_over_http(replica_b, ALICE) as through_b:
            assert (await raw(through_b, "tasks/get", {"taskId": task_id}))["status"] == "working"
            finish_tasks_now(emulator)
            result = await raw(through_b, "tasks/result", {"taskId": task_id})
            done = await raw(through_b, "tasks/get", {"taskId": task_id})
    assert done["status"] == "completed" and result["structuredContent"]["status"] == "succeeded"
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert emulator.state.submissions == 1


@pytest.mark.subprocess
@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_over_stdio_only_a_2025_11_25_initialize_is_offered_tasks(tmp_path: Path, version: str) -> None:
    """Tasks came with 2025-11-25: a host that settles on an earlier version sees the server as before."""
    env = child_env(
        tmp_path, ACEDATACLOUD_API_TOKEN="sk-test", ACEDATACLOUD_API_BASE_URL="https://127.0.0.1:9"
    )
    initialize = initialize_request(1)
    initialize["params"]["protocolVersion"] = version
    messages = [
        initialize,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    answers, log = stdio_exchange(flux_command(), env, messages, 2, tmp_path=tmp_path, exit_within=30.0)
    assert answers[0]["result"]["protocolVersion"] == version, log[-2000:]
    offered = "tasks" in answers[0]["result"]["capabilities"]
    marked = {tool["name"] for tool in answers[1]["result"]["tools"] if "execution" in tool}
    assert (offered, marked) == ((True, set(TASK_TOOLS)) if version == "2025-11-25" else (False, set()))


@pytest.mark.parametrize("method", ["tasks/get", "tasks/result", "tasks/cancel", "tasks/list"])
async def test_a_megabyte_id_or_cursor_is_not_sent_back_whole(settings: Settings, method: str) -> None:
    huge = "x" * 1_000_000
    async with legacy(settings) as client:
        with pytest.raises(MCPError) as refused:
            await raw(client, method, {"cursor": huge} if method == "tasks/list" else {"taskId": huge})
    assert refused.value.error.code == INVALID_PARAMS and len(refused.value.error.message) < 200


async def test_a_ttl_too_short_to_poll_is_raised_to_a_floor(
    settings: Settings, emulator: RunningEmulator
) -> None:
    """A client asking for ttl 1 ms would be handed an id already unknown, for a job that is billed."""
    async with legacy(settings) as client:
        created = (await raw(client, "tools/call", generate("a cat kept briefly", ttl=1)))["task"]
        again = await raw(client, "tasks/get", {"taskId": created["taskId"]})
    assert created["ttl"] == again["ttl"] == tasks_core.MIN_TTL_SECONDS * 1000
    assert emulator.state.submissions == 1


async def test_a_tasks_get_sent_once_the_job_ended_upstream_answers_completed(
    settings: Settings, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The held tasks/get of 2025-11-25 too (`core.hold_for_news`); no bound, so no clock in the test.
    monkeypatch.setattr(tasks_core, "MAX_HOLD_SECONDS", float("inf"))
    monkeypatch.setattr(tasks_core, "HOLD_FIRSTS", float("inf"))
    emulator.state.config.latency = 3600
    async with legacy(settings) as client:
        created = await raw(client, "tools/call", generate("a lighthouse at dusk"))
        finish_tasks_now(emulator)
        polled = await raw(client, "tasks/get", {"taskId": created["task"]["taskId"]})
    assert polled["status"] == "completed"
