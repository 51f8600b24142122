"""The MCP surface: tools, their schemas and annotations, and the mapping of errors to tool results.

`build_server(settings)` makes a fresh `MCPServer`; nothing here is global, so tests build as many
servers as they like. The tools are thin: arguments are validated by the models (before any
upstream call), the work is done by `tasks.ImageJobs`, and every failure becomes a tool error
an assistant can act on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError

from flux_mcp import __version__
from flux_mcp.client import FluxClient, FluxError, ResponseLostError, ServerError, build_http_client
from flux_mcp.models import (
    TOOL_ARGUMENTS,
    CountArg,
    EditImageArgs,
    EditModelArg,
    GenerateImageArgs,
    GenerateModelArg,
    ImageUrlArg,
    Prompt,
    SizeArg,
    TaskBatchResult,
    TaskIdArg,
    TaskIdsArg,
    TaskResult,
    TaskStatus,
    WaitSecondsArg,
    explain_validation_error,
)
from flux_mcp.settings import Settings
from flux_mcp.tasks import ImageJobs, PollSchedule

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
Generate and edit images with Flux models. generate_image and edit_image wait on the server for \
the result and return the finished images. A job takes 10 s to 2 minutes: if it is not done within \
the wait limit the result has status "pending" and a task_id; call get_task with that task_id to \
keep waiting. Never resubmit a prompt just because it is pending: that bills the user twice."""

AnyContext = Context[Any, Any]
R = TypeVar("R", bound=BaseModel)


@dataclass
class AppState:
    settings: Settings
    jobs: ImageJobs


