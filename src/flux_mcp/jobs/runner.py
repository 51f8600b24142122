"""Running Flux jobs: submit (or continue an identical one nobody has the result of), wait, finish.

A tool call never blocks blindly and never polls in the chat. `Jobs.run` submits with
`async: true`, then waits on the server (`waiting.TaskWaiter`: woken by the poller of its token or a
callback, with progress) until the images exist or the call's budget runs out; then it returns a normal
`pending` result with the task id, and `Jobs.resume` (the `get_task` tool) waits the same way.
Whatever state a call ends with is finished by `finishing.Finisher` (files kept, the state recorded
once). Cancelling a call stops its waiting, never the task nor other calls waiting on it: the upstream
keeps it and `get_task` still finds it.

A retry never pays twice. Clients time tool calls out on their own clock (openai-agents and google-adk
after 5 s by default) while the job goes on upstream, and a model that is told "error, try again"
calls again with the same arguments. So `run` first claims the request in the history
(`History.claim_submission`): if an identical request (same `ImageRequest.fingerprint`, same owner,
within ATTACH_HORIZON_SECONDS) was submitted and no caller has received its outcome yet, the call
continues that task instead of submitting (`attached` in the result). Once an outcome has been
delivered, an identical call is a deliberate re-run and submits anew. The cases:
- pending, or finished after its own caller went away: continue it, wait as usual, return the images.
- failed, never seen: continue it too, and return the failure. The caller learns why (a refusal
  would most likely fail again); an identical call after that submits anew.
- still `submitting` (another call is between asking the upstream and hearing back): wait for its
  task id by polling the history (bounded by how long a submission can take), then continue it.
- `unknown` (the submission may have been accepted and billed, no task id): submit nothing; say so
  and point at list_tasks. That message counts as delivered, so an identical call after it submits.
- `rejected` (the upstream provably did not take it): nothing to continue; submit.
What "delivered" means (the server marks it, `History.mark_delivered`) is explained in server/delivery.py.

Whatever the upstream (or anyone) sends, a result carries at most the images its request asked for.

Whose tasks a caller may read (`may_read_unrecorded`): a task id that is not in the caller's history is
read from the upstream (and recorded as theirs) only where the upstream itself tells callers apart or
the callers share one history by design. With OAuth everyone's calls use the server's one token, so the
upstream would answer anyone for anyone's task: there an id outside the caller's history is "not found",
without asking the upstream, the same answer as an id that never existed.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio

from flux_mcp.domain.errors import (
    TRANSIENT,
    FluxError,
    HistoryUnavailableError,
    TaskNotFoundError,
    UndecidedRepeatError,
    may_have_been_accepted,
)
from flux_mcp.domain.results import BudgetLeft, BudgetStatus
from flux_mcp.domain.tasks import (
    ImageRequest,
    PreviewChoice,
    TaskBatchResult,
    TaskResult,
    TaskSnapshot,
    TaskStatus,
    images_asked,
)
from flux_mcp.domain.team import LOCAL_PERSON, Budget, Budgets, Spend
from flux_mcp.domain.telemetry import TASK_ID, task_span
from flux_mcp.domain.videos import VideoRequest
from flux_mcp.history.rows import SUBMITTING, Claim, HistoryEntry, iso
from flux_mcp.history.store import History
from flux_mcp.jobs.callbacks import CallbackHub, CallbackSlot
from flux_mcp.jobs.finishing import FinishedJob, Finisher, task_result
from flux_mcp.jobs.poller import NOT_FOUND_GRACE_SECONDS, Pollers, PollSchedule, Watch
from flux_mcp.jobs.schedule import JobKind, Schedules, kind_of
from flux_mcp.jobs.waiting import ProgressFn, TaskWaiter, no_progress, sleep_until
from flux_mcp.upstream.flux import FluxClient, Submission

logger = logging.getLogger(__name__)

# An identical call is continued only if it was submitted within this horizon; older ones are re-runs.
ATTACH_HORIZON_SECONDS = 24 * 3600.0
# How long a submission may take (every attempt's HTTP timeout and the pauses between), when the
# server does not say: past it, a row still `submitting` belongs to a process that died mid-submit.
DEFAULT_SUBMIT_BOUND_SECONDS = 300.0
SUBMITTING_POLL_FIRST, SUBMITTING_POLL_MAX = 0.05, 1.0
# How long a job run as an MCP task waits (`Jobs.without_wait_limit`): nobody's tool call is held open.
TASK_WAIT_SECONDS = 7 * 24 * 3600.0


def may_read_unrecorded(token: str | None, owner: str) -> bool:
    """Whether a caller may read a task its history does not show them (from the upstream, as theirs).

    `token`: the caller's own upstream token, or None when the server's pays; `owner`: their history.
    Yes with their own token (pass-through): the upstream answers that token only what its holder could
    read with it directly, so the server adds no reach. Yes when the history is everyone's ("": stdio, no
    auth, the server tokens of FLUX_MCP_AUTH_TOKENS, a team sharing one history by design). No for a
    person of their own (OAuth) on the server's shared token: the upstream cannot tell them apart.
    """
    return bool(token) or owner == ""


def not_found(task_id: str) -> TaskNotFoundError:
    """The answer for a task id this caller may not read: the same whether it exists or not."""
    message = f"No task with id {task_id!r} in your history; check the id (list_tasks shows your tasks)."
    return TaskNotFoundError(message, status=404)  # as if the upstream had answered: it was not asked


@dataclass
class JobTicket:
    """What a job call's answer is about besides its task: filled in by `Jobs.run`."""

    # The answer tells its caller that this history row's submission may have been billed.
    undecided_row: int | None = None
    # Told the upstream task (its history row, and its kind of job) once the job has one: submitted, or an
    # identical undelivered one continued. An MCP task hands its id out from then on (server/tasks).
    on_task: Callable[[str, int | None, JobKind | None], Awaitable[None]] | None = None
    # Told when the waiting is over, before the files are kept (an MCP task says it is saving them).
    on_settled: Callable[[TaskSnapshot], Awaitable[None]] | None = None
    # Told the poller's watch of the task while it is waited for (an MCP task times its answers by it).
    on_watch: Callable[[Watch], None] | None = None

    async def has_task(self, task_id: str, row_id: int | None, kind: JobKind | None) -> None:
        if self.on_task is not None:
            await self.on_task(task_id, row_id, kind)

    async def settled(self, snapshot: TaskSnapshot) -> None:
        if self.on_settled is not None:
            await self.on_settled(snapshot)


