"""The vendor's server (`mcp-flux-pro` on PyPI), installed into a throw-away venv for `--vs-vendor`.

Nothing of the vendor's code lives in this repository: the package is installed from the registry
into benchmarks/.vendor-venv (gitignored), its console script is found from its entry points, and
its polling guidance is read from what its tools return at run time.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

PACKAGE = "mcp-flux-pro"
HERE = Path(__file__).resolve().parent
VENV = HERE / ".vendor-venv"
TIMEWARP = HERE / "timewarp"
INSTALL_TIMEOUT = 600
_ENTRY_POINTS = f"""
import importlib.metadata as m, json
d = m.distribution({PACKAGE!r})
print(json.dumps({{"version": d.version,
  "scripts": [e.name for e in d.entry_points if e.group == "console_scripts"]}}))
"""
_WAIT_TEXT = re.compile(r"[Ww]ait (?:at least )?(\d+(?:\.\d+)?) ?s(?:econds?)?\b")


@dataclass(frozen=True)
class Vendor:
    version: str
    command: str


async def install() -> Vendor | str:
    """The installed vendor server, or a note saying why it is not available."""
    python = VENV / "bin" / "python"
    try:
        if not python.exists():
            await _run([sys.executable, "-m", "venv", str(VENV)])
        found = await _entry_points(python)
        if found is None:
            await _run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PACKAGE]
            )
            found = await _entry_points(python)
    except (OSError, RuntimeError, TimeoutError) as exc:
        return f"could not install {PACKAGE}: {exc}"
    if found is None or not found["scripts"]:
        return f"{PACKAGE} installed without a console script"
    script = VENV / "bin" / found["scripts"][0]
    return Vendor(version=found["version"], command=str(script))


async def _entry_points(python: Path) -> dict[str, Any] | None:
    try:
        output = await _run([str(python), "-c", _ENTRY_POINTS])
    except RuntimeError:
        return None
    found: dict[str, Any] = json.loads(output)
    return found


async def _run(args: list[str]) -> str:
    with anyio.fail_after(INSTALL_TIMEOUT):
        result = await anyio.run_process(args, check=False)
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{Path(args[0]).name} {' '.join(args[1:3])} failed: {' | '.join(tail)}")
    return result.stdout.decode()


def env(base_url: str, token: str, time_scale: float | None = None) -> dict[str, str]:
    """The vendor reads the same two variables as flux-mcp; time compression goes in via sitecustomize."""
    values = {"ACEDATACLOUD_API_TOKEN": token, "ACEDATACLOUD_API_BASE_URL": base_url}
    if time_scale is not None:
        values["PYTHONPATH"] = str(TIMEWARP)
        values["FLUX_BENCH_TIME_SCALE"] = repr(time_scale)
    return values


# --- reading its answers ---------------------------------------------------------------------


def payload(text: str) -> dict[str, Any]:
    """The JSON object the vendor's tools answer with (as text)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def poll_interval(data: dict[str, Any], text: str) -> float | None:
    """The pause between polls the vendor tells the model to keep: from its structured guidance or prose."""
    found = _find_key(data, "polling_interval_seconds")
    if isinstance(found, int | float):
        return float(found)
    match = _WAIT_TEXT.search(text)
    return float(match.group(1)) if match else None


def should_poll(data: dict[str, Any]) -> bool:
    """Whether the vendor's answer tells the model to poll again."""
    found = _find_key(data, "should_poll")
    if isinstance(found, bool):
        return found
    response = data.get("response")
    return not (isinstance(response, dict) and "success" in response)


def task_id(data: dict[str, Any]) -> str | None:
    found = data.get("task_id") or data.get("id")
    return found if isinstance(found, str) else None


def _find_key(data: Any, key: str) -> Any:
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None
