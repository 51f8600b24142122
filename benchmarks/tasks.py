"""Measurement 12: a 120 s job as an MCP task (2026-07-28), beside the pending/get_task path and the vendor.

Time is compressed as in measurement 3 (`turns`): the emulator's latency and the server's poll pauses and
wait budget are multiplied by k. The task client is what a SEP-2663 host does: one tools/call (the model's
one turn), then tasks/get every `pollIntervalMs` (the host's own loop, no model turn) until `completed`.
Today's path: the model calls generate_image, then get_task while the answer says `pending` (one model turn
per call). Per path: model tool calls (= model turns), host requests, upstream reads (`/flux/tasks`), and
how long after the image was ready upstream the client had it (uncompressed seconds; the files downloaded
and saved, the result in the client's hands), split into the poller's lateness (where the job's end falls in
the poll schedule) and what the path adds after the poller saw the end (saving, and the client being told).
pollIntervalMs and tasks/get's hold are multiples of the (compressed) first poll pause, so they scale with k.
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


WARMUPS = 3  # jobs of the same kind before the measured one, so the server has learned their length


async def measure(profile: Profile, vendor: vendor_server.Vendor | None) -> dict[str, Any]:
    k = profile.time_scale

    def ours(tasks: bool) -> Any:
        return lambda stack, scratch: _ours(stack, scratch, k, tasks=tasks)

    out: dict[str, Any] = {
        "time_scale": k,
        "latency_s": LATENCY,
        "task": await _repeat(profile, ours(True), _as_task),
        "pending": await _repeat(profile, ours(False), _pending),
    }
    if not profile.quick:  # the same on a server that has seen WARMUPS jobs this long (learned schedule)
        out["task_learned"] = await _repeat(profile, ours(True), _as_task, warmups=WARMUPS)
        out["pending_learned"] = await _repeat(profile, ours(False), _pending, warmups=WARMUPS)
    if vendor is not None:
        connect = turns._vendor_connector(vendor, k)
        out["vendor"] = await _repeat(
            profile, lambda stack, scratch: connect(stack, LATENCY, k, scratch), _vendor
        )
    return out


@dataclass
class Measured:
    outcome: Outcome
    upstream: Upstream
    since: float  # monotonic: when the measured job was called (after any warm-ups)

    def task(self) -> Any:
        return list(self.upstream.state.tasks.values())[-1]

    def reads(self) -> float:
        return float(sum(1 for at in self.upstream.log.times(turns.POLL_ROUTE) if at >= self.since))

    def seen_lag(self, k: float) -> float:
        """How long after the image was ready the poller looked and saw it (uncompressed seconds)."""
        ready = self.task().finish_monotonic
        return (min(at for at in self.upstream.log.times(turns.POLL_ROUTE) if at >= ready) - ready) / k

    def client_lag(self, k: float) -> float:
        """How long after the image was ready the client had it (uncompressed seconds)."""
        return (self.outcome.done_at - self.task().finish_monotonic) / k


async def _repeat(profile: Profile, connect: Any, scenario: Any, *, warmups: int = 0) -> dict[str, Any]:
    k = profile.time_scale
    found: list[Measured] = []
    for _ in range(profile.turn_reps):
        with scratch_dir() as scratch:
            async with AsyncExitStack() as stack:
                client, upstream = await connect(stack, scratch)
                for _ in range(warmups):
                    await scenario(client, k)
                since = time.monotonic()
                found.append(Measured(await scenario(client, k), upstream, since))
    return {
        "tool_calls": median([float(run.outcome.tool_calls) for run in found]),
        "model_turns": median([float(run.outcome.tool_calls) for run in found]),
        "host_requests": median([float(run.outcome.host_requests) for run in found]),
        "upstream_reads": median([run.reads() for run in found]),
        "submissions": median([float(run.upstream.state.submissions) for run in found]),
        "client_has_it_after_ready_s": round(median([run.client_lag(k) for run in found]), 1),
        # The two parts of that: the poller's look that saw the end (the schedule's phase at this length),
        # then the files saved and the client told (what the path itself adds).
        "server_saw_it_after_ready_s": round(median([run.seen_lag(k) for run in found]), 1),
        "client_has_it_after_seen_s": round(
            median([run.client_lag(k) - run.seen_lag(k) for run in found]), 1
        ),
        "statuses": sorted({run.outcome.status for run in found}),
    }


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
    job = f"{data['latency_s']:g} s job"
    shown = [
        ("tool calls = model turns", "model_turns"),
        ("host tasks/get requests", "host_requests"),
        ("upstream reads", "upstream_reads"),
        ("client has the images after ready (s)", "client_has_it_after_ready_s"),
        ("  of which: the poller saw the end after ready (s)", "server_saw_it_after_ready_s"),
        ("  of which: client has them after the poller saw the end (s)", "client_has_it_after_seen_s"),
    ]
    table: list[Row] = []
    for suffix, note in (("", ""), ("_learned", f", {WARMUPS} like it seen before")):
        if "task" + suffix not in data:
            continue
        task, pending = data["task" + suffix], data["pending" + suffix]
        vendor = data.get("vendor", {}) if not suffix else {}
        table += [
            Row(
                f"12 {label}, {job}{note}: task | pending path",
                f"{task[key]:g} | {pending[key]:g}",
                f"{vendor[key]:g}" if key in vendor else "",
            )
            for label, key in shown
        ]
    task = data["task"]
    met = task["model_turns"] == 1 and task["statuses"] == ["succeeded"]
    return table, {"tasks_one_turn": {"met": met, "value": task["model_turns"], "statuses": task["statuses"]}}
