"""Handing a finished job to the caller: the outcome logged to the client, its content, the delivery mark.

A retry never pays twice (jobs/runner.py continues an identical submission whose outcome no caller has
received). Here is where an outcome counts as delivered: a finished task (succeeded or failed), or the
news that a submission may have been billed, is marked delivered by the tool that returns it, as the
last thing it awaits (`History.mark_delivered`); a call cancelled by then takes its mark back, and nothing
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
from typing import Literal

from mcp_types import CallToolResult

from flux_mcp.domain.tasks import TaskBatchResult, TaskResult, TaskStatus
from flux_mcp.jobs.finishing import FinishedJob
from flux_mcp.server.caller import CallContext, Caller
from flux_mcp.server.render import FINISHED, batch_result, present, summarize

logger = logging.getLogger(__name__)


async def answer(caller: Caller, finished: FinishedJob, ctx: CallContext) -> CallToolResult:
    """A job tool's answer: the outcome logged to the client, shown, and (last) marked delivered."""
    await _log_outcome(ctx, finished.result)
    shown = present(finished, resource_links=caller.state.settings.resource_links)
    await mark_delivered(caller, [finished.result])
    return shown


async def answer_batch(caller: Caller, batch: TaskBatchResult) -> CallToolResult:
    """get_tasks' answer: the tasks shown, and (last) the finished ones marked delivered."""
    shown = batch_result(batch)
    await mark_delivered(caller, batch.tasks)
    return shown


async def mark_delivered(caller: Caller, results: list[TaskResult]) -> None:
    """Mark the finished ones among `results` delivered: the last thing a tool awaits before answering."""
    finished = [result.task_id for result in results if result.status in FINISHED]
    await caller.state.history.mark_delivered(caller.owner, task_ids=finished)


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

    The logging capability is deprecated as of protocol 2026-07-28, so the SDK warns (MCPDeprecationWarning)
    on every call; the message still reaches clients that opted in, and nothing else changes. Whether that
    warning shows is the application's choice: the `flux-mcp` command silences it (cli/logs.py). Never fails
    the call.
    """
    try:
        await ctx.log(level, message, logger_name="flux-mcp")
    except Exception as exc:
        logger.debug("log message not delivered: %s", exc)
