"""`python -m benchmarks [--quick] [--vs-vendor]`: run the measurements, print the table and a JSON line.

Progress goes to stderr; stdout gets the table and, last, `JSON: {...}` with every figure, the
goals with met/missed, and the machine. Exit status 1 if a measurement failed (never for a time).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from benchmarks import (
    at_once,
    coldstart,
    concurrency,
    finished,
    learned,
    memory,
    overhead,
    payload,
    poller,
    replicas,
    report,
    stops,
    tasks,
    turns,
)
from benchmarks import vendor as vendor_server
from benchmarks.common import FULL, QUICK, Profile

SECTIONS = (
    "overhead",
    "concurrency",
    "turns",
    "payload",
    "cold_start",
    "memory",
    "poller",
    "replicas",
    "stops",
    "at_once",
    "finished",
    "tasks",
    "learned",
)
RowsFn = Callable[[dict[str, Any]], tuple[list[report.Row], dict[str, Any]]]


@dataclass
class Outcome:
    results: dict[str, Any] = field(default_factory=dict)
    rows: list[report.Row] = field(default_factory=list)
    goals: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    vendor: dict[str, Any] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    profile = QUICK if args.quick else FULL
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    started = time.perf_counter()
    outcome = anyio.run(run_all, profile, args.vs_vendor, only)
    print(report.render(outcome.rows))
    if args.markdown:
        print("\n" + report.markdown(outcome.rows))
    for name, error in outcome.errors.items():
        print(f"FAILED {name}: {error}")
    figures = {
        "profile": "quick" if profile.quick else "full",
        "machine": report.machine(),
        "vendor": outcome.vendor,
        "goals": outcome.goals,
        "results": outcome.results,
        "errors": outcome.errors,
        "section_seconds": outcome.seconds,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print("JSON: " + json.dumps(figures, separators=(",", ":"), default=str))
    return 1 if outcome.errors else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller scenarios (CI)")
    parser.add_argument("--vs-vendor", action="store_true", help="also run the vendor's mcp-flux-pro")
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(SECTIONS)}")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    return parser


async def run_all(profile: Profile, vs_vendor: bool, only: set[str]) -> Outcome:
    outcome = Outcome()
    vendor = await _vendor(outcome) if vs_vendor else None
    plan: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]], RowsFn]] = [
        ("overhead", lambda: overhead.measure(profile), report.overhead_rows),
        ("concurrency", lambda: concurrency.measure(profile), report.concurrency_rows),
        ("turns", lambda: turns.measure(profile, vendor), report.turns_rows),
        ("payload", lambda: payload.measure(vendor), report.payload_rows),
        ("cold_start", lambda: coldstart.measure(profile, vendor), report.cold_start_rows),
        ("memory", lambda: memory.measure(profile), report.memory_rows),
        ("poller", lambda: poller.measure(profile), report.poller_rows),
        ("replicas", lambda: replicas.measure(profile), replicas.rows),
        ("stops", lambda: stops.measure(profile), stops.rows),
        ("at_once", lambda: at_once.measure(profile), report.at_once_rows),
        ("finished", lambda: finished.measure(profile), report.finished_rows),
        ("tasks", lambda: tasks.measure(profile, vendor), tasks.rows),
        ("learned", lambda: learned.measure(profile), learned.rows),
    ]
    for name, measure, rows_of in plan:
        if name in only:
            await _section(outcome, name, measure, rows_of)
    return outcome


async def _vendor(outcome: Outcome) -> vendor_server.Vendor | None:
    report.warn(f"installing {vendor_server.PACKAGE} into {vendor_server.VENV} …")
    found = await vendor_server.install()
    if isinstance(found, str):
        report.warn(f"note: {found}; skipping the vendor comparison")
        outcome.vendor = {"skipped": found}
        return None
    outcome.vendor = {"package": vendor_server.PACKAGE, "version": found.version, "command": found.command}
    return found


async def _section(
    outcome: Outcome, name: str, measure: Callable[[], Awaitable[dict[str, Any]]], rows_of: RowsFn
) -> None:
    report.warn(f"running {name} …")
    started = time.perf_counter()
    try:
        data = await measure()
        rows, goals = rows_of(data)
    except Exception as exc:  # one broken measurement must not hide the others
        outcome.errors[name] = f"{type(exc).__name__}: {exc}"
        report.warn(f"{name} failed: {outcome.errors[name]}")
        return
    finally:
        outcome.seconds[name] = round(time.perf_counter() - started, 1)
    outcome.results[name] = data
    outcome.rows.extend(rows)
    outcome.goals.update(goals)
    report.warn(f"{name} done in {outcome.seconds[name]} s")


if __name__ == "__main__":
    raise SystemExit(main())
