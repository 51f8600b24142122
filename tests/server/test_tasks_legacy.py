"""MCP Tasks as protocol 2025-11-25 has them (SEP-1686), on the wire, with the SDK client in legacy mode.

The Python SDK does not speak these shapes (its client checks a `tools/call` answer as a `CallToolResult`),
so the requests go out raw (`raw`) and the answers are read as JSON, as VS Code and the TypeScript SDK
read them (tests/clients/test_typescript_tasks.py drives that real client).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from flux_mcp.server.build import build_server
from flux_mcp.server.tasks_legacy import CAPABILITY, TASK_TOOLS

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
