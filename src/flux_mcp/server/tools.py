"""The tools: what each one is (annotations, description), its arguments model, and what it returns.

Each tool's parameters are the fields of its model in `arguments.py` (`TOOL_ARGUMENTS`), validated once
per call before anything else runs (`toolkit.model_tool`). The tools are thin: jobs run through
`job_calls`, results are shown by `delivery`, and every failure becomes a tool error an assistant can
act on. The two middlewares here shape what is published (`publish_portable_schemas`) and what a
call that is not even a JSON object is told (`refuse_non_object_arguments`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.resolve import Resolve
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ListRootsResult, ListToolsResult, TextContent, ToolAnnotations
from pydantic import ValidationError

from flux_mcp.domain.arguments import (
    TOOL_ARGUMENTS,
    EditImageArgs,
    GenerateImageArgs,
    GenerateVariationsArgs,
    GetCreditsArgs,
    GetTaskArgs,
    GetTasksArgs,
    ListTasksArgs,
    VariationArgs,
    explain_validation_error,
)
from flux_mcp.domain.errors import FluxError, HistoryUnavailableError
from flux_mcp.domain.results import CreditsResult, HistoryList
from flux_mcp.domain.tasks import TaskBatchResult, TaskResult
from flux_mcp.domain.videos import GenerateVideoArgs
from flux_mcp.server.caller import CallContext, caller_of
from flux_mcp.server.delivery import answer, answer_batch
from flux_mcp.server.gallery import UI_META
from flux_mcp.server.job_calls import (
    progress_reporter,
    run_job,
    run_video_job,
    tool_result_of,
    variation_arguments,
)
from flux_mcp.server.render import FINISHED, error_result, history_item, history_line
from flux_mcp.server.roots import client_roots, keyframe_roots, root_folders
from flux_mcp.server.schemas import portable_schema
from flux_mcp.server.toolkit import BILLED, LOOKUP, described, described_with_timeout_advice, model_tool
from flux_mcp.upstream.credits import credits_text, summarize_credits

logger = logging.getLogger(__name__)


def job_tools() -> list[Tool]:
    """The tools that submit (billed) work, and the balance."""
    return [
        model_tool(
            "generate_image",
            generate_image,
            meta=UI_META,
            title="Generate images",
            annotations=BILLED.model_copy(update={"title": "Generate images with Flux"}),
        ),
        model_tool(
            "edit_image",
            edit_image,
            meta=UI_META,
            title="Edit an image",
            annotations=BILLED.model_copy(update={"title": "Edit an image with Flux"}),
        ),
        model_tool(
            "generate_variations",
            generate_variations,
            meta=UI_META,
            title="Variations of a result",
            annotations=BILLED.model_copy(update={"title": "More images like an earlier Flux result"}),
        ),
        model_tool(
            "generate_video",
            generate_video,
            meta=UI_META,
            title="Generate a video",
            annotations=BILLED.model_copy(update={"title": "Generate a video with Flux (flux-3)"}),
        ),
        model_tool(
            "get_credits",
            get_credits,
            meta=UI_META,
            title="Credits left",
            annotations=LOOKUP.model_copy(update={"title": "AceDataCloud credits left"}),
        ),
    ]


def task_tools() -> list[Tool]:
    """The tools that look at tasks: free, and never submit anything."""
    return [
        model_tool(
            "get_task",
            get_task,
            meta=UI_META,
            title="Get a task",
            annotations=LOOKUP.model_copy(update={"title": "Get (and wait for) a Flux task"}),
        ),
        model_tool(
            "get_tasks",
            get_tasks,
            title="Get several tasks",
            annotations=LOOKUP.model_copy(update={"title": "Look up several Flux tasks"}),
        ),
        model_tool(
            "list_tasks",
            list_tasks,
            meta=UI_META,
            title="List recent generations",
            annotations=ToolAnnotations(
                title="List recent Flux generations",
                read_only_hint=True,
                destructive_hint=False,
                idempotent_hint=True,
                open_world_hint=False,
            ),
        ),
    ]


# --- the job tools ------------------------------------------------------------------------------


@described_with_timeout_advice
async def generate_image(args: GenerateImageArgs, ctx: CallContext) -> Annotated[CallToolResult, TaskResult]:
    """Generate images from a text prompt with a Flux model and return the finished images.

    Waits on the server (with progress) up to the wait limit and returns previews, saved file paths and
    URLs. If the job is not done by then, the result has status "pending" and a task_id: call get_task
    with it to keep waiting. Each call is billed, except that a call identical to an earlier one whose
    result was never received continues that task.
    """
    return await run_job(ctx, "generate_image", args)


@described_with_timeout_advice
async def edit_image(
    args: EditImageArgs,
    ctx: CallContext,
    roots: Annotated[ListRootsResult | None, Resolve(client_roots)],
) -> Annotated[CallToolResult, TaskResult]:
    """Edit an existing image following a prompt, e.g. "make the sky stormy".

    image_url is a public http(s) URL, flux://images/{task_id}/{index} from an earlier result, a local
    file (e.g. ~/Pictures/cat.jpg or C:\\Users\\you\\cat.jpg; stdio only) or a data:image/...;base64 URL.
    Files are checked, then uploaded to AceDataCloud once. Waits on the server like generate_image; a
    "pending" result means: call get_task with its task_id.
    """
    return await run_job(ctx, "edit_image", args, root_folders(roots))


@described
async def generate_variations(
    args: GenerateVariationsArgs, ctx: CallContext
) -> Annotated[CallToolResult, TaskResult]:
    """New images from an earlier result's prompt, model and size (new seeds), e.g. "more like that one".

    prompt_suffix adds words to steer them ("at night"). Waits and returns like generate_image; the new
    task is linked to its source in the history. Each call is billed.
    """
    caller = caller_of(ctx)
    try:
        arguments = await variation_arguments(caller, args.task_id, args.count, args.prompt_suffix)
    except ValueError as exc:
        return error_result(str(exc))
    arguments.update(wait_seconds=args.wait_seconds, preview=args.preview)
    try:  # the earlier task's prompt, model and size, as generate_image would take them
        variation = VariationArgs.model_validate(arguments)
    except ValidationError as exc:
        return error_result(explain_validation_error("generate_variations", exc))
    return await run_job(ctx, "generate_variations", variation)


@described_with_timeout_advice
async def generate_video(
    args: GenerateVideoArgs,
    ctx: CallContext,
    roots: Annotated[ListRootsResult | None, Resolve(keyframe_roots)],
) -> Annotated[CallToolResult, TaskResult]:
    """Make a short video (MP4, flux-3, beta upstream) and return it: URL, saved file, a poster frame.

    mode t2v: from the prompt; i2v: animate keyframes (e.g. ["flux://images/{task_id}/0"] to animate
    an earlier picture); v2v: transform start_video; draft_enhance: the full version of a draft=true
    result (its draft_task_id). Video jobs take minutes: the call waits with progress up to the wait
    limit; a "pending" result means: call get_task with its task_id. Each call is billed.
    """
    return await run_video_job(ctx, args, root_folders(roots))


@described
async def get_credits(args: GetCreditsArgs, ctx: CallContext) -> Annotated[CallToolResult, CreditsResult]:
    """The AceDataCloud balance: credits left and used on the Flux application (others briefly). Free."""
    caller = caller_of(ctx)
    try:
        applications = await caller.platform().applications()
    except FluxError as exc:
        return error_result(f"Could not read the balance: {exc.message}")
    credits = summarize_credits(applications)
    try:
        credits.budget = await caller.jobs.budget_status()
    except HistoryUnavailableError as exc:
        logger.warning("get_credits without the budget: %s", exc.reason)
    return CallToolResult(
        content=[TextContent(type="text", text=credits_text(credits))],
        structured_content=credits.model_dump(mode="json"),
    )


# --- the task tools -----------------------------------------------------------------------------


@described
async def get_task(args: GetTaskArgs, ctx: CallContext) -> Annotated[CallToolResult, TaskResult]:
    """Get a generation task by id, waiting (with progress) for it to finish up to the wait limit.

    Use it to resume a "pending" result from generate_image or edit_image. Looking costs nothing.
    """
    caller = caller_of(ctx)
    progress = progress_reporter(ctx)
    work = lambda: caller.jobs.resume(args.task_id, args.wait_seconds, progress, args.preview)  # noqa: E731
    return await tool_result_of("get_task", work, lambda finished: answer(caller, finished, ctx))


@described
async def get_tasks(args: GetTasksArgs, ctx: CallContext) -> Annotated[CallToolResult, TaskBatchResult]:
    """Look up the current state of up to 50 tasks at once, without waiting."""
    caller = caller_of(ctx)
    work = lambda: caller.jobs.lookup(list(args.task_ids))  # noqa: E731
    return await tool_result_of("get_tasks", work, lambda batch: answer_batch(caller, batch))


@described
async def list_tasks(args: ListTasksArgs, ctx: CallContext) -> Annotated[CallToolResult, HistoryList]:
    """List this server's recent generations from its local history: prompt, status, task id, files, URLs.

    Use it to find an earlier image again (its task_id works with get_task, its images with edit_image).
    """
    caller = caller_of(ctx)
    entries = await caller.state.history.list_tasks(args.limit, args.status, args.query, owner=caller.owner)
    listing = HistoryList(tasks=[history_item(entry) for entry in entries])
    lines = [history_line(item) for item in listing.tasks] or ["No generations recorded yet."]
    finished = [entry.row_id for entry in entries if entry.status in FINISHED]
    await caller.state.history.mark_delivered(caller.owner, row_ids=finished)
    return CallToolResult(
        content=[TextContent(type="text", text="\n".join(lines))],
        structured_content=listing.model_dump(mode="json"),
    )


# --- what is published, and calls that are not calls ---------------------------------------------


async def publish_portable_schemas(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Every tool's input schema as every framework and provider accepts it (see `schemas`)."""
    result = await call_next(ctx)
    if ctx.method != "tools/list":
        return result
    if isinstance(result, ListToolsResult):
        result = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return result
    tools = [
        {**tool, "inputSchema": portable_schema(tool["inputSchema"])}
        if isinstance(tool, dict) and isinstance(tool.get("inputSchema"), dict)
        else tool
        for tool in result["tools"]
    ]
    return {**result, "tools": tools}


async def refuse_non_object_arguments(
    ctx: ServerRequestContext[Any, Any], call_next: CallNext
) -> HandlerResult:
    """Arguments that are not a JSON object get the tool's own refusal, not a protocol error.

    Everything else about the arguments is the arguments model's to judge (`toolkit.model_tool`).
    """
    params = ctx.params if ctx.method == "tools/call" else None
    name = params.get("name") if isinstance(params, dict) else None
    if isinstance(params, dict) and isinstance(name, str) and name in TOOL_ARGUMENTS:
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            return error_result(f"Invalid arguments for {params['name']}: arguments must be a JSON object")
    return await call_next(ctx)
