"""MCP Tasks without the protocol: a job tool call run as a task its caller polls, on the jobs' own machinery.

`TaskBoard.start` runs what the tool would run (`Jobs.run`: the claim, so an identical undelivered call
continues its job; the submission written to the history first) in the server's own task group, and
returns as soon as the job has an upstream task: by then the task's row (`protocol_tasks`: its id, whose it
is, which history row and upstream task, the tool and the preview choice) is in the history, so a
`tasks/get` anywhere finds it. A call that ends before that (a refusal, an undecided repeat) is answered
as the tool always answered it: no task, and no submission. The job then waits as long as it takes (not
FLUX_MCP_WAIT_SECONDS), woken by the poller or a callback, and is finished like any job (files kept, the
state recorded): its result is rebuilt from the history when asked for (`result`), the same `CallToolResult`
the tool would have returned.

Who drives a working task: the process that started it (`driver`, refreshed by every progress write, at
least every HEARTBEAT_SECONDS). One that stops cleanly lets go; a `get` finding a working task nobody drives
(after a restart; or its driver silent for ADOPT_AFTER_SECONDS, a crash) drives it from then on
(`Jobs.resume`), so a task is never stranded and replicas do not poll one job twice.

A task id is unguessable (`secrets.token_urlsafe`) and belongs to its caller: the history owner and the
person (`Caller.person`); anyone else's id is exactly an unknown one (`UnknownTaskError`).

A `tasks/get` is answered the moment there is news, not only when asked: on a working task this process
drives, it waits (`hold_for_news`) until the job has ended (files saved), or the poller's next look at it came
back still pending, for at most `hold_seconds` (2.5 × the first poll pause, never over MAX_HOLD_SECONDS:
far below any host's request timeout). `pollIntervalMs` then asks the host back just before the poller's
next look (`held_interval_ms`), so its next get spans that look and the saving after it: the host sees the
images as soon as they are saved, with about one tasks/get per look of the poller. A server may take time
to answer a request; a host that asks sooner or later than told is answered the same way. A task driven by
another process (a replica) is answered at once, and told to ask just after the poller's next look
(`poll_interval_ms`).

Cancelling stops the waiting as the client sees it: the task is `cancelled` at once. The Flux API cannot
stop a job, so it may still be billed; the server keeps watching it so its images land in the history
(list_tasks) if it finishes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.abc
from mcp_types import CallToolResult, TextContent

from flux_mcp.domain.errors import HistoryUnavailableError
from flux_mcp.domain.tasks import PreviewChoice, TaskSnapshot, TaskStatus
from flux_mcp.history.protocol_tasks import CANCELLED, COMPLETED, TERMINAL, WORKING, ProtocolTask
from flux_mcp.history.store import History
from flux_mcp.jobs.finishing import FinishedJob
from flux_mcp.jobs.poller import Schedule, Watch
from flux_mcp.jobs.runner import Jobs, JobTicket
from flux_mcp.jobs.schedule import JobKind, Schedules, kind_of
from flux_mcp.jobs.waiting import HEARTBEAT_SECONDS, ProgressFn
from flux_mcp.server.caller import Caller
from flux_mcp.server.job_calls import tool_result_of
from flux_mcp.server.observing import known_model
from flux_mcp.server.render import error_result, present, summarize
from flux_mcp.server.tasks.plan import TaskPlan

logger = logging.getLogger(__name__)

TASK_TTL_SECONDS = 24 * 3600.0  # how long a task (and so its result) can be asked for by its id
MIN_TTL_SECONDS = 60  # a shorter ttl would lose a billed job's result before a client could poll it
ADOPT_AFTER_SECONDS = 6 * HEARTBEAT_SECONDS  # a driver silent this long is gone
MAX_LOOKS_RETRACED = 256  # a 24-hour task at a 15 s cap has ~5,800 looks: past these, one pause from now
LOOK_MARGIN = 0.5  # after the poller's look, this share of its first pause: the time to keep the images
HOLD_FIRSTS = 2.5  # a held tasks/get waits at most this many first poll pauses (5 s at the defaults)…
MAX_HOLD_SECONDS = 5.0  # …and never longer: hosts time requests out after 60 s or more
LEAD_SHARE = 0.25  # a host is asked back this share of the first pause before the poller's next look
LEAST_INTERVAL_SHARE = 0.05  # the least pollIntervalMs for a task driven here, × first (its get is held)
SAVING_MESSAGE = "Done upstream; saving the files…"  # between the poller's last look and the result
CANCELLED_MESSAGE = (
    "Cancelled: flux-mcp stopped waiting. The Flux API cannot stop a job, so this one may still finish "
    "and be billed; if it does, its images are kept in the history (list_tasks shows them)."
)

# What a task runs, given the jobs to run it with: `Jobs.run` for a new call, `Jobs.resume` when adopted.
JobRun = Callable[[Jobs, JobTicket, ProgressFn], Awaitable[FinishedJob]]


ID_SHOWN_CHARS = 64  # ours are 32; a longer id sent back is shown cut (an error is not an echo service)


class UnknownTaskError(LookupError):
    """No such task for this caller: never created, expired, or someone else's (all alike)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Unknown task id {shown_id(task_id)} (it may have expired)")


