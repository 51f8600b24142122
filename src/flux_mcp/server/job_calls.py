"""How a job tool call runs: its inputs made fetchable, the job awaited with progress, each failure a result.

The tools in `tools.py` get their arguments validated; here an edit's image, a video's keyframes and
start video become URLs the Flux API can fetch (a local file or data: URL checked, then uploaded once),
the job is run or resumed by `jobs.runner.Jobs`, and whatever goes wrong becomes a tool error an
assistant can act on: an upstream error as the upstream said it (with the warning that a submission
may have been billed, when it may), a bug or a local fault as a plain message with the log for details.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import CallToolResult

from flux_mcp.domain.arguments import PROMPT_MAX_CHARS, EditImageArgs, GenerateImageArgs
from flux_mcp.domain.errors import (
    BudgetExceededError,
    FluxError,
    HistoryUnavailableError,
    ImageInputError,
    UploadFailedError,
    may_have_been_accepted,
)
from flux_mcp.domain.tasks import ImageInfo, ImageRequest, PreviewChoice
from flux_mcp.domain.videos import FLUX_VIDEO_URI, GenerateVideoArgs, VideoRequest
from flux_mcp.jobs.finishing import FinishedJob
from flux_mcp.jobs.runner import Jobs, JobTicket
from flux_mcp.jobs.waiting import ProgressFn
from flux_mcp.media.uploads import InputPolicy
from flux_mcp.server.caller import CallContext, Caller, caller_of
from flux_mcp.server.delivery import answer, log_to_client
from flux_mcp.server.render import error_result, maybe_billed
from flux_mcp.server.resources import known_image, known_video
from flux_mcp.server.tasks.plan import task_plan

logger = logging.getLogger(__name__)

R = TypeVar("R")  # what a tool's work returns, for its render
OWN_DRAFTS_SEARCHED = 500  # a draft to enhance is looked for among the caller's newest finished tasks


async def run_job(
    ctx: CallContext, tool: str, args: GenerateImageArgs | EditImageArgs, roots: list[Path] | None = None
) -> CallToolResult:
    caller = caller_of(ctx)
    request = args.to_request()
    if request.image_url is not None:
        if (refused := await _over_budget(caller, request)) is not None:
            return refused
        try:
            request.image_url = await _fetchable_image(ctx, caller, request.image_url, roots or [])
        except UploadFailedError as exc:
            return error_result(f"Cannot edit that image: {exc}")
        except ImageInputError as exc:
            return error_result(f"Cannot edit that image: {exc}. Nothing was uploaded or submitted.")
    return await _submit_and_answer(ctx, caller, tool, request, args.wait_seconds, args.preview)


async def run_video_job(ctx: CallContext, args: GenerateVideoArgs, roots: list[Path]) -> CallToolResult:
    """generate_video: turn every input into a URL the API can fetch, then wait like images."""
    caller = caller_of(ctx)
    request = args.to_request()
    if (refused := await _over_budget(caller, request)) is not None:
        return refused
    try:
        request = await _fetchable_video_inputs(ctx, caller, request, roots)
    except UploadFailedError as exc:
        return error_result(f"Cannot use that input: {exc}")
    except ImageInputError as exc:
        return error_result(f"Cannot use that input: {exc}. Nothing was uploaded or submitted.")
    return await _submit_and_answer(ctx, caller, "generate_video", request, args.wait_seconds, None)


async def _over_budget(caller: Caller, request: ImageRequest | VideoRequest) -> CallToolResult | None:
    """The refusal of a call that would pass a budget, before its inputs are uploaded (an upstream request);
    its submission checks again, and reserves (`Jobs.run`)."""
    try:
        await caller.jobs.check_budget(request)
    except BudgetExceededError as exc:
        caller.state.observer.budget_refused()
        return error_result(exc.message)
    except HistoryUnavailableError as exc:
        return error_result(exc.message)
    return None


async def _submit_and_answer(
    ctx: CallContext,
    caller: Caller,
    tool: str,
    request: ImageRequest | VideoRequest,
    wait_seconds: float | None,
    preview: PreviewChoice | None,
) -> CallToolResult:
    """Run the job with progress, and answer: its result, or the failure as a tool error.

    When the call may become an MCP task (`tasks.plan`), the job is started as one instead (server/tasks).
    """
    plan, board = task_plan(), caller.state.tasks

    async def run(jobs: Jobs, ticket: JobTicket, progress: ProgressFn, wait: float | None) -> FinishedJob:
        try:
            return await jobs.run(request, wait, progress, ticket, preview)
        except BudgetExceededError:  # another call took the last credits since `_over_budget` looked
            caller.state.observer.budget_refused()
            raise

    if plan is not None and board is not None:
        as_task = lambda jobs, ticket, progress: run(jobs, ticket, progress, None)  # noqa: E731
        return await board.start(plan, caller, as_task, preview)
    progress = progress_reporter(ctx)
    ticket = JobTicket()

    async def work() -> FinishedJob:
        return await run(caller.jobs, ticket, progress, wait_seconds)

    shown = await tool_result_of(tool, work, lambda finished: answer(caller, finished, ctx))
    if ticket.undecided_row is not None:  # the caller is told its submission may have been billed
        await caller.state.history.mark_delivered(caller.owner, row_ids=[ticket.undecided_row])
    return shown


async def _fetchable_video_inputs(
    ctx: CallContext, caller: Caller, request: VideoRequest, roots: list[Path]
) -> VideoRequest:
    """Keyframes as edit_image's images are (uploaded once if local), a flux://videos start as its URL;
    a draft to enhance is the caller's own where only their history is theirs to read."""
    if request.draft_task_id is not None and not caller.may_read_unrecorded():
        await _own_draft(caller, request.draft_task_id)
    urls = [await _fetchable_image(ctx, caller, url, roots) for url in request.keyframe_urls()]
    request = request.with_keyframe_urls(urls)
    start = FLUX_VIDEO_URI.match(request.start_video or "")
    if start is not None:
        try:
            video = await known_video(caller, start.group(1), start.group(2))
        except ResourceError as exc:
            raise ImageInputError(str(exc)) from None
        request = request.model_copy(update={"start_video": video.url})
    return request


