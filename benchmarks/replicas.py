"""Measurement 7: three replicas on one PostgreSQL history, callbacks landing on a random replica.

Each task is submitted through a random replica and its callback is delivered (by a router standing in
for the load balancer) to another random replica. Counted: the emulator's `/flux/tasks` requests per task
before the callback (the goal is 0: the woken call's one re-read, with its own token, comes after it),
and the time from the callback reaching the router to the waiting call's answer (goal ≤ 0.5 s).
Needs PostgreSQL (initdb, pg_ctl); skipped, with the reason, without it, and in --quick.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from benchmarks.common import PROMPT, Profile
from benchmarks.report import Row, verdict
from flux_mcp.emulator import EmulatorConfig, serve_emulator
from testkit.postgres import ClusterUnavailable, PostgresCluster
from testkit.replicas import TOKEN, Replica, callback_router, run_replicas

TASKS = 7
LATENCY_SECONDS = 2.0
GOAL_SECONDS = 0.5


async def measure(profile: Profile) -> dict[str, Any]:
    if profile.quick:
        return {"skipped": "not in --quick (starts PostgreSQL and three servers)"}
    try:
        cluster = PostgresCluster()
    except ClusterUnavailable as exc:
        return {"skipped": f"PostgreSQL is not available: {exc}"}
    try:
        return await _measure(cluster.create_database())
    finally:
        cluster.remove()


async def _measure(database_url: str) -> dict[str, Any]:
    chance = random.Random(17)
    config = EmulatorConfig(latency=LATENCY_SECONDS, tokens=frozenset({TOKEN}), seed=17)
    replicas: list[Replica] = []
    polls, seconds, placements = [], [], []
    with tempfile.TemporaryDirectory(prefix="flux-mcp-bench-replicas-") as scratch:
        async with (
            serve_emulator(config) as emulator,
            callback_router(lambda: [chance.choice(replicas)]) as router,
            run_replicas(3, emulator, Path(scratch), database_url, router.url) as started,
        ):
            replicas.extend(started)
            for index in range(TASKS):
                caller = chance.choice(replicas)
                before = emulator.state.polls
                async with Client(caller.mcp_url) as client:
                    result = await client.call_tool("generate_image", {"prompt": f"{PROMPT} #{index}"})
                returned = anyio.current_time()
                data = result.structured_content or {}
                if data.get("status") != "succeeded":
                    raise RuntimeError(f"task {index} did not succeed: {data}")
                (receivers, called_back) = router.delivered[-1]
                polls.append(emulator.state.polls - before - 1)  # minus the one re-read after the wake-up
                seconds.append(returned - called_back)
                placements.append(f"{caller.name}->{receivers[0]}")
    return {
        "tasks": TASKS,
        "polls_before_callback": polls,
        "median_polls_before_callback": statistics.median(polls),
        "callback_to_return_s": [round(value, 3) for value in seconds],
        "median_callback_to_return_s": round(statistics.median(seconds), 3),
        "cross_replica": sum(1 for p in placements if p[0] != p[-1]),
        "median_cross_replica_s": _median(
            [s for s, p in zip(seconds, placements, strict=True) if p[0] != p[-1]]
        ),
        "placements": placements,
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    if "skipped" in data:
        return [Row("7 replicas: callbacks on a random replica", f"skipped: {data['skipped']}")], {}
    polls, latency = data["median_polls_before_callback"], data["median_callback_to_return_s"]
    polls_met, latency_met = max(data["polls_before_callback"]) == 0, latency <= GOAL_SECONDS
    label = f"{data['tasks']} tasks, {data['cross_replica']} called back on another replica"
    table = [
        Row(
            f"7 replicas: polls before the callback ({label})",
            f"{polls:g} (max {max(data['polls_before_callback'])})",
            goal="0",
            verdict=verdict(polls_met),
        ),
        Row(
            "7 replicas: callback -> waiting call returns (median s)",
            f"{latency:.3f}",
            goal=f"<= {GOAL_SECONDS}",
            verdict=verdict(latency_met),
        ),
    ]
    goals = {
        "replicas_polls": {"value": polls, "goal": 0, "met": polls_met},
        "replicas_callback_to_return_s": {"value": latency, "goal": GOAL_SECONDS, "met": latency_met},
    }
    return table, goals
