"""MCP Tasks over streamable HTTP with server tokens: a task belongs to the person whose token started it."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from tests.support import finish_tasks_now, http_service
from tests.support.tasks import call_as_task, task_request, tasks_http_client

pytestmark = pytest.mark.anyio


async def test_another_callers_task_is_an_unknown_id(settings: Settings, emulator: RunningEmulator) -> None:
    """Server tokens share one history owner; the task is still only its own token's (`Caller.person`)."""
    emulator.state.config.latency = 600.0
    shared = settings.with_changes(auth="tokens", auth_tokens="alice-secret-token,bob-secret-token")
    async with (
        http_service(shared) as base_url,
        tasks_http_client(base_url, "alice-secret-token") as alice,
        tasks_http_client(base_url, "bob-secret-token") as bob,
    ):
        created = await call_as_task(alice, "generate_image", {"prompt": "a fox"})
        assert created["resultType"] == "task"
        for method in ("tasks/get", "tasks/cancel"):
            with pytest.raises(MCPError) as theirs:
                await task_request(bob, method, created["taskId"])
            assert theirs.value.code == INVALID_PARAMS and "Unknown task id" in theirs.value.message
        finish_tasks_now(emulator)
        assert (await task_request(alice, "tasks/get", created["taskId"]))["status"] in (
            "working",
            "completed",
        )
