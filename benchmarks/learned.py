"""Measurement 11: a lone job on a poll schedule learned from the jobs before it (issue 27 §1).

Per typical length T (10, 30, 60, 120 s; time compressed by k like measurement 3: the emulator's
latency, the server's poll pauses and wait budget) two in-process servers run side by side, each
with its own emulator, the same jobs on both at the same moments:
- `learned`: first WARMUPS jobs of the kind (flux-pro, generate) run together, and the server learns
  their run times (the upstream's `elapsed`), as it would from its history;
- `today`: has seen none of them (a server that never saw the model: today's schedule).
Then lone jobs one after the other, each followed by `get_task` while it says pending (the
assistant of measurement 3), on both servers at once, every job's length set on both emulators:
- `exact`: every job (warm-ups too) is T long;
- `spread`: every length (warm-ups too) drawn at random in T ± 30% (the same draws on both sides).
Last, `unseen`: on the learned server a job of a model it never saw (flux-dev), T long, beside the
same job on the today server: its reads must be today's.
Per lone job: how long after it was ready upstream a read showed it (uncompressed s), and how many
reads named it (each server's own emulator counts them; the submission is not a read).
Images are off: this measures the waiting, not the pictures.
"""

from __future__ import annotations

import math
import random
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from benchmarks.common import PROMPT, Profile, bench_settings, median, scratch_dir, status_of
from benchmarks.report import Row, verdict
from benchmarks.upstream import Upstream, serve_upstream
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import EmulatorConfig
from flux_mcp.server.build import build_server

SCALED_SETTINGS = ("poll_min_seconds", "poll_max_seconds", "wait_seconds")
KNOWN_MODEL, UNSEEN_MODEL = "flux-pro", "flux-dev"
SPREAD = 0.3
SEEN_GOAL_S = 2.0
MAX_CALLS = 50


@dataclass
class Side:
    """One server and its emulator; `fresh`: every job on a server of its own (one that never saw it)."""

    name: str
    upstream: Upstream
    settings: Settings
    client: Client | None = None
    fresh: int = 0  # servers of its own started so far


