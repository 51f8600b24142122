"""MCP Tasks at 2026-07-28: the extension `io.modelcontextprotocol/tasks` (SEP-2663) over `TaskBoard`.

A client declares the extension in each request's `_meta["io.modelcontextprotocol/clientCapabilities"]
.extensions` (checked here: the SDK does not). A job tool call from such a client is answered with the task
(`resultType: "task"`); every other call, and every call of a client that did not declare it, is answered as
always. `tasks/get` carries the `CallToolResult` as `result` once the task is `completed` (a tool error is a
completed task too), `tasks/cancel` acknowledges with an empty result, `tasks/update` has nothing to update
(no task of ours asks for input). An unknown, expired or someone else's id is -32602; tasks/* from a client
that did not declare the extension is -32021; `tasks/result` is not a method here (-32601). Progress goes in
`statusMessage`, not in notifications. A `tasks/get` on a working task is answered when there is news
(the images saved, or the poller's next look), within a few seconds (`core.hold_for_news`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    INVALID_PARAMS,
    CallToolRequestParams,
    RequestParams,
)
from mcp_types.jsonrpc import MISSING_REQUIRED_CLIENT_CAPABILITY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from flux_mcp.history.protocol_tasks import COMPLETED
from flux_mcp.server.caller import Caller, caller_of_request
from flux_mcp.server.state import AppState
from flux_mcp.server.tasks.core import TaskBoard, TaskState, UnknownTaskError
from flux_mcp.server.tasks.plan import TASK_TOOLS, TaskPlan, planning_task

EXTENSION = "io.modelcontextprotocol/tasks"
MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)
T = TypeVar("T")


class TaskIdParams(RequestParams):
    task_id: str = Field(alias="taskId", min_length=1)


class UpdateTaskParams(TaskIdParams):
    input_responses: dict[str, Any] | None = Field(default=None, alias="inputResponses")


def declared_extensions(ctx: ServerRequestContext[Any, Any]) -> Mapping[str, Any]:
    """The extensions this request's client declared in its `_meta` (2026-07-28 declares per request)."""
    meta = (ctx.params or {}).get("_meta")
    capabilities = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, Mapping) else None
    extensions = capabilities.get("extensions") if isinstance(capabilities, Mapping) else None
    return extensions if isinstance(extensions, Mapping) else {}


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    return ctx.protocol_version in MODERN and EXTENSION in declared_extensions(ctx)


class TasksExtension(Extension):
    """`io.modelcontextprotocol/tasks`: job tool calls become tasks for the clients that declare it."""

    identifier = EXTENSION

    def methods(self) -> Sequence[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get, protocol_versions=MODERN),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, protocol_versions=MODERN),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, protocol_versions=MODERN),
        ]

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        state: AppState = ctx.lifespan_context
        if state.tasks is None or params.name not in TASK_TOOLS or not declares_tasks(ctx):
            return await call_next(ctx)
        with planning_task(TaskPlan(params.name)) as plan:
            answer = await call_next(ctx)
        if plan.started is None:  # refused, or ended before it had a task: the tool's own answer
            return answer
        return {"resultType": "task", **plan.started.wire()}

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        board, caller = _board_and_caller(ctx)
        state = await _known(board.get(caller, params.task_id, hold=True))
        return await detailed(board, caller, state)

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        board, caller = _board_and_caller(ctx)
        await _known(board.cancel(caller, params.task_id))
        return {"resultType": "complete"}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> HandlerResult:
        board, caller = _board_and_caller(ctx)
        await _known(board.get(caller, params.task_id))  # nothing of ours waits for input: acknowledged
        return {"resultType": "complete"}


async def detailed(board: TaskBoard, caller: Caller, state: TaskState) -> dict[str, Any]:
    """tasks/get's answer: the task, with its `result` once completed."""
    shown: dict[str, Any] = {"resultType": "complete", **state.wire()}
    if state.status == COMPLETED:
        result = await board.result(caller, state.task_id)
        shown["result"] = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    return shown


def _board_and_caller(ctx: ServerRequestContext[Any, Any]) -> tuple[TaskBoard, Caller]:
    """The board and the caller of a tasks/* request, refused unless its client declared the extension."""
    if not declares_tasks(ctx):
        raise MCPError(
            MISSING_REQUIRED_CLIENT_CAPABILITY,
            f"Missing required client capability: the {EXTENSION} extension",
            {"requiredCapabilities": {"extensions": {EXTENSION: {}}}},
        )
    state: AppState = ctx.lifespan_context
    if state.tasks is None:  # not served then: the extension is not registered with FLUX_MCP_TASKS=false
        raise MCPError(INVALID_PARAMS, "MCP Tasks are turned off on this server (FLUX_MCP_TASKS=false)")
    return state.tasks, caller_of_request(ctx)


async def _known(lookup: Awaitable[T]) -> T:
    """The lookup's answer; an unknown task id is invalid params (-32602)."""
    try:
        return await lookup
    except UnknownTaskError as exc:
        raise MCPError(INVALID_PARAMS, str(exc)) from None
