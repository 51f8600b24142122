"""One poller per upstream token: it watches every waiting task of that token and reads them in batches.

A call waiting for a task (`waiting.TaskWaiter`) does not poll by itself: it registers with the poller of
its token and sleeps until the poller settles the task (done, failed, unknown) or its own budget ends.
However many calls wait on one task, the poller keeps one `Watch` of it (one watch, many waiters); its
loop runs only while it has something to watch, so an idle poller sends nothing and holds no task.

When it looks, and at what:
- Each task keeps its own schedule (`PollSchedule`: a first look `first` s after the submit, then pauses
  of 35% of its age, at most `cap`; or, for a kind of job seen often enough, the `schedule.PlannedSchedule`
  learned from its recent run times, which never spends more looks than that). A request goes out when a
  task's own look is due, so a lone task costs exactly what its own schedule says, at the same moments.
- Looks falling due close together share requests: when the earliest is due, the poller waits for the
  others falling due within MERGE_WINDOW of their own pause (a due look is at most 10% of its pause
  late) and reads them together: `retrieve_batch` with at most MAX_BATCH ids (`retrieve` for one task).
- A request with room left takes riders: other waiting tasks whose look is not due yet, the most
  overdue first (the largest share of their pause since they were last looked at), none looked at less
  than `first` s before. A ride is free and leaves the rider's own schedule where it was (a look taken
  early that moved the schedule would see a task finishing just after it one pause late); when a ride
  shows the task done, its waiters wake then.
- What sharing saves is spent on the same tasks: a due look that shared its request with d-1 others
  cost its task 1/d of a request, and the rest is that task's savings. When no look is due, the poller
  sends an extra request for the most overdue tasks that can pay an equal share of it from their
  savings (riders that saved nothing fill it), none looked at less than `first` s before. So tasks
  submitted together, whose looks fall due together, are looked at every `first` s instead of every
  35% of their age.
So no task ever costs more requests than its own schedule would (nor does the poller: a request's cost
is always shared out in full), a lone task costs exactly that, and a task waiting in company is looked
at more often.

Rules kept from the calls that polled for themselves:
- No look right before a call's deadline (the `get_task` that follows looks first thing): a task whose
  every waiter is within its deadline margin is never due, though it may still ride.
- "Not found" right after a submit is not final: a just-submitted task missing from an answer stays
  pending until NOT_FOUND_GRACE_SECONDS after it was registered; after that its waiters get
  `TaskNotFoundError`.
- Transient failures (5xx, timeouts, 429, malformed answers, after the client's own retries) fail no
  waiter: the tasks wait for their next due look, and a Retry-After holds every request of the poller
  (so of that token) until it has passed. Any other error (the token rejected, say) is the answer for
  every task of that request.
- A task with a callback slot is watched on the callback fallback schedule (first look after 20 s, and
  no ride before that); a callback's wake-up asks for a look at once (`Watch.look_soon`).
- Tokens never mix: a poller reads with its own client only, and pollers are keyed by a digest of the
  base URL and token, never the token itself (nothing here logs it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.abc

from flux_mcp.domain.catalogue import MAX_BATCH
from flux_mcp.domain.errors import TRANSIENT, FluxError, RequestRejectedError, TaskNotFoundError
from flux_mcp.domain.tasks import TaskSnapshot, TaskStatus
from flux_mcp.domain.telemetry import (
    MODEL,
    NO_OBSERVER,
    TASK_ID,
    Context,
    Observer,
    Span,
    current_context,
    link_to,
    span,
)
from flux_mcp.upstream.flux import FluxClient

logger = logging.getLogger(__name__)

# Right after a submit the task store may not show the task yet; until then "not found" is not final.
NOT_FOUND_GRACE_SECONDS = 10.0
# A look that is due waits at most this share of its task's pause for others falling due, to share a request.
MERGE_WINDOW = 0.1
EPSILON = 1e-9  # savings below this are float residue, not savings


class Schedule(Protocol):
    """When to look at a task: `pause(age)` before the next look, never less than `first` for a ride.

    `PollSchedule` is today's; `schedule.PlannedSchedule` one learned from a kind of job's run times."""

    @property
    def first(self) -> float: ...

    def pause(self, age: float) -> float: ...


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


class Watch:
    """One waiting task as its poller sees it: its own schedule, what the upstream last said, its waiters."""

    def __init__(self, task_id: str, schedule: Schedule, *, age: float, now: float) -> None:
        self.task_id = task_id
        self.schedule = schedule
        self.born = now - age
        self.last_look = now  # a look, or the moment the task was registered
        self.pause = schedule.pause(age)
        self.next_due = now + self.pause
        self.grace_until = -math.inf
        self.snapshot: TaskSnapshot | None = None
        self.failure: Exception | None = None
        self.settled = anyio.Event()  # set once the task is done, failed, or known to be unknown
        self._looked = anyio.Event()
        self.forced = False  # a look was asked for (a callback's wake-up)
        self.in_flight = False
        self.deadlines: list[float] = []  # per waiter: the last moment a look is worth sending for it
        # Requests its own due looks did not cost because they shared them: spent on extra looks at it.
        self.savings = 0.0
        self.poke: Callable[[], None] = lambda: None
        self.model: str | None = None  # for the spans of its looks
        self.trace: Context = current_context()  # its first waiter's: the parent of the spans of its looks

    def look_soon(self) -> None:
        """Ask for a look now, whatever the schedule says (it does not move the schedule)."""
        self.forced = True
        self.poke()

    def next_look(self) -> anyio.Event:
        """An event the next answered look sets, whatever it said (a fresh one after every look)."""
        return self._looked

    def outcome(self) -> TaskSnapshot:
        """The settled task; raises what made it final when that was an error."""
        if self.failure is not None:
            raise self.failure
        if self.snapshot is None:
            raise RuntimeError("outcome() was read before the task settled")
        return self.snapshot

    def triggers(self) -> bool:
        """Whether its own schedule may send a request: not when its every waiter is about to leave."""
        return self.next_due < self.look_until()

    def look_until(self) -> float:
        return max(self.deadlines, default=-math.inf)

    def due(self, now: float) -> bool:
        return self.forced or (self.triggers() and self.next_due <= now)

    def may_ride(self, now: float) -> bool:
        return now >= self.rides_from()

    def rides_from(self) -> float:
        """The first moment it may be looked at again outside its own schedule."""
        return self.last_look + self.schedule.first

    def overdue(self, now: float) -> float:
        """The share of its pause that has passed since its last look (1 = its own look is due)."""
        return (now - self.last_look) / self.pause

    def looked_at(self, now: float) -> None:
        """A look is on its way: its own schedule moves on only if this was its own due look."""
        if self.triggers() and self.next_due <= now:
            self.pause = self.schedule.pause(now - self.born)
            self.next_due = now + self.pause
        self.last_look = now
        self.forced = False
        self.in_flight = True

    def answered(self) -> None:
        """A look came back (its answer already applied): wake whoever waits for the next one."""
        self.in_flight = False
        looked, self._looked = self._looked, anyio.Event()
        looked.set()

    def see(self, snapshot: TaskSnapshot) -> None:
        self.snapshot = snapshot
        if snapshot.status is not TaskStatus.PENDING:
            self.settled.set()

    def fail(self, error: Exception) -> None:
        self.failure = error
        self.settled.set()


def next_request_at(watches: list[Watch], now: float) -> float:
    """When the next request must go (inf: nothing to send until something changes)."""
    return min(_due_round_at(watches), _extra_round_at(watches, now))


def plan_requests(watches: list[Watch], now: float) -> list[list[Watch]]:
    """The requests to send at `now`, and who pays for them (`Watch.savings`).

    Every due look (asked-for ones first), MAX_BATCH per request, the last request's room given to
    riders, the most overdue first; its due looks share its cost, so each saves the rest of a request.
    With no look due: one extra request, paid in equal shares by tasks that saved enough, when some
    task has been waiting `first` s since its last look.
    """
    due = sorted((w for w in watches if w.due(now)), key=lambda watch: (not watch.forced, watch.next_due))
    if not due:
        extra = extra_round(watches, now)
        _pay_extra(extra)
        return [extra] if extra else []
    room = -len(due) % MAX_BATCH
    waiting = (w for w in watches if not w.due(now) and w.may_ride(now))
    chosen = due + sorted(waiting, key=lambda watch: watch.overdue(now), reverse=True)[:room]
    requests = [chosen[start : start + MAX_BATCH] for start in range(0, len(chosen), MAX_BATCH)]
    for request in requests:
        sharing = [watch for watch in request if watch.due(now)]
        for watch in sharing:
            watch.savings += 1 - 1 / len(sharing)
    return requests


def extra_round(watches: list[Watch], now: float) -> list[Watch]:
    """A request no due look needs: the most overdue tasks that can pay a share, filled with riders
    that have saved nothing (and so pay nothing); [] when nobody can pay."""
    ready = [w for w in watches if w.may_ride(now) and now < w.look_until()]
    ready.sort(key=lambda watch: watch.overdue(now), reverse=True)
    payers = [watch for watch in ready if watch.savings > EPSILON][:MAX_BATCH]
    while payers and min(watch.savings for watch in payers) < 1 / len(payers) - EPSILON:
        payers = [watch for watch in payers if watch.savings >= 1 / len(payers) - EPSILON]
    if not payers:
        return []
    riders = [watch for watch in ready if watch.savings <= EPSILON]
    return payers + riders[: MAX_BATCH - len(payers)]


def _pay_extra(request: list[Watch]) -> None:
    payers = [watch for watch in request if watch.savings > EPSILON]
    for watch in payers:
        left = watch.savings - 1 / len(payers)
        watch.savings = left if left > EPSILON else 0.0


def _due_round_at(watches: list[Watch]) -> float:
    """At the earliest due look, or later when others fall due soon after: a due look waits for others at
    most MERGE_WINDOW of its own pause, and never past its waiters' deadline margin; -inf when a look
    was asked for."""
    if any(watch.forced for watch in watches):
        return -math.inf
    due = sorted((watch for watch in watches if watch.triggers()), key=lambda watch: watch.next_due)
    send_at, latest = math.inf, math.inf
    for watch in due:
        if watch.next_due > latest:
            break
        send_at = watch.next_due
        latest = min(latest, watch.next_due + MERGE_WINDOW * watch.pause, watch.look_until())
    return send_at


def _extra_round_at(watches: list[Watch], now: float) -> float:
    if extra_round(watches, now):
        return now
    savers = (watch for watch in watches if watch.savings > EPSILON and watch.rides_from() > now)
    return min((watch.rides_from() for watch in savers), default=math.inf)


class Poller:
    """Watches the waiting tasks of one token and reads them, due looks merged and requests filled."""

    def __init__(
        self,
        client: FluxClient,
        group: anyio.abc.TaskGroup,
        on_idle: Callable[[Poller], None],
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._client = client
        self._observer = observer
        self._group = group
        self._on_idle = on_idle
        self._watches: dict[str, Watch] = {}
        self._changed = anyio.Event()
        self._running = False
        self._hold_until = -math.inf  # a Retry-After holds every request until then
        self._batches = True  # False once the upstream refused a batch read

    @property
    def idle(self) -> bool:
        return not self._watches and not self._running

    @contextmanager
    def watching(
        self,
        task_id: str,
        *,
        schedule: Schedule,
        age: float,
        just_submitted: bool,
        look_until: float,
        model: str | None = None,
    ) -> Iterator[Watch]:
        """Watch a task while the block runs; `look_until`: the last moment this waiter wants a look."""
        now = anyio.current_time()
        watch = self._watches.get(task_id)
        if watch is None:
            watch = self._watches[task_id] = Watch(task_id, schedule, age=age, now=now)
            watch.poke = self._poke
            self._observer.tasks_waiting(1)
        elif schedule.pause(age) < watch.schedule.pause(age):  # a waiter that needs looks sooner joined
            watch.schedule = schedule
            watch.next_due = min(watch.next_due, watch.last_look + schedule.pause(age))
        watch.model = watch.model or model
        if just_submitted:
            watch.grace_until = max(watch.grace_until, now + NOT_FOUND_GRACE_SECONDS)
        watch.deadlines.append(look_until)
        self._start()
        try:
            yield watch
        finally:
            watch.deadlines.remove(look_until)
            if not watch.deadlines and self._watches.get(task_id) is watch:
                del self._watches[task_id]
                self._observer.tasks_waiting(-1)
            self._poke()

    def _poke(self) -> None:
        self._changed.set()

    def _start(self) -> None:
        self._poke()
        if not self._running:
            self._running = True
            self._group.start_soon(self._run, name="flux-mcp poller")

    async def _run(self) -> None:
        try:
            while self._watches:
                self._changed = anyio.Event()
                now = anyio.current_time()
                ready = [w for w in self._watches.values() if not (w.in_flight or w.settled.is_set())]
                send_at = max(next_request_at(ready, now), self._hold_until)
                if send_at <= now:
                    for request in plan_requests(ready, now):
                        self._send(request, now)
                    continue
                with anyio.move_on_after(send_at - now):
                    await self._changed.wait()
        except Exception as exc:  # a bug: the waiting calls get it instead of waiting for nothing
            logger.exception("the poller stopped")
            for watch in self._watches.values():
                watch.fail(exc)
                watch.answered()
        finally:
            self._running = False
            self._on_idle(self)

    def _send(self, request: list[Watch], now: float) -> None:
        for watch in request:
            watch.looked_at(now)
        self._group.start_soon(self._read, request, name="flux-mcp poller read")

    async def _read(self, request: list[Watch]) -> None:
        task_ids = [watch.task_id for watch in request]
        self._observer.poller_read(len(task_ids))
        try:
            with _look_span(request):
                found = await self._fetch(task_ids)
        except TRANSIENT as exc:
            # The tasks exist upstream; a failed look is no reason to give them up.
            logger.warning("could not check %s: %s", _tasks_named(task_ids), exc.message)
            self._rest(exc)
        except Exception as exc:  # the upstream's final word (or a bug): the answer for these tasks
            if not isinstance(exc, FluxError):
                logger.exception("reading %s failed", _tasks_named(task_ids))
            for watch in request:
                watch.fail(exc)
        else:
            self._deliver(request, found)
        finally:
            for watch in request:
                watch.answered()
            self._poke()

    async def _fetch(self, task_ids: list[str]) -> dict[str, TaskSnapshot]:
        """What the upstream shows of these tasks, by id; a task it does not know is left out."""
        if len(task_ids) > 1 and self._batches:
            try:
                snapshots = await self._client.retrieve_batch(task_ids)
            except (RequestRejectedError, TaskNotFoundError) as exc:
                logger.warning("the Flux API refused a batch read (%s); reading one by one", exc.message)
                self._batches = False
            else:
                wanted = set(task_ids)
                return {snapshot.task_id: snapshot for snapshot in snapshots if snapshot.task_id in wanted}
        found: dict[str, TaskSnapshot] = {}
        for task_id in task_ids:
            try:
                found[task_id] = await self._client.retrieve(task_id)
            except TaskNotFoundError:
                continue
        return found

    def _deliver(self, request: list[Watch], found: dict[str, TaskSnapshot]) -> None:
        now = anyio.current_time()
        for watch in request:
            snapshot = found.get(watch.task_id)
            if snapshot is not None:
                watch.see(snapshot)
            elif now < watch.grace_until:
                logger.debug("task %s not visible yet", watch.task_id)
            else:
                watch.fail(TaskNotFoundError.for_task(watch.task_id, status=200))

    def _rest(self, error: FluxError) -> None:
        if error.retry_after is not None and error.retry_after > 0:
            self._hold_until = max(self._hold_until, anyio.current_time() + error.retry_after)


def _look_span(request: list[Watch]) -> AbstractContextManager[Span]:
    """`flux.poll`: one read, a child of the call waiting on its first task, linked to the others'."""
    first, others = request[0], request[1:]
    links = [link for watch in others if (link := link_to(watch.trace)) is not None]
    alone = not others
    attributes = {
        TASK_ID: first.task_id if alone else None,
        MODEL: first.model if alone else None,
        "flux.tasks": len(request),
    }
    return span("flux.poll", attributes, parent=first.trace, links=links)


