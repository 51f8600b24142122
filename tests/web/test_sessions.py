"""Sessions never lock a credential out (issue 26): a team token serves 50 people at once with the
defaults, and at a credential's bound a new session ends its least recently used one, whose client then
gets the spec's 404 and opens another. Real streamable HTTP: the app under uvicorn on loopback."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import anyio
import httpx2
import pytest

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from tests.support import TOKEN, finish_tasks_now, http_service, make_settings, wait_for
from tests.support.web import INITIALIZE, post

pytestmark = pytest.mark.anyio

TEAM_TOKEN = "team-token-0123456789abcdef"
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
PEOPLE = 50
TASKS_PROTOCOL = "2025-11-25"  # the one with sessions and in-core Tasks


async def open_session(
    http: httpx2.AsyncClient, base_url: str, token: str, version: str | None = None
) -> str:
    """initialize + initialized, as a client opens a session; returns the session id."""
    initialize = (
        INITIALIZE
        if version is None
        else {
            **INITIALIZE,
            "params": {**INITIALIZE["params"], "protocolVersion": version},
        }
    )
    response = await post(http, base_url, initialize, token)
    assert response.status_code == 200, response.text
    session: str = response.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await post(http, base_url, note, token, session=session)).status_code == 202
    return session


async def list_tools(http: httpx2.AsyncClient, base_url: str, token: str, session: str) -> int:
    response = await post(http, base_url, TOOLS_LIST, token, session=session)
    if response.status_code == 200:
        assert "generate_image" in response.text
    return int(response.status_code)


async def test_fifty_people_on_one_team_token_are_all_served_with_the_defaults(
    emulator: RunningEmulator,
) -> None:
    settings = make_settings(emulator, auth_tokens=f"team:{TEAM_TOKEN}")
    sessions: list[str] = []
    async with http_service(settings) as base_url, httpx2.AsyncClient(timeout=60) as http:

        async def person() -> None:
            session = await open_session(http, base_url, TEAM_TOKEN)
            sessions.append(session)
            assert await list_tools(http, base_url, TEAM_TOKEN, session) == 200

        async with anyio.create_task_group() as people:
            for _ in range(PEOPLE):
                people.start_soon(person)
        # Everyone is still served in the session they opened: none was refused, none was ended.
        statuses = [await list_tools(http, base_url, TEAM_TOKEN, session) for session in sessions]
    assert len(set(sessions)) == PEOPLE
    assert statuses == [200] * PEOPLE


def small_bound(emulator: RunningEmulator, mode: str) -> tuple[Settings, str]:
    if mode == "tokens":
        return make_settings(emulator, auth_tokens=TEAM_TOKEN, max_sessions_per_team_token=3), TEAM_TOKEN
    settings = make_settings(emulator, auth="passthrough", api_token=None, max_sessions_per_client=3)
    return settings, TOKEN


@pytest.mark.parametrize("mode", ["tokens", "passthrough"])
async def test_at_the_bound_a_new_session_ends_the_least_recently_used_one(
    emulator: RunningEmulator, mode: str
) -> None:
    settings, token = small_bound(emulator, mode)
    async with http_service(settings) as base_url, httpx2.AsyncClient(timeout=30) as http:
        first, second, third = [await open_session(http, base_url, token) for _ in range(3)]
        assert await list_tools(http, base_url, token, first) == 200  # second is now the least recently used
        assert await list_tools(http, base_url, token, third) == 200
        fourth = await open_session(http, base_url, token)  # at the bound: served, not refused
        assert await list_tools(http, base_url, token, second) == 404  # ended: its client opens another
        for session in (first, third, fourth):
            assert await list_tools(http, base_url, token, session) == 200
        fifth = await open_session(http, base_url, token)  # the least recently used is now `first`
        assert await list_tools(http, base_url, token, first) == 404
        assert await list_tools(http, base_url, token, fifth) == 200


async def test_a_session_running_a_tool_call_is_not_the_one_ended(emulator: RunningEmulator) -> None:
    settings = make_settings(emulator, auth_tokens=TEAM_TOKEN, max_sessions_per_team_token=2, wait_seconds=30)
    call: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "generate_image", "arguments": {"prompt": "a slow cat"}},
    }
    emulator.state.config.latency = 3600.0  # the call waits for images that do not come
    async with http_service(settings) as base_url, httpx2.AsyncClient(timeout=30) as http:
        busy = await open_session(http, base_url, TEAM_TOKEN)
        idle = await open_session(http, base_url, TEAM_TOKEN)
        assert await list_tools(http, base_url, TEAM_TOKEN, idle) == 200  # `busy` is the least recently used
        async with anyio.create_task_group() as running:
            running.start_soon(partial(post, http, base_url, call, TEAM_TOKEN, session=busy))
            await wait_for(lambda: emulator.state.submissions > 0)  # the call is running in `busy`
            await open_session(http, base_url, TEAM_TOKEN)
            assert await list_tools(http, base_url, TEAM_TOKEN, idle) == 404  # the idle one was ended
            assert await list_tools(http, base_url, TEAM_TOKEN, busy) == 200
            running.cancel_scope.cancel()


async def test_a_task_outlives_the_session_ended_at_the_bound(emulator: RunningEmulator) -> None:
    """An MCP task (2025-11-25) is the history's, not its session's: ended at the bound, the session that
    started it takes its task with it nowhere; a new session of the same token follows it to its images."""
    settings = make_settings(emulator, auth_tokens=TEAM_TOKEN, max_sessions_per_team_token=2)
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "generate_image", "arguments": {"prompt": "a cat past its session"}, "task": {}},
    }
    emulator.state.config.latency = 3600.0
    async with http_service(settings) as base_url, httpx2.AsyncClient(timeout=30) as http:
        starter = await open_session(http, base_url, TEAM_TOKEN, TASKS_PROTOCOL)
        started = await post(http, base_url, call, TEAM_TOKEN, session=starter)
        task_id = answer_of(started)["task"]["taskId"]
        later = [await open_session(http, base_url, TEAM_TOKEN, TASKS_PROTOCOL) for _ in range(2)]
        assert await list_tools(http, base_url, TEAM_TOKEN, starter) == 404  # ended at the bound
        finish_tasks_now(emulator)
        result = {"jsonrpc": "2.0", "id": 4, "method": "tasks/result", "params": {"taskId": task_id}}
        done = answer_of(await post(http, base_url, result, TEAM_TOKEN, session=later[-1]))
    assert done["structuredContent"]["status"] == "succeeded" and emulator.state.submissions == 1


def answer_of(response: httpx2.Response) -> dict[str, Any]:
    """The result of a JSON-RPC answer, sent as JSON or as one SSE event."""
    assert response.status_code == 200, response.text
    body = response.text
    if "data:" in body:
        body = next(line[5:] for line in body.splitlines() if line.startswith("data:"))
    result: dict[str, Any] = json.loads(body)["result"]
    return result
