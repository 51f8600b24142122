"""Measurement 9 (issue 16 §3): 200 `generate_image` calls at once over stdio, against a 2 s upstream.

The server runs as hosts run it (`flux-mcp` over stdio, its own process) against the emulator in a
third process, whose result images are all one size: 64x48 ("small": the image work is negligible,
what is left is the protocol, the waiting and the bookkeeping) or 1024x1024 ("large": every image
downloaded, decoded, previewed and saved). Paths per size: the server's defaults (a preview and a
saved file per image), the server with images off (preview_size=0, save=false), and the floor of
this machine: a bare httpx2 client with the server's pool size doing the same submit, the same
first look 2 s later, and the same image download, with no server at all.

The figure is wall time / 2 s, from the first call sent to the last answer (the server started and
listed its tools before). Paths are interleaved round by round, medians over the rounds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
from mcp import Client

from benchmarks.common import (
    PROMPT,
    TOKEN,
    Profile,
    flux_mcp_command,
    generate_burst,
    median,
    scratch_dir,
    server_env,
    stdio_transport,
)
from benchmarks.upstream import upstream_process
from flux_mcp.domain.settings import Settings

LATENCY = 2.0
SIZES = {"small": (64, 48), "large": (1024, 1024)}
IMAGES_OFF = {"preview_size": "0", "save": "false"}
FIRST_LOOK = 2.0  # the server's default first look (FLUX_MCP_POLL_MIN_SECONDS)
LATER_LOOKS = 0.35  # then a pause of 35 % of the task's age, as the server's schedule
Burst = Callable[[str, int], Awaitable[tuple[float, int]]]


async def measure(profile: Profile) -> dict[str, Any]:
    calls = profile.at_once_calls
    walls: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    for _ in range(profile.at_once_reps):
        for size in profile.at_once_sizes:
            async with upstream_process(LATENCY, image_size=SIZES[size]) as base_url:
                for path in profile.at_once_paths:
                    wall, failed = await BURSTS[path](base_url, calls)
                    walls.setdefault(f"{size}_{path}", []).append(wall)
                    failures[f"{size}_{path}"] = failures.get(f"{size}_{path}", 0) + failed
    out: dict[str, Any] = {"latency_s": LATENCY, "calls": calls, "reps": profile.at_once_reps}
    for name, found in walls.items():
        wall = median(found)
        out[name] = {
            "wall_s": round(wall, 3),
            "ratio": round(wall / LATENCY, 3),
            "ratios": [round(value / LATENCY, 3) for value in found],
            "failures": failures[name],
        }
    return out


async def stdio_burst(
    base_url: str, calls: int, settings: dict[str, str] | None = None, command: list[str] | None = None
) -> tuple[float, int]:
    """Wall time of `calls` simultaneous generate_image calls to a fresh flux-mcp over stdio, and failures.

    `command` replaces `flux-mcp` (a profiler around it, say); the timer starts after tools/list.
    """
    program, *args = command or [flux_mcp_command()]
    with scratch_dir() as scratch:
        env = server_env(base_url, scratch, **(settings or {}))
        async with Client(stdio_transport(program, env, args=args), mode="legacy") as client:
            await client.list_tools()

            return await generate_burst(client, calls)


async def _defaults(base_url: str, calls: int) -> tuple[float, int]:
    return await stdio_burst(base_url, calls)


async def _images_off(base_url: str, calls: int) -> tuple[float, int]:
    return await stdio_burst(base_url, calls, IMAGES_OFF)


async def bare_burst(base_url: str, calls: int) -> tuple[float, int]:
    """The floor: submit, look after 2 s (then at 35 % of the age), download the image; no server."""
    pool = Settings.model_fields["max_concurrency"].default
    limits = httpx2.Limits(max_connections=pool, max_keepalive_connections=pool)
    headers = {"authorization": f"Bearer {TOKEN}", "accept": "application/json"}
    failures = 0
    async with httpx2.AsyncClient(limits=limits, timeout=30, headers=headers) as http:

        async def one(index: int) -> None:
            nonlocal failures
            body = {"action": "generate", "prompt": f"{PROMPT} #{index}", "model": "flux-dev", "async": True}
            submitted = await http.post(f"{base_url}/flux/images", json={**body, "size": "1024x1024"})
            look = {"action": "retrieve", "id": submitted.json()["task_id"]}
            started = anyio.current_time()
            await anyio.sleep(FIRST_LOOK)
            for _ in range(30):
                record = (await http.post(f"{base_url}/flux/tasks", json=look)).json()
                if "response" in record:
                    image = await http.get(record["response"]["data"][0]["image_url"])
                    failures += 0 if image.is_success else 1
                    return
                await anyio.sleep(LATER_LOOKS * (anyio.current_time() - started))
            failures += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(calls):
                tg.start_soon(one, index)
        return time.perf_counter() - started, failures


BURSTS: dict[str, Burst] = {"defaults": _defaults, "images_off": _images_off, "bare_httpx2": bare_burst}
