"""Learned poll schedules (jobs/schedule.py), over virtual time: the real poller's planning driven by a
lone task's `Watch`, never the clock."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flux_mcp.domain.tasks import ImageRequest, TaskResult, TaskStatus
from flux_mcp.history.store import History
from flux_mcp.jobs.poller import PollSchedule, Schedule
from flux_mcp.jobs.schedule import (
    MIN_SAMPLES,
    Durations,
    JobKind,
    PlannedSchedule,
    Schedules,
    kind_of,
    plan,
)
from tests.support.polling import poller_looks

TODAY = PollSchedule()  # the defaults: first look at 2 s, 35% of the age, at most 15 s
KIND = JobKind("flux-pro", "generate", "1024x1024", 1)


def learned(durations: list[float], base: PollSchedule = TODAY) -> Schedule:
    schedules = Schedules(base)
    for seconds in reversed(durations):  # oldest first, as they happened
        schedules.observe(KIND, seconds)
    return schedules.for_job(KIND)


run_times = st.lists(st.floats(0.5, 400), min_size=MIN_SAMPLES, max_size=40)


@given(durations=run_times, end=st.floats(0.01, 600))
@settings(max_examples=200, deadline=None)
def test_a_learned_schedule_never_reads_more_than_todays(durations: list[float], end: float) -> None:
    """Whatever the run times learned and however long the job really runs."""
    assert len(poller_looks(learned(durations), end)) <= len(poller_looks(TODAY, end))


@given(typical=st.floats(5, 150), jitter=st.lists(st.floats(-0.05, 0.05), min_size=5, max_size=30))
@settings(max_examples=60, deadline=None)
@example(typical=150.0, jitter=[-0.03125, -0.046875, -0.0390625, 0.0, 0.0])  # 2.16 s: the worst found
def test_the_learned_end_is_found_within_about_two_seconds(typical: float, jitter: list[float]) -> None:
    """Jobs ending within ±10% of their kind's recent run times are seen about 1.6 s late (median; never
    over 2.5 s for any run-time history: the worst found is 2.2 s at 150 s, where the read bound thins the
    looks), those within ±5% ≤ 3 s at worst; today's schedule is up to a third of the age late (7 s at 30 s).
    The benchmark's goal, ≤ 2 s median over jobs, is measured in benchmarks/learned.py."""
    schedule = learned([typical * (1 + shift) for shift in jitter])

    def late(spread: float) -> list[float]:
        ends = [typical * (1 - spread + 2 * spread * step / 40) for step in range(41)]
        return [poller_looks(schedule, end)[-1] - end for end in ends]

    assert statistics.median(late(0.1)) <= 2.5
    assert max(late(0.05)) <= 3.0 + 1e-6


@pytest.mark.parametrize("typical", [10.0, 30.0, 60.0, 120.0])
def test_lengths_of_the_issue_are_seen_sooner_for_fewer_reads(typical: float) -> None:
    schedule = learned([typical] * 10)
    looks, today = poller_looks(schedule, typical), poller_looks(TODAY, typical)
    assert looks[-1] - typical <= 2.0 < today[-1] - typical or typical == 10.0
    assert len(looks) < len(today)


@given(age=st.floats(0, 1000), seen=st.lists(st.floats(1, 300), max_size=MIN_SAMPLES - 1))
@settings(max_examples=100, deadline=None)
def test_a_kind_never_seen_keeps_todays_schedule(age: float, seen: list[float]) -> None:
    schedules = Schedules(TODAY)
    for seconds in seen:  # too few to plan with
        schedules.observe(KIND, seconds)
    for _ in range(5):  # another model, well known, changes nothing for this one
        schedules.observe(JobKind("flux-dev", "generate"), 20.0)
    assert schedules.for_job(KIND) is TODAY
    assert schedules.for_job(None) is TODAY
    assert schedules.pause(KIND, age) == TODAY.pause(age)


def test_run_times_of_the_model_and_action_stand_in_for_an_unseen_size() -> None:
    schedules = Schedules(TODAY)
    for _ in range(5):
        schedules.observe(KIND, 30.0)
    other_size = JobKind("flux-pro", "generate", "512x512", 1)
    assert schedules.for_job(other_size) is schedules.for_job(KIND.coarse())
    assert isinstance(schedules.for_job(other_size), PlannedSchedule)
    assert schedules.for_job(JobKind("flux-pro", "edit")) is TODAY


