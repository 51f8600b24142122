"""MCP Tasks over streamable HTTP with server tokens: a task belongs to the person whose token started it."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from flux_mcp.web.app import build_http_app
from testkit.tasks import call_as_task, task_request, tasks_http_client
from tests.support import WAIT_BOUND, finish_tasks_now, http_service, port_of, serve_asgi, wait_for

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


async def test_tasks_requests_without_a_valid_token_are_refused(settings: Settings) -> None:
    """The gate checks every request, tasks/* included: no token, or a wrong one, is 401 before any lookup."""
    guarded = settings.with_changes(auth="tokens", auth_tokens="alice-secret-token")
    request = {"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"taskId": "anything"}}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with http_service(guarded) as base_url, httpx2.AsyncClient(trust_env=False) as http:
        for token in (None, "not-a-token"):
            sent = {**headers, **({"authorization": f"Bearer {token}"} if token else {})}
            answer = await http.post(f"{base_url}/mcp", json=request, headers=sent)
            assert answer.status_code == 401


async def test_a_task_is_completed_by_the_upstreams_callback(
    settings: Settings, emulator: RunningEmulator, loopback_socket: socket.socket
) -> None:
    """With a public URL, the callback finishes the MCP task's job: one re-read, no polling in between."""
    emulator.state.config.latency = 0.5
    public = f"http://127.0.0.1:{port_of(loopback_socket)}"
    called_back = settings.with_changes(
        auth="tokens", auth_tokens="alice-secret-token", public_url=public, poll_min_seconds=60.0
    )
    gate = build_http_app(called_back)
    inner: Any = gate.app  # type: ignore[attr-defined]
    async with (
        inner.router.lifespan_context(inner),
        serve_asgi(gate, sock=loopback_socket) as base_url,
        tasks_http_client(base_url, "alice-secret-token") as alice,
    ):
        created = await call_as_task(alice, "generate_image", {"prompt": "a fox called back"})
        await wait_for(lambda: emulator.state.callbacks_sent == 1)
        with anyio.fail_after(WAIT_BOUND):
            while (task := await task_request(alice, "tasks/get", created["taskId"]))["status"] == "working":  # noqa: ASYNC110 - a client polls
                await anyio.sleep(0.05)
    assert task["status"] == "completed" and task["result"]["structuredContent"]["status"] == "succeeded"
    assert emulator.state.polls == 1  # the read the callback asked for; the poller never looked
