"""MCP Tasks on two `flux-mcp serve` replicas sharing one PostgreSQL history: a task is the history's, so any
replica answers for it, and it is only ever its own caller's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from flux_mcp.emulator import EmulatorConfig, RunningEmulator, serve_emulator
from testkit.replicas import Replica, run_replicas
from testkit.tasks import call_as_task, task_request, tasks_http_client
from tests.support import TOKEN, WAIT_BOUND, finish_tasks_now
from tests.support.tasks import until_ended

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow, pytest.mark.subprocess]

ALICE, BOB = "alice-server-token", "bob-server-token"


@pytest.fixture
async def slow_emulator() -> AsyncIterator[RunningEmulator]:
    """Jobs that run until the test finishes them."""
    async with serve_emulator(EmulatorConfig(latency=600.0, tokens=frozenset({TOKEN}), seed=5)) as running:
        yield running


async def test_a_task_started_on_a_is_polled_to_completion_on_b_and_is_unknown_to_bob(
    slow_emulator: RunningEmulator, postgres_url: str, tmp_path: Path
) -> None:
    tokens = {"FLUX_MCP_AUTH_TOKENS": f"{ALICE},{BOB}"}
    async with run_replicas(2, slow_emulator, tmp_path, postgres_url, None, **tokens) as (a, b):
        async with tasks_http_client(a.url, ALICE) as alice_on_a:
            created = await call_as_task(alice_on_a, "generate_image", {"prompt": "a fox on two replicas"})
        assert created["resultType"] == "task"
        async with tasks_http_client(b.url, ALICE) as alice_on_b, tasks_http_client(b.url, BOB) as bob_on_b:
            assert (await task_request(alice_on_b, "tasks/get", created["taskId"]))["status"] == "working"
            with pytest.raises(MCPError) as bobs:
                await task_request(bob_on_b, "tasks/get", created["taskId"])
            assert bobs.value.code == INVALID_PARAMS
            finish_tasks_now(slow_emulator)
            done = await until_ended(alice_on_b, created["taskId"])
        assert "driving MCP task" not in b.read_log()  # A, alive, drove it: B only read the history
    assert done["status"] == "completed", done
    assert done["result"]["structuredContent"]["status"] == "succeeded"
    assert slow_emulator.state.submissions == 1


async def test_a_task_whose_replica_stops_is_finished_by_another(
    slow_emulator: RunningEmulator, postgres_url: str, tmp_path: Path
) -> None:
    async with run_replicas(2, slow_emulator, tmp_path, postgres_url, None) as replicas:
        a, b = replicas
        async with tasks_http_client(a.url, None) as on_a:
            created = await call_as_task(on_a, "generate_image", {"prompt": "a fox outliving its replica"})
        await stop(a)  # a deploy: A lets go of the task as it stops
        finish_tasks_now(slow_emulator)
        async with tasks_http_client(b.url, None) as on_b:
            done = await until_ended(on_b, created["taskId"])
    assert done["status"] == "completed" and done["result"]["structuredContent"]["status"] == "succeeded"
    assert slow_emulator.state.submissions == 1


async def stop(replica: Replica) -> None:
    replica.process.terminate()
    with anyio.fail_after(WAIT_BOUND):
        await replica.process.wait()
