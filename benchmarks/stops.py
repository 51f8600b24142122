"""Measurement 9: how soon a wait ends when it must — the figures the tests prove without timing them.

- wait cap: `generate_image` asks to wait 60 s, the server allows 0.2 s, the job takes 5 s: seconds
  until the `pending` answer (test_tools.py::test_call_wait_cannot_exceed_server_limit);
- stdio exit: the host closes stdin while a call waits for a 60 s job: seconds until the process ends
  (test_reliability.py::test_closing_stdin_ends_a_long_wait_promptly);
- HTTP exit: SIGTERM to `flux-mcp serve --transport http` while a call waits for a 60 s job: seconds
  until the process ends, its drain included (test_sigterm_over_http_answers_waiting_calls_then_exits);
- emulator stop: the emulator leaving its block with a 30 s blocking request in flight
  (test_emulator.py::test_exit_with_a_request_in_flight_is_quick_and_drops_it).

The tests show each wait ends while the job is still running; the goals are the bounds they once asserted.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import httpx2
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client

from benchmarks.common import PROMPT, TOKEN, Profile, bench_settings, flux_mcp_command, median, scratch_dir
from benchmarks.common import server_env as flux_env
from benchmarks.report import Row, verdict
from flux_mcp.emulator import EmulatorConfig, RunningEmulator, serve_emulator
from flux_mcp.server.build import build_server

JOB_SECONDS = 60.0
BOUND = 30.0  # only so that a broken build ends the measurement instead of hanging it
GOALS = {"wait_cap_s": 4.0, "stdio_exit_s": 10.0, "http_exit_s": 10.0, "emulator_stop_s": 1.0}
LABELS = {
    "wait_cap_s": "9 call waiting 60 s on a server capped at 0.2 s: answer after (s)",
    "stdio_exit_s": "9 stdio: stdin closed mid-wait, process ends after (s)",
    "http_exit_s": "9 HTTP: SIGTERM mid-wait, process ends after (s)",
    "emulator_stop_s": "9 emulator: stopped with a request in flight, after (s)",
}


async def measure(profile: Profile) -> dict[str, Any]:
    reps = 1 if profile.quick else 3
    scenes: dict[str, Callable[[], Any]] = {
        "wait_cap_s": _wait_cap,
        "stdio_exit_s": _stdio_exit,
        "http_exit_s": _http_exit,
        "emulator_stop_s": _emulator_stop,
    }
    out: dict[str, Any] = {"reps": reps}
    for name, scene in scenes.items():
        samples = [await scene() for _ in range(reps)]
        out[name] = round(median(samples), 3)
    return out


def rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    table: list[Row] = []
    goals: dict[str, Any] = {}
    for name, label in LABELS.items():
        met = data[name] < GOALS[name]
        table.append(Row(label, f"{data[name]:.3f}", goal=f"< {GOALS[name]:g}", verdict=verdict(met)))
        goals[f"stops_{name}"] = {"value": data[name], "goal": GOALS[name], "met": met}
    return table, goals


async def _wait_cap() -> float:
    async with serve_emulator(EmulatorConfig(latency=5.0)) as upstream:
        with scratch_dir() as scratch:
            settings = bench_settings(upstream.base_url, scratch, wait_seconds=0.2)
            async with Client(build_server(settings)) as client:
                started = time.perf_counter()
                result = await client.call_tool("generate_image", {"prompt": PROMPT, "wait_seconds": 60})
                elapsed = time.perf_counter() - started
    _expect((result.structured_content or {}).get("status") == "pending", "the capped call did not pend")
    return elapsed


async def _stdio_exit() -> float:
    async with serve_emulator(EmulatorConfig(latency=JOB_SECONDS)) as upstream:
        with scratch_dir() as scratch:
            env = flux_env(upstream.base_url, scratch, wait_seconds="120")
            async with await anyio.open_process(
                [flux_mcp_command()], env=env, stderr=subprocess.DEVNULL
            ) as child:
                assert child.stdin is not None and child.stdout is not None
                lines = BufferedByteReceiveStream(child.stdout)
                with anyio.fail_after(BOUND):
                    await _start_a_long_call(child.stdin, lines)
                started = time.perf_counter()
                await child.stdin.aclose()
                with anyio.fail_after(BOUND):
                    await child.wait()
                elapsed = time.perf_counter() - started
            _still_running(upstream)
    return elapsed


async def _start_a_long_call(stdin: anyio.abc.ByteSendStream, lines: BufferedByteReceiveStream) -> None:
    """initialize, then a generate_image waiting 100 s; returns once it says it submitted its task."""
    hello = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    }
    call = {
        "name": "generate_image",
        "arguments": {"prompt": PROMPT, "wait_seconds": 100},
        "_meta": {"progressToken": "p1"},
    }
    await _send(stdin, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello})
    while "result" not in json.loads(await lines.receive_until(b"\n", 1 << 24)):
        pass
    await _send(stdin, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    await _send(stdin, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
    while "Submitted" not in str(json.loads(await lines.receive_until(b"\n", 1 << 24)).get("params")):
        pass


async def _send(stdin: anyio.abc.ByteSendStream, message: dict[str, Any]) -> None:
    await stdin.send(json.dumps(message).encode() + b"\n")


async def _http_exit() -> float:
    port = _unused_port()  # `serve --port` takes a number: the CLI reports no port it bound itself
    async with serve_emulator(EmulatorConfig(latency=JOB_SECONDS)) as upstream:
        with scratch_dir() as scratch:
            env = flux_env(upstream.base_url, scratch, wait_seconds="120")
            command = [flux_mcp_command(), "serve", "--transport", "http", "--port", str(port)]
            child = await anyio.open_process(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                elapsed = await _terminate_mid_wait(child, f"http://127.0.0.1:{port}")
            finally:
                if child.returncode is None:
                    child.kill()
                await child.wait()
            _still_running(upstream)
    return elapsed


async def _terminate_mid_wait(child: anyio.abc.Process, base_url: str) -> float:
    submitted = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if "Submitted" in (message or ""):
            submitted.set()

    with anyio.fail_after(BOUND):
        await _until_listening(base_url)
    async with Client(f"{base_url}/mcp") as client, anyio.create_task_group() as group:
        arguments = {"prompt": PROMPT, "wait_seconds": 100}
        group.start_soon(lambda: client.call_tool("generate_image", arguments, progress_callback=on_progress))
        with anyio.fail_after(BOUND):
            await submitted.wait()
        started = time.perf_counter()
        child.terminate()
        with anyio.fail_after(BOUND):
            await child.wait()
        elapsed = time.perf_counter() - started
    return elapsed


async def _until_listening(base_url: str) -> None:
    async with httpx2.AsyncClient(trust_env=False) as http:
        while True:
            try:
                await http.get(f"{base_url}/healthz")
                return
            except httpx2.TransportError:
                await anyio.sleep(0.05)


async def _emulator_stop() -> float:
    headers = {"authorization": f"Bearer {TOKEN}"}
    body = {"action": "generate", "prompt": PROMPT, "model": "flux-dev", "size": "1:1"}
    async with httpx2.AsyncClient(headers=headers, timeout=BOUND) as http, anyio.create_task_group() as group:
        async with serve_emulator(EmulatorConfig(latency=30.0)) as upstream:

            async def blocking_call() -> None:
                with contextlib.suppress(httpx2.TransportError):  # dropped, as it should be
                    await http.post(f"{upstream.base_url}/flux/images", json=body)

            group.start_soon(blocking_call)
            with anyio.fail_after(BOUND):
                while upstream.state.accepted < 1:  # noqa: ASYNC110 - the emulator has no event for it
                    await anyio.sleep(0.005)
            started = time.perf_counter()
        elapsed = time.perf_counter() - started
    return elapsed


def _still_running(upstream: RunningEmulator) -> None:
    _expect(all(task.status == "running" for task in upstream.state.tasks.values()), "the job had ended")


def _expect(condition: bool, failure: str) -> None:
    if not condition:
        raise RuntimeError(failure)


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
