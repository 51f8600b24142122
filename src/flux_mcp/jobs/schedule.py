"""Poll schedules that expect the end: how long each kind of job took lately, and where to look for it.

Today's schedule (`poller.PollSchedule`) knows nothing of the job: a first look after `first` s, then
pauses of 35% of the task's age, so a job ending just after a look is seen up to a third of its age
late. The history knows better: how long the jobs of each model, action, size and count took on this
server. From those run times (the newest weigh most: upstream queues change) a kind of job seen often
enough gets a `PlannedSchedule`: a few early looks (an instant failure is still seen within `first`
s), looks every few seconds across the span its recent jobs ended in, then today's growing pauses
again in the tail.

What a plan may spend is today's: its k-th look is never earlier than today's k-th look, so a job of
any length costs at most the reads today's schedule would have made (the looks saved early are spent
around the expected end). Among a few spacings, the plan kept is the one that sees its recent jobs
soonest for the reads it makes (`READ_COST`); a kind with fewer than MIN_SAMPLES run times, or a plan
that does no better than today's, keeps today's schedule exactly.

Every figure is a multiple of the base schedule's `first`, so a schedule compressed in time for the
benchmarks keeps its shape.

`Schedules` is the one place that answers "the pause before the next look at this task"
(`Schedules.pause`): the waiting calls use its schedules, and a host polling MCP Tasks is told the same.
It reads the run times from the history at most every REFRESH_SECONDS (not per call), and learns a
job's exact run time (the upstream's `elapsed`) the moment a call sees it end.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from flux_mcp.jobs.poller import PollSchedule, Schedule

if TYPE_CHECKING:
    from flux_mcp.history.store import History

logger = logging.getLogger(__name__)

MIN_SAMPLES = 3  # run times a kind of job needs before its looks are planned
MAX_LOOKS = 200  # a plan spans at most this many `first`s (400 s at the defaults), dense looks included
REPLAN_SECONDS = 30.0  # a kind's plan is redone with newer run times at most this often
KEPT_SAMPLES = 60  # the newest run times kept per kind
HALF_LIFE = 10.0  # a run time weighs half as much as one 10 jobs newer
REFRESH_SECONDS = 300.0  # how stale the history's run times may get
HISTORY_ROWS = 2000  # the newest finished jobs read from the history
LONGEST_RUN_SECONDS = 3600.0  # a longer "run time" is a row touched later, not a job
# A run time stands for the span ±SPREAD around it (queues wobble); the plan covers that span.
SPREAD = 0.15
# The shares of the (spread) run times the dense looks may span: all but the ends, or only the middle.
COVERS = ((0.05, 0.95), (0.15, 0.85), (0.3, 0.7))
SPACINGS = (0.5, 0.75, 1.0, 1.5)  # spacings of the dense looks tried, × first
EARLY_GROWTH = 4.0  # early looks at first, 4·first, 16·first … while before a quarter of the dense start
READ_COST = 0.02  # a read is worth this many × first seconds of seeing the end sooner


@dataclass(frozen=True)
class JobKind:
    """What a job's run time depends on: model and action, then size and count."""

    model: str
    action: str
    size: str | None = None
    count: int | None = None

    def coarse(self) -> JobKind:
        return JobKind(self.model, self.action)


def kind_of(request: Mapping[str, Any] | None) -> JobKind | None:
    """The kind of a submitted request (a request body, or the history's copy of one); None if unknown."""
    request = request or {}
    model, action = request.get("model"), request.get("action")
    if not isinstance(model, str) or not isinstance(action, str):
        return None
    size, count = request.get("size"), request.get("count")
    return JobKind(
        model,
        action,
        size if isinstance(size, str) else None,
        count if isinstance(count, int) and not isinstance(count, bool) else None,
    )


@dataclass(frozen=True)
class PlannedSchedule:
    """Looks at planned ages, then the base schedule's growing pauses after the last one."""

    base: PollSchedule
    looks: tuple[float, ...]
    # The least pause: a look taken a little before a planned one (late, or get_task's own read when a
    # call resumes) stands for it, so that planned look is not made right after it.
    gap: float = 0.0

    @property
    def first(self) -> float:
        return self.base.first

    def pause(self, age: float) -> float:
        """The pause before the next look at a task submitted `age` seconds ago."""
        index = bisect.bisect_right(self.looks, age + max(self.gap, MIN_GAP * self.base.first))
        if index < len(self.looks):
            return self.looks[index] - age
        return self.base.pause(age)


