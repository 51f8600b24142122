"""pollIntervalMs of an MCP task follows the poller's schedule for that kind of job: the host asks just after
the poller's next look, never before it and never much later (virtual time: no clock)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flux_mcp.jobs.poller import PollSchedule, Schedule
from flux_mcp.jobs.schedule import JobKind, Schedules
from flux_mcp.server.tasks.core import LOOK_MARGIN, poll_interval_ms
from tests.support.polling import poller_looks

TODAY = PollSchedule()
KIND = JobKind("flux-pro", "generate", "1024x1024", 1)


def learned(typical: float) -> Schedule:
    schedules = Schedules(TODAY)
    for _ in range(10):
        schedules.observe(KIND, typical)
    return schedules.for_job(KIND)


def next_look(schedule: Schedule, age: float) -> float:
    return next(look for look in poller_looks(schedule, age + 1e-6) if look > age)


@given(age=st.floats(0, 300), typical=st.one_of(st.none(), st.floats(8, 150)))
@settings(max_examples=200, deadline=None)
def test_the_host_asks_after_the_pollers_next_look_and_not_much_later(
    age: float, typical: float | None
) -> None:
    schedule = TODAY if typical is None else learned(typical)
    asks_at = age + poll_interval_ms(schedule, age) / 1000
    look = next_look(schedule, age)
    # Never later than just after the look; sooner only by the half-pause bound on a late look.
    assert asks_at <= look + schedule.first * LOOK_MARGIN + 0.001
    assert asks_at >= min(look, age + schedule.pause(age) / 2) - 0.001


def test_a_learned_kind_is_asked_about_densely_around_its_typical_end() -> None:
    schedule = learned(30.0)
    around_end = [poll_interval_ms(schedule, age) for age in (27.0, 29.0, 31.0, 33.0)]
    today = [poll_interval_ms(TODAY, age) for age in (27.0, 29.0, 31.0, 33.0)]
    assert max(around_end) <= 2_000 < min(today)
