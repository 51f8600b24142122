"""Measurement 7: one poller per token, its waiting tasks read together in batches.

Scenes against the emulator in this process (its record of every task read, `task_reads`: when, which
ids, is at hand), time compressed like measurement 3: the emulator's latency, the server's poll pauses
and wait budget (its defaults), and the gaps between submissions are all × k.
- together: N tasks of 30 s (200 in the full profile), each its own `generate_image` call, all at once.
- stream: tasks of 10 / 30 / 60 / 120 s arriving one every L/8 s, so that about eight wait at any
  time, each followed by `get_task` while the answer says pending (as the scripted assistant of
  measurement 3 does).
Per scene: upstream task reads per task (submits not counted; they are one per task), ids per read,
and how long after each task was ready upstream a read showed it (uncompressed seconds).
A lone task is measurement 3: with no company its looks are the per-call schedule's, one for one.
Images are off (no preview, no saving): this measures the waiting, not the pictures.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from benchmarks.common import PROMPT, Profile, bench_settings, median, scratch_dir, status_of
from benchmarks.upstream import Upstream, serve_upstream
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import EmulatorConfig
from flux_mcp.server.build import build_server

SCALED_SETTINGS = ("poll_min_seconds", "poll_max_seconds", "wait_seconds")
STREAM_IN_FLIGHT = 8
MAX_CALLS = 50


@dataclass(frozen=True)
class Scene:
    name: str
    latency: float  # the job's length, uncompressed seconds
    tasks: int
    gap: float  # uncompressed seconds between two submissions (0: all at once)
    k: float


async def measure(profile: Profile) -> dict[str, Any]:
    together = Scene("together", 30.0, profile.poller_tasks, 0.0, profile.poller_scale)
    streams = [
        Scene(f"stream_{job:g}", job, profile.poller_stream_tasks, job / STREAM_IN_FLIGHT, profile.time_scale)
        for job in profile.turn_latencies
    ]
    out: dict[str, Any] = {}
    with scratch_dir() as scratch:
        out[together.name] = await _scene(together, scratch)
        async with anyio.create_task_group() as group:
            for scene in streams:
                group.start_soon(_into, out, scene, scratch)
    return out


async def _into(out: dict[str, Any], scene: Scene, scratch: Path) -> None:
    out[scene.name] = await _scene(scene, scratch)


async def _scene(scene: Scene, scratch: Path) -> dict[str, Any]:
    k = scene.k
    async with serve_upstream(EmulatorConfig(latency=scene.latency * k)) as upstream:
        scaled = {name: _default(name) * k for name in SCALED_SETTINGS}
        settings = bench_settings(
            upstream.base_url, scratch / scene.name, save=False, preview_size=0, **scaled
        )
        calls: list[tuple[str, int]] = []
        async with Client(build_server(settings)) as client, anyio.create_task_group() as group:
            for index in range(scene.tasks):
                group.start_soon(_assistant, client, index, calls)
                if scene.gap:
                    await anyio.sleep(scene.gap * k)
    return _figures(scene, upstream, calls)


async def _assistant(client: Client, index: int, calls: list[tuple[str, int]]) -> None:
    """generate_image, then get_task while the result says pending."""
    result = await client.call_tool("generate_image", {"prompt": f"{PROMPT} #{index}"})
    made = 1
    while status_of(result) == "pending" and made < MAX_CALLS:
        task_id = (result.structured_content or {}).get("task_id")
        result = await client.call_tool("get_task", {"task_id": task_id})
        made += 1
    calls.append((status_of(result), made))


def _figures(scene: Scene, upstream: Upstream, calls: list[tuple[str, int]]) -> dict[str, Any]:
    reads = [(read.at, set(read.ids)) for read in upstream.state.task_reads]
    lags = [_lag(task.id, task.finish_monotonic, reads) / scene.k for task in upstream.state.tasks.values()]
    sizes = [len(ids) for _, ids in reads]
    tasks = len(upstream.state.tasks)
    return {
        "job_s": scene.latency,
        "tasks": tasks,
        "submit_gap_s": scene.gap,
        "time_scale": scene.k,
        "task_reads": len(reads),
        "reads_per_task": round(len(reads) / max(tasks, 1), 2),
        "ids_per_read_median": median([float(size) for size in sizes]),
        "ids_per_read_max": max(sizes, default=0),
        "found_after_ready_s": round(median(lags), 2),
        "found_after_ready_p90_s": round(_quantile(lags, 0.9), 2),
        "tool_calls_median": median([float(made) for _, made in calls]),
        "statuses": sorted({status for status, _ in calls}),
        "submissions": upstream.state.submissions,
    }


def _lag(task_id: str, finished: float, reads: list[tuple[float, set[str]]]) -> float:
    seen = [at for at, ids in reads if at >= finished and task_id in ids]
    return min(seen) - finished if seen else math.nan


def _quantile(values: list[float], q: float) -> float:
    found = sorted(value for value in values if not math.isnan(value))
    if len(found) < 2:
        return found[0] if found else math.nan
    return statistics.quantiles(found, n=100, method="inclusive")[round(q * 100) - 1]


def _default(name: str) -> float:
    value = Settings.model_fields[name].default
    assert isinstance(value, int | float)
    return float(value)