MIN_GAP = 0.2  # × first: the least pause a plan makes
GAP_SHARE = 0.45  # × spacing: a plan's least pause (its looks are at least half a spacing apart)


def todays_looks(base: PollSchedule, count: int) -> list[float]:
    """The ages of the first `count` looks of today's schedule at a task submitted at age 0."""
    looks, age = [], 0.0
    for _ in range(count):
        age += base.pause(age)
        looks.append(age)
    return looks


def plan(base: PollSchedule, durations: Sequence[float]) -> Schedule:
    """The schedule for a kind of job whose recent run times are `durations`, newest first."""
    if len(durations) < MIN_SAMPLES:
        return base
    spans = _spans(durations)
    if _quantile(spans, 0.5) > MAX_LOOKS * base.first:  # too long to plan look by look: today's
        return base
    best: Schedule = base
    best_cost = _cost(base, spans)
    for low, high in COVERS:
        start, end = _quantile(spans, low), _quantile(spans, high)
        for spacing in SPACINGS:
            if end - start > MAX_LOOKS * spacing * base.first:
                continue  # a plan of more looks than that is not worth its planning
            looks = _looks(base, start, end, spacing * base.first)
            candidate = PlannedSchedule(base, looks, gap=GAP_SHARE * spacing * base.first)
            cost = _cost(candidate, spans)
            if cost < best_cost - 1e-9:
                best, best_cost = candidate, cost
    return best


def _spans(durations: Sequence[float]) -> list[tuple[float, float, float]]:
    """(from, to, weight): each run time as the span ±SPREAD around it, the newest weighing most."""
    spans = [
        (seconds * (1 - SPREAD), seconds * (1 + SPREAD), 0.5 ** (index / HALF_LIFE))
        for index, seconds in enumerate(durations)
    ]
    return sorted(spans)


def _quantile(spans: list[tuple[float, float, float]], share: float) -> float:
    """The age by which `share` of the jobs (each spread evenly over its span) have ended."""
    total = sum(weight for _, _, weight in spans)
    low, high = spans[0][0], max(to for _, to, _ in spans)
    for _ in range(40):  # bisection: the share ended by an age grows with the age
        middle = (low + high) / 2
        ended = sum(weight * min(max((middle - a) / (b - a), 0.0), 1.0) for a, b, weight in spans)
        low, high = (middle, high) if ended < share * total else (low, middle)
    return high


def _looks(base: PollSchedule, start: float, end: float, spacing: float) -> tuple[float, ...]:
    """Early looks, then looks every `spacing` s from `start` to `end`; none before today's look of the
    same rank (so no job costs more reads than today), none closer than half a spacing to the one before."""
    wanted: list[float] = []
    early = base.first
    while early < start and (not wanted or early < start / EARLY_GROWTH):  # `first` always
        wanted.append(early)
        early *= EARLY_GROWTH
    steps = max(0, math.ceil((end - start) / spacing))
    wanted.extend(start + step * spacing for step in range(steps + 1))
    today = todays_looks(base, len(wanted))
    looks: list[float] = []
    for age in wanted:
        age = max(age, today[len(looks)])
        if looks and age < looks[-1] + spacing / 2:
            continue
        looks.append(age)
    return tuple(looks)


def _cost(schedule: Schedule, spans: list[tuple[float, float, float]]) -> float:
    """The weighted mean over jobs ending anywhere in their spans of: how late the end is seen, plus
    READ_COST per read."""
    looks = looks_until(schedule, max(to for _, to, _ in spans))
    read_cost = READ_COST * schedule.first
    total = spent = 0.0
    for start, end, weight in spans:
        index = bisect.bisect_left(looks, start)
        late = reads = 0.0
        low = start
        while low < end:  # the piece of the span that the look at looks[index] sees
            high = min(end, looks[index])
            late += ((looks[index] - low) ** 2 - (looks[index] - high) ** 2) / 2
            reads += (high - low) * (index + 1)
            low, index = high, index + 1
        total += weight
        spent += weight * (late + read_cost * reads) / (end - start)
    return spent / total