class Pollers:
    """The pollers of one server, one per upstream token; their loops run in the server's task group."""

    def __init__(self, group: anyio.abc.TaskGroup, observer: Observer = NO_OBSERVER) -> None:
        self._group = group
        self._observer = observer
        self._pollers: dict[str, Poller] = {}

    def __len__(self) -> int:
        return len(self._pollers)

    @contextmanager
    def watching(
        self,
        client: FluxClient,
        task_id: str,
        *,
        schedule: Schedule,
        age: float,
        just_submitted: bool,
        look_until: float,
        model: str | None = None,
    ) -> Iterator[Watch]:
        """Watch a task with the poller of `client`'s token while the block runs."""
        key = client.token_key()
        poller = self._pollers.get(key)
        if poller is None:
            poller = self._pollers[key] = Poller(
                client, self._group, lambda idle: self._retire(key, idle), self._observer
            )
        with poller.watching(
            task_id,
            schedule=schedule,
            age=age,
            just_submitted=just_submitted,
            look_until=look_until,
            model=model,
        ) as watch:
            yield watch

    def _retire(self, key: str, poller: Poller) -> None:
        if self._pollers.get(key) is poller and poller.idle:
            del self._pollers[key]


@asynccontextmanager
async def running_pollers(observer: Observer = NO_OBSERVER) -> AsyncIterator[Pollers]:
    """Pollers whose loops live as long as the block (a server's lifespan)."""
    async with anyio.create_task_group() as group:
        yield Pollers(group, observer)
        group.cancel_scope.cancel()


def _tasks_named(task_ids: list[str]) -> str:
    return f"task {task_ids[0]}" if len(task_ids) == 1 else f"{len(task_ids)} tasks"
