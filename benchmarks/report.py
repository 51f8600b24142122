"""The table and the goals: turn the measurements' figures into rows and met/missed verdicts."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PREVIEW_GOAL_BYTES = 200_000
# Polls of a lone task before the poller (docs/benchmarks.md, the run of 2026-11-25): a lone task's
# looks must cost no more than that per-call schedule did.
POLLS_BEFORE = {"10": 5, "30": 9, "60": 11, "120": 15}
SEEN_GOAL_S = 2.0
HEADERS = ("measurement", "flux-mcp", "vendor", "vendor/ours", "goal", "")


@dataclass(frozen=True)
class Row:
    measurement: str
    ours: str
    vendor: str = ""
    ratio: str = ""
    goal: str = ""
    verdict: str = ""

    def cells(self) -> tuple[str, ...]:
        return (self.measurement, self.ours, self.vendor, self.ratio, self.goal, self.verdict)


def machine() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mcp": _version("mcp"),
        "flux_mcp": _version("flux-mcp"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "MISSED")


# --- rows per measurement ---------------------------------------------------------------------


def overhead_rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    rows = [Row("1 bare httpx2 submit+retrieve (ms)", f"{data['bare_httpx_ms']:.2f}")]
    labels = {
        "in_memory": "1 added ms/call, in-memory (images off)",
        "in_memory_jsonrpc": "1 added ms/call, in-memory JSON-RPC (images off)",
        "stdio": "1 added ms/call, stdio (images off)",
        "in_memory_defaults": "1 added ms/call, in-memory, defaults (+image GET in base)",
        "stdio_defaults": "1 added ms/call, stdio, defaults (+image GET in base)",
    }
    goals: dict[str, Any] = {}
    for key, label in labels.items():
        path = data[key]
        met = path["added_ms"] < 2.0 if key == "in_memory" else None
        goal = "< 2 ms" if key == "in_memory" else ""
        rows.append(
            Row(label, f"{path['added_ms']:.2f} (x{path['ratio']:.2f})", goal=goal, verdict=verdict(met))
        )
        if met is not None:
            goals["overhead_in_memory_added_ms_lt_2"] = {"met": met, "value": path["added_ms"]}
    return rows, goals


def concurrency_rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    goals: dict[str, Any] = {}
    for series, levels in data.items():
        if not isinstance(levels, dict):
            continue
        for level, figures in levels.items():
            headline = series == "defaults_process" and level == "200"
            met = figures["ratio"] <= 1.1 if headline else None
            failed = f", {figures['failures']} failed" if figures.get("failures") else ""
            rows.append(
                Row(
                    f"2 wall/2s, {level} concurrent, {series}",
                    f"{figures['ratio']:.2f}{failed}",
                    goal="<= 1.1" if headline else "",
                    verdict=verdict(met),
                )
            )
            if met is not None:
                goals["concurrency_200_ratio_le_1_1"] = {"met": met, "value": figures["ratio"]}
    return rows, goals


def turns_rows(data: dict[str, Any], wait_budget: float = 45.0) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    goals: dict[str, Any] = {}
    vendor = data.get("vendor", {})
    for latency, ours in data["ours"].items():
        theirs = vendor.get(latency)
        call_goal, call_met = _call_goal(float(latency), ours["tool_calls"], wait_budget)
        rows.append(
            _pair(
                f"3 tool calls, {latency} s job",
                ours["tool_calls"],
                theirs,
                "tool_calls",
                call_goal,
                call_met,
            )
        )
        before = POLLS_BEFORE.get(latency)
        polls_met = ours["polls"] <= min(15, before if before is not None else 15)
        polls_goal = "<= 15" + (f", <= {before} (before)" if before is not None else "")
        rows.append(
            _pair(f"3 upstream polls, {latency} s job", ours["polls"], theirs, "polls", polls_goal, polls_met)
        )
        seen_met = ours["found_after_ready_s"] <= SEEN_GOAL_S
        rows.append(
            _pair(
                f"3 seen after ready (s), {latency} s job",
                ours["found_after_ready_s"],
                theirs,
                "found_after_ready_s",
                f"<= {SEEN_GOAL_S:g}",
                seen_met,
            )
        )
        rows.append(
            _pair(f"3 bytes to model, {latency} s job", ours["bytes_to_model"], theirs, "bytes_to_model")
        )
        goals[f"turns_{latency}s_calls"] = {"met": call_met, "value": ours["tool_calls"], "target": call_goal}
        goals[f"turns_{latency}s_polls_le_15"] = {"met": polls_met, "value": ours["polls"], "before": before}
        goals[f"turns_{latency}s_seen_le_2s"] = {"met": seen_met, "value": ours["found_after_ready_s"]}
    return rows, goals


def _call_goal(latency: float, calls: float, wait_budget: float) -> tuple[str, bool | None]:
    if latency <= wait_budget:
        return "1", calls <= 1
    if latency >= 120:
        return "<= 3", calls <= 3
    return "", None


def _pair(
    label: str, ours: float, theirs: dict[str, Any] | None, key: str, goal: str = "", met: bool | None = None
) -> Row:
    vendor = theirs.get(key) if theirs else None
    ratio = f"{vendor / ours:.2f}" if isinstance(vendor, int | float) and ours else ""
    return Row(label, _num(ours), _num(vendor) if vendor is not None else "", ratio, goal, verdict(met))


def _num(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(int(value)) if isinstance(value, int | float) else str(value)


def payload_rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    ours = data["ours"]["final_answer"]["bytes"]
    worst = data["ours_worst_case"]["final_answer"]["bytes"]
    vendor = data.get("vendor")
    theirs = vendor["final_answer"]["bytes"] if vendor else None
    all_theirs = vendor["all_answers_bytes"] if vendor else None
    met = max(ours, worst) <= PREVIEW_GOAL_BYTES
    rows = [
        _pair(
            "4 bytes, the answer with the image",
            ours,
            {"b": theirs} if vendor else None,
            "b",
            "<= 200 KB",
            met,
        ),
        Row("4 bytes, worst case (noise image preview)", str(worst), goal="<= 200 KB", verdict=verdict(met)),
        _pair(
            "4 bytes, all answers until the image", data["ours"]["all_answers_bytes"], {"b": all_theirs}, "b"
        ),
    ]
    goals = {"bytes_per_image_le_200kb": {"met": met, "value": ours, "worst_case": worst}}
    return rows, goals


def cold_start_rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    ours = data["ours"]
    theirs = data.get("vendor")
    fast = ours["median_s"] <= 0.5
    beats = theirs is None or ours["median_s"] < theirs["median_s"]
    rows = [
        _pair(
            "5 cold start to tools/list (s)",
            ours["median_s"],
            theirs,
            "median_s",
            "<= 0.5, < vendor",
            fast and beats,
        ),
        _pair("5 idle RSS after start (MB)", ours["idle_rss_mb"], theirs, "idle_rss_mb"),
    ]
    floor = data.get("sdk_floor")
    if floor is not None:
        added = data["ours_minus_sdk_floor_s"]
        rows += [
            Row("5 SDK floor: bare MCPServer, one tool, to tools/list (s)", _num(floor["median_s"])),
            Row(
                "5 cold start, flux-mcp less the SDK floor (s)",
                _num(added),
                goal=f"< {COLD_START_OVER_FLOOR_S:g}",
                verdict=verdict(added < COLD_START_OVER_FLOOR_S),
            ),
        ]
    goals = {
        "cold_start_le_0_5s": {"met": fast, "value": ours["median_s"]},
        "cold_start_over_sdk_floor_lt_0_1s": {
            "met": floor is not None and data["ours_minus_sdk_floor_s"] < COLD_START_OVER_FLOOR_S,
            "value": data.get("ours_minus_sdk_floor_s"),
        },
        "cold_start_below_vendor": {
            "met": beats if theirs else None,
            "value": ours["median_s"],
            "vendor": theirs and theirs["median_s"],
        },
    }
    return rows, goals


def memory_rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    tasks = data["tasks"]
    rows = [
        Row("6 RSS idle, stdio (MB)", _num(data["idle_rss_mb"])),
        Row(
            f"6 RSS, {tasks} tasks waiting (MB)",
            f"{_num(data['waiting_rss_mb'])} (+{data['kb_per_waiting_task']} KB/task)",
        ),
        Row(f"6 peak RSS, {tasks} images finishing at once (MB)", _num(data["peak_hwm_mb"])),
    ]
    return rows, {}


def poller_rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    goals: dict[str, Any] = {}
    for name, scene in data.items():
        where = (
            f"{scene['tasks']} x {scene['job_s']:g} s at once"
            if name == "together"
            else f"{scene['job_s']:g} s jobs, one every {scene['submit_gap_s']:g} s"
        )
        together = name == "together"
        reads_met = scene["reads_per_task"] <= 1.0 if together else None
        seen_met = scene["found_after_ready_s"] <= SEEN_GOAL_S
        rows += [
            Row(
                f"7 task reads per task, {where}",
                _num(scene["reads_per_task"]),
                goal="<= 1" if together else "",
                verdict=verdict(reads_met),
            ),
            Row(
                f"7 ids per read (median / max), {where}",
                f"{_num(scene['ids_per_read_median'])} / {scene['ids_per_read_max']}",
            ),
            Row(
                f"7 seen after ready (s; median, p90), {where}",
                f"{_num(scene['found_after_ready_s'])}, {_num(scene['found_after_ready_p90_s'])}",
                goal=f"<= {SEEN_GOAL_S:g}",
                verdict=verdict(seen_met),
            ),
        ]
        if reads_met is not None:
            goals[f"poller_{name}_reads_per_task_le_1"] = {"met": reads_met, "value": scene["reads_per_task"]}
        goals[f"poller_{name}_seen_le_2s"] = {"met": seen_met, "value": scene["found_after_ready_s"]}
    return rows, goals


AT_ONCE_GOALS = {"small": 1.25, "large": 1.6}  # issue 16 §3: wall / latency with previews and saving on
AT_ONCE_LABELS = {"defaults": "defaults", "images_off": "images off", "bare_httpx2": "bare httpx2 floor"}
FINISHED_GOAL = 1.5  # issue 16 §4: get_task on a finished task / (stdio ping + one bare retrieve)
COLD_START_GOAL_S = 0.5
COLD_START_OVER_FLOOR_S = 0.1  # issue 27 §2: flux-mcp's start less a bare MCPServer's


def at_once_rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    goals: dict[str, Any] = {}
    calls = data["calls"]
    for size, limit in AT_ONCE_GOALS.items():
        pixels = "64x48" if size == "small" else "1024x1024"
        for path, label in AT_ONCE_LABELS.items():
            figures = data.get(f"{size}_{path}")
            if figures is None:
                continue
            headline = path == "defaults"
            met = figures["ratio"] <= limit if headline else None
            failed = f", {figures['failures']} failed" if figures["failures"] else ""
            rows.append(
                Row(
                    f"9 wall/2s, {calls} at once over stdio, {pixels}, {label}",
                    f"{figures['ratio']:.2f}{failed}",
                    goal=f"<= {limit:g}" if headline else "",
                    verdict=verdict(met),
                )
            )
            if met is not None:
                goals[f"at_once_{size}_le_{limit:g}"] = {"met": met, "value": figures["ratio"]}
        floor = data.get(f"{size}_bare_httpx2")
        if floor is not None and f"{size}_defaults" in data:
            over = data[f"{size}_defaults"]["wall_s"] / floor["wall_s"]
            rows.append(Row(f"9 defaults / floor, {calls} at once, {pixels}", f"{over:.2f}"))
            goals[f"at_once_{size}_le_{limit:g}"]["over_floor"] = round(over, 3)
            goals[f"at_once_{size}_le_{limit:g}"]["floor"] = floor["ratio"]
    return rows, goals


def finished_rows(data: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    met = data["ratio"] <= FINISHED_GOAL
    rows = [
        Row("10 get_task, finished task (ms)", _num(data["get_task_ms"])),
        Row("10 floor: stdio ping + bare retrieve (ms)", _num(data["floor_ms"])),
        Row(
            "10 get_task / floor", f"{data['ratio']:.2f}", goal=f"<= {FINISHED_GOAL:g}", verdict=verdict(met)
        ),
    ]
    return rows, {"finished_get_task_le_1_5": {"met": met, "value": data["ratio"]}}


# --- printing -----------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    table = [HEADERS, *(row.cells() for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(HEADERS))]
    lines = []
    for index, line in enumerate(table):
        lines.append(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
