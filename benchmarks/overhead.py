"""Measurement 1: what one `generate_image` call costs beyond the HTTP it makes.

Against a zero-latency emulator in its own process, with polls 1 µs apart, a call is one submit and
one retrieve. The baseline is a bare httpx2 client doing exactly that. With previews off and nothing
saved that is the protocol's overhead; with the defaults (a preview, the file saved, a history row)
the call also downloads the image, so its baseline adds that GET. Paths are interleaved call by call,
so a noisy machine slows them alike; medians per path, ratios within the run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client

from benchmarks.common import (
    PROMPT,
    TOKEN,
    Profile,
    bench_settings,
    flux_mcp_command,
    median,
    ms,
    scratch_dir,
    server_env,
    status_of,
    stdio_transport,
    timed,
)
from benchmarks.upstream import upstream_process
from flux_mcp.server.build import build_server

TINY = 1e-6
WARMUP = 10
Call = Callable[[], Awaitable[Any]]
# Which baseline each MCP path is compared with.
BASELINES = {
    "in_memory": "bare_httpx",
    "in_memory_jsonrpc": "bare_httpx",
    "stdio": "bare_httpx",
    "in_memory_defaults": "bare_httpx_download",
    "stdio_defaults": "bare_httpx_download",
}
FAST = {"poll_min_seconds": TINY, "poll_max_seconds": TINY, "wait_seconds": 60.0}
NO_IMAGES = {"preview_size": 0, "save": False}


async def measure(profile: Profile) -> dict[str, Any]:
    with scratch_dir() as scratch:
        async with upstream_process(latency=0.0) as base_url, AsyncExitStack() as stack:
            paths = await _paths(stack, base_url, scratch)
            samples: dict[str, list[float]] = {name: [] for name in paths}
            for round_ in range(WARMUP + profile.overhead_calls):
                for name, call in paths.items():
                    elapsed = await timed(call)
                    if round_ >= WARMUP:
                        samples[name].append(elapsed)
    return _figures(samples, profile.overhead_calls)


async def _paths(stack: AsyncExitStack, base_url: str, scratch: Path) -> dict[str, Call]:
    def server(**overrides: Any) -> Any:
        return build_server(bench_settings(base_url, scratch, **FAST, **overrides))

    async def client(target: Any, mode: str = "auto") -> Client:
        return await stack.enter_async_context(Client(target, mode=mode))

    http = await stack.enter_async_context(httpx2.AsyncClient(timeout=30))
    fast_env = {key: str(value) for key, value in FAST.items()}
    bare_env = server_env(base_url, scratch, preview_size="0", save="false", **fast_env)
    full_env = server_env(base_url, scratch, **fast_env)
    clients = {
        "in_memory": await client(server(**NO_IMAGES)),
        "in_memory_jsonrpc": await client(server(**NO_IMAGES), "legacy"),
        "stdio": await client(stdio_transport(flux_mcp_command(), bare_env), "legacy"),
        "in_memory_defaults": await client(server()),
        "stdio_defaults": await client(stdio_transport(flux_mcp_command(), full_env), "legacy"),
    }
    paths: dict[str, Call] = {
        "bare_httpx": lambda: _bare(http, base_url, download=False),
        "bare_httpx_download": lambda: _bare(http, base_url, download=True),
    }
    for name, connected in clients.items():
        paths[name] = _generate_with(connected)
    return paths


def _generate_with(client: Client) -> Call:
    async def call() -> None:
        result = await client.call_tool("generate_image", {"prompt": PROMPT})
        if status_of(result) != "succeeded":
            raise RuntimeError(f"generate_image did not succeed: {result}")

    return call


async def _bare(http: httpx2.AsyncClient, base_url: str, *, download: bool) -> None:
    """The floor: the same requests flux-mcp makes, with nothing around them."""
    headers = {"authorization": f"Bearer {TOKEN}", "accept": "application/json"}
    body = {"action": "generate", "prompt": PROMPT, "model": "flux-dev", "size": "1024x1024", "count": 1}
    submitted = await http.post(f"{base_url}/flux/images", json={**body, "async": True}, headers=headers)
    task_id = submitted.json()["task_id"]
    answer = await http.post(
        f"{base_url}/flux/tasks", json={"action": "retrieve", "id": task_id}, headers=headers
    )
    record = answer.json()
    if "response" not in record:
        raise RuntimeError("the zero-latency task was not finished at the first look")
    if download:
        image = await http.get(record["response"]["data"][0]["image_url"])
        image.raise_for_status()


def _figures(samples: dict[str, list[float]], calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {"calls_per_path": calls}
    for name in ("bare_httpx", "bare_httpx_download"):
        out[f"{name}_ms"] = ms(median(samples[name]))
    for name, baseline_name in BASELINES.items():
        call, baseline = median(samples[name]), median(samples[baseline_name])
        out[name] = {
            "median_ms": ms(call),
            "baseline": baseline_name,
            "added_ms": ms(call - baseline),
            "ratio": round(call / baseline, 2),
        }
    return out