def looks_until(schedule: Schedule, end: float) -> list[float]:
    """The ages of a lone task's looks until the first at or after `end` (one look per pause)."""
    looks, age = [], 0.0
    while age < end:
        age += schedule.pause(age)
        looks.append(age)
    return looks


class Durations:
    """Recent run times per kind of job, newest first (at most KEPT_SAMPLES each)."""

    def __init__(self) -> None:
        self._by_kind: dict[JobKind, deque[float]] = {}

    def add(self, kind: JobKind, seconds: float) -> None:
        """Note a run time as the newest of its kind (and of its model and action)."""
        if not 0 < seconds <= LONGEST_RUN_SECONDS:
            return
        for key in {kind, kind.coarse()}:
            self._by_kind.setdefault(key, deque(maxlen=KEPT_SAMPLES)).appendleft(seconds)

    def recent(self, kind: JobKind) -> list[float]:
        return list(self._by_kind.get(kind, ()))

    def count(self, kind: JobKind) -> int:
        return len(self._by_kind.get(kind, ()))

    @classmethod
    def of(cls, finished: Iterable[tuple[JobKind, float]]) -> Durations:
        """From (kind, run time) pairs, oldest first."""
        durations = cls()
        for kind, seconds in finished:
            durations.add(kind, seconds)
        return durations


class Schedules:
    """The poll schedule of each kind of job, learned from its recent run times; today's for the rest."""

    def __init__(self, base: PollSchedule, history: History | None = None) -> None:
        self.base = base
        self._history = history
        self._durations = Durations()
        self._plans: dict[JobKind, Schedule] = {}
        self._planned_at: dict[JobKind, float] = {}
        self._read_at = -math.inf
        self._reading = False

    def for_job(self, kind: JobKind | None) -> Schedule:
        """The schedule for a job of this kind: its own plan, its model and action's, or today's."""
        if kind is None:
            return self.base
        for key in (kind, kind.coarse()):
            found = self._plans.get(key)
            if found is None:
                found = self._plans[key] = plan(self.base, self._durations.recent(key))
                self._planned_at[key] = time.monotonic()
            if found is not self.base:
                return found
        return self.base

    def pause(self, kind: JobKind | None, age: float) -> float:
        """The pause before the next look at a task of this kind submitted `age` seconds ago."""
        return self.for_job(kind).pause(age)

    def observe(self, kind: JobKind | None, seconds: float | None) -> None:
        """A job of this kind ran `seconds` (the upstream's own figure): its kind's plan is redone."""
        if kind is None or seconds is None:
            return
        self._durations.add(kind, seconds)
        now = time.monotonic()
        for key in (kind, kind.coarse()):
            # Not on every job (a plan costs a millisecond or so, one more run time changes it little), but
            # at once when this run time is the one that makes the kind plannable.
            stale = now - self._planned_at.get(key, -math.inf) > REPLAN_SECONDS
            if stale or self._durations.count(key) == MIN_SAMPLES:
                self._plans.pop(key, None)

    def learn(self, durations: Durations) -> None:
        """Replace what is known (a fresh reading of the history)."""
        self._durations = durations
        self._plans = {}

    async def refresh(self) -> None:
        """Read the history's run times if the last reading is older than REFRESH_SECONDS (one reader at
        a time; a history that cannot be read leaves what is known)."""
        now = anyio.current_time()
        if self._history is None or self._reading or now - self._read_at < REFRESH_SECONDS:
            return
        self._reading, self._read_at = True, now
        try:
            rows = await self._history.run_times(HISTORY_ROWS)
        except Exception as exc:  # a schedule is never worth failing a call for
            logger.debug("run times not read from the history: %s", exc)
            return
        finally:
            self._reading = False
        found = ((kind_of(request), seconds) for request, seconds in reversed(rows))
        self.learn(Durations.of((kind, seconds) for kind, seconds in found if kind is not None))
