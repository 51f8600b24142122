"""Waiting for Flux tasks: submit asynchronously, poll with backoff, report progress, stop on budget.

A tool call never blocks blindly and never polls in the chat. `ImageJobs.run` submits with
`async: true`, then waits on the server: it looks at the task after ~2 s, then at intervals of
35% of the task's age (at most FLUX_MCP_POLL_MAX_SECONDS; get_task carries on from the task's
age), sends progress at least every 5 s, and returns the moment the images exist. When the
call's budget runs out it returns a normal `pending` result
with the task id; `ImageJobs.resume` (the `get_task` tool) waits the same way. Cancelling a
call stops the waiting, never the task: the upstream keeps it and `get_task` still finds it.

Shutting down ends every wait the same way: when the serving process sets its `stop` event, each
waiting call returns its task as `pending` at once, so the process can exit promptly and every
caller still gets its task id.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from flux_mcp.client import (
    FluxClient,
    FluxError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
    Submission,
    TaskNotFoundError,
    TransportError,
    may_have_been_accepted,
    scrub_snapshot,
)
from flux_mcp.models import (
    ImageRequest,
    TaskBatchResult,
    TaskResult,
    TaskSnapshot,
    TaskStatus,
    parse_task_record,
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
    """Pauses between looks at a task: a fraction of the task's age.

    A finished task is seen at most ~35% of its age late, while a 2-minute job costs ~15 looks instead
    of ~30 with a fixed 5 s cap (docs/benchmarks.md, measurement 3).
    """

    first: float = 2.0
    fraction: float = 0.35
    cap: float = 15.0

    def pause(self, age: float) -> float:
        """The pause before the next look at a task submitted `age` seconds ago."""
        return min(max(age * self.fraction, self.first), self.cap)


# With callbacks, polling is only the fallback for a callback that never comes.
CALLBACK_FALLBACK = PollSchedule(first=20.0, fraction=0.5, cap=30.0)
HEARTBEAT_SECONDS = 5.0  # progress at least this often, so clients see the call is alive
DEADLINE_MARGIN_SECONDS = 1.0
CALLBACK_TTL_SECONDS = 6 * 3600.0


@dataclass
class CallbackSlot:
    """Where the upstream's callback for one submission lands."""

    secret: str
    url: str
    created: float
    task_id: str | None = None
    snapshot: TaskSnapshot | None = None
    arrived: anyio.Event = field(default_factory=anyio.Event)


class CallbackHub:
    """Per-task callback URLs with secrets, and the waiting calls they wake.

    The secret is the only thing that makes a callback URL valid: a POST naming an unknown secret, or a
    task other than the one the secret was issued for, is refused and changes nothing.
    """

    def __init__(self, public_url: str, *, secrets: list[str] | None = None) -> None:
        self._base = public_url.rstrip("/") + "/callbacks/flux/"
        self._secrets = secrets or []  # never echoed back, should a callback body carry one
        self._slots: dict[str, CallbackSlot] = {}
        self._by_task: dict[str, CallbackSlot] = {}

    def open(self) -> CallbackSlot:
        self._expire()
        secret = secrets.token_urlsafe(24)
        slot = CallbackSlot(secret=secret, url=self._base + secret, created=anyio.current_time())
        self._slots[secret] = slot
        return slot

    def bind(self, slot: CallbackSlot, task_id: str) -> None:
        slot.task_id = task_id
        self._by_task[task_id] = slot

    def knows(self, secret: str) -> bool:
        return secret in self._slots

    def for_task(self, task_id: str) -> CallbackSlot | None:
        return self._by_task.get(task_id)

    def close(self, slot: CallbackSlot) -> None:
        self._slots.pop(slot.secret, None)
        if slot.task_id is not None:
            self._by_task.pop(slot.task_id, None)

    def deliver(self, secret: str, payload: dict[str, Any]) -> bool:
        """Accept a callback body for a pending task; False when it must be refused."""
        slot = self._slots.get(secret)
        if slot is None or slot.snapshot is not None:
            return False
        snapshot = scrub_snapshot(parse_task_record(payload), self._secrets)
        if not snapshot.task_id or (slot.task_id is not None and snapshot.task_id != slot.task_id):
            return False
        if snapshot.status is TaskStatus.PENDING:
            return False
        slot.snapshot = snapshot
        slot.arrived.set()
        return True

    def _expire(self) -> None:
        oldest = anyio.current_time() - CALLBACK_TTL_SECONDS
        for slot in [slot for slot in self._slots.values() if slot.created < oldest]:
            self.close(slot)


