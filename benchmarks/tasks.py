"""Measurement 12: a 120 s job as an MCP task (2026-07-28), beside the pending/get_task path and the vendor.

Time is compressed as in measurement 3 (`turns`): the emulator's latency and the server's poll pauses and
wait budget are multiplied by k. The task client is what a SEP-2663 host does: one tools/call (the model's
one turn), then tasks/get every `pollIntervalMs` (the host's own loop, no model turn) until `completed`.
Today's path: the model calls generate_image, then get_task while the answer says `pending` (one model turn
per call). Per path: model tool calls (= model turns), host requests, upstream reads (`/flux/tasks`), and
how long after the image was ready upstream the client had it (uncompressed seconds).
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
from mcp import Client

from benchmarks import turns
from benchmarks import vendor as vendor_server
from benchmarks.common import PROMPT, Profile, bench_settings, median, scratch_dir
from benchmarks.report import Row
from benchmarks.upstream import Upstream, serve_upstream
from flux_mcp.emulator import EmulatorConfig
from flux_mcp.server.build import build_server
from testkit.tasks import RawTasks, call_as_task, task_request

LATENCY = 120.0
MAX_REQUESTS = 1000


@dataclass
class Outcome:
    tool_calls: int  # what the model calls (each answer is one model turn)
    host_requests: int  # what the host sends on its own (tasks/get)
    status: str
    done_at: float  # monotonic: when the client had the result


async def measure(profile: Profile, vendor: vendor_server.Vendor | None) -> dict[str, Any]:
    k = profile.time_scale
    out: dict[str, Any] = {
        "time_scale": k,
        "latency_s": LATENCY,
        "task": await _repeat(profile, lambda stack, scratch: _ours(stack, scratch, k, tasks=True), _as_task),
        "pending": await _repeat(
            profile, lambda stack, scratch: _ours(stack, scratch, k, tasks=False), _pending
        ),
    }
    if vendor is not None:
        connect = turns._vendor_connector(vendor, k)
        out["vendor"] = await _repeat(
            profile, lambda stack, scratch: connect(stack, LATENCY, k, scratch), _vendor
        )
    return out


async def _repeat(profile: Profile, connect: Any, scenario: Any) -> dict[str, Any]:
    k = profile.time_scale
    found: list[tuple[Outcome, Upstream]] = []
    for _ in range(profile.turn_reps):
        with scratch_dir() as scratch:
            async with AsyncExitStack() as stack:
                client, upstream = await connect(stack, scratch)
                found.append((await scenario(client, k), upstream))
    return {
        "tool_calls": median([float(outcome.tool_calls) for outcome, _ in found]),
        "model_turns": median([float(outcome.tool_calls) for outcome, _ in found]),
        "host_requests": median([float(outcome.host_requests) for outcome, _ in found]),
        "upstream_reads": median(
            [float(upstream.state.polls + upstream.state.batch_polls) for _, upstream in found]
        ),
        "submissions": median([float(upstream.state.submissions) for _, upstream in found]),
        "client_has_it_after_ready_s": round(median([_lag(outcome, up, k) for outcome, up in found]), 1),
        "statuses": sorted({outcome.status for outcome, _ in found}),
    }


def _lag(outcome: Outcome, upstream: Upstream, k: float) -> float:
    ready = turns._only_task(upstream).finish_monotonic
    return (outcome.done_at - ready) / k


async def _ours(stack: AsyncExitStack, scratch: Any, k: float, *, tasks: bool) -> tuple[Client, Upstream]:
    upstream = await stack.enter_async_context(serve_upstream(EmulatorConfig(latency=LATENCY * k)))
    scaled = {name: turns._default(name) * k for name in turns.SCALED_SETTINGS}
    settings = bench_settings(upstream.base_url, scratch / "ours", tasks=tasks, **scaled)
    extensions = [RawTasks()] if tasks else []
    client = await stack.enter_async_context(Client(build_server(settings), extensions=extensions))
    return client, upstream


async def _as_task(client: Client, k: float) -> Outcome:
    created = await call_as_task(client, "generate_image", {"prompt": PROMPT})
    task, requests = created, 0
    while task.get("status") == "working" and requests < MAX_REQUESTS:
        await anyio.sleep(task["pollIntervalMs"] / 1000)
        task = await task_request(client, "tasks/get", created["taskId"])
        requests += 1
    done_at = time.monotonic()
    result = task.get("result", {})
    status = (result.get("structuredContent") or {}).get("status", task.get("status", "unknown"))
    return Outcome(1, requests, str(status), done_at)


async def _pending(client: Client, k: float) -> Outcome:
    run = await turns._ours_run(client, k)
    return Outcome(run.calls, 0, run.status, time.monotonic())


async def _vendor(client: Client, k: float) -> Outcome:
    run = await turns._vendor_run(client, k)  # its pauses, compressed by k
    return Outcome(run.calls, 0, run.status, time.monotonic())


def rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    task, pending, vendor = data["task"], data["pending"], data.get("vendor", {})
    job = f"{data['latency_s']:g} s job"
    shown = [
        ("tool calls = model turns", "model_turns"),
        ("host tasks/get requests", "host_requests"),
        ("upstream reads", "upstream_reads"),
        ("client has the images after ready (s)", "client_has_it_after_ready_s"),
    ]
    table = [
        Row(
            f"12 {label}, {job}: task | pending path",
            f"{task[key]:g} | {pending[key]:g}",
            f"{vendor[key]:g}" if key in vendor else "",
        )
        for label, key in shown
    ]
    met = task["model_turns"] == 1 and task["statuses"] == ["succeeded"]
    return table, {"tasks_one_turn": {"met": met, "value": task["model_turns"], "statuses": task["statuses"]}}
