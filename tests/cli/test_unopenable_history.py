"""A history that cannot be opened stops the server with the reason (never a silent history in memory,
which would lose every task submitted until the next restart), and `doctor` says the same."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mcp import Client

from flux_mcp.cli.doctor import DoctorContext, Status, check_history
from flux_mcp.cli.main import _refusal
from flux_mcp.history.rows import SUBMITTING
from flux_mcp.history.store import History
from flux_mcp.server.build import build_server
from testkit import flux_command
from tests.support import child_env, free_port, initialize_request, make_settings

EXIT_BOUND_SECONDS = 60.0  # only so that a broken build fails instead of hanging


NOWHERE = "http://127.0.0.1:9"  # no call reaches the upstream: the server never starts


def unopenable(tmp_path: Path, kind: str) -> Path:
    """A history path SQLite cannot use, alone in its folder: a folder, or a file that is not a database."""
    path = tmp_path / "data" / "history.db"
    path.parent.mkdir()
    if kind == "a folder":
        path.mkdir()
    else:
        path.write_bytes(b"these bytes are not a SQLite database" * 100)
    return path


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["a folder", "a damaged file"])
async def test_the_server_refuses_to_start_on_a_history_it_cannot_open(tmp_path: Path, kind: str) -> None:
    path = unopenable(tmp_path, kind)
    with pytest.raises(BaseException) as raised:
        async with Client(build_server(make_settings(NOWHERE, db=path))):
            pass
    refusal = _refusal(raised.value)  # as the command finds it
    assert refusal is not None, raised.value
    assert str(path) in str(refusal) and "FLUX_MCP_DB" in str(refusal) and "does not start" in str(refusal)
    assert [item.name for item in path.parent.iterdir()] == ["history.db"]  # nothing made in its place


@pytest.mark.anyio
async def test_doctor_says_the_server_will_not_start(tmp_path: Path) -> None:
    path = unopenable(tmp_path, "a damaged file")
    result = await check_history(DoctorContext(make_settings(NOWHERE, db=path)))
    assert result.status is Status.FAIL and str(path) in result.text and "does not start" in result.text
    assert result.fix is not None and "FLUX_MCP_DB" in result.fix


@pytest.mark.anyio
async def test_doctor_leaves_a_submission_in_flight_alone(tmp_path: Path) -> None:
    """A server may be submitting while the user runs doctor: its `submitting` row stays as it is (opening
    the history as a server does would settle it as interrupted, and a retry could no longer attach)."""
    path = tmp_path / "history.db"
    history = History(path)
    row_id = await history.record_submitting({"action": "generate", "prompt": "a kite", "model": "flux-dev"})
    try:
        result = await check_history(DoctorContext(make_settings(NOWHERE, db=path)))
        assert result.status is Status.OK, result.text
        entry = await history.find_row(row_id)
        assert entry is not None and entry.status == SUBMITTING
    finally:
        history.close()


@pytest.mark.subprocess
def test_a_stdio_server_exits_with_the_reason_and_no_traceback(tmp_path: Path) -> None:
    path = unopenable(tmp_path, "a folder")
    env = child_env(tmp_path, ACEDATACLOUD_API_TOKEN="sk-test", FLUX_MCP_DB=str(path))
    server = subprocess.run(
        flux_command(),
        input=json.dumps(initialize_request(1)) + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=EXIT_BOUND_SECONDS,
        check=False,
    )
    assert server.returncode == 1 and server.stdout == ""
    assert f"flux-mcp: cannot open the task history at {path}" in server.stderr
    assert "Traceback" not in server.stderr


@pytest.mark.subprocess
def test_an_http_server_exits_non_zero_with_the_reason_in_its_log(tmp_path: Path) -> None:
    path = unopenable(tmp_path, "a folder")
    env = child_env(tmp_path, ACEDATACLOUD_API_TOKEN="sk-test", FLUX_MCP_DB=str(path))
    server = subprocess.run(
        [*flux_command(), "serve", "--transport", "http", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=EXIT_BOUND_SECONDS,
        check=False,
    )
    assert server.returncode != 0  # uvicorn's own code for a failed startup (3)
    assert f"cannot open the task history at {path}" in server.stderr
    assert "Application startup failed" in server.stderr
