"""Measurement 6: resident memory of the flux-mcp process (over stdio), idle and with 200 tasks in flight.

The server runs as hosts run it, with the defaults (previews and saved files, in a scratch folder).
Figures from /proc/<pid>/status: VmRSS when idle, VmRSS while all tasks are accepted and waiting,
the highest VmRSS sampled until all answered, and VmHWM (the kernel's peak) at the end.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from mcp import Client

from benchmarks.common import (
    PROMPT,
    Profile,
    child_pids,
    find_new_child,
    flux_mcp_command,
    memory_mb,
    scratch_dir,
    server_env,
    status_of,
    stdio_transport,
)
from benchmarks.upstream import Upstream, serve_upstream
from flux_mcp.emulator import EmulatorConfig

SAMPLE_EVERY = 0.05


async def measure(profile: Profile) -> dict[str, Any]:
    tasks, latency = profile.memory_tasks, profile.memory_latency
    with scratch_dir() as scratch:
        async with serve_upstream(EmulatorConfig(latency=latency)) as upstream:
            before = child_pids()
            transport = stdio_transport(flux_mcp_command(), server_env(upstream.base_url, scratch))
            async with Client(transport, mode="legacy") as client:
                await client.list_tools()
                pid = find_new_child(before, "flux-mcp")
                if pid is None:
                    raise RuntimeError("could not find the flux-mcp process")
                idle = memory_mb(pid)["VmRSS"]
                figures = await _in_flight(client, upstream, pid, tasks, latency)
    per_task = (figures["waiting_rss_mb"] - idle) * 1024 / tasks
    return {
        "tasks": tasks,
        "upstream_latency_s": latency,
        "idle_rss_mb": idle,
        **figures,
        "kb_per_waiting_task": round(per_task, 1),
    }


async def _in_flight(
    client: Client, upstream: Upstream, pid: int, tasks: int, latency: float
) -> dict[str, Any]:
    statuses: list[str] = []
    samples: list[float] = []
    answered = anyio.Event()

    async def one(index: int) -> None:
        result = await client.call_tool("generate_image", {"prompt": f"{PROMPT} #{index}"})
        statuses.append(status_of(result))
        if len(statuses) == tasks:
            answered.set()

    async def sample() -> None:
        while True:
            samples.append(memory_mb(pid)["VmRSS"])
            await anyio.sleep(SAMPLE_EVERY)

    async with anyio.create_task_group() as calls, anyio.create_task_group() as sampler:
        sampler.start_soon(sample)
        for index in range(tasks):
            calls.start_soon(one, index)
        waiting = await _rss_while_waiting(upstream, pid, tasks, latency)
        await answered.wait()
        sampler.cancel_scope.cancel()
    final = memory_mb(pid)
    return {
        "waiting_rss_mb": waiting,
        "max_sampled_rss_mb": max(samples),
        "peak_hwm_mb": final["VmHWM"],
        "failures": sum(1 for status in statuses if status != "succeeded"),
    }


async def _rss_while_waiting(upstream: Upstream, pid: int, tasks: int, latency: float) -> float:
    """VmRSS once every task is accepted upstream, shortly before the first one finishes."""
    with anyio.fail_after(60):
        while upstream.state.accepted < tasks:  # noqa: ASYNC110 - the emulator offers no event for this
            await anyio.sleep(0.01)
    first = min(task.finish_monotonic for task in upstream.state.tasks.values())
    await anyio.sleep(max(0.0, first - time.monotonic() - min(0.5, latency / 4)))
    return memory_mb(pid)["VmRSS"]