async def _own_draft(caller: Caller, draft_task_id: str) -> None:
    """Refuse a draft id that is neither a task of the caller's history nor one of its videos' drafts."""
    history = caller.state.history
    if await history.find_task(draft_task_id, caller.owner) is not None:
        return
    recent = await history.list_tasks(OWN_DRAFTS_SEARCHED, "succeeded", owner=caller.owner)
    drafts = {video.draft_task_id for entry in recent if entry.result for video in entry.result.videos}
    if draft_task_id not in drafts:
        raise ImageInputError(f"No draft video {draft_task_id!r} in your history (list_tasks shows yours)")


async def _fetchable_image(ctx: CallContext, caller: Caller, image_url: str, roots: list[Path]) -> str:
    """Any accepted image_url -> a URL the Flux API can fetch (uploading a checked file once)."""

    async def find_image(task_id: str, index: int) -> ImageInfo:
        try:
            return await known_image(caller, task_id, str(index))
        except ResourceError as exc:
            raise ImageInputError(str(exc)) from None

    settings = caller.state.settings
    policy = InputPolicy(
        over_http=ctx.headers is not None,
        folders=[*roots, *settings.input_folders()],
        allow_hard_links=settings.allow_hard_links,
    )
    sources = caller.state.sources
    return await sources.url_for(
        image_url, policy, platform=caller.platform(), find_image=find_image, owner=caller.owner
    )


async def variation_arguments(
    caller: Caller, task_id: str, count: int, prompt_suffix: str | None
) -> dict[str, Any]:
    """generate_image arguments for more images like an earlier task of this server's history."""
    entry = await caller.state.history.find_task(task_id, caller.owner)
    if entry is None:
        raise ValueError(
            f"No task {task_id!r} in this server's history. generate_variations varies an earlier result of "
            "this server: list_tasks shows them (get_task brings in a task made elsewhere)."
        )
    if entry.request.get("action") == "edit" or entry.request.get("image_url"):
        raise ValueError(
            f"Task {task_id} is an edit of an image; variations re-run a text prompt. For another take on "
            "the edit, call edit_image again with the same image and prompt."
        )
    if not entry.prompt or not entry.model:
        raise ValueError(f"The prompt or model of task {task_id} is not known here, so it cannot be varied.")
    prompt = f"{entry.prompt.rstrip()} {prompt_suffix.strip()}" if prompt_suffix else entry.prompt
    if len(prompt) > PROMPT_MAX_CHARS:
        raise ValueError(f"prompt_suffix makes the prompt longer than {PROMPT_MAX_CHARS} characters.")
    return {
        "prompt": prompt,
        "model": entry.model,
        "size": entry.size,
        "count": count,
        "variation_of": task_id,
    }


async def tool_result_of(
    tool: str, work: Callable[[], Awaitable[R]], render: Callable[[R], Awaitable[CallToolResult]]
) -> CallToolResult:
    """`render(await work())`, or the tool error an assistant can act on when anything goes wrong."""
    try:
        return await render(await work())
    except HistoryUnavailableError as exc:
        return error_result(exc.message)
    except FluxError as exc:
        billed = not tool.startswith("get_") and may_have_been_accepted(exc)
        return error_result(maybe_billed(exc.message) if billed else exc.message)
    except Exception:
        # A bug or a local fault (disk full, database locked): logged in full, reported plainly.
        logger.exception("%s failed unexpectedly", tool)
        return error_result(
            f"{tool} failed inside flux-mcp (see its log for details). Any task already submitted is kept: "
            "list_tasks shows it and get_task can fetch it."
        )


def progress_reporter(ctx: CallContext) -> Callable[[float, str], Awaitable[None]]:
    """Progress in seconds, strictly increasing as the spec asks, whatever phase reports it."""
    last = -1.0

    async def report(elapsed: float, message: str) -> None:
        nonlocal last
        last = max(round(elapsed, 1), round(last + 0.1, 1))
        if last <= 0.1:  # the milestones (queued, submitted) also go to the client's log
            await log_to_client(ctx, "info", message)
        try:
            await ctx.report_progress(last, None, message)
        except Exception as exc:  # a client that went away must not fail the job
            logger.debug("progress notification not delivered: %s", exc)

    return report
