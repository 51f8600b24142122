"""Waiting for Flux tasks: submit asynchronously, poll with backoff, report progress, stop on budget.

A tool call never blocks blindly and never polls in the chat. `ImageJobs.run` submits with
`async: true`, then waits on the server: it looks at the task after ~2 s, then at growing
intervals capped near 5 s, sends a progress notification after each look, and returns the
moment the images exist. When the call's budget runs out it returns a normal `pending` result
with the task id; `ImageJobs.resume` (the `get_task` tool) waits the same way. Cancelling a
call stops the waiting, never the task: the upstream keeps it and `get_task` still finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import anyio

from flux_mcp.client import (
    FluxClient,
    FluxError,
    MalformedResponseError,
    RateLimitedError,
    ResponseLostError,
    ServerError,
    Submission,
    TaskNotFoundError,
    TransportError,
)
from flux_mcp.models import (
    ImageRequest,
    TaskBatchResult,
    TaskResult,
    TaskSnapshot,
    TaskStatus,
)
from flux_mcp.store import History

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], Awaitable[None]]
TRANSIENT = (TransportError, ServerError, MalformedResponseError, RateLimitedError)
# Right after a submit the task store may not show the task yet; until then "not found" is not final.
NOT_FOUND_GRACE_SECONDS = 10.0


async def no_progress(elapsed: float, message: str) -> None:
    """The progress sink used when the caller did not ask for progress."""


@dataclass(frozen=True)
class PollSchedule:
    """Pauses between looks at a task: suited to jobs of 10-120 s."""

    first: float = 2.0
    growth: float = 1.5
    cap: float = 5.0

    def pauses(self) -> Iterator[float]:
        pause = self.first
        while True:
            yield pause
            pause = min(pause * self.growth, self.cap)


class TaskWaiter:
    """Polls one task until it finishes or the budget runs out."""

    def __init__(self, client: FluxClient, schedule: PollSchedule) -> None:
        self._client = client
        self._schedule = schedule

    async def wait(
        self, task_id: str, budget: float, progress: ProgressFn, *, just_submitted: bool
    ) -> TaskSnapshot:
        started = anyio.current_time()
        deadline = started + budget
        last = TaskSnapshot(task_id=task_id, status=TaskStatus.PENDING)
        for pause in self._schedule.pauses():
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return last
            await anyio.sleep(min(pause, remaining))
            elapsed = anyio.current_time() - started
            try:
                last = await self._client.retrieve(task_id)
            except TaskNotFoundError:
                if not just_submitted or elapsed > NOT_FOUND_GRACE_SECONDS:
                    raise
                logger.debug("task %s not visible yet", task_id)
            except TRANSIENT as exc:
                # The task exists upstream; a failed look is no reason to give it up.
                logger.warning("could not check task %s: %s", task_id, exc.message)
            if last.status is not TaskStatus.PENDING:
                return last
            await progress(elapsed, f"Generating… {elapsed:.0f} s elapsed (task {task_id})")
        raise AssertionError("unreachable: the poll schedule is endless")


class ImageJobs:
    """The use cases behind the tools: run a job, resume a task, look up many tasks."""

    def __init__(
        self, client: FluxClient, *, max_wait: float, schedule: PollSchedule, history: History | None = None
    ) -> None:
        self._client = client
        self._max_wait = max_wait
        self._waiter = TaskWaiter(client, schedule)
        self._history = history

    def budget(self, wait_seconds: float | None) -> float:
        return self._max_wait if wait_seconds is None else min(wait_seconds, self._max_wait)

    async def run(
        self, request: ImageRequest, wait_seconds: float | None, progress: ProgressFn = no_progress
    ) -> TaskResult:
        started = anyio.current_time()
        submission = await self._submit(request)
        logger.info("submitted %s task %s (%s)", request.action, submission.task_id, request.model)
        await progress(0.0, f"Submitted task {submission.task_id}; waiting for {request.model}…")
        pending = TaskSnapshot(
            task_id=submission.task_id, status=TaskStatus.PENDING, trace_id=submission.trace_id
        )
        snapshot = await self._wait(pending, wait_seconds, progress, just_submitted=True)
        return await self._recorded(
            task_result(snapshot, request.model_dump(), anyio.current_time() - started)
        )

    async def resume(
        self, task_id: str, wait_seconds: float | None, progress: ProgressFn = no_progress
    ) -> TaskResult:
        started = anyio.current_time()
        snapshot = await self._client.retrieve(task_id)
        snapshot = await self._wait(snapshot, wait_seconds, progress, just_submitted=False)
        request = snapshot.request or await self._remembered_request(task_id)
        return await self._recorded(task_result(snapshot, request, anyio.current_time() - started))

    async def lookup(self, task_ids: list[str]) -> TaskBatchResult:
        snapshots = await self._client.retrieve_batch(task_ids)
        by_id = {snapshot.task_id: snapshot for snapshot in snapshots}
        unique_ids = list(dict.fromkeys(task_ids))
        found = [by_id[task_id] for task_id in unique_ids if task_id in by_id]
        return TaskBatchResult(
            tasks=[task_result(snapshot, snapshot.request, None) for snapshot in found],
            missing=[task_id for task_id in unique_ids if task_id not in by_id],
        )

    async def _submit(self, request: ImageRequest) -> Submission:
        """Submit, with the history row written first: an accepted task can always be found again."""
        if self._history is None:
            return await self._client.submit(request)
        row = await self._history.begin(request.model_dump(exclude_none=True))
        try:
            submission = await self._client.submit(request)
        except FluxError as exc:
            ambiguous = isinstance(exc, ResponseLostError | ServerError | MalformedResponseError)
            await self._history.submit_failed(row, exc.message, maybe_accepted=ambiguous)
            raise
        except BaseException:
            # Cancelled (or crashed) while the request was in flight: the upstream may have it.
            with anyio.CancelScope(shield=True):
                await self._history.submit_failed(row, "interrupted while submitting", maybe_accepted=True)
            raise
        await self._history.submitted(row, submission.task_id, submission.trace_id)
        return submission

    async def _recorded(self, result: TaskResult) -> TaskResult:
        if self._history is not None:
            await self._history.record(result)
        return result

    async def _remembered_request(self, task_id: str) -> dict[str, Any] | None:
        entry = await self._history.get(task_id) if self._history is not None else None
        return entry.request if entry is not None else None

    async def _wait(
        self,
        snapshot: TaskSnapshot,
        wait_seconds: float | None,
        progress: ProgressFn,
        *,
        just_submitted: bool,
    ) -> TaskSnapshot:
        budget = self.budget(wait_seconds)
        if snapshot.status is not TaskStatus.PENDING or budget <= 0:
            return snapshot
        try:
            waited = await self._waiter.wait(
                snapshot.task_id, budget, progress, just_submitted=just_submitted
            )
        except anyio.get_cancelled_exc_class():
            logger.info("stopped waiting for task %s; it continues upstream", snapshot.task_id)
            raise
        return waited if waited.trace_id or not snapshot.trace_id else _keep_trace(waited, snapshot)


def task_result(snapshot: TaskSnapshot, request: dict[str, Any] | None, waited: float | None) -> TaskResult:
    """The structured result of one task, with the one next step an assistant should take."""
    request = request or {}
    elapsed = waited if waited is not None else (snapshot.elapsed_seconds or 0.0)
    result = TaskResult(
        task_id=snapshot.task_id,
        status=snapshot.status,
        model=_str(request.get("model")),
        prompt=_str(request.get("prompt")),
        size=_str(request.get("size")),
        images=list(snapshot.images),
        elapsed_seconds=round(elapsed, 2),
        trace_id=snapshot.trace_id,
        error=snapshot.error,
    )
    if snapshot.status is TaskStatus.PENDING:
        result.next_step = (
            f'The image is still being generated. Call get_task with task_id "{snapshot.task_id}" '
            "to wait for it."
        )
    return result


def _keep_trace(snapshot: TaskSnapshot, earlier: TaskSnapshot) -> TaskSnapshot:
    return replace(snapshot, trace_id=earlier.trace_id)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
