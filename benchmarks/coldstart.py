"""Measurement 5: cold start — spawn the server over stdio until `tools/list` answers.

The SDK's own floor (`benchmarks/sdk_floor.py`: a bare `MCPServer` with one tool, this interpreter)
is started the same way in the same rounds; flux-mcp's start less the floor's is what flux-mcp adds.
Both servers are started the way a desktop host starts them (a fresh process, the initialize
handshake, then tools/list), alternately, after one unmeasured start each to warm the OS file cache.
The resident memory of each process right after it answered is recorded as its idle footprint.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from mcp import Client

from benchmarks import vendor as vendor_server
from benchmarks.common import (
    TOKEN,
    Profile,
    child_pids,
    find_new_child,
    flux_mcp_command,
    median,
    memory_mb,
    scratch_dir,
    server_env,
    stdio_transport,
)

UNREACHABLE = "http://127.0.0.1:9"  # tools/list never calls the upstream
FLOOR_ARGS = ["-m", "benchmarks.sdk_floor"]  # the SDK's own floor: a bare MCPServer with one tool
REPO_ROOT = Path(__file__).resolve().parents[1]


async def measure(profile: Profile, vendor: vendor_server.Vendor | None) -> dict[str, Any]:
    with scratch_dir() as scratch:
        servers = {
            "ours": (flux_mcp_command(), server_env(UNREACHABLE, scratch)),
            "sdk_floor": (sys.executable, {"PYTHONPATH": str(REPO_ROOT)}),
        }
        if vendor is not None:
            servers["vendor"] = (vendor.command, vendor_server.env(UNREACHABLE, TOKEN))
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        for round_ in range(1 + profile.cold_starts):
            for name, (command, env) in servers.items():
                sample = await _start(command, env, FLOOR_ARGS if name == "sdk_floor" else None)
                if round_ > 0:
                    samples[name].append(sample)
    out = {name: _figures(found) for name, found in samples.items()}
    out["ours_minus_sdk_floor_s"] = round(out["ours"]["median_s"] - out["sdk_floor"]["median_s"], 3)
    if "vendor" in out:
        out["vendor_over_ours"] = round(out["vendor"]["median_s"] / out["ours"]["median_s"], 2)
    return out


async def _start(command: str, env: dict[str, str], args: list[str] | None = None) -> tuple[float, float]:
    """Seconds from spawn to the tools/list answer, and the process's resident MB then."""
    before = child_pids()
    started = time.perf_counter()
    async with Client(stdio_transport(command, env, args=args), mode="legacy") as client:
        tools = await client.list_tools()
        elapsed = time.perf_counter() - started
        pid = find_new_child(before, Path(command).name)
        rss = memory_mb(pid)["VmRSS"] if pid is not None else float("nan")
    if not tools.tools:
        raise RuntimeError(f"{command} listed no tools")
    return elapsed, rss


def _figures(found: list[tuple[float, float]]) -> dict[str, Any]:
    times = [elapsed for elapsed, _ in found]
    return {
        "median_s": round(median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "starts": len(times),
        "idle_rss_mb": median([rss for _, rss in found]),
    }