def test_recent_run_times_weigh_more() -> None:
    """Jobs of 30 s and of 60 s, the newest ten of one length: ends near it are seen sooner than when those
    ten were the oldest."""
    faster, slower = learned([30.0] * 10 + [60.0] * 20), learned([60.0] * 10 + [30.0] * 20)

    def late(schedule: Schedule, typical: float) -> float:
        ends = [typical * (0.9 + 0.01 * step) for step in range(21)]
        return statistics.mean(poller_looks(schedule, end)[-1] - end for end in ends)

    assert late(faster, 30.0) < late(slower, 30.0)
    assert late(slower, 60.0) < late(faster, 60.0)


# Away from the knife-edge where MAX_LOOKS turns planning off (a float's rounding decides it there).
@given(
    durations=st.lists(st.floats(0.5, 380), min_size=MIN_SAMPLES, max_size=40),
    scale=st.sampled_from([1 / 5, 1 / 20, 1 / 40]),
)
@settings(max_examples=50, deadline=None)
def test_a_plan_compressed_in_time_keeps_its_shape(durations: list[float], scale: float) -> None:
    """The benchmarks compress every pause and run time by k: the looks must be compressed alike."""
    small = PollSchedule(first=TODAY.first * scale, fraction=TODAY.fraction, cap=TODAY.cap * scale)
    full = plan(TODAY, durations)
    compressed = plan(small, [seconds * scale for seconds in durations])
    assert isinstance(compressed, PlannedSchedule) == isinstance(full, PlannedSchedule)
    if isinstance(full, PlannedSchedule) and isinstance(compressed, PlannedSchedule):
        assert [look * scale for look in full.looks] == pytest.approx(list(compressed.looks), rel=1e-6)


def test_kinds_come_from_request_bodies_and_the_historys_copies() -> None:
    body = ImageRequest(action="generate", model="flux-pro", prompt="a cat", size="1024x1024", count=1)
    assert kind_of(body.model_dump()) == KIND
    assert kind_of({"model": "flux-pro"}) is None  # rows this server did not submit say no action
    assert kind_of(None) is None


def test_implausible_run_times_are_not_learned() -> None:
    durations = Durations()
    for seconds in (0.0, -3.0, 10 * 3600.0, math.nan):
        durations.add(KIND, seconds)
    assert durations.recent(KIND) == []


class RecordedRunTimes:
    """A history as `Schedules.refresh` reads it: the newest finished jobs first."""

    def __init__(self, rows: list[tuple[dict[str, object], float]]) -> None:
        self.rows, self.reads = rows, 0

    async def run_times(self, limit: int) -> list[tuple[dict[str, object], float]]:
        self.reads += 1
        return self.rows[:limit]


@pytest.mark.anyio
async def test_the_historys_run_times_are_learned_and_read_again_only_when_stale() -> None:
    request = {"action": "generate", "model": "flux-pro", "size": "1024x1024", "count": 1}
    history = RecordedRunTimes([(request, 30.0)] * 4 + [({"model": "flux-dev"}, 30.0)])
    schedules = Schedules(TODAY, history)  # type: ignore[arg-type]
    assert schedules.for_job(KIND) is TODAY
    await schedules.refresh()
    assert isinstance(schedules.for_job(KIND), PlannedSchedule)
    await schedules.refresh()  # not per call: once every REFRESH_SECONDS
    assert history.reads == 1


@pytest.mark.anyio
async def test_the_history_gives_the_run_times_of_the_jobs_submitted_here(tmp_path: Path) -> None:
    history = History(tmp_path / "history.sqlite")
    try:
        for index, status in enumerate([TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SUCCEEDED]):
            request = ImageRequest(action="generate", model="flux-pro", prompt=f"#{index}", size="1024x1024")
            row = await history.record_submitting(request.model_dump(exclude_none=True))
            await history.mark_submitted(row, f"task-{index}", None)
            result = TaskResult(task_id=f"task-{index}", status=status, elapsed_seconds=1.0)
            await history.record_state(result)
        found = await history.run_times(10)
        expected = JobKind("flux-pro", "generate", "1024x1024")
        assert [kind_of(request) for request, _ in found] == [expected] * 2
        assert all(0 <= seconds < 60 for _, seconds in found)
    finally:
        await history.aclose()


def test_jobs_far_longer_than_the_first_look_keep_todays_schedule() -> None:
    """Planning look by look would take thousands of looks (the overhead benchmark polls 1 µs apart)."""
    tiny = PollSchedule(first=1e-6, cap=1e-6)
    assert plan(tiny, [0.001] * 10) is tiny
    assert isinstance(plan(TODAY, [300.0] * 10), PlannedSchedule)
