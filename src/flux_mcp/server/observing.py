"""Each MCP request told to the `Observer`: its duration (OpenTelemetry's mcp.server.operation.duration), and
for a job tool call, its outcome by tool and model (`flux_mcp_jobs_total`).

Every label is one of a bounded set the server itself knows (its methods, its tools, the catalogue's models,
else "other"): a client cannot grow them, and none carries a prompt, a token or a person.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult
from pydantic import ValidationError

from flux_mcp.domain.catalogue import MODELS
from flux_mcp.domain.telemetry import Observer
from flux_mcp.domain.videos import VIDEO_MODEL
from flux_mcp.server.tasks.plan import TASK_TOOLS

# The tools whose answer is a job's state (a TaskResult, or a tool error).
JOB_TOOLS = TASK_TOOLS | {"get_task"}
KNOWN_MODELS = frozenset({*MODELS, VIDEO_MODEL})
# The requests a client may send (MCP 2025-06-18 .. 2026-07-28); any other is counted as "other".
KNOWN_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
        "tasks/update",
    }
)
OTHER = "other"


def known_model(model: Any) -> str:
    """A model as a label: a catalogue model, else "other" (an upstream record may name anything)."""
    return model if isinstance(model, str) and model in KNOWN_MODELS else OTHER


def observing(observer: Observer, tools: Iterable[str]) -> ServerMiddleware[Any]:
    """Middleware timing every request for `observer`, and counting job tool calls by outcome."""
    tool_names = frozenset(tools)

    async def observe(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        started = time.perf_counter()
        method = ctx.method if ctx.method in KNOWN_METHODS else OTHER
        params = ctx.params if isinstance(ctx.params, dict) else {}
        name = params.get("name")
        tool = (
            (name if isinstance(name, str) and name in tool_names else OTHER)
            if method == "tools/call"
            else None
        )
        error_type: str | None = None
        result: HandlerResult = None
        try:
            result = await call_next(ctx)
        except MCPError as exc:
            error_type = str(exc.error.code)
            raise
        except ValidationError:
            error_type = str(INVALID_PARAMS)
            raise
        except Exception as exc:
            error_type = type(exc).__qualname__
            raise
        finally:
            if error_type is None and _is_tool_error(result):
                error_type = "tool_error"
            observer.operation(method, tool, error_type, time.perf_counter() - started)
            if tool in JOB_TOOLS and not _is_task(result):  # a task is counted when its job ends (tasks.core)
                observer.job_call(tool, *_job_outcome(result, params.get("arguments"), error_type))
        return result

    return observe


def _is_task(result: HandlerResult) -> bool:
    """An MCP task's answer: `resultType: "task"` (2026-07-28) or `{"task": …}` (2025-11-25)."""
    return isinstance(result, dict) and (result.get("resultType") == "task" or "task" in result)


def _is_tool_error(result: HandlerResult) -> bool:
    match result:
        case CallToolResult(is_error=True) | {"isError": True}:
            return True
    return False


def _job_outcome(result: HandlerResult, arguments: Any, error_type: str | None) -> tuple[str, str]:
    """(model, outcome) of a job tool's answer: the task's status, or "error" when it has none."""
    if isinstance(result, CallToolResult):
        state = result.structured_content
    else:  # the answer as the wire carries it
        state = result.get("structuredContent") if isinstance(result, dict) else None
    if isinstance(state, dict) and isinstance(state.get("status"), str):
        return known_model(state.get("model")), state["status"]
    asked = arguments.get("model") if isinstance(arguments, dict) else None
    return known_model(asked), "error"
