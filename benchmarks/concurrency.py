"""Measurement 2: N concurrent `generate_image` calls against a 2 s upstream, default poll settings.

The figure is wall time / 2 s: 1.0 is the physical limit (every image the moment it exists). Series:
the defaults (each image downloaded, previewed and saved); images off (only the waiting and the
protocol); images off with an 8-connection pool (max_concurrency=8); and, as the floor of this
machine and emulator, a bare httpx2 client doing the same submit/poll jobs with no server at all.
The upstream runs in its own process ("process") and, where the profile asks, on the benchmark's
event loop ("inline", where its CPU competes with the server's).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import Client

from benchmarks.common import (
    PROMPT,
    TOKEN,
    Profile,
    bench_settings,
    generate_burst,
    median,
    scratch_dir,
)
from benchmarks.upstream import serve_upstream, upstream_process
from flux_mcp.emulator import EmulatorConfig
from flux_mcp.server.build import build_server

LATENCY = 2.0
IMAGES_OFF = {"preview_size": 0, "save": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "images_off": IMAGES_OFF,
    "images_off_pool8": {**IMAGES_OFF, "max_concurrency": 8},
}
BARE_POOLS = {"bare_httpx_pool32": 32, "bare_httpx_pool8": 8}


async def measure(profile: Profile) -> dict[str, Any]:
    plan = [
        ("defaults", "process", profile.concurrency_levels),
        ("images_off", "process", profile.concurrency_levels),
        ("defaults", "inline", profile.concurrency_inline_levels),
        ("images_off", "inline", profile.concurrency_inline_levels),
        ("images_off_pool8", "process", profile.concurrency_extra_levels),
        ("bare_httpx_pool32", "process", profile.concurrency_extra_levels),
        ("bare_httpx_pool8", "process", profile.concurrency_extra_levels),
    ]
    out: dict[str, Any] = {"latency_s": LATENCY}
    for variant, mode, levels in plan:
        if levels:
            reps = profile.concurrency_reps
            out[f"{variant}_{mode}"] = {str(n): await _level(variant, mode, n, reps) for n in levels}
    return out


async def _level(variant: str, mode: str, calls: int, reps: int) -> dict[str, Any]:
    walls: list[float] = []
    failures = 0
    for _ in range(reps):
        async with _upstream(mode) as base_url:
            if variant in BARE_POOLS:
                wall, failed = await _bare_burst(base_url, calls, BARE_POOLS[variant])
            else:
                wall, failed = await _burst(base_url, calls, VARIANTS[variant])
        walls.append(wall)
        failures += failed
    wall = median(walls)
    return {"wall_s": round(wall, 3), "ratio": round(wall / LATENCY, 3), "failures": failures}


@asynccontextmanager
async def _upstream(mode: str) -> AsyncIterator[str]:
    if mode == "process":
        async with upstream_process(LATENCY) as base_url:
            yield base_url
    else:
        async with serve_upstream(EmulatorConfig(latency=LATENCY)) as upstream:
            yield upstream.base_url


async def _burst(base_url: str, calls: int, overrides: dict[str, Any]) -> tuple[float, int]:
    """Wall time of `calls` simultaneous generate_image calls, and how many did not succeed."""
    with scratch_dir() as scratch:
        async with Client(build_server(bench_settings(base_url, scratch, **overrides))) as client:
            return await generate_burst(client, calls)


async def _bare_burst(base_url: str, calls: int, pool: int) -> tuple[float, int]:
    """The same jobs (submit, then look after 2 s, 3 s, 4.5 s, 5 s…) from a bare httpx2 client."""
    limits = httpx2.Limits(max_connections=pool, max_keepalive_connections=pool)
    headers = {"authorization": f"Bearer {TOKEN}"}
    failures = 0
    async with httpx2.AsyncClient(limits=limits, timeout=30, headers=headers) as http:

        async def one(index: int) -> None:
            nonlocal failures
            body = {"action": "generate", "prompt": f"{PROMPT} #{index}", "model": "flux-dev", "async": True}
            task_id = (await http.post(f"{base_url}/flux/images", json={**body, "size": "1024x1024"})).json()
            pause = 2.0
            for _ in range(30):
                await anyio.sleep(pause)
                pause = min(pause * 1.5, 5.0)
                look = {"action": "retrieve", "id": task_id["task_id"]}
                if "response" in (await http.post(f"{base_url}/flux/tasks", json=look)).json():
                    return
            failures += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(calls):
                tg.start_soon(one, index)
        return time.perf_counter() - started, failures
