"""MCP Tasks as protocol 2025-11-25 has them in core (SEP-1686), for VS Code and the TypeScript SDK 1.x.

A server middleware, because these shapes are outside what the SDK checks results against: the
`capabilities.tasks` of `initialize`, `execution.taskSupport` on the job tools in `tools/list`, the
`{"task": …}` answer to a `tools/call` that carries `params.task`, and `tasks/get`, `tasks/result`,
`tasks/list`, `tasks/cancel`. Only a session that negotiated 2025-11-25 sees any of it, and only while
`FLUX_MCP_TASKS` is on; everyone else gets what they got before, byte for byte. Everything stateful
(the task, its job, who owns it, its result) is the tasks core's; this module only speaks the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND, CallToolResult, ListToolsResult

LEGACY_PROTOCOL = "2025-11-25"
RELATED_TASK = "io.modelcontextprotocol/related-task"
TASK_TOOLS = frozenset({"generate_image", "edit_image", "generate_variations", "generate_video"})
CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
EXECUTION: dict[str, Any] = {"taskSupport": "optional"}  # never "required": a plain call works as before

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
        return await _create(ctx, params)
    handler = HANDLERS.get(ctx.method)
    if handler is None:
        return await call_next(ctx)
    return await handler(ctx, params)


def _tasks_on(ctx: ServerRequestContext[Any, Any]) -> bool:
    settings = getattr(ctx.lifespan_context, "settings", None)
    return bool(getattr(settings, "tasks", False))


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


def iso(moment: datetime) -> str:
    """An ISO 8601 UTC timestamp, as the spec's examples write them."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def unknown_task(task_id: object) -> MCPError:
    """An unknown id, an expired one and another caller's one are the same answer."""
    return MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: no task {task_id!r}")


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


def _task_id(params: Mapping[str, Any]) -> str:
    task_id = params.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise MCPError(code=INVALID_PARAMS, message="taskId is required (a string)")
    return task_id


async def _create(ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
    name = params.get("name")
    if name not in TASK_TOOLS:
        raise MCPError(
            code=METHOD_NOT_FOUND,
            message=f"{name!r} does not run as a task (its execution.taskSupport is forbidden): "
            "call it without params.task",
        )
    raise NotImplementedError


async def _get(ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
    raise unknown_task(_task_id(params))


async def _result(ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
    raise unknown_task(_task_id(params))


async def _list(ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
    return {"tasks": []}


async def _cancel(ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
    raise unknown_task(_task_id(params))


HANDLERS: dict[str, Handler] = {
    "tasks/get": _get,
    "tasks/result": _result,
    "tasks/list": _list,
    "tasks/cancel": _cancel,
}
