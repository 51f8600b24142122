"""Measurement 3: tool calls an assistant needs per image, and the upstream polls behind them.

Upstream latencies of 10-120 s are compressed by a factor k (the profile's time_scale): the
emulator's latency, the server's poll pauses and wait budget (its defaults), and the assistant's own
pauses are all multiplied by k, so every ratio is kept and a 120 s job takes 6 s (k = 1/20).

The assistant is scripted to do what each server tells it. flux-mcp: call generate_image, then
get_task while the result says "pending". The vendor: call flux_generate_image, then wait the
interval its answer names and call flux_get_task while its answer says to poll. The vendor's own
server-side pauses are compressed through benchmarks/timewarp (asyncio.sleep scaled by k).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp import Client
from mcp_types import CallToolResult

from benchmarks import vendor as vendor_server
from benchmarks.common import (
    PROMPT,
    TOKEN,
    Profile,
    bench_settings,
    median,
    result_bytes,
    scratch_dir,
    status_of,
    stdio_transport,
    text_of,
)
from benchmarks.upstream import Upstream, serve_upstream
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import EmulatorConfig, TaskRecord
from flux_mcp.server.build import build_server

VENDOR_DEFAULT_INTERVAL = 15.0
VENDOR_ARGS = {"prompt": PROMPT, "size": "1024x1024", "model": "flux-dev"}
MAX_CALLS = 200
SCALED_SETTINGS = ("poll_min_seconds", "poll_max_seconds", "wait_seconds")
POLL_ROUTE = "POST /flux/tasks"


@dataclass
class Run:
    """One assistant getting one image."""

    calls: int = 0
    bytes: int = 0
    status: str = "unknown"
    holds: list[float] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


Scenario = Callable[[Client, float], Awaitable[Run]]


async def measure(profile: Profile, vendor: vendor_server.Vendor | None) -> dict[str, Any]:
    k = profile.time_scale
    out: dict[str, Any] = {"time_scale": k, "ours": await _all_latencies(profile, _ours_connect, _ours_run)}
    if vendor is not None:
        connect = _vendor_connector(vendor, k)
        out["vendor"] = await _all_latencies(profile, connect, _vendor_run)
    return out


async def _all_latencies(profile: Profile, connect: Any, scenario: Scenario) -> dict[str, Any]:
    """Every latency at once (each with its own upstream and server), repeated; medians per latency."""
    runs: dict[float, list[tuple[Run, Upstream]]] = {latency: [] for latency in profile.turn_latencies}
    for _ in range(profile.turn_reps):
        with scratch_dir() as scratch:
            async with AsyncExitStack() as stack:
                ready = [
                    (latency, *await connect(stack, latency, profile.time_scale, scratch))
                    for latency in profile.turn_latencies
                ]

                async def one(latency: float, client: Client, upstream: Upstream) -> None:
                    run = await scenario(client, profile.time_scale)
                    runs[latency].append((run, upstream))

                async with anyio.create_task_group() as tg:
                    for latency, client, upstream in ready:
                        tg.start_soon(one, latency, client, upstream)
    return {f"{latency:g}": _summary(found, profile.time_scale) for latency, found in runs.items()}


def _summary(found: list[tuple[Run, Upstream]], k: float) -> dict[str, Any]:
    runs = [run for run, _ in found]
    upstream = found[-1][1]
    holds = [hold for run in runs for hold in run.holds]
    summary: dict[str, Any] = {
        "tool_calls": median([run.calls for run in runs]),
        "polls": median([_polls(up) for _, up in found]),
        "submissions": median([float(up.state.submissions) for _, up in found]),
        "bytes_to_model": int(median([run.bytes for run in runs])),
        "found_after_ready_s": round(median([_lag(up, k) for _, up in found]), 1),
        "statuses": sorted({run.status for run in runs}),
        "upstream_requests": upstream.log.summary(),
        "submitted_body": _submitted_body(upstream),
    }
    if upstream.state.rejected:
        summary["upstream_rejected"] = dict(upstream.state.rejected)
    if holds:
        summary["server_hold_per_poll_s"] = round(median(holds), 2)
    summary["poll_at_s"] = _poll_times(upstream, k)
    summary.update(runs[-1].notes)
    return summary


def _only_task(upstream: Upstream) -> TaskRecord:
    tasks = list(upstream.state.tasks.values())
    if len(tasks) != 1:
        raise RuntimeError(f"expected one task upstream, found {len(tasks)}")
    return tasks[0]


def _lag(upstream: Upstream, k: float) -> float:
    """How long after the image was ready the server looked and saw it (uncompressed seconds)."""
    finished = _only_task(upstream).finish_monotonic
    seen = [at for at in upstream.log.times(POLL_ROUTE) if at >= finished]
    return (min(seen) - finished) / k if seen else float("nan")


def _poll_times(upstream: Upstream, k: float) -> list[float]:
    """When each poll came, in uncompressed seconds after the task was accepted."""
    created = _only_task(upstream).created_monotonic
    return [round((at - created) / k, 1) for at in upstream.log.times(POLL_ROUTE)]


def _submitted_body(upstream: Upstream) -> dict[str, Any]:
    """What the server POSTed to /flux/images (the prompt shortened)."""
    for task in upstream.state.tasks.values():
        return {key: ("…" if key == "prompt" else value) for key, value in sorted(task.request.items())}
    return {}


def _polls(upstream: Upstream) -> float:
    return float(upstream.state.polls)


# --- flux-mcp ---------------------------------------------------------------------------------


async def _ours_connect(
    stack: AsyncExitStack, latency: float, k: float, scratch: Any
) -> tuple[Client, Upstream]:
    upstream = await stack.enter_async_context(serve_upstream(EmulatorConfig(latency=latency * k)))
    scaled = {name: _default(name) * k for name in SCALED_SETTINGS}
    settings = bench_settings(upstream.base_url, scratch / f"ours-{latency:g}", **scaled)
    client = await stack.enter_async_context(Client(build_server(settings)))
    return client, upstream


def _default(name: str) -> float:
    """The project's own default for a setting (so the scenario follows the defaults as they change)."""
    value = Settings.model_fields[name].default
    assert isinstance(value, int | float)
    return float(value)


