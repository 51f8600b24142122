"""Measurement 10 (issue 16 §4): `get_task` on a task that finished earlier, against its floor.

`flux-mcp` over stdio with its defaults (previews on, files saved) against a zero-latency emulator
in its own process, 1024x1024 results. One generate_image makes the task (its image saved, its
preview shown); then, interleaved call by call, `get_task` on it and the floor: a stdio ping to
the same server plus one bare httpx2 retrieve of the task (what get_task cannot do without: one
round trip to the server, one to the upstream). Figure: median get_task / median floor.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import httpx2
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning

from benchmarks.common import (
    PROMPT,
    TOKEN,
    Profile,
    flux_mcp_command,
    median,
    ms,
    scratch_dir,
    server_env,
    status_of,
    stdio_transport,
)
from benchmarks.upstream import upstream_process

WARMUP = 5
FAST = {"poll_min_seconds": "0.000001", "poll_max_seconds": "0.000001"}


async def measure(profile: Profile) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"get_task": [], "ping": [], "retrieve": [], "floor": []}
    with scratch_dir() as scratch:
        async with upstream_process(latency=0.0) as base_url, httpx2.AsyncClient(timeout=30) as http:
            env = server_env(base_url, scratch, **FAST)
            async with Client(stdio_transport(flux_mcp_command(), env), mode="legacy") as client:
                made = await client.call_tool("generate_image", {"prompt": PROMPT})
                if status_of(made) != "succeeded":
                    raise RuntimeError(f"generate_image did not succeed: {made}")
                task_id = (made.structured_content or {})["task_id"]
                for round_ in range(WARMUP + profile.finished_calls):
                    figures = await _round(client, http, base_url, task_id)
                    if round_ >= WARMUP:
                        for name, value in figures.items():
                            samples[name].append(value)
    got, floor = median(samples["get_task"]), median(samples["floor"])
    return {
        "calls": profile.finished_calls,
        **{f"{name}_ms": ms(median(values)) for name, values in samples.items()},
        "ratio": round(got / floor, 2),
    }


async def _round(client: Client, http: httpx2.AsyncClient, base_url: str, task_id: str) -> dict[str, float]:
    started = time.perf_counter()
    result = await client.call_tool("get_task", {"task_id": task_id})
    got = time.perf_counter() - started
    if status_of(result) != "succeeded":
        raise RuntimeError(f"get_task did not succeed: {result}")
    started = time.perf_counter()
    with warnings.catch_warnings():  # ping is gone from protocol 2026-07-28; this client speaks 2025-11-25
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.send_ping()
    pinged = time.perf_counter()
    headers = {"authorization": f"Bearer {TOKEN}", "accept": "application/json"}
    answer = await http.post(
        f"{base_url}/flux/tasks", json={"action": "retrieve", "id": task_id}, headers=headers
    )
    answer.raise_for_status()
    retrieved = time.perf_counter()
    return {
        "get_task": got,
        "ping": pinged - started,
        "retrieve": retrieved - pinged,
        "floor": retrieved - started,
    }