def shown_id(text: object) -> str:
    """A client's task id (or cursor) as an error quotes it: whole when short, else its start."""
    quoted = repr(text)
    return (
        quoted if len(quoted) <= ID_SHOWN_CHARS else f"{quoted[:ID_SHOWN_CHARS]}… ({len(quoted)} characters)"
    )


@dataclass(frozen=True)
class TaskState:
    """A task as a client sees it, in either protocol's terms (each names the fields its own way)."""

    task_id: str
    tool: str
    status: str  # working, completed, failed, cancelled
    status_message: str | None
    created_at: float
    last_updated_at: float
    ttl_ms: int
    poll_interval_ms: int

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def wire(self) -> dict[str, Any]:
        """The Task fields of the 2026-07-28 extension (taskId, status, …, ttlMs, pollIntervalMs)."""
        shown: dict[str, Any] = {"taskId": self.task_id, "status": self.status}
        if self.status_message:
            shown["statusMessage"] = self.status_message
        shown |= {
            "createdAt": iso_time(self.created_at),
            "lastUpdatedAt": iso_time(self.last_updated_at),
            "ttlMs": self.ttl_ms,
            "pollIntervalMs": self.poll_interval_ms,
        }
        return shown


def until_next_look(schedule: Schedule, age: float) -> float:
    """Seconds until the poller's next look at a task this old (seconds since its submission), as its
    schedule says (the real looks drift later: each waits for the one before to be answered). The one place
    the poller's schedule is read for Tasks: today's schedule, or the one learned for this kind of job
    (`jobs.schedule`)."""
    # The poller's looks, as ages: the first, then each one pause(look) after the last.
    look = schedule.pause(0.0)
    for _ in range(MAX_LOOKS_RETRACED):
        if look > age:
            return look - age
        look += schedule.pause(look)
    return schedule.pause(age)  # a task older than its schedule's first looks: one pause from now


def poll_interval_ms(schedule: Schedule, age: float) -> int:
    """When a client should next ask about a task this old that another process drives (no held get here):
    just after the poller's next look at it, when its state can next change (asking sooner shows the same
    state again; later, shows the images late)."""
    until_look = until_next_look(schedule, age) + schedule.first * LOOK_MARGIN
    # Real looks drift later than the schedule (each waits for the one before to be answered): never wait
    # more than half a pause, so a look that came late is still seen soon after.
    return max(1, round(min(until_look, schedule.pause(age) / 2) * 1000))


def held_interval_ms(until_look: float, first: float) -> int:
    """pollIntervalMs for a task this process drives (its tasks/get is held, `hold_for_news`): back just
    before the poller's next look, `until_look` s from now, so the held get spans the look and the saving
    after it; back at once (the least interval) when the look is due, or the task is saving."""
    lead = min(LEAD_SHARE * first, MAX_HOLD_SECONDS / 2)  # the held get spans the look, whatever `first`
    return max(1, round(max(until_look - lead, LEAST_INTERVAL_SHARE * first) * 1000))


def hold_seconds(schedule: Schedule) -> float:
    """How long a tasks/get on a working task driven here may wait for news."""
    return min(HOLD_FIRSTS * schedule.first, MAX_HOLD_SECONDS)


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Driver:
    """A task this process drives: its latest progress text, and whether the job has a task / has ended."""

    message: str | None = None
    started: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: CallToolResult | None = None  # the tool's answer, when the call ended before it had a task
    watch: Watch | None = None  # the poller's watch of its upstream task, while it is waited for
    watched: anyio.Event = field(default_factory=anyio.Event)  # set once it has had a watch

    def note_watch(self, watch: Watch) -> None:
        self.watch = watch
        self.watched.set()


