"""MCP Tasks as protocol 2025-11-25 has them in core (SEP-1686), for VS Code and the TypeScript SDK 1.x.

A server middleware, because these shapes are outside what the SDK checks results against: the
`capabilities.tasks` of `initialize`, `execution.taskSupport` on the job tools in `tools/list`, the
`{"task": …}` answer to a `tools/call` that carries `params.task`, and `tasks/get`, `tasks/result`,
`tasks/list`, `tasks/cancel`. Only a session that negotiated 2025-11-25 sees any of it, and only while
`FLUX_MCP_TASKS` is on; everyone else gets what they got before, byte for byte. Everything stateful
(the task, its job, who owns it, its result) is the tasks core's; this module only speaks the wire.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, CallToolResult, ListToolsResult
from pydantic import BaseModel

from flux_mcp.history.protocol_tasks import CANCELLED, COMPLETED
from flux_mcp.server.caller import Caller, caller_of_request
from flux_mcp.server.render import error_result
from flux_mcp.server.state import AppState
from flux_mcp.server.tasks.core import (
    CANCELLED_MESSAGE,
    TaskBoard,
    TaskState,
    UnknownTaskError,
    iso_time,
    shown_id,
)
from flux_mcp.server.tasks.plan import TASK_TOOLS, TaskPlan, planning_task

LEGACY_PROTOCOL = "2025-11-25"
RELATED_TASK = "io.modelcontextprotocol/related-task"
IMMEDIATE_RESPONSE = "io.modelcontextprotocol/model-immediate-response"  # what a host may tell its model
LIST_PAGE = 50
MAX_OFFSET = 2**62  # below any integer the history's backends can take: a cursor past it is not ours
MAX_TTL_MS = 10**15  # any ttl past the server's own bound means that bound; this one keeps it a float
CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
EXECUTION: dict[str, Any] = {"taskSupport": "optional"}  # never "required": a plain call works as before

T = TypeVar("T")
Handler = Callable[[ServerRequestContext[Any, Any], Mapping[str, Any]], Awaitable[HandlerResult]]


async def legacy_tasks(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """The 2025-11-25 Tasks shapes for the sessions that speak that protocol; nothing for any other."""
    if not _tasks_on(ctx):
        return await call_next(ctx)
    if ctx.method == "initialize":
        return _with_capability(await call_next(ctx))
    if ctx.protocol_version != LEGACY_PROTOCOL:
        return await call_next(ctx)
    params: Mapping[str, Any] = ctx.params or {}
    if ctx.method == "tools/list":
        return _with_task_support(await call_next(ctx))
    if ctx.method == "tools/call" and params.get("task") is not None:
        return await _create(ctx, params, call_next)
    handler = HANDLERS.get(ctx.method)
    if handler is None:
        return await call_next(ctx)
    return await handler(ctx, params)


def _tasks_on(ctx: ServerRequestContext[Any, Any]) -> bool:
    """FLUX_MCP_TASKS: the server has a task board only when it is on."""
    return isinstance(ctx.lifespan_context, AppState) and ctx.lifespan_context.tasks is not None


# --- what is published --------------------------------------------------------------------------


def _with_capability(result: HandlerResult) -> HandlerResult:
    """`capabilities.tasks` in the answer to an initialize that settled on 2025-11-25 (and no other)."""
    if not isinstance(result, dict) or result.get("protocolVersion") != LEGACY_PROTOCOL:
        return result
    capabilities = result.get("capabilities")
    if not isinstance(capabilities, dict):
        return result
    return {**result, "capabilities": {**capabilities, "tasks": CAPABILITY}}


def _with_task_support(result: HandlerResult) -> HandlerResult:
    if isinstance(result, ListToolsResult):
        result = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return result
    tools = [{**tool, "execution": EXECUTION} if _is_task_tool(tool) else tool for tool in result["tools"]]
    return {**result, "tools": tools}


def _is_task_tool(tool: object) -> bool:
    return isinstance(tool, dict) and tool.get("name") in TASK_TOOLS


# --- the wire shapes ----------------------------------------------------------------------------


def unknown_task(task_id: object) -> MCPError:
    """An unknown id, an expired one and another caller's one are the same answer."""
    return MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: no task {shown_id(task_id)}")


def related(result: CallToolResult | dict[str, Any], task_id: str) -> dict[str, Any]:
    """The tool's result as `tasks/result` returns it: with the related-task key in its `_meta`."""
    wire = (
        result.model_dump(by_alias=True, exclude_none=True, mode="json")
        if isinstance(result, CallToolResult)
        else dict(result)
    )
    meta = dict(wire.get("_meta") or {})
    meta[RELATED_TASK] = {"taskId": task_id}
    return {**wire, "_meta": meta}


def legacy_task(state: TaskState) -> dict[str, Any]:
    """A task as 2025-11-25 names its fields (`ttl`, `pollInterval`, in milliseconds)."""
    shown: dict[str, Any] = {"taskId": state.task_id, "status": state.status}
    if state.status_message:
        shown["statusMessage"] = state.status_message
    return shown | {
        "createdAt": iso_time(state.created_at),
        "lastUpdatedAt": iso_time(state.last_updated_at),
        "ttl": state.ttl_ms,
        "pollInterval": state.poll_interval_ms,
    }


def _task_id(params: Mapping[str, Any]) -> str:
    task_id = params.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise MCPError(code=INVALID_PARAMS, message="taskId is required (a string)")
    return task_id