def build_server(settings: Settings) -> MCPServer[AppState]:
    """A complete flux-mcp server for these settings."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with build_http_client(settings) as http:
            gate = anyio.CapacityLimiter(settings.max_concurrency)
            client = FluxClient.from_settings(http, settings, gate=gate)
            schedule = PollSchedule(first=settings.poll_min_seconds, cap=settings.poll_max_seconds)
            yield AppState(settings, ImageJobs(client, max_wait=settings.wait_seconds, schedule=schedule))

    server: MCPServer[AppState] = MCPServer(
        "flux-mcp",
        title="Flux images",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        log_level=settings.log_level,
        middleware=[check_tool_arguments],
    )
    _add_tools(server)
    return server


def _add_tools(server: MCPServer[AppState]) -> None:
    @server.tool(
        name="generate_image",
        title="Generate images",
        annotations=ToolAnnotations(
            title="Generate images with Flux",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )
    async def generate_image(
        prompt: Prompt,
        ctx: AnyContext,
        model: GenerateModelArg = "flux-dev",
        size: SizeArg = None,
        count: CountArg = 1,
        wait_seconds: WaitSecondsArg = None,
    ) -> Annotated[CallToolResult, TaskResult]:
        """Generate images from a text prompt with a Flux model and return the finished images.

        Waits on the server (with progress) up to the wait limit. If the job is not done by then, the result
        has status "pending" and a task_id: call get_task with it to keep waiting. Each call is billed.
        """
        args = {"prompt": prompt, "model": model, "size": size, "count": count, "wait_seconds": wait_seconds}
        return await _run_job(ctx, "generate_image", GenerateImageArgs, args)

    @server.tool(
        name="edit_image",
        title="Edit an image",
        annotations=ToolAnnotations(
            title="Edit an image with Flux",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )
    async def edit_image(
        prompt: Prompt,
        image_url: ImageUrlArg,
        ctx: AnyContext,
        model: EditModelArg = "flux-kontext-pro",
        size: SizeArg = None,
        wait_seconds: WaitSecondsArg = None,
    ) -> Annotated[CallToolResult, TaskResult]:
        """Edit an existing image (given by a public URL) following a prompt, e.g. "make the sky stormy".

        Waits on the server like generate_image; a "pending" result means: call get_task with its task_id.
        """
        args = {"prompt": prompt, "image_url": str(image_url), "model": model, "size": size}
        return await _run_job(ctx, "edit_image", EditImageArgs, {**args, "wait_seconds": wait_seconds})

    @server.tool(
        name="get_task",
        title="Get a task",
        annotations=ToolAnnotations(
            title="Get (and wait for) a Flux task",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=True,
        ),
    )
    async def get_task(
        task_id: TaskIdArg, ctx: AnyContext, wait_seconds: WaitSecondsArg = None
    ) -> Annotated[CallToolResult, TaskResult]:
        """Get a generation task by id, waiting (with progress) for it to finish up to the wait limit.

        Use it to resume a "pending" result from generate_image or edit_image. Free: looking costs nothing.
        """
        jobs = _state(ctx).jobs
        progress = _progress_reporter(ctx)
        return await _guarded("get_task", lambda: jobs.resume(task_id, wait_seconds, progress), _task_result)

    @server.tool(
        name="get_tasks",
        title="Get several tasks",
        annotations=ToolAnnotations(
            title="Look up several Flux tasks",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=True,
        ),
    )
    async def get_tasks(task_ids: TaskIdsArg, ctx: AnyContext) -> Annotated[CallToolResult, TaskBatchResult]:
        """Look up the current state of up to 50 tasks at once, without waiting."""
        jobs = _state(ctx).jobs
        return await _guarded("get_tasks", lambda: jobs.lookup(list(task_ids)), _batch_result)


async def _run_job(
    ctx: AnyContext, tool: str, schema: type[GenerateImageArgs | EditImageArgs], arguments: dict[str, Any]
) -> CallToolResult:
    try:
        args = schema.model_validate(arguments)
    except ValidationError as exc:
        return error_result(explain_validation_error(tool, exc))
    jobs = _state(ctx).jobs
    progress = _progress_reporter(ctx)
    return await _guarded(
        tool, lambda: jobs.run(args.to_request(), args.wait_seconds, progress), _task_result
    )


async def _guarded(
    tool: str, work: Callable[[], Awaitable[R]], render: Callable[[R], CallToolResult]
) -> CallToolResult:
    try:
        return render(await work())
    except ResponseLostError as exc:
        return error_result(_maybe_billed(tool, exc.message))
    except ServerError as exc:
        message = exc.message if tool.startswith("get_") else _maybe_billed(tool, exc.message)
        return error_result(message)
    except FluxError as exc:
        return error_result(exc.message)


def _maybe_billed(tool: str, message: str) -> str:
    if tool.startswith("get_"):
        return message
    return (
        f"{message} The request may have reached the Flux API, so it was not resubmitted (that could "
        "bill twice). Wait a minute before trying again; if your AceDataCloud console shows the task, "
        "use get_task with its id instead."
    )


def _task_result(result: TaskResult) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=summarize(result))],
        structured_content=result.model_dump(mode="json"),
        is_error=result.status is TaskStatus.FAILED,
    )


def _batch_result(batch: TaskBatchResult) -> CallToolResult:
    lines = [summarize(task) for task in batch.tasks]
    if batch.missing:
        lines.append("Unknown task ids: " + ", ".join(batch.missing))
    return CallToolResult(
        content=[TextContent(type="text", text="\n\n".join(lines) or "No tasks found.")],
        structured_content=batch.model_dump(mode="json"),
    )


def summarize(result: TaskResult) -> str:
    """A short text an assistant can read out: status, task id, image URLs, next step."""
    about = " ".join(part for part in (result.model, f"({result.size})" if result.size else "") if part)
    if result.status is TaskStatus.SUCCEEDED:
        count = len(result.images)
        plural = "s" if count != 1 else ""
        head = f"Generated {count} image{plural} with {about} in {result.elapsed_seconds:.1f} s"
        lines = [f"{head}. task_id: {result.task_id}"]
        for image in result.images:
            seed = f" (seed {image.seed})" if image.seed is not None else ""
            lines.append(f"{image.index + 1}. {image.url}{seed}")
        lines.append("Image URLs expire; download the ones you want to keep.")
        return "\n".join(lines)
    if result.status is TaskStatus.PENDING:
        return (
            f"Task {result.task_id} is still running after {result.elapsed_seconds:.0f} s. {result.next_step}"
        )
    error = result.error
    reason = f"{error.message} ({error.code})" if error else "no reason given"
    return f"Task {result.task_id} failed: {reason}. You may retry with a changed prompt or another model."


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _state(ctx: AnyContext) -> AppState:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    return state


def _progress_reporter(ctx: AnyContext) -> Callable[[float, str], Awaitable[None]]:
    async def report(elapsed: float, message: str) -> None:
        try:
            await ctx.report_progress(round(elapsed, 1), None, message)
        except Exception as exc:  # a client that went away must not fail the job
            logger.debug("progress notification not delivered: %s", exc)

    return report


async def check_tool_arguments(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Reject bad tool arguments with a message naming each problem, before the tool runs.

    The SDK would reject them too, but with pydantic's raw report; this gives the same verdict with
    what would be accepted, and it runs before anything can reach the upstream.
    """
    params = ctx.params if ctx.method == "tools/call" else None
    if isinstance(params, dict) and params.get("name") in TOOL_ARGUMENTS:
        tool = str(params["name"])
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return error_result(f"Invalid arguments for {tool}: arguments must be a JSON object")
        try:
            TOOL_ARGUMENTS[tool].model_validate(arguments)
        except ValidationError as exc:
            return error_result(explain_validation_error(tool, exc))
    return await call_next(ctx)