async def hold_for_news(driver: _Driver, seconds: float) -> None:
    """Return once the driver's job has ended (its files saved), or the poller's next look at it came back
    still pending, or after `seconds`.
    A look that saw it done is not news yet: the end comes with its files."""
    with anyio.move_on_after(seconds):
        while not driver.done.is_set():
            watch = driver.watch
            if watch is None:
                await _first_of(driver.done, driver.watched)
            elif watch.settled.is_set():  # saving: the end is near
                await driver.done.wait()
            else:
                await _first_of(driver.done, watch.next_look())
                if not watch.settled.is_set():
                    return


class TaskBoard:
    """The server's MCP tasks: start, look at, wait for, list, cancel. One per running server."""

    def __init__(
        self,
        history: History,
        group: anyio.abc.TaskGroup,
        schedules: Schedules,
        *,
        ttl_seconds: float = TASK_TTL_SECONDS,
        adopt_after: float = ADOPT_AFTER_SECONDS,
    ) -> None:
        self._history = history
        self._group = group
        self._schedules = schedules
        self._ttl = ttl_seconds
        self._adopt_after = adopt_after
        self._id = secrets.token_hex(8)  # this process, as the `driver` of its tasks
        self._drivers: dict[str, _Driver] = {}

    # -- starting ------------------------------------------------------------------------------

    async def start(
        self, plan: TaskPlan, caller: Caller, run: JobRun, preview: PreviewChoice | None
    ) -> CallToolResult:
        """Run the job as a task: `plan.started` is the task once its job has an upstream task.

        Returns the tool's own answer when the call ended before that (no task then); otherwise a
        placeholder the protocol layer replaces with the task (`plan.started`).
        """
        now = time.time()
        ttl = min(max(plan.ttl_seconds, MIN_TTL_SECONDS), self._ttl) if plan.ttl_seconds else self._ttl
        task = ProtocolTask(
            id=secrets.token_urlsafe(24),
            owner=caller.owner,
            person=caller.person,
            row_id=None,
            task_id=None,
            tool=plan.tool,
            arguments={"preview": preview} if preview else {},
            status=WORKING,
            status_message=None,
            error=None,
            driver=self._id,
            created_at=now,
            updated_at=now,
            expires_at=now + ttl,
        )
        try:
            await self._history.add_protocol_task(task)
        except HistoryUnavailableError as exc:  # nothing submitted: said as every tool says it
            return error_result(exc.message)
        driver = self._drivers[task.id] = _Driver()
        self._group.start_soon(self._drive, task, caller, run, driver)
        await _first_of(driver.started, driver.done)
        if not driver.started.is_set():  # ended before it had a task: answered as the tool answers
            self._drivers.pop(task.id, None)
            await self._history.delete_protocol_task(task.id)
            return driver.outcome or error_result(f"{plan.tool} ended without a result")
        plan.started = await self._state_of(await self._reread(task), driver)
        # Never shown: the protocol layer answers with `plan.started`. Marked an error so that the SDK
        # does not hold it to the tool's output schema on its way there.
        started = TextContent(type="text", text=f"Started task {task.id}")
        return CallToolResult(content=[started], is_error=True)

    async def _drive(self, task: ProtocolTask, caller: Caller, run: JobRun, driver: _Driver) -> None:
        """Run the job to its end and record how it ended on the task (never over a cancel)."""

        async def has_task(task_id: str, row_id: int | None, kind: JobKind | None) -> None:
            # The poller's schedule for it counts from now (`poll_interval_ms`), and is its kind of job's
            # (kept with the task, so another process polls it by the same schedule).
            job = dataclasses.asdict(kind) if kind is not None else None
            arguments = json.dumps({**task.arguments, "submitted_at": time.time(), "job": job})
            await self._history.update_protocol_task(
                task.id,
                working_only=False,
                task_id=task_id,
                row_id=row_id,
                status_message=driver.message,
                arguments=arguments,
            )
            driver.started.set()

        async def progress(elapsed: float, message: str) -> None:
            driver.message = message
            try:
                await self._history.update_protocol_task(task.id, status_message=message, driver=self._id)
            except Exception as exc:  # progress is news, not a result: the job goes on
                logger.warning("could not note the progress of an MCP task: %s", exc)

        async def settled(snapshot: TaskSnapshot) -> None:
            if snapshot.status is not TaskStatus.PENDING:
                await progress(0.0, SAVING_MESSAGE)

        finished: FinishedJob | None = None

        async def work() -> FinishedJob:
            nonlocal finished
            ticket = JobTicket(on_task=has_task, on_settled=settled, on_watch=driver.note_watch)
            finished = await run(caller.jobs.without_wait_limit(), ticket, progress)
            return finished

        async def render(job: FinishedJob) -> CallToolResult:
            return present(job, resource_links=caller.state.settings.resource_links)

        try:
            shown = await tool_result_of(task.tool, work, render)
            if not driver.started.is_set():
                driver.outcome = shown
            elif finished is not None and finished.result.status is TaskStatus.PENDING:
                await self._let_go(task.id)  # the server is stopping: whoever runs next finishes it
            else:
                await self._end(task.id, finished, shown)
                _count_job(caller, task.tool, finished)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._let_go(task.id)
            raise
        except Exception:  # the history failed us: the task stays working, and a later get adopts it
            logger.exception("MCP task %s: could not record how its job ended", task.id)
            await self._let_go(task.id)
        finally:
            driver.done.set()
            self._drivers.pop(task.id, None)

    async def _end(self, task_id: str, finished: FinishedJob | None, shown: CallToolResult) -> None:
        if finished is not None:  # its first line: what happened (the result has the rest)
            message, error = summarize(finished.result).split("\n", 1)[0], None
        else:
            error = _text_of(shown)
            message = error
        await self._history.update_protocol_task(
            task_id, status=COMPLETED, status_message=message, error=error, driver=None
        )

    async def _let_go(self, task_id: str) -> None:
        try:
            await self._history.update_protocol_task(task_id, working_only=False, driver=None)
        except Exception as exc:
            logger.warning("could not let go of MCP task %s: %s", task_id, exc)

    # -- looking -------------------------------------------------------------------------------

    async def get(self, caller: Caller, task_id: str, *, hold: bool = False) -> TaskState:
        """The task now; a working one nobody drives is driven from here on. `hold`: a working task driven
        here is answered when there is news (`hold_for_news`), at most `hold_seconds` from now."""
        task = await self._find(caller, task_id)
        driver = self._drivers.get(task.id)
        if task.status == WORKING and driver is None:
            await self._adopt(caller, task)
            driver = self._drivers.get(task.id)
        if hold and task.status == WORKING and driver is not None and not driver.done.is_set():
            await hold_for_news(driver, hold_seconds(self._schedule_of(task)))
            task = await self._reread(task)
        return await self._state_of(task, driver)

    async def result(self, caller: Caller, task_id: str) -> CallToolResult:
        """The completed task's result, as the tool would have answered (rebuilt from the history), now
        marked delivered. Raises ValueError when the task is not completed."""
        task = await self._find(caller, task_id)
        if task.status != COMPLETED:
            raise ValueError(f"task {task_id} is {task.status}, not completed")
        if task.error is not None or task.task_id is None:
            shown = error_result(task.error or f"{task.tool} ended without a result")
        else:
            preview = task.arguments.get("preview")
            finished = await caller.jobs.resume(task.task_id, 0, preview=preview)
            shown = present(finished, resource_links=caller.state.settings.resource_links)
        rows = [task.row_id] if task.row_id is not None else []
        await self._history.mark_delivered(
            caller.owner, task_ids=[task.task_id] if task.task_id else [], row_ids=rows
        )
        return shown

    async def wait(self, caller: Caller, task_id: str) -> TaskState:
        """The task once it has ended (completed, failed or cancelled)."""
        while True:
            state = await self.get(caller, task_id)
            if state.terminal:
                return state
            driver = self._drivers.get(task_id)
            with anyio.move_on_after(state.poll_interval_ms / 1000):
                if driver is not None:
                    await driver.done.wait()
                else:
                    await anyio.sleep_forever()

    async def list(self, caller: Caller, *, limit: int = 50, offset: int = 0) -> list[TaskState]:
        """The caller's unexpired tasks, newest first (no task is adopted by listing it)."""
        tasks = await self._history.list_protocol_tasks(
            caller.owner, caller.person, now=time.time(), limit=limit, offset=offset
        )
        return [await self._state_of(task, self._drivers.get(task.id)) for task in tasks if task.task_id]

    async def cancel(self, caller: Caller, task_id: str) -> TaskState:
        """Stop waiting: the task is cancelled (unless it ended first). The job goes on upstream (it cannot
        be stopped, and may be billed); its images are kept in the history if it finishes."""
        task = await self._find(caller, task_id)
        if task.status == WORKING:
            await self._history.update_protocol_task(
                task.id, status=CANCELLED, status_message=CANCELLED_MESSAGE
            )
            logger.info("MCP task %s cancelled; upstream task %s goes on", task.id, task.task_id)
        return await self._state_of(await self._reread(task), self._drivers.get(task.id))

    # -- helpers -------------------------------------------------------------------------------

    async def _find(self, caller: Caller, task_id: str) -> ProtocolTask:
        task = await self._history.find_protocol_task(task_id, caller.owner, caller.person)
        if task is None or task.task_id is None or task.expires_at <= time.time():
            raise UnknownTaskError(task_id)
        return task

    async def _reread(self, task: ProtocolTask) -> ProtocolTask:
        return await self._history.find_protocol_task(task.id, task.owner, task.person) or task

    async def _adopt(self, caller: Caller, task: ProtocolTask) -> None:
        """Drive a working task nobody drives (its process stopped), resuming its upstream task."""
        stale_before = time.time() - self._adopt_after
        if task.task_id is None or not await self._history.drive_protocol_task(
            task.id, self._id, stale_before=stale_before
        ):
            return
        upstream, preview = task.task_id, task.arguments.get("preview")
        logger.info("driving MCP task %s (upstream task %s) from here on", task.id, upstream)
        driver = self._drivers[task.id] = _Driver(message=task.status_message)
        driver.started.set()

        async def resume(jobs: Jobs, ticket: JobTicket, progress: ProgressFn) -> FinishedJob:
            return await jobs.resume(upstream, None, progress, preview, ticket)

        self._group.start_soon(self._drive, task, caller, resume, driver)

    def _schedule_of(self, task: ProtocolTask) -> Schedule:
        job = task.arguments.get("job")
        return self._schedules.for_job(kind_of(job if isinstance(job, dict) else None))

    async def _state_of(self, task: ProtocolTask, driver: _Driver | None) -> TaskState:
        message = (
            driver.message if driver is not None and task.status == WORKING else None
        ) or task.status_message
        age = max(0.0, time.time() - float(task.arguments.get("submitted_at", task.created_at)))
        saving = task.status == WORKING and message == SAVING_MESSAGE
        schedule = self._schedule_of(task)
        if task.status == WORKING and driver is not None and not driver.done.is_set():
            interval = held_interval_ms(0.0 if saving else _until_look(driver, schedule, age), schedule.first)
        elif saving:
            interval = round(schedule.first * LOOK_MARGIN * 1000)
        else:
            interval = poll_interval_ms(schedule, age)
        return TaskState(
            task_id=task.id,
            tool=task.tool,
            status=task.status,
            status_message=message,
            created_at=task.created_at,
            last_updated_at=task.updated_at,
            ttl_ms=round((task.expires_at - task.created_at) * 1000),
            poll_interval_ms=max(1, interval),
        )


def _until_look(driver: _Driver, schedule: Schedule, age: float) -> float:
    """Seconds until the poller's next look at the driver's task: its watch's own when it is watched (0 when
    the look is overdue, or saw the end), else as the schedule says."""
    watch = driver.watch
    if watch is None:
        return until_next_look(schedule, age)
    return 0.0 if watch.settled.is_set() else max(0.0, watch.next_due - anyio.current_time())


def _count_job(caller: Caller, tool: str, finished: FinishedJob | None) -> None:
    """The task's job call, counted as a plain call is (`server.observing`), now that it has ended."""
    result = finished.result if finished is not None else None
    model = known_model(result.model if result is not None else None)
    caller.state.observer.job_call(tool, model, str(result.status) if result is not None else "error")


async def _first_of(*events: anyio.Event) -> None:
    """Return once any of `events` is set."""

    async def wait_for(event: anyio.Event, scope: anyio.CancelScope) -> None:
        await event.wait()
        scope.cancel()

    async with anyio.create_task_group() as group:
        for event in events:
            group.start_soon(wait_for, event, group.cancel_scope)


def _text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent)) or "failed"