class Jobs:
    """The use cases behind the tools: run a job (images or a video), resume a task, look up many tasks."""

    def __init__(
        self,
        client: FluxClient,
        *,
        max_wait: float,
        schedule: PollSchedule,
        pollers: Pollers,
        history: History | None = None,
        finisher: Finisher | None = None,
        owner: str = "",
        person: str = LOCAL_PERSON,
        budgets: Budgets | None = None,
        callbacks: CallbackHub | None = None,
        stop: anyio.Event | None = None,
        submit_bound: float = DEFAULT_SUBMIT_BOUND_SECONDS,
        reads_unrecorded: bool | None = None,
        schedules: Schedules | None = None,
    ) -> None:
        """`reads_unrecorded`: `may_read_unrecorded` of this caller (None: yes only for the owner "")."""
        self._client = client
        self._max_wait = max_wait
        self._waiter = TaskWaiter(client, schedule, pollers, stop)
        # Learned per kind of job when the server shares one (`schedule`: today's, for a kind not seen).
        self._schedules = schedules if schedules is not None else Schedules(schedule)
        self._history = history
        self._finisher = finisher if finisher is not None else Finisher(history)  # records, keeps nothing
        self._owner = owner
        self.person = person  # who pays, for budgets and the report (`server.caller.Caller.person`)
        self.budgets = budgets if budgets is not None else Budgets()
        self._callbacks = callbacks
        self._stop = stop
        self._submit_bound = submit_bound
        self._reads_unrecorded = owner == "" if reads_unrecorded is None else reads_unrecorded

    def without_wait_limit(self) -> Jobs:
        """These jobs, waiting until each task ends (TASK_WAIT_SECONDS), whatever FLUX_MCP_WAIT_SECONDS is."""
        unlimited = copy.copy(self)
        unlimited._max_wait = TASK_WAIT_SECONDS
        return unlimited

    def pause_before_next_look(self, request: Mapping[str, Any] | None, age: float) -> float:
        """The pause before the next look at a task submitted with `request` (its body, or the history's
        copy) `age` seconds ago: what the poller waits, and what a host polling MCP Tasks is told."""
        return self._schedules.pause(kind_of(request), age)

    def budget(self, wait_seconds: float | None) -> float:
        return self._max_wait if wait_seconds is None else min(wait_seconds, self._max_wait)

    async def run(
        self,
        request: ImageRequest | VideoRequest,
        wait_seconds: float | None,
        progress: ProgressFn = no_progress,
        ticket: JobTicket | None = None,
        preview: PreviewChoice | None = None,
    ) -> FinishedJob:
        """Submit the job (or continue an identical one nobody has the result of), wait for it, finish it.

        `preview`: the inline previews the call wants (None: the server's choice).
        """
        started = anyio.current_time()
        ticket = ticket if ticket is not None else JobTicket()
        history = self._history
        claim = await self._claim(history, request) if history is not None else None
        while history is not None and claim is not None and claim.earlier is not None:
            continued = await self._continue(history, claim.earlier, wait_seconds, progress, ticket, preview)
            if continued is not None:
                return continued
            claim = await self._claim(history, request)
        slot = self._callbacks.open() if self._callbacks is not None else None
        if queued := self._client.queued():
            await progress(0.0, f"Queued: {queued} upstream requests ahead (FLUX_MCP_MAX_CONCURRENCY)")
        try:
            with task_span("flux.submit", None, request.model, action=request.action) as step:
                submission = await self._submit(request, slot, claim.row_id if claim else None, ticket)
                step.set_attribute(TASK_ID, submission.task_id)
        except BaseException:
            self._release(slot)
            raise
        logger.info("submitted %s task %s (%s)", request.action, submission.task_id, request.model)
        await progress(0.0, f"Submitted task {submission.task_id}; waiting for {request.model}…")
        body = request.model_dump()
        kind = kind_of(body)
        await ticket.has_task(submission.task_id, claim.row_id if claim else None, kind)
        pending = TaskSnapshot(
            task_id=submission.task_id, status=TaskStatus.PENDING, trace_id=submission.trace_id
        )
        snapshot = await self._wait(
            pending, wait_seconds, progress, slot, just_submitted=True, kind=kind, on_watch=ticket.on_watch
        )
        await ticket.settled(snapshot)
        result = task_result(snapshot, body, anyio.current_time() - started)
        return await self._finisher.finish(result, self._owner, preview)

    async def resume(
        self,
        task_id: str,
        wait_seconds: float | None,
        progress: ProgressFn = no_progress,
        preview: PreviewChoice | None = None,
        ticket: JobTicket | None = None,
    ) -> FinishedJob:
        started = anyio.current_time()
        entry = await self._known(task_id)
        if entry is None and not self._reads_unrecorded:
            raise not_found(task_id)
        ended = _ended(entry)
        if ended is not None:  # an ended task never changes upstream: shown again from the history
            return await self._finisher.finish(ended, self._owner, preview)
        slot = self._callbacks.for_task(task_id) if self._callbacks is not None else None
        seen = slot.wakeups if slot is not None else 0  # the read below answers every wake-up so far
        with task_span("flux.poll", task_id, entry.model if entry is not None else None, tasks=1):
            snapshot = await self._client.retrieve(task_id)
        # Continue the poll schedule from the task's age, not from zero (0 if this server did not submit it).
        age = max(0.0, time.time() - entry.created_at) if entry is not None else 0.0
        kind = kind_of(entry.request) if entry is not None else None
        snapshot = await self._wait(
            snapshot,
            wait_seconds,
            progress,
            slot,
            just_submitted=False,
            age=age,
            wakeups_seen=seen,
            kind=kind,
            on_watch=ticket.on_watch if ticket is not None else None,
        )
        # The upstream's copy of the request wins; ours adds what it never saw (variation_of).
        if ticket is not None:
            await ticket.settled(snapshot)
        request = {**(entry.request if entry is not None else {}), **(snapshot.request or {})}
        result = task_result(snapshot, request, anyio.current_time() - started)
        return await self._finisher.finish(result, self._owner, preview)

    async def _known(self, task_id: str) -> HistoryEntry | None:
        """The history's row of a task; None when there is none, or the history cannot be reached (the
        upstream still has the task, so get_task goes on without it)."""
        try:
            return await self._history.find_task(task_id, self._owner) if self._history is not None else None
        except HistoryUnavailableError as exc:
            if not self._reads_unrecorded:  # whose task it is cannot be checked: nothing is shown
                raise
            logger.warning("looking up task %s without the history: %s", task_id, exc.reason)
            return None

    async def lookup(self, task_ids: list[str]) -> TaskBatchResult:
        unique_ids = list(dict.fromkeys(task_ids))
        readable = task_ids if self._reads_unrecorded else await self._recorded(unique_ids)
        snapshots = await self._client.retrieve_batch(readable) if readable else []
        by_id = {snapshot.task_id: snapshot for snapshot in snapshots if snapshot.task_id in readable}
        found = [by_id[task_id] for task_id in unique_ids if task_id in by_id]
        return TaskBatchResult(
            tasks=[task_result(snapshot, snapshot.request, None) for snapshot in found],
            missing=[task_id for task_id in unique_ids if task_id not in by_id],
        )

    async def _recorded(self, task_ids: list[str]) -> list[str]:
        """Those of `task_ids` in this caller's history, in order (none without a history)."""
        mine = (
            await self._history.owned_task_ids(task_ids, self._owner) if self._history is not None else set()
        )
        return [task_id for task_id in task_ids if task_id in mine]

    async def _claim(self, history: History, request: ImageRequest | VideoRequest) -> Claim:
        """The history row this call submits with, or the undelivered identical submission it continues.

        An identical submission still in flight elsewhere is waited for (the history is polled: the other
        call may live in another process) until it has a task id or has failed, then claimed again.
        """
        body, fingerprint = request.model_dump(exclude_none=True), request.fingerprint()
        spend = await self._spend(history, body)
        while True:
            since = time.time() - ATTACH_HORIZON_SECONDS
            claim = await history.claim_submission(
                body, fingerprint, self._owner, since=since, spend=spend, person=self.person
            )
            if claim.earlier is None or claim.earlier.status != SUBMITTING:
                return claim
            await self._await_submission(history, claim.earlier)

    async def check_budget(self, request: ImageRequest | VideoRequest) -> None:
        """Raise BudgetExceededError if this request would not fit its budgets now; reserves nothing (the
        submission does, `History.claim_submission`). For calls that upload inputs before they submit."""
        if self._history is None:
            return
        spend = await self._spend(self._history, request.model_dump(exclude_none=True))
        if spend is not None:
            since = time.time() - ATTACH_HORIZON_SECONDS
            await self._history.check_budgets(spend, request.fingerprint(), self._owner, since=since)

    async def budget_status(self) -> BudgetStatus | None:
        """This caller's budgets and what is left of them now; None when no budget is set."""
        history = self._history
        if history is None or self.budgets.spend(self.person, 0.0) is None:
            return None
        now, status = time.time(), BudgetStatus(person=self.person)
        if self.budgets.person is not None:
            status.yours = await _left(history, self.budgets.person, now, self.person)
        if self.budgets.total is not None:
            status.server = await _left(history, self.budgets.total, now, None)
        return status

    async def _spend(self, history: History, body: dict[str, Any]) -> Spend | None:
        """What submitting `body` must fit, with its estimated cost; None when no budget is set."""
        if self.budgets.spend(self.person, 0.0) is None:
            return None
        model, size = str(body.get("model") or ""), body.get("size")
        size = size if isinstance(size, str) else None
        estimate = await history.estimate_cost(model, size, images_asked(body))
        return self.budgets.spend(self.person, estimate)

    async def _await_submission(self, history: History, earlier: HistoryEntry) -> None:
        """Wait until another call's submission leaves `submitting`; past the bound its process is dead."""
        logger.info("an identical request is being submitted; waiting for its task id")
        pause = SUBMITTING_POLL_FIRST
        entry: HistoryEntry | None = earlier
        while entry is not None and entry.status == SUBMITTING:
            if time.time() - entry.created_at > self._submit_bound:
                await history.mark_abandoned(entry.row_id)
                return
            if self._stop is not None and self._stop.is_set():
                raise UndecidedRepeatError(
                    "Not submitted: the server is shutting down while an identical request is still being "
                    "submitted by another call. list_tasks shows it and its task id once it has one."
                )
            await sleep_until(anyio.current_time() + pause, [self._stop] if self._stop is not None else [])
            pause = min(pause * 2, SUBMITTING_POLL_MAX)
            entry = await history.find_row(entry.row_id)

    async def _continue(
        self,
        history: History,
        earlier: HistoryEntry,
        wait_seconds: float | None,
        progress: ProgressFn,
        ticket: JobTicket,
        preview: PreviewChoice | None,
    ) -> FinishedJob | None:
        """Attach this call to an identical submission whose outcome no caller has received.

        None when the upstream no longer knows that task: nothing of it can be billed, so the call submits.
        """
        started = anyio.current_time()
        age = max(0.0, time.time() - earlier.created_at)
        if earlier.task_id is None:
            ticket.undecided_row = earlier.row_id
            raise UndecidedRepeatError(_undecided_message(earlier, age))
        task_id = earlier.task_id
        logger.info("continuing task %s: an identical call submitted it %.0f s ago", task_id, age)
        await progress(0.0, f"Continuing task {task_id}, submitted {ago(age)} by an identical call")
        kind = kind_of(earlier.request)
        await ticket.has_task(task_id, earlier.row_id, kind)
        slot = self._callbacks.for_task(task_id) if self._callbacks is not None else None
        seen = slot.wakeups if slot is not None else 0  # the read below answers every wake-up so far
        try:
            with task_span("flux.poll", task_id, earlier.model, tasks=1):
                snapshot = await self._client.retrieve(task_id)
        except TaskNotFoundError:
            if age > NOT_FOUND_GRACE_SECONDS:
                logger.warning("task %s is unknown upstream; submitting the request anew", task_id)
                await history.mark_delivered(self._owner, row_ids=[earlier.row_id])  # never continue it
                return None
            snapshot = TaskSnapshot(task_id=task_id, status=TaskStatus.PENDING, trace_id=earlier.trace_id)
        except TRANSIENT as exc:  # the task exists upstream; the waiter looks again
            logger.warning("could not check task %s: %s", task_id, exc.message)
            snapshot = TaskSnapshot(task_id=task_id, status=TaskStatus.PENDING, trace_id=earlier.trace_id)
        just_submitted = age <= NOT_FOUND_GRACE_SECONDS
        snapshot = await self._wait(
            snapshot,
            wait_seconds,
            progress,
            slot,
            just_submitted=just_submitted,
            age=age,
            wakeups_seen=seen,
            kind=kind,
            on_watch=ticket.on_watch,
        )
        await ticket.settled(snapshot)
        result = task_result(snapshot, earlier.request, anyio.current_time() - started)
        result.attached, result.submitted_seconds_ago = True, round(age, 1)
        return await self._finisher.finish(result, self._owner, preview)

    async def _submit(
        self,
        request: ImageRequest | VideoRequest,
        slot: CallbackSlot | None,
        row: int | None,
        ticket: JobTicket,
    ) -> Submission:
        """Submit, with the history row written first: an accepted task can always be found again."""
        callback_url = slot.url if slot is not None else None
        if self._history is None or row is None:
            submission = await self._client.submit(request, callback_url=callback_url)
            self._bind(slot, submission.task_id)
            return submission
        try:
            submission = await self._client.submit(request, callback_url=callback_url)
        except FluxError as exc:
            maybe_accepted = may_have_been_accepted(exc)
            await self._history.mark_submit_failed(row, exc.message, maybe_accepted=maybe_accepted)
            if maybe_accepted:
                ticket.undecided_row = row
            raise
        except BaseException:
            # Cancelled (or crashed) while the request was in flight: the upstream may have it.
            with anyio.CancelScope(shield=True):
                await self._history.mark_submit_failed(
                    row, "interrupted while submitting", maybe_accepted=True
                )
            raise
        self._bind(slot, submission.task_id)
        await self._history.mark_submitted(row, submission.task_id, submission.trace_id)
        return submission

    def _release(self, slot: CallbackSlot | None) -> None:
        if slot is not None and self._callbacks is not None:
            self._callbacks.close(slot)

    def _bind(self, slot: CallbackSlot | None, task_id: str) -> None:
        if slot is not None and self._callbacks is not None:
            self._callbacks.bind(slot, task_id)

    async def _wait(
        self,
        snapshot: TaskSnapshot,
        wait_seconds: float | None,
        progress: ProgressFn,
        slot: CallbackSlot | None,
        *,
        just_submitted: bool,
        age: float = 0.0,
        wakeups_seen: int = 0,
        kind: JobKind | None = None,
        on_watch: Callable[[Watch], None] | None = None,
    ) -> TaskSnapshot:
        budget = self.budget(wait_seconds)
        if snapshot.status is not TaskStatus.PENDING:
            self._release(slot)
            return snapshot
        if budget <= 0:
            return snapshot
        await self._schedules.refresh()
        try:
            waited = await self._waiter.wait(
                snapshot.task_id,
                budget,
                progress,
                just_submitted=just_submitted,
                slot=slot,
                wakeups_seen=wakeups_seen,
                age=age,
                schedule=self._schedules.for_job(kind),
                model=kind.model if kind is not None else None,
                on_watch=on_watch,
            )
        except anyio.get_cancelled_exc_class():
            logger.info("stopped waiting for task %s; it continues upstream", snapshot.task_id)
            raise
        if waited.status is TaskStatus.SUCCEEDED:
            self._schedules.observe(kind, waited.elapsed_seconds)
        if waited.status is not TaskStatus.PENDING:
            self._release(slot)
        return waited if waited.trace_id or not snapshot.trace_id else _keep_trace(waited, snapshot)


