"""MCP Tasks (2026-07-28, SEP-2663) from real clients: FastMCP 4 with fastmcp-tasks, and pydantic-ai's
`use_task=True` on it, over stdio and streamable HTTP.

`call_tool_task` returns as soon as the server answers with the task, while the job still runs upstream;
`wait()`/`result()` poll tasks/get to the images, `cancel()` ends the task. These need fastmcp-tasks
(`pip install -e ".[test,frameworks]"`); without it they are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from flux_mcp.emulator import RunningEmulator
from tests.support import finish_tasks_now
from tests.support.frameworks import Endpoint, Stdio, http_endpoint, require_framework, stdio_endpoint

pytestmark = [pytest.mark.anyio, pytest.mark.frameworks]


@pytest.fixture(params=[pytest.param("stdio", marks=pytest.mark.subprocess), "http"])
async def endpoint(
    request: pytest.FixtureRequest, emulator: RunningEmulator, tmp_path: Path
) -> AsyncIterator[Endpoint]:
    require_framework("fastmcp_tasks", "fastmcp-tasks")
    if request.param == "stdio":
        yield stdio_endpoint(emulator, tmp_path)
        return
    async with http_endpoint(emulator) as http:
        yield http


@asynccontextmanager
async def fastmcp_client(endpoint: Endpoint) -> AsyncIterator[Any]:
    require_framework("fastmcp_tasks", "fastmcp-tasks")
    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport, StreamableHttpTransport

    if isinstance(endpoint, Stdio):
        transport: Any = StdioTransport(endpoint.command, endpoint.args, env=endpoint.env)
    else:
        transport = StreamableHttpTransport(endpoint.url, headers=endpoint.headers)
    async with Client(transport) as client:
        yield client


async def test_call_tool_task_returns_at_once_and_wait_and_result_give_the_images(
    endpoint: Endpoint, emulator: RunningEmulator
) -> None:
    from fastmcp_tasks import call_tool_task

    emulator.state.config.latency = 600.0  # the job runs until the test finishes it
    async with fastmcp_client(endpoint) as client:
        task = await call_tool_task(client, "generate_image", {"prompt": "a red fox", "count": 2})
        assert task.create_result.status == "working" and emulator.state.accepted == 1
        assert (await task.status()).status == "working"
        finish_tasks_now(emulator)
        ended = await task.wait(timeout=60)
        assert ended.status == "completed" and ended.result is not None
        result = await task.result()
    assert not result.is_error
    assert result.structured_content is not None and result.structured_content["status"] == "succeeded"
    assert len([block for block in result.content if block.type == "image"]) == 2
    if isinstance(endpoint, Stdio):  # saved on the server's disk (over HTTP the server does not say where)
        assert all(image["path"] for image in result.structured_content["images"])
    assert emulator.state.submissions == 1


async def test_cancel_ends_the_task(endpoint: Endpoint, emulator: RunningEmulator) -> None:
    from fastmcp_tasks import call_tool_task

    emulator.state.config.latency = 600.0
    async with fastmcp_client(endpoint) as client:
        task = await call_tool_task(client, "generate_image", {"prompt": "a blue fox"})
        await task.cancel()
        cancelled = await task.status()
    assert cancelled.status == "cancelled" and "billed" in (cancelled.status_message or "")


async def test_a_plain_fastmcp_call_is_driven_through_the_task(
    endpoint: Endpoint, emulator: RunningEmulator
) -> None:
    """fastmcp-tasks declares the extension on every Client: call_tool polls the task to the images."""
    async with fastmcp_client(endpoint) as client:
        result = await client.call_tool("generate_image", {"prompt": "a green fox"})
    assert result.structured_content is not None and result.structured_content["status"] == "succeeded"


async def test_pydantic_ai_use_task_gets_the_images(endpoint: Endpoint, emulator: RunningEmulator) -> None:
    require_framework("fastmcp_tasks", "pydantic-ai-slim[mcp-tasks]")
    require_framework("pydantic_ai.mcp", "pydantic-ai-slim[mcp-tasks]")
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai.mcp import MCPToolset

    if isinstance(endpoint, Stdio):
        toolset = MCPToolset(StdioTransport(endpoint.command, endpoint.args, env=endpoint.env))
    else:
        toolset = MCPToolset(endpoint.url, headers=endpoint.headers)
    try:
        async with toolset:
            shown = await toolset.direct_call_tool("generate_image", {"prompt": "a fox"}, use_task=True)
    finally:
        if isinstance(endpoint, Stdio):  # fastmcp keeps a stdio server alive otherwise
            await toolset.client.transport.disconnect()
    assert "Generated 1 image" in str(shown)
    assert emulator.state.submissions == 1
