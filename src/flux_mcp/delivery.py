"""Handing a result to the caller: files kept and the history updated, then content, and the delivery mark.

A retry never pays twice (tasks.py continues an identical submission whose outcome no caller has
received). Here is where an outcome counts as delivered: a finished task (succeeded or failed), or the
news that a submission may have been billed, is marked delivered by the tool that returns it, as the
last thing it awaits (`History.deliver`); a call cancelled by then takes its mark back, and nothing
after that yields before the SDK writes the answer. What the server can know about a caller that
gave up: the mcp 2.x client sends `notifications/cancelled` when its read timeout expires (the timeout
openai-agents sets with `client_session_timeout_seconds` and google-adk with `timeout`, 5 s by
default) and when its caller cancels; the SDK then cancels the tool call, so the result is neither
marked nor written. A stdio client that exits closes stdin and ends the server; a 2026-07-28 HTTP
client that disconnects cancels the call. What it cannot know: a client that stops waiting without
saying so (mcp 1.x clients time out silently; stdio has no acknowledgement), whose answer goes into
a pipe nobody reads. Such a result counts as delivered: an identical retry that arrives while the
first call still waits is attached, one that arrives after it submits anew. Returning before the
client's timeout avoids that: with FLUX_MCP_WAIT_SECONDS below it the call returns `pending`, and a
pending result is never a delivered one (get_task, or the same call again, picks the task up).
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent

from flux_mcp.auth import CallContext, Caller
from flux_mcp.images import KeptImage
from flux_mcp.models import ImageInfo, PreviewChoice, TaskBatchResult, TaskResult, TaskStatus
from flux_mcp.render import FINISHED, image_link, summarize
from flux_mcp.store import HistoryUnavailableError
from flux_mcp.video_files import NO_POSTER, KeptVideo, poster_available
from flux_mcp.videos import video_uri

logger = logging.getLogger(__name__)


async def present(
    caller: Caller, result: TaskResult, ctx: CallContext | None = None, preview: PreviewChoice | None = None
) -> CallToolResult:
    """Text summary, inline previews and resource links; files saved and history updated first.

    `preview` is the call's choice of inline previews (None: the server's, FLUX_MCP_PREVIEW). The text
    alone always says what happened and what to do next: some frameworks show the model nothing else.
    """
    settings = caller.state.settings
    if result.kind == "video":
        return await present_video(caller, result, ctx, preview)
    kept: list[KeptImage] = []
    if result.status is TaskStatus.SUCCEEDED:
        history = caller.state.history
        saved = await _saved_paths(caller, result.task_id)
        kept = await caller.state.keeper.keep(result, saved, preview or settings.preview)
        result.images = [_with_uri(result.task_id, image.info) for image in kept]
        await history.record(result, caller.owner)
    if ctx is not None:
        await _log_outcome(ctx, result)
    content: list[ContentBlock] = [TextContent(type="text", text=summarize(result))]
    for image, info in zip(kept, result.images, strict=True):
        if image.preview is not None:
            content.append(
                ImageContent(type="image", data=image.preview.base64(), mime_type=image.preview.mime_type)
            )
        if settings.resource_links:
            content.append(image_link(result.task_id, info))
    shown = CallToolResult(
        content=content,
        structured_content=result.model_dump(mode="json"),
        is_error=result.status is TaskStatus.FAILED,
    )
    if result.status in FINISHED:
        await caller.state.history.deliver(caller.owner, task_ids=[result.task_id])
    return shown


async def present_video(
    caller: Caller, result: TaskResult, ctx: CallContext | None, preview: PreviewChoice | None
) -> CallToolResult:
    """A video result: summary, a poster frame (with PyAV), a video/mp4 resource link; saved and recorded.

    The poster is the video's preview: `preview` (or FLUX_MCP_PREVIEW) `none` leaves it out.
    """
    settings = caller.state.settings
    show_poster = (preview or settings.preview) != "none"
    kept: list[KeptVideo] = []
    if result.status is TaskStatus.SUCCEEDED:
        kept = await caller.state.videos.keep(result, await _saved_paths(caller, result.task_id, "videos"))
        result.videos = [
            video.info.model_copy(update={"resource_uri": video_uri(result.task_id, video.info.index)})
            for video in kept
        ]
        await caller.state.history.record(result, caller.owner)
    if ctx is not None:
        await _log_outcome(ctx, result)
    posters = any(video.poster is not None for video in kept)
    note = f"\nNote: {NO_POSTER}." if kept and not posters and not poster_available() else ""
    content: list[ContentBlock] = [TextContent(type="text", text=summarize(result) + note)]
    for video, info in zip(kept, result.videos, strict=True):
        if video.poster is not None and show_poster:
            content.append(
                ImageContent(type="image", data=video.poster.base64(), mime_type=video.poster.mime_type)
            )
        if not settings.resource_links:
            continue
        content.append(
            ResourceLink(
                type="resource_link",
                uri=info.resource_uri or "",
                name=f"video {info.index + 1} of task {result.task_id}",
                mime_type="video/mp4",
                description=info.path or info.url,
            )
        )
    shown = CallToolResult(
        content=content,
        structured_content=result.model_dump(mode="json"),
        is_error=result.status is TaskStatus.FAILED,
    )
    if result.status in FINISHED:
        await caller.state.history.deliver(caller.owner, task_ids=[result.task_id])
    return shown


async def _saved_paths(caller: Caller, task_id: str, files: str = "images") -> dict[int, str]:
    try:
        entry = await caller.state.history.get(task_id, caller.owner)
    except HistoryUnavailableError:  # the files are here already: answer with them, recorded later
        return {}
    items = (entry.result or {}).get(files, []) if entry is not None else []
    return {item["index"]: item["path"] for item in items if item.get("path")}


def _with_uri(task_id: str, image: ImageInfo) -> ImageInfo:
    return image.model_copy(update={"resource_uri": f"flux://images/{task_id}/{image.index}"})


async def batch_result(caller: Caller, batch: TaskBatchResult) -> CallToolResult:
    lines = [summarize(task) for task in batch.tasks]
    if batch.missing:
        lines.append("Unknown task ids: " + ", ".join(batch.missing))
    shown = CallToolResult(
        content=[TextContent(type="text", text="\n\n".join(lines) or "No tasks found.")],
        structured_content=batch.model_dump(mode="json"),
    )
    finished = [task.task_id for task in batch.tasks if task.status in FINISHED]
    await caller.state.history.deliver(caller.owner, task_ids=finished)
    return shown


async def _log_outcome(ctx: CallContext, result: TaskResult) -> None:
    if result.status is TaskStatus.FAILED:
        await log_to_client(ctx, "warning", summarize(result))
        return
    await log_to_client(ctx, "info", f"Task {result.task_id}: {result.status.value}")
    for image in result.images:
        if image.warning:
            await log_to_client(
                ctx, "warning", f"Image {image.index + 1} of task {result.task_id}: {image.warning}"
            )


async def log_to_client(ctx: CallContext, level: Literal["info", "warning"], message: str) -> None:
    """An MCP log message, for clients that asked for them (many hosts show them in a log pane).

    The logging capability is deprecated as of protocol 2026-07-28, so the SDK warns on every call; the
    message still reaches clients that opted in, and nothing else changes. Never fails the call.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await ctx.log(level, message, logger_name="flux-mcp")
    except Exception as exc:
        logger.debug("log message not delivered: %s", exc)
