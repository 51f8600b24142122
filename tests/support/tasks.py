"""A 2026-07-28 task polled to its end, as a client honouring pollIntervalMs does."""

from __future__ import annotations

from typing import Any

import anyio
from mcp import Client

from testkit.tasks import task_request
from tests.support import WAIT_BOUND


async def until_ended(client: Client, task_id: str) -> dict[str, Any]:
    """tasks/get until the task is no longer working (bounded by WAIT_BOUND: a hang fails, never waits)."""
    with anyio.fail_after(WAIT_BOUND):
        while True:
            task = await task_request(client, "tasks/get", task_id)
            if task["status"] != "working":
                return task
            await anyio.sleep(task["pollIntervalMs"] / 1000)