class TaskWaiter:
    """Waits for one task until it finishes or the budget runs out: on a callback, or by polling."""

    def __init__(self, client: FluxClient, schedule: PollSchedule, stop: anyio.Event | None = None) -> None:
        self._client = client
        self._schedule = schedule
        self._stop = stop

    async def wait(
        self,
        task_id: str,
        budget: float,
        progress: ProgressFn,
        *,
        just_submitted: bool,
        slot: CallbackSlot | None = None,
        age: float = 0.0,
    ) -> TaskSnapshot:
        started = anyio.current_time()
        deadline = started + budget
        margin = min(DEADLINE_MARGIN_SECONDS, budget / 10)
        schedule = CALLBACK_FALLBACK if slot is not None else self._schedule
        next_look = started + schedule.pause(age)
        last = TaskSnapshot(task_id=task_id, status=TaskStatus.PENDING)
        while True:
            now = anyio.current_time()
            if now >= deadline or self._stopping():
                return last
            await _sleep_until(min(next_look, deadline, now + HEARTBEAT_SECONDS), slot, self._stop)
            if slot is not None and slot.snapshot is not None:
                return slot.snapshot
            if self._stopping():
                logger.info("shutting down: task %s is returned as pending", task_id)
                return last
            now = anyio.current_time()
            elapsed = now - started
            # No look at (or just before) the deadline: the get_task that follows looks first thing,
            # so it would be a double.
            if now >= next_look and deadline - now > margin:
                last = await self._look(task_id, last, just_submitted=just_submitted, elapsed=elapsed)
                if last.status is not TaskStatus.PENDING:
                    return last
                next_look = now + schedule.pause(age + elapsed)
            await progress(elapsed, f"Generating… {elapsed:.0f} s elapsed (task {task_id})")

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _look(
        self, task_id: str, last: TaskSnapshot, *, just_submitted: bool, elapsed: float
    ) -> TaskSnapshot:
        try:
            return await self._client.retrieve(task_id)
        except TaskNotFoundError:
            if not just_submitted or elapsed > NOT_FOUND_GRACE_SECONDS:
                raise
            logger.debug("task %s not visible yet", task_id)
        except TRANSIENT as exc:
            # The task exists upstream; a failed look is no reason to give it up.
            logger.warning("could not check task %s: %s", task_id, exc.message)
        return last


