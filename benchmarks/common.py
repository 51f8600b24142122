"""Shared pieces: run profiles, statistics, emulator processes, stdio transports, /proc readings."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult, TextContent

import flux_mcp
from flux_mcp.domain.settings import Settings

TOKEN = "sk-bench-0000"
PROMPT = "a white siamese cat on a red cushion, soft window light"


@dataclass(frozen=True)
class Profile:
    """How much of each measurement to run: `--quick` for CI, the default for the recorded table."""

    quick: bool
    overhead_calls: int
    concurrency_levels: tuple[int, ...]
    concurrency_reps: int
    concurrency_modes: tuple[str, ...]
    concurrency_inline_levels: tuple[int, ...]
    concurrency_extra_levels: tuple[int, ...]
    time_scale: float
    turn_latencies: tuple[float, ...]
    turn_reps: int
    cold_starts: int
    memory_tasks: int
    memory_latency: float
    poller_tasks: int
    poller_scale: float
    poller_stream_tasks: int
    at_once_calls: int
    at_once_reps: int
    at_once_sizes: tuple[str, ...]
    at_once_paths: tuple[str, ...]
    finished_calls: int
    learned_warmups: int
    learned_jobs: int


FULL = Profile(
    quick=False,
    overhead_calls=300,
    concurrency_levels=(50, 200, 500),
    concurrency_reps=3,
    concurrency_modes=("process", "inline"),
    concurrency_inline_levels=(200,),
    concurrency_extra_levels=(200,),
    time_scale=1 / 20,
    turn_latencies=(10.0, 30.0, 60.0, 120.0),
    turn_reps=3,
    cold_starts=10,
    memory_tasks=200,
    memory_latency=5.0,
    poller_tasks=200,
    poller_scale=1 / 5,
    poller_stream_tasks=24,
    at_once_calls=200,
    at_once_reps=3,
    at_once_sizes=("small", "large"),
    at_once_paths=("defaults", "images_off", "bare_httpx2"),
    finished_calls=100,
    learned_warmups=6,
    learned_jobs=6,
)
QUICK = Profile(
    quick=True,
    overhead_calls=20,
    concurrency_levels=(50,),
    concurrency_reps=1,
    concurrency_modes=("process",),
    concurrency_inline_levels=(),
    concurrency_extra_levels=(),
    time_scale=1 / 40,
    turn_latencies=(10.0, 30.0, 60.0, 120.0),
    turn_reps=1,
    cold_starts=3,
    memory_tasks=50,
    memory_latency=1.5,
    poller_tasks=50,
    poller_scale=1 / 10,
    poller_stream_tasks=12,
    at_once_calls=50,
    at_once_reps=1,
    at_once_sizes=("small",),
    at_once_paths=("defaults", "bare_httpx2"),
    finished_calls=20,
    learned_warmups=3,
    learned_jobs=2,
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def flux_mcp_command() -> str:
    """The `flux-mcp` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("flux-mcp")
    return str(beside) if beside.exists() else "flux-mcp"


def bench_settings(base_url: str, scratch: Path, **overrides: Any) -> Settings:
    """Settings of an in-process server: files and history in `scratch`, never the user's folders."""
    values: dict[str, Any] = {
        "api_token": TOKEN,
        "api_base_url": base_url,
        "output_dir": scratch / "images",
        "db": scratch / "history.db",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


def server_env(base_url: str, scratch: Path | None = None, **settings: str) -> dict[str, str]:
    """Environment for a flux-mcp process pointed at an emulator, its files in `scratch`."""
    env = {"ACEDATACLOUD_API_TOKEN": TOKEN, "ACEDATACLOUD_API_BASE_URL": base_url}
    # The server process imports the same flux_mcp as this one (a patched copy on PYTHONPATH, say).
    env["PYTHONPATH"] = str(Path(flux_mcp.__file__).resolve().parents[1])
    if scratch is not None:
        env["FLUX_MCP_OUTPUT_DIR"] = str(scratch / "images")
        env["FLUX_MCP_DB"] = str(scratch / "history.db")
    env.update({f"FLUX_MCP_{name.upper()}": value for name, value in settings.items()})
    return env


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="flux-bench-") as folder:
        yield Path(folder)


@contextlib.contextmanager
def _quiet_log() -> Iterator[TextIO]:
    with tempfile.TemporaryFile("w+") as log:
        yield log


@asynccontextmanager
async def stdio_transport(
    command: str, env: dict[str, str], *, args: list[str] | None = None
) -> AsyncIterator[Any]:
    """A stdio transport for `mcp.Client` whose server's stderr goes to a scratch file, not the console."""
    with _quiet_log() as log, tempfile.TemporaryDirectory() as cwd:
        params = StdioServerParameters(command=command, args=args or [], env=env, cwd=cwd)
        async with stdio_client(params, errlog=log) as streams:
            yield streams


# --- tool results -----------------------------------------------------------------------------


def result_bytes(result: CallToolResult) -> int:
    """What a host hands the model: the serialized tool result."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def status_of(result: CallToolResult) -> str:
    data = result.structured_content or {}
    status = data.get("status")
    if isinstance(status, str):
        return status
    return "error" if result.is_error else "unknown"


async def generate_burst(client: Client, calls: int) -> tuple[float, int]:
    """Wall time of `calls` simultaneous generate_image calls on `client`, and how many did not succeed."""
    statuses: list[str] = []

    async def one(index: int) -> None:
        result = await client.call_tool("generate_image", {"prompt": f"{PROMPT} #{index}"})
        statuses.append(status_of(result))

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for index in range(calls):
            tg.start_soon(one, index)
    return time.perf_counter() - started, sum(1 for status in statuses if status != "succeeded")


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


# --- processes ------------------------------------------------------------------------------


def child_pids() -> set[int]:
    """Direct children of this process: from /proc/<pid>/task/*/children, or by scanning parents."""
    pids: set[int] = set()
    tasks = list(Path(f"/proc/{os.getpid()}/task").iterdir())
    if not (tasks[0] / "children").exists():
        return _children_by_parent()
    for task in tasks:
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


def _children_by_parent() -> set[int]:
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    pids.add(int(entry.name))
    return pids


def find_new_child(before: set[int], marker: str) -> int | None:
    """The child started since `before` whose command line mentions `marker`."""
    for pid in sorted(child_pids() - before, reverse=True):
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return pid
    return None


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MB."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = round(int(value.split()[0]) / 1024.0, 1)
    return figures
