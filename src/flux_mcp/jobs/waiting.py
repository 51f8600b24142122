"""Waiting for one submitted task: woken by its token's poller or a callback, with progress, until it
settles, the budget runs out, or the server stops.

A waiting call never polls by itself: the poller of its token (`flux_mcp.jobs.poller`) looks at the task
on its schedule (`flux_mcp.jobs.schedule`: learned from the run times of its kind of job; for a kind not
seen, after ~2 s, then at intervals of 35% of the task's age, at most FLUX_MCP_POLL_MAX_SECONDS; get_task
carries on from the task's age), together with the token's other waiting tasks, and wakes the call the
moment the images exist; the call sends progress at least every HEARTBEAT_SECONDS. When the budget runs
out, or the serving process sets its `stop` event, the task is returned as the upstream last showed it
(`pending`), so every caller still gets its task id.

A callback is a wake-up, never a result: whoever learns a callback URL (in pass-through mode, any
user who reads their own task record upstream) can POST anything to it. The woken call re-reads the
task from the upstream with its own token (a look its poller makes at once) and uses only that
answer; a re-read that still says pending (an early or forged callback) is tried once more, then the
call waits on the fallback schedule. Wake-ups cost at most one re-read per slot every
WAKEUP_MIN_INTERVAL seconds, however many arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from flux_mcp.domain.tasks import TaskSnapshot, TaskStatus
from flux_mcp.jobs.callbacks import CallbackSlot
from flux_mcp.jobs.poller import Pollers, PollSchedule, Schedule, Watch
from flux_mcp.upstream.flux import FluxClient

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], Awaitable[None]]


async def no_progress(elapsed: float, message: str) -> None:
    """The progress sink used when the caller did not ask for progress."""


# With callbacks, polling is only the fallback for a callback that never comes.
CALLBACK_FALLBACK = PollSchedule(first=20.0, fraction=0.5, cap=30.0)
HEARTBEAT_SECONDS = 5.0  # progress at least this often, so clients see the call is alive
DEADLINE_MARGIN_SECONDS = 1.0


class TaskWaiter:
    """Waits for one task until it finishes or the budget runs out: woken by its token's poller."""

    def __init__(
        self, client: FluxClient, schedule: PollSchedule, pollers: Pollers, stop: anyio.Event | None = None
    ) -> None:
        self._client = client
        self._schedule = schedule
        self._pollers = pollers
        self._stop = stop

    async def wait(
        self,
        task_id: str,
        budget: float,
        progress: ProgressFn,
        *,
        just_submitted: bool,
        slot: CallbackSlot | None = None,
        wakeups_seen: int = 0,
        age: float = 0.0,
        schedule: Schedule | None = None,
        model: str | None = None,
        on_watch: Callable[[Watch], None] | None = None,
    ) -> TaskSnapshot:
        """The task as the upstream last showed it; `wakeups_seen`: the slot's wake-ups already answered;
        `schedule`: the task's own (`schedule.Schedules.for_job`), else the waiter's; `model`: for the spans
        of its looks; `on_watch`: told the poller's watch of the task once it is watched."""
        started = anyio.current_time()
        deadline = started + budget
        # No look at (or just before) the deadline: the get_task that follows looks first thing,
        # so it would be a double.
        look_until = deadline - min(DEADLINE_MARGIN_SECONDS, budget / 10)
        if slot is not None:
            schedule = CALLBACK_FALLBACK
        elif schedule is None:
            schedule = self._schedule
        pending = TaskSnapshot(task_id=task_id, status=TaskStatus.PENDING)
        retried = False
        with self._pollers.watching(
            self._client,
            task_id,
            schedule=schedule,
            age=age,
            just_submitted=just_submitted,
            look_until=look_until,
            model=model,
        ) as watch:
            if on_watch is not None:
                on_watch(watch)
            while True:
                if watch.settled.is_set():
                    return watch.outcome()
                if self._stopping():
                    logger.info("shutting down: task %s is returned as pending", task_id)
                    return watch.snapshot or pending
                now = anyio.current_time()
                if now >= deadline:
                    return watch.snapshot or pending
                if slot is not None and slot.wakeup_due(wakeups_seen, now):
                    # The first wake-up is read twice, WAKEUP_MIN_INTERVAL apart, should the first re-read
                    # say pending: the upstream may call back just before its task record shows the result.
                    wakeups_seen = slot.wakeups if retried else slot.wakeups - 1
                    slot.last_reread, retried = now, True
                    watch.look_soon()
                await self._pause(min(deadline, now + HEARTBEAT_SECONDS), watch, slot, wakeups_seen)
                if not (watch.settled.is_set() or self._stopping()):
                    elapsed = anyio.current_time() - started
                    await progress(elapsed, f"Generating… {elapsed:.0f} s elapsed (task {task_id})")

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _pause(self, moment: float, watch: Watch, slot: CallbackSlot | None, wakeups_seen: int) -> None:
        """Sleep until `moment`, a look at the task, a wake-up that may be acted on, or shutdown."""
        events = [watch.next_look()] + ([self._stop] if self._stop is not None else [])
        if slot is not None and slot.wakeups > wakeups_seen:
            moment = min(moment, slot.next_reread())  # a wake-up waiting its turn
        elif slot is not None:
            events.append(slot.next_wakeup())
        await sleep_until(moment, events)


async def sleep_until(moment: float, events: list[anyio.Event]) -> None:
    """Sleep until `moment`, or until any of `events` is set, whichever is first."""
    delay = max(moment - anyio.current_time(), 0.0)
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