async def _ours_run(client: Client, k: float) -> Run:
    run = Run()
    result = await _call(client, run, "generate_image", {"prompt": PROMPT})
    while status_of(result) == "pending" and run.calls < MAX_CALLS:
        task = (result.structured_content or {}).get("task_id")
        result = await _call(client, run, "get_task", {"task_id": task})
    run.status = status_of(result)
    return run


async def _call(client: Client, run: Run, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    result = await client.call_tool(tool, arguments)
    run.calls += 1
    run.bytes += result_bytes(result)
    return result


# --- the vendor ---------------------------------------------------------------------------------


def _vendor_connector(vendor: vendor_server.Vendor, k: float) -> Any:
    async def connect(
        stack: AsyncExitStack, latency: float, _k: float, scratch: Any
    ) -> tuple[Client, Upstream]:
        upstream = await stack.enter_async_context(serve_upstream(EmulatorConfig(latency=latency * k)))
        env = vendor_server.env(upstream.base_url, TOKEN, time_scale=k)
        client = await stack.enter_async_context(Client(stdio_transport(vendor.command, env), mode="legacy"))
        return client, upstream

    return connect


async def _vendor_run(client: Client, k: float) -> Run:
    run = Run()
    result = await _call(client, run, "flux_generate_image", VENDOR_ARGS)
    data = vendor_server.payload(text_of(result))
    task = vendor_server.task_id(data)
    interval = vendor_server.poll_interval(data, text_of(result))
    run.notes["guided_interval_s"] = interval
    if interval is None:
        run.notes["guidance_note"] = f"no interval found in the answer; used {VENDOR_DEFAULT_INTERVAL:g} s"
        interval = VENDOR_DEFAULT_INTERVAL
    while task and vendor_server.should_poll(data) and run.calls < MAX_CALLS:
        await anyio.sleep(interval * k)
        asked = time.perf_counter()
        result = await _call(client, run, "flux_get_task", {"task_id": task})
        data = vendor_server.payload(text_of(result))
        if vendor_server.should_poll(data):
            run.holds.append((time.perf_counter() - asked) / k)
    response = data.get("response")
    succeeded = isinstance(response, dict) and response.get("success") is True
    run.status = "succeeded" if succeeded else "error" if result.is_error else "unfinished"
    return run
