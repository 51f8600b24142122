"""A bare SEP-2663 client for tests: declare `io.modelcontextprotocol/tasks`, see a task answer as it is, and
send tasks/get, tasks/cancel and any other method raw (real clients are in tests/clients/test_tasks_*.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx2
import mcp_types
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult
from pydantic import ConfigDict, Field

TASKS = "io.modelcontextprotocol/tasks"


class CreatedTask(mcp_types.Result):
    """A tools/call answered with a task, every field kept (read from the camelCase wire)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    result_type: Literal["task"] = Field(alias="resultType")
    task_id: str = Field(alias="taskId")


class AnyResult(mcp_types.Result):
    model_config = ConfigDict(extra="allow")


class TaskParams(mcp_types.RequestParams):
    model_config = ConfigDict(populate_by_name=True, extra="allow")
    task_id: str = Field(serialization_alias="taskId")


class TaskRequest(mcp_types.Request[TaskParams, str]):
    method: str
    params: TaskParams


class RawTasks(ClientExtension):
    """Declares the extension; a task answer is handed back as is (call with `allow_claimed=True`)."""

    identifier = TASKS

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=self._unresolved)]

    async def _unresolved(self, created: CreatedTask, ctx: ClaimContext) -> CallToolResult:
        raise AssertionError("tests read the task itself: session.call_tool(..., allow_claimed=True)")


async def call_as_task(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """tools/call as a SEP-2663 client sends it: the answer as its wire dict (a task, or a CallToolResult)."""
    answer = await client.session.call_tool(tool, arguments, allow_claimed=True)
    return answer.model_dump(by_alias=True, exclude_none=True, mode="json")


async def task_request(client: Client, method: str, task_id: str) -> dict[str, Any]:
    """tasks/get, tasks/cancel (or any method) about one task id, its answer as the wire dict."""
    request = TaskRequest(method=method, params=TaskParams(task_id=task_id))
    answer = await client.session.send_request(request, AnyResult)  # type: ignore[arg-type]
    return answer.model_dump(by_alias=True, exclude_none=True, mode="json")


@asynccontextmanager
async def tasks_http_client(base_url: str, token: str | None) -> AsyncIterator[Client]:
    """A SEP-2663 client (RawTasks) over streamable HTTP, with a bearer token."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(
            streamable_http_client(f"{base_url}/mcp", http_client=http), extensions=[RawTasks()]
        ) as client,
    ):
        yield client