async def _sleep_until(moment: float, slot: CallbackSlot | None, stop: anyio.Event | None = None) -> None:
    """Sleep until `moment`, or until the callback arrives or shutdown begins, whichever is first."""
    delay = max(moment - anyio.current_time(), 0.0)
    events = [event for event in (slot.arrived if slot is not None else None, stop) if event is not None]
    with anyio.move_on_after(delay):
        if not events:
            await anyio.sleep(delay)
        elif len(events) == 1:
            await events[0].wait()
        else:
            async with anyio.create_task_group() as group:
                for event in events:
                    group.start_soon(_cancel_on, event, group.cancel_scope)


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class ImageJobs:
    """The use cases behind the tools: run a job, resume a task, look up many tasks."""

    def __init__(
        self,
        client: FluxClient,
        *,
        max_wait: float,
        schedule: PollSchedule,
        history: History | None = None,
        owner: str = "",
        callbacks: CallbackHub | None = None,
        stop: anyio.Event | None = None,
    ) -> None:
        self._client = client
        self._max_wait = max_wait
        self._waiter = TaskWaiter(client, schedule, stop)
        self._history = history
        self._owner = owner
        self._callbacks = callbacks

    def budget(self, wait_seconds: float | None) -> float:
        return self._max_wait if wait_seconds is None else min(wait_seconds, self._max_wait)

    async def run(
        self, request: ImageRequest, wait_seconds: float | None, progress: ProgressFn = no_progress
    ) -> TaskResult:
        started = anyio.current_time()
        slot = self._callbacks.open() if self._callbacks is not None else None
        if queued := self._client.queued():
            await progress(0.0, f"Queued: {queued} upstream requests ahead (FLUX_MCP_MAX_CONCURRENCY)")
        try:
            submission = await self._submit(request, slot)
        except BaseException:
            self._release(slot)
            raise
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
        entry = await self._history.get(task_id, self._owner) if self._history is not None else None
        # Continue the poll schedule from the task's age, not from zero (0 if this server did not submit it).
        age = max(0.0, time.time() - entry.created_at) if entry is not None else 0.0
        snapshot = await self._wait(snapshot, wait_seconds, progress, just_submitted=False, age=age)
        # The upstream's copy of the request wins; ours adds what it never saw (variation_of).
        request = {**(entry.request if entry is not None else {}), **(snapshot.request or {})}
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

    async def _submit(self, request: ImageRequest, slot: CallbackSlot | None) -> Submission:
        """Submit, with the history row written first: an accepted task can always be found again."""
        callback_url = slot.url if slot is not None else None
        if self._history is None:
            submission = await self._client.submit(request, callback_url=callback_url)
            self._bind(slot, submission.task_id)
            return submission
        row = await self._history.begin(request.model_dump(exclude_none=True), self._owner)
        try:
            submission = await self._client.submit(request, callback_url=callback_url)
        except FluxError as exc:
            await self._history.submit_failed(row, exc.message, maybe_accepted=may_have_been_accepted(exc))
            raise
        except BaseException:
            # Cancelled (or crashed) while the request was in flight: the upstream may have it.
            with anyio.CancelScope(shield=True):
                await self._history.submit_failed(row, "interrupted while submitting", maybe_accepted=True)
            raise
        self._bind(slot, submission.task_id)
        await self._history.submitted(row, submission.task_id, submission.trace_id)
        return submission

    def _release(self, slot: CallbackSlot | None) -> None:
        if slot is not None and self._callbacks is not None:
            self._callbacks.close(slot)

    def _bind(self, slot: CallbackSlot | None, task_id: str) -> None:
        if slot is not None and self._callbacks is not None:
            self._callbacks.bind(slot, task_id)

    async def _recorded(self, result: TaskResult) -> TaskResult:
        if self._history is not None:
            await self._history.record(result, self._owner)
        return result

    async def _wait(
        self,
        snapshot: TaskSnapshot,
        wait_seconds: float | None,
        progress: ProgressFn,
        *,
        just_submitted: bool,
        age: float = 0.0,
    ) -> TaskSnapshot:
        budget = self.budget(wait_seconds)
        slot = self._callbacks.for_task(snapshot.task_id) if self._callbacks is not None else None
        if snapshot.status is not TaskStatus.PENDING:
            self._release(slot)
            return snapshot
        if budget <= 0:
            return snapshot
        try:
            waited = await self._waiter.wait(
                snapshot.task_id, budget, progress, just_submitted=just_submitted, slot=slot, age=age
            )
        except anyio.get_cancelled_exc_class():
            logger.info("stopped waiting for task %s; it continues upstream", snapshot.task_id)
            raise
        if waited.status is not TaskStatus.PENDING:
            self._release(slot)
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
        cost=snapshot.cost,
        usage=snapshot.usage,
        variation_of=_str(request.get("variation_of")),
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