async def _left(history: History, budget: Budget, now: float, person: str | None) -> BudgetLeft:
    """What is left of `budget` now: for `person`, or (None) for everyone."""
    spent = await history.spent(budget.starts(now), person)
    return BudgetLeft(
        limit=budget.amount,
        period=budget.period,
        spent=round(spent, 6),
        left=round(max(budget.amount - spent, 0.0), 6),
        resets_at=iso(budget.resets(now)),
    )


def _undecided_message(earlier: HistoryEntry, age: float) -> str:
    return (
        f"Not submitted: an identical request (same prompt and settings) was submitted {ago(age)}, and its "
        "answer was lost, so the Flux API may have accepted and billed it without telling us its task id "
        f"({earlier.error or 'no reason recorded'}). To avoid paying twice it was not sent again. list_tasks "
        "shows it with status 'unknown'; the AceDataCloud console shows whether it ran. If the user wants "
        "a new image anyway, calling again with the same arguments submits a new, billed task."
    )


def ago(seconds: float) -> str:
    """'12 s ago', '5 min ago', '3 h ago'."""
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def _keep_trace(snapshot: TaskSnapshot, earlier: TaskSnapshot) -> TaskSnapshot:
    return replace(snapshot, trace_id=earlier.trace_id)


def _ended(entry: HistoryEntry | None) -> TaskResult | None:
    """The recorded result of a task that succeeded or failed, as a later call shows it; else None."""
    if entry is None or entry.result is None or entry.result.status is TaskStatus.PENDING:
        return None
    return entry.result.model_copy(update={"attached": False, "submitted_seconds_ago": None})
