"""NUL bytes and the history, on SQLite and a real PostgreSQL alike.

PostgreSQL refuses a NUL in `text`, so a hostile upstream's trace id with one used to fail the write
that records an accepted (billed) task's id, leaving it `submitting` for good. Now text from an upstream
is stored with U+FFFD for each NUL (`history.backend.bound`, under both backends), and a caller's own
text (a prompt, a `list_tasks` query) with a NUL is refused with a clear tool error before any upstream call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from starlette.responses import JSONResponse

import flux_mcp.emulator.app
from flux_mcp.domain.tasks import TaskError, TaskResult, TaskStatus
from flux_mcp.domain.text import REPLACEMENT as NUL_STORED_AS
from flux_mcp.emulator import RunningEmulator
from flux_mcp.history.store import History
from flux_mcp.server.build import build_server
from tests.support import make_settings, structured, text

pytestmark = pytest.mark.anyio
NUL_TRACE = "tr\x00ace"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def history_settings(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings that put a server's history on this backend."""
    if backend == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url")}


@pytest.fixture
async def client(emulator: RunningEmulator, history_settings: dict[str, Any]) -> AsyncIterator[Client]:
    async with Client(build_server(make_settings(emulator, **history_settings))) as connected:
        yield connected


@pytest.fixture
async def history(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[History]:
    if backend == "postgresql":
        async with History.connect(request.getfixturevalue("postgres_url")) as shared:
            yield shared
        return
    local = History(tmp_path / "history.db")
    try:
        yield local
    finally:
        local.close()


@pytest.mark.parametrize("trace_id", [NUL_TRACE, "tr\ud800ace"], ids=["nul", "lone-surrogate"])
async def test_a_nul_in_the_upstreams_trace_id_leaves_no_task_without_its_id(
    client: Client, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch, trace_id: str
) -> None:
    """The trace id comes in the submit answer (the write of the task id) and in every record."""

    class HostileAnswer(JSONResponse):
        def render(self, content: Any) -> bytes:
            if isinstance(content, dict) and set(content) == {"task_id"}:  # a submit answer
                content = {**content, "trace_id": trace_id}
            return json.dumps(content).encode()  # ASCII: `\u0000`, `\ud800`, as any JSON may spell them

    add_task = emulator.state.add_task

    def with_the_trace_id(task: Any) -> None:
        task.trace_id = trace_id
        add_task(task)

    monkeypatch.setattr(flux_mcp.emulator.app, "JSONResponse", HostileAnswer)
    monkeypatch.setattr(emulator.state, "add_task", with_the_trace_id)
    result = await client.call_tool("generate_image", {"prompt": "a red fox", "wait_seconds": 0})
    assert not result.is_error, text(result)
    task_id = structured(result)["task_id"]
    assert task_id and emulator.state.accepted == 1
    finished = await client.call_tool("get_task", {"task_id": task_id, "wait_seconds": 30})
    assert structured(finished)["status"] == "succeeded", text(finished)
    listed = structured(await client.call_tool("list_tasks", {}))["tasks"]
    assert [(row["task_id"], row["status"]) for row in listed] == [(task_id, "succeeded")]
    assert "tr\ufffdace" in json.dumps(structured(finished), ensure_ascii=False)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("generate_image", {"prompt": "a red\x00 fox"}),
        ("edit_image", {"prompt": "\x00night", "image_url": "https://example.com/a.png"}),
        ("generate_video", {"prompt": "a boat\x00"}),
        ("list_tasks", {"query": "fox\x00"}),
    ],
)
async def test_a_nul_in_a_callers_text_is_a_clear_error_before_any_upstream_call(
    client: Client, emulator: RunningEmulator, tool: str, arguments: dict[str, Any]
) -> None:
    result = await client.call_tool(tool, arguments)
    assert result.is_error and "NUL character (U+0000)" in text(result), text(result)
    assert "Error executing tool" not in text(result) and "Traceback" not in text(result)
    assert emulator.state.accepted == 0 and emulator.state.platform.upload_requests == 0


async def test_upstream_text_with_nul_is_stored_and_found_the_same_on_both_backends(history: History) -> None:
    row = await history.record_submitting({"action": "generate", "prompt": "a fox", "model": "m\x00"})
    await history.mark_submitted(row, "task-1", NUL_TRACE)
    failed = TaskResult(
        task_id="task-1",
        status=TaskStatus.FAILED,
        prompt="a fox",
        elapsed_seconds=1.0,
        trace_id=NUL_TRACE,
        error=TaskError(code="x\x00", message="refused\x00 by moderation"),
    )
    await history.record_state(failed)
    entry = await history.find_task("task-1")
    assert entry is not None and entry.status == "failed"
    assert (
        entry.trace_id == f"tr{NUL_STORED_AS}ace" and entry.error == f"refused{NUL_STORED_AS} by moderation"
    )
    assert entry.result is not None and entry.result.error is not None
    assert entry.result.error.message == "refused\x00 by moderation"  # inside the stored JSON, as given
    assert [found.task_id for found in await history.list_tasks(10, query="a fox")] == ["task-1"]
    assert await history.list_tasks(10, query="fox\x00") == []  # a caller's NUL never reaches SQL raw
