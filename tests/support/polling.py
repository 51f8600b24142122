"""The poller's own looks at a lone task, over virtual time: what a schedule costs and when it sees an end."""

from __future__ import annotations

import math

from flux_mcp.jobs.poller import Schedule, Watch, next_request_at, plan_requests


def poller_looks(schedule: Schedule, end: float) -> list[float]:
    """When the poller looks at a lone task on `schedule`, until the first look at or after `end`."""
    watch = Watch("lone", schedule, age=0.0, now=0.0)
    watch.deadlines.append(math.inf)
    looks: list[float] = []
    now = 0.0
    while not looks or looks[-1] < end:
        now = max(now, next_request_at([watch], now))
        for request in plan_requests([watch], now):
            for looked in request:
                looked.looked_at(now)
                looked.in_flight = False
            looks.append(now)
    return looks