def _ttl_seconds(params: Mapping[str, Any]) -> float | None:
    task = params.get("task")
    if not isinstance(task, Mapping):
        raise MCPError(
            code=INVALID_PARAMS, message='params.task must be an object, e.g. {} or {"ttl": 60000}'
        )
    ttl = task.get("ttl")
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        raise MCPError(
            code=INVALID_PARAMS, message="params.task.ttl must be a positive number of milliseconds"
        )
    return float(min(ttl, MAX_TTL_MS)) / 1000  # longer than the server keeps a task: as long as it does


def _board(ctx: ServerRequestContext[Any, Any]) -> tuple[TaskBoard, Caller]:
    """The server's tasks and who this request is from (asked on every request: auth is per request)."""
    state: AppState = ctx.lifespan_context
    if state.tasks is None:  # not reached: `legacy_tasks` passes such requests on
        raise MCPError(code=METHOD_NOT_FOUND, message="Method not found", data=ctx.method)
    return state.tasks, caller_of_request(ctx)


# --- the requests -------------------------------------------------------------------------------


async def _create(
    ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any], call_next: CallNext
) -> HandlerResult:
    """The tool runs as always (arguments checked, inputs uploaded); where it would wait for its job, it
    starts a task, and the answer is that task. A call refused before it had a task is a protocol error
    carrying the tool's own words: the client asked for a task and none was created."""
    name = params.get("name")
    if not isinstance(name, str) or name not in TASK_TOOLS:
        raise MCPError(
            code=METHOD_NOT_FOUND,
            message=f"{name!r} does not run as a task (its execution.taskSupport is forbidden): "
            "call it without params.task",
        )
    plan = TaskPlan(tool=str(name), ttl_seconds=_ttl_seconds(params))
    with planning_task(plan):
        answer = await call_next(ctx)
    if plan.started is None:
        wire = (
            answer.model_dump(by_alias=True, exclude_none=True, mode="json")
            if isinstance(answer, BaseModel)
            else answer
        )
        if not isinstance(wire, dict) or not wire.get("isError"):
            return answer  # done without a task (nothing to wait for): the tool's answer, as a plain call's
        raise MCPError(code=INVALID_PARAMS, message=_text_of(wire) or f"{name} was refused")
    task = plan.started
    return {
        "task": legacy_task(task),
        "_meta": {
            IMMEDIATE_RESPONSE: f"{name} runs as task {task.task_id}; its result comes when it is done."
        },
    }


async def _get(ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
    board, caller = _board(ctx)
    task_id = _task_id(params)
    return legacy_task(await _known(board.get(caller, task_id, hold=True), task_id))


async def _result(ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
    """Blocks until the task has ended; then what the tool call would have returned, tagged with the task."""
    board, caller = _board(ctx)
    task_id = _task_id(params)
    state = await _known(board.wait(caller, task_id), task_id)
    if state.status == COMPLETED:
        return related(await _known(board.result(caller, task_id), task_id), task_id)
    if state.status == CANCELLED:  # the tool's answer to a call whose waiting was stopped
        return related(error_result(state.status_message or CANCELLED_MESSAGE), task_id)
    raise MCPError(code=INTERNAL_ERROR, message=state.status_message or f"task {task_id} failed")


async def _list(ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
    """The caller's own tasks, newest first, a page at a time (the cursor is opaque to clients)."""
    board, caller = _board(ctx)
    offset = _offset(params.get("cursor"))
    page = await board.list(caller, limit=LIST_PAGE + 1, offset=offset)
    listed: dict[str, Any] = {"tasks": [legacy_task(state) for state in page[:LIST_PAGE]]}
    if len(page) > LIST_PAGE:
        listed["nextCursor"] = _cursor(offset + LIST_PAGE)
    return listed


async def _cancel(ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
    """Cancelled at once; the upstream job cannot be stopped (it may be billed, its images are kept)."""
    board, caller = _board(ctx)
    task_id = _task_id(params)
    current = await _known(board.get(caller, task_id), task_id)
    if current.terminal:
        raise MCPError(
            code=INVALID_PARAMS, message=f"Cannot cancel task {task_id!r}: it is already {current.status}"
        )
    return legacy_task(await _known(board.cancel(caller, task_id), task_id))


async def _known(lookup: Awaitable[T], task_id: str) -> T:
    try:
        return await lookup
    except UnknownTaskError:
        raise unknown_task(task_id) from None


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"tasks:{offset}".encode()).decode()


def _offset(cursor: object) -> int:
    if cursor is None:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(str(cursor).encode()).decode().partition(":")
        offset = int(number) if kind == "tasks" and isinstance(cursor, str) else -1
    except (ValueError, UnicodeDecodeError):
        offset = -1
    if not 0 <= offset <= MAX_OFFSET:
        raise MCPError(code=INVALID_PARAMS, message=f"Invalid cursor {shown_id(cursor)} for tasks/list")
    return offset


def _text_of(answer: object) -> str:
    content = answer.get("content") if isinstance(answer, dict) else None
    texts = [block.get("text") for block in content or [] if isinstance(block, dict)]
    return "\n".join(text for text in texts if isinstance(text, str))


HANDLERS: dict[str, Handler] = {
    "tasks/get": _get,
    "tasks/result": _result,
    "tasks/list": _list,
    "tasks/cancel": _cancel,
}
