"""Results as MCP content an assistant can read: text summaries, errors, history lines, resource links.

Pure functions of the results: nothing here reads a file, the history or the network, and nothing awaits.
The text alone always says what happened and what to do next, since some frameworks show the model
nothing else.
"""

from __future__ import annotations

from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent

from flux_mcp.domain.results import HistoryItem
from flux_mcp.domain.tasks import Cost, ImageInfo, TaskBatchResult, TaskResult, TaskStatus, VideoInfo
from flux_mcp.domain.videos import is_video_request
from flux_mcp.history.rows import HistoryEntry
from flux_mcp.jobs.finishing import FinishedJob
from flux_mcp.jobs.runner import ago
from flux_mcp.media.videos import NO_POSTER, poster_available

FINISHED = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)  # outcomes that count as delivered once returned


def present(finished: FinishedJob, *, resource_links: bool = True) -> CallToolResult:
    """Text summary, inline previews and resource links of a finished job (kept and recorded already).

    The text alone always says what happened and what to do next: some frameworks show the model nothing
    else. `resource_links`: FLUX_MCP_RESOURCE_LINKS.
    """
    result = finished.result
    if result.kind == "video":
        return present_video(finished, resource_links=resource_links)
    content: list[ContentBlock] = [TextContent(type="text", text=summarize(result))]
    for info, preview in zip(result.images, finished.previews, strict=True):
        if preview is not None:
            content.append(ImageContent(type="image", data=preview.base64(), mime_type=preview.mime_type))
        if resource_links:
            content.append(image_link(result.task_id, info))
    return CallToolResult(
        content=content,
        structured_content=result.model_dump(mode="json"),
        is_error=result.status is TaskStatus.FAILED,
    )


def present_video(finished: FinishedJob, *, resource_links: bool = True) -> CallToolResult:
    """A video result: summary, a poster frame (with PyAV), a video/mp4 resource link.

    The poster is the video's preview: a call that chose `none` (or FLUX_MCP_PREVIEW) was kept without.
    """
    result = finished.result
    kept = result.status is TaskStatus.SUCCEEDED and bool(result.videos)
    note = f"\nNote: {NO_POSTER}." if kept and not poster_available() else ""
    content: list[ContentBlock] = [TextContent(type="text", text=summarize(result) + note)]
    for info, poster in zip(result.videos, finished.previews, strict=True):
        if poster is not None:
            content.append(ImageContent(type="image", data=poster.base64(), mime_type=poster.mime_type))
        if not resource_links:
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
    return CallToolResult(
        content=content,
        structured_content=result.model_dump(mode="json"),
        is_error=result.status is TaskStatus.FAILED,
    )


def batch_result(batch: TaskBatchResult) -> CallToolResult:
    lines = [summarize(task) for task in batch.tasks]
    if batch.missing:
        lines.append("Unknown task ids: " + ", ".join(batch.missing))
    return CallToolResult(
        content=[TextContent(type="text", text="\n\n".join(lines) or "No tasks found.")],
        structured_content=batch.model_dump(mode="json"),
    )


def summarize(result: TaskResult) -> str:
    """A short text an assistant can read out: status, task id, image URLs and files, next step."""
    if result.attached:
        age = ago(result.submitted_seconds_ago or 0.0)
        return (
            f"Continuing task {result.task_id} submitted {age}: an identical call submitted it and its "
            "result had not been received, so nothing was submitted (or billed) again.\n" + _summary(result)
        )
    return _summary(result)


def _summary(result: TaskResult) -> str:
    about = " ".join(part for part in (result.model, f"({result.size})" if result.size else "") if part)
    if result.status is TaskStatus.SUCCEEDED and result.kind == "video":
        return _video_summary(result)
    if result.status is TaskStatus.SUCCEEDED:
        count = len(result.images)
        plural = "s" if count != 1 else ""
        lines = [
            f"Generated {count} image{plural} with {about} in {result.elapsed_seconds:.1f} s. "
            f"task_id: {result.task_id}"
        ]
        if result.cost is not None:
            lines.append(f"Cost: {describe_cost(result.cost)}")
        for image in result.images:
            seed = f" (seed {image.seed})" if image.seed is not None else ""
            lines.append(f"{image.index + 1}. {image.url}{seed}")
            if image.path:
                lines.append(f"   saved: {image.path}")
            if image.warning:
                lines.append(f"   note: {image.warning}")
        if not any(image.path for image in result.images):
            lines.append("Image URLs expire; download the ones you want to keep.")
        return "\n".join(lines)
    if result.status is TaskStatus.PENDING:
        return (
            f"Task {result.task_id} is still running after {result.elapsed_seconds:.0f} s. {result.next_step}"
        )
    error = result.error
    reason = f"{error.message} ({error.code})" if error else "no reason given"
    return f"Task {result.task_id} failed: {reason}. You may retry with a changed prompt or another model."