async def measure(profile: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {"time_scale": profile.time_scale, "warmups": profile.learned_warmups}
    with scratch_dir() as scratch:
        for typical in profile.turn_latencies:  # one length at a time: one event loop runs every server
            async with anyio.create_task_group() as group:
                for scene in ("exact", "spread"):
                    group.start_soon(_into, out, profile, typical, scene, scratch)
    return out


async def _into(out: dict[str, Any], profile: Profile, typical: float, scene: str, scratch: Path) -> None:
    out[f"{scene}_{typical:g}"] = await _scene(profile, typical, scene, scratch / f"{scene}-{typical:g}")


async def _scene(profile: Profile, typical: float, scene: str, scratch: Path) -> dict[str, Any]:
    k = profile.time_scale
    rng = random.Random(f"{scene}-{typical}")

    def length() -> float:
        return typical * (rng.uniform(1 - SPREAD, 1 + SPREAD) if scene == "spread" else 1.0)

    async with AsyncExitStack() as stack:
        learned = await _side(stack, "learned", k, scratch)
        today = await _side(stack, "today", k, scratch, fresh=True)
        async with anyio.create_task_group() as group:  # the warm-ups, all at once, learned side only
            for index in range(profile.learned_warmups):
                learned.upstream.state.config.latency = length() * k
                group.start_soon(_job, learned, KNOWN_MODEL, f"warm-up #{index}")
                await anyio.sleep(0.02)  # each submitted at its own length
        jobs = [await _pair(learned, today, KNOWN_MODEL, length(), k) for _ in range(profile.learned_jobs)]
        unseen = await _pair(learned, today, UNSEEN_MODEL, typical, k) if scene == "exact" else None
    return _figures(typical, scene, jobs, unseen)


async def _side(stack: AsyncExitStack, name: str, k: float, scratch: Path, *, fresh: bool = False) -> Side:
    upstream = await stack.enter_async_context(serve_upstream(EmulatorConfig()))
    scaled = {setting: _default(setting) * k for setting in SCALED_SETTINGS}
    settings = bench_settings(upstream.base_url, scratch / name, save=False, preview_size=0, **scaled)
    side = Side(name, upstream, settings)
    if not fresh:
        side.client = await stack.enter_async_context(Client(build_server(settings)))
    return side


async def _pair(learned: Side, today: Side, model: str, seconds: float, k: float) -> dict[str, Any]:
    """The same lone job on both servers at once; per side: seen after ready (s) and reads."""
    found: dict[str, Any] = {"length_s": round(seconds, 2)}
    for side in (learned, today):
        side.upstream.state.config.latency = seconds * k

    async def one(side: Side) -> None:
        task_id = await _job(side, model, f"lone {seconds:.2f}")
        found[side.name] = _seen(side.upstream, task_id, k)

    async with anyio.create_task_group() as group:
        group.start_soon(one, learned)
        group.start_soon(one, today)
    return found


async def _job(side: Side, model: str, label: str) -> str:
    """generate_image, then get_task while pending; the task id."""
    if side.client is None:  # a server of its own, with an empty history: it learned nothing
        side.fresh += 1
        empty = side.settings.history_path().with_name(f"history-{side.fresh}.db")
        async with Client(build_server(side.settings.model_copy(update={"db": empty}))) as client:
            return await _run(client, side.name, model, label)
    return await _run(side.client, side.name, model, label)


async def _run(client: Client, name: str, model: str, label: str) -> str:
    result = await client.call_tool("generate_image", {"prompt": f"{PROMPT} {label}", "model": model})
    task_id = str((result.structured_content or {}).get("task_id"))
    calls = 1
    while status_of(result) == "pending" and calls < MAX_CALLS:
        result = await client.call_tool("get_task", {"task_id": task_id})
        calls += 1
    if status_of(result) != "succeeded":
        raise RuntimeError(f"{name}: task {task_id} ended {status_of(result)}")
    return task_id


def _seen(upstream: Upstream, task_id: str, k: float) -> dict[str, Any]:
    task = upstream.state.tasks[task_id]
    reads = [read.at for read in upstream.state.task_reads if task_id in read.ids]
    after = [at for at in reads if at >= task.finish_monotonic]
    late = (min(after) - task.finish_monotonic) / k if after else math.nan
    return {"late_s": round(late, 2), "reads": len(reads)}


def _figures(
    typical: float, scene: str, jobs: list[dict[str, Any]], unseen: dict[str, Any] | None
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "typical_s": typical,
        "scene": scene,
        "jobs": jobs,
        "seen_after_ready_s": median([job["learned"]["late_s"] for job in jobs]),
        "today_seen_after_ready_s": median([job["today"]["late_s"] for job in jobs]),
        "reads_median": median([float(job["learned"]["reads"]) for job in jobs]),
        "today_reads_median": median([float(job["today"]["reads"]) for job in jobs]),
        "jobs_with_more_reads_than_today": sum(
            job["learned"]["reads"] > job["today"]["reads"] for job in jobs
        ),
    }
    if unseen is not None:
        figures["unseen_model"] = unseen
    return figures


def rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    out: list[Row] = []
    goals: dict[str, Any] = {}
    for name, scene in data.items():
        if not isinstance(scene, dict):
            continue
        where = f"{scene['typical_s']:g} s" + (" ± 30%" if scene["scene"] == "spread" else "")
        seen_met = scene["seen_after_ready_s"] <= SEEN_GOAL_S
        reads_met = scene["jobs_with_more_reads_than_today"] == 0
        out += [
            Row(
                f"11 seen after ready (s; learned / today), {where}",
                f"{scene['seen_after_ready_s']:.2f} / {scene['today_seen_after_ready_s']:.2f}",
                goal=f"<= {SEEN_GOAL_S:g}",
                verdict=verdict(seen_met),
            ),
            Row(
                f"11 reads per job (median, learned / today; jobs with more), {where}",
                f"{scene['reads_median']:g} / {scene['today_reads_median']:g}; "
                f"{scene['jobs_with_more_reads_than_today']} of {len(scene['jobs'])}",
                goal="0 with more",
                verdict=verdict(reads_met),
            ),
        ]
        goals[f"learned_{name}_seen_le_2s"] = {"met": seen_met, "value": scene["seen_after_ready_s"]}
        goals[f"learned_{name}_reads_le_today"] = {
            "met": reads_met,
            "value": scene["jobs_with_more_reads_than_today"],
        }
        unseen = scene.get("unseen_model")
        if unseen is not None:
            same = unseen["learned"]["reads"] == unseen["today"]["reads"]
            out.append(
                Row(
                    f"11 a never-seen model: reads (learned server / today), {where}",
                    f"{unseen['learned']['reads']} / {unseen['today']['reads']}",
                    goal="equal",
                    verdict=verdict(same),
                )
            )
            goals[f"learned_{name}_unseen_model_unchanged"] = {"met": same, "value": unseen}
    return out, goals


def _default(name: str) -> float:
    value = Settings.model_fields[name].default
    assert isinstance(value, int | float)
    return float(value)