def _video_summary(result: TaskResult) -> str:
    lines = [
        f"Generated a video with {result.model or 'flux-3'} in {result.elapsed_seconds:.1f} s. "
        f"task_id: {result.task_id}"
    ]
    if result.cost is not None:
        lines.append(f"Cost: {describe_cost(result.cost)}")
    for video in result.videos:
        facts = [
            f"{video.seconds:g} s" if video.seconds else None,
            f"{video.width}x{video.height}" if video.width and video.height else None,
            f"{video.fps:g} fps" if video.fps else None,
            f"{video.size_bytes / 1_000_000:.1f} MB" if video.size_bytes else None,
        ]
        shown = ", ".join(fact for fact in facts if fact)
        lines.append(f"{video.index + 1}. {video.url}" + (f" ({shown})" if shown else ""))
        if video.path:
            lines.append(f"   saved: {video.path}")
        if video.draft_task_id:
            lines.append(
                f"   draft: for the full version call generate_video with mode draft_enhance and "
                f'draft_task_id "{video.draft_task_id}"'
            )
        if video.warning:
            lines.append(f"   note: {video.warning}")
    if not any(video.path for video in result.videos):
        lines.append("Video URLs expire; download the ones you want to keep.")
    return "\n".join(lines)


def describe_cost(cost: Cost) -> str:
    """`0.5 credit (list price 0.6)`"""
    unit = f" {cost.currency}" if cost.currency else ""
    listed = f" (list price {cost.list_amount:g})" if cost.list_amount not in (None, cost.amount) else ""
    return f"{cost.amount:g}{unit}{listed}"


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def maybe_billed(message: str) -> str:
    if "billed" in message:
        return message
    return (
        f"{message} The request may have reached the Flux API, so it was not resubmitted (that could "
        "bill twice). Wait a minute before trying again; list_tasks shows it as 'unknown', and if your "
        "AceDataCloud console shows the task, use get_task with its id."
    )


def image_link(task_id: str, image: ImageInfo) -> ResourceLink:
    """A link to the full-size image, for hosts that read it (resources/read) or offer it to the user.

    langchain-mcp-adapters turns every resource link into an image or file block whose URL is this
    flux:// URI, which OpenAI and Anthropic cannot fetch: FLUX_MCP_RESOURCE_LINKS=false leaves links out.
    """
    return ResourceLink(
        type="resource_link",
        uri=image.resource_uri or f"flux://images/{task_id}/{image.index}",
        name=f"image {image.index + 1} of task {task_id}",
        mime_type="image/png",
        description=image.path or image.url,
    )


def history_item(entry: HistoryEntry) -> HistoryItem:
    images = entry.result.images if entry.result is not None else []
    videos = entry.result.videos if entry.result is not None else []
    return HistoryItem(
        task_id=entry.task_id,
        status=entry.status,
        prompt=entry.prompt,
        model=entry.model,
        size=entry.size,
        created_at=entry.as_dict()["created_at"],
        images=images,
        error=entry.error,
        cost=entry.result.cost if entry.result is not None else None,
        variation_of=entry.request.get("variation_of"),
        kind="video" if is_video_request(entry.request) or videos else "image",
        videos=videos,
    )


def history_line(item: HistoryItem) -> str:
    files: list[ImageInfo | VideoInfo] = [*item.images, *item.videos]
    where = ", ".join(file.path or file.url for file in files)
    prompt = (item.prompt or "")[:80]
    return f"{item.created_at} {item.status:<10} {item.task_id or '(no task id)'} {prompt!r}" + (
        f" -> {where}" if where else ""
    )
