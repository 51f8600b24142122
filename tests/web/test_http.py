"""flux-mcp as a network service: auth, pass-through tokens, callbacks, health, host checks."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from flux_mcp.domain.errors import StartupError
from flux_mcp.emulator import RunningEmulator, serve_asgi
from flux_mcp.web.app import build_http_app
from tests.support import TOKEN, http_service, make_settings, mcp_client, port_of, structured, text
from tests.support.web import CLIENT_TOKEN, token_settings

pytestmark = pytest.mark.anyio


async def post_mcp(base_url: str, headers: dict[str, str]) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx2.AsyncClient() as http:
        return await http.post(
            f"{base_url}/mcp",
            json=body,
            headers={"accept": "application/json, text/event-stream", **headers},
        )


# --- auth -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": "Basic abc"}])
async def test_mcp_endpoint_needs_a_valid_token(emulator: RunningEmulator, headers: dict[str, str]) -> None:
    async with http_service(token_settings(emulator)) as base_url:
        response = await post_mcp(base_url, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert emulator.state.submissions == 0


async def test_tools_work_with_a_server_token_and_upstream_sees_the_servers_token(
    emulator: RunningEmulator,
) -> None:
    async with (
        http_service(token_settings(emulator)) as base_url,
        mcp_client(base_url, CLIENT_TOKEN) as client,
    ):
        result = await client.call_tool("generate_image", {"prompt": "a cat over http"})
    assert structured(result)["status"] == "succeeded", text(result)
    assert set(emulator.state.tokens_seen) == {TOKEN}


async def test_an_embedded_http_app_applies_the_http_defaults_of_serve(
    emulator: RunningEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """build_http_app alone (no CLI) behaves like `flux-mcp serve --transport http`."""
    unset = token_settings(emulator, output_dir=tmp_path / "unset")
    assert unset.save is None  # FLUX_MCP_SAVE not given: over HTTP that means no saving
    asked = token_settings(emulator, output_dir=tmp_path / "asked", save=True)
    paths = []
    for settings in (unset, asked):
        async with http_service(settings) as base_url, mcp_client(base_url, CLIENT_TOKEN) as client:
            result = await client.call_tool("generate_image", {"prompt": "a cat over http"})
        assert structured(result)["status"] == "succeeded", text(result)
        paths.append(structured(result)["images"][0]["path"])
    assert paths[0] is None and not (tmp_path / "unset").exists()
    assert paths[1] is not None and Path(paths[1]).is_file()

    with caplog.at_level(logging.WARNING, logger="flux_mcp"):
        build_http_app(token_settings(emulator, api_token=None))
    assert "ACEDATACLOUD_API_TOKEN is not set" in caplog.text


async def test_healthz_needs_no_auth_and_never_shows_the_token(emulator: RunningEmulator) -> None:
    async with http_service(token_settings(emulator)) as base_url, httpx2.AsyncClient() as http:
        response = await http.get(f"{base_url}/healthz")
    health = response.json()
    assert response.status_code == 200 and health["status"] == "ok" and health["version"]
    assert health["upstream_token_configured"] is True and health["auth"] == "tokens"
    assert TOKEN not in response.text and CLIENT_TOKEN not in response.text


async def test_non_loopback_bind_without_auth_is_refused(emulator: RunningEmulator) -> None:
    settings = make_settings(emulator, host="0.0.0.0")
    with pytest.raises(StartupError, match="without authentication"):
        build_http_app(settings)
    build_http_app(settings, allow_unauthenticated=True)
    build_http_app(make_settings(emulator, host="0.0.0.0", auth_tokens="t1"))


async def test_foreign_host_header_is_refused(emulator: RunningEmulator) -> None:
    async with http_service(token_settings(emulator)) as base_url:
        response = await post_mcp(
            base_url, {"authorization": f"Bearer {CLIENT_TOKEN}", "host": "evil.example.com"}
        )
    assert response.status_code in (400, 403, 421)
    assert emulator.state.submissions == 0


# --- pass-through -----------------------------------------------------------------------------------


async def test_pass_through_calls_use_the_callers_token_only(emulator: RunningEmulator) -> None:
    alice, bob = "sk-alice-1111111111", "sk-bob-2222222222"
    emulator.state.config.tokens = frozenset({alice, bob, TOKEN})
    emulator.state.config.latency = 0.4
    settings = make_settings(emulator, auth="passthrough")
    results: dict[str, list[Any]] = {alice: [], bob: []}
    async with http_service(settings) as base_url:

        async def user(token: str) -> None:
            async with mcp_client(base_url, token) as client:
                for index in range(3):
                    result = await client.call_tool(
                        "generate_image", {"prompt": f"{token[:8]} picture {index}"}
                    )
                    results[token].append(result)
                listed = await client.call_tool("list_tasks", {})
                results[token].append(listed)

        async with anyio.create_task_group() as group:
            group.start_soon(user, alice)
            group.start_soon(user, bob)
    assert TOKEN not in emulator.state.tokens_seen  # the server's own token is never spent
    assert set(emulator.state.tokens_seen) == {alice, bob}
    by_token: dict[str, set[str]] = {alice: set(), bob: set()}
    for task in emulator.state.tasks.values():
        prompt = task.request["prompt"]
        by_token[alice if prompt.startswith(alice[:8]) else bob].add(task.id)
    for token, other in ((alice, bob), (bob, alice)):
        *jobs, listed = results[token]
        assert all(structured(job)["status"] == "succeeded" for job in jobs)
        listed_ids = {task["task_id"] for task in structured(listed)["tasks"]}
        assert listed_ids == by_token[token]  # their own three tasks, never the other's
        everything = "".join(result.model_dump_json() for result in results[token])
        assert other not in everything and token not in everything


async def test_pass_through_reads_a_task_outside_the_history_with_the_callers_own_token_only(
    emulator: RunningEmulator,
) -> None:
    """Issue 24 item 3: with pass-through the upstream judges such reads, made with the caller's token."""
    alice, bob = "sk-alice-1111111111", "sk-bob-2222222222"
    emulator.state.config.tokens = frozenset({alice, bob})
    async with http_service(make_settings(emulator, auth="passthrough", api_token=None)) as base_url:
        async with mcp_client(base_url, alice) as client:
            alices = structured(await client.call_tool("generate_image", {"prompt": "alice's garden"}))[
                "task_id"
            ]
        seen = len(emulator.state.tokens_seen)
        async with mcp_client(base_url, bob) as client:
            await client.call_tool("get_task", {"task_id": alices, "wait_seconds": 0})
            await client.call_tool("get_tasks", {"task_ids": [alices]})
    assert set(list(emulator.state.tokens_seen)[seen:]) == {bob}  # never Alice's token, nor the server's


async def test_pass_through_without_a_token_is_401(emulator: RunningEmulator) -> None:
    async with http_service(make_settings(emulator, auth="passthrough")) as base_url:
        response = await post_mcp(base_url, {})
    assert response.status_code == 401


# --- callbacks ------------------------------------------------------------------------------------


async def test_callbacks_finish_tasks_with_one_read_each(
    emulator: RunningEmulator, loopback_socket: socket.socket
) -> None:
    """A callback only wakes the call: it costs one re-read of the task, and no polling at all."""
    emulator.state.config.latency = 0.5
    port = port_of(loopback_socket)  # the public URL must be known before the app is built
    settings = make_settings(emulator, auth_tokens=CLIENT_TOKEN, public_url=f"http://127.0.0.1:{port}")
    gate = build_http_app(settings)
    inner: Any = gate.app  # type: ignore[attr-defined]
    async with (
        inner.router.lifespan_context(inner),
        serve_asgi(gate, sock=loopback_socket) as base_url,
        mcp_client(base_url, CLIENT_TOKEN) as client,
    ):
        results = []
        for index in range(3):
            results.append(await client.call_tool("generate_image", {"prompt": f"called back {index}"}))
    assert all(structured(result)["status"] == "succeeded" for result in results)
    sent = emulator.state.callbacks_sent
    print(f"\ncallback mode: {emulator.state.polls} task reads for 3 tasks, {sent} callbacks")
    assert emulator.state.polls == 3 and emulator.state.callbacks_sent == 3
    for task in emulator.state.tasks.values():
        assert task.request["callback_url"].startswith(f"http://127.0.0.1:{port}/callbacks/flux/")
        assert "async" not in task.request


async def test_without_a_public_url_tasks_are_polled_and_never_called_back(emulator: RunningEmulator) -> None:
    """The other side of the test above: no public URL, so no callback URL is sent and polling finds them."""
    emulator.state.config.latency = 0.5
    async with (
        http_service(token_settings(emulator)) as base_url,
        mcp_client(base_url, CLIENT_TOKEN) as client,
    ):
        results = [
            await client.call_tool("generate_image", {"prompt": f"polled {index}"}) for index in range(3)
        ]
    assert all(structured(result)["status"] == "succeeded" for result in results)
    assert all("callback_url" not in task.request for task in emulator.state.tasks.values())
    assert emulator.state.callbacks_sent == emulator.state.callback_failures == 0
    assert emulator.state.polls >= 3  # every task was read at least once, by a poll


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/callbacks/flux/unknown-secret", b'{"task_id": "x", "success": true}', 404),
        ("/callbacks/flux/", b"{}", 404),
        ("/callbacks/flux/SECRET", b"x" * 2_000_000, 413),
        ("/callbacks/flux/SECRET", b"{not json", 400),
        ("/callbacks/flux/SECRET", b"[1, 2]", 400),
        ("/callbacks/flux/SECRET", b'{"task_id": "someone-else", "success": true, "data": []}', 404),
    ],
)
async def test_forged_callbacks_change_nothing(
    emulator: RunningEmulator, path: str, body: bytes, status: int
) -> None:
    emulator.state.config.latency = 30.0  # the task stays pending while we forge
    settings = make_settings(emulator, auth_tokens=CLIENT_TOKEN, public_url="http://127.0.0.1:9")
    async with http_service(settings) as base_url, mcp_client(base_url, CLIENT_TOKEN) as client:
        pending = structured(await client.call_tool("generate_image", {"prompt": "wait", "wait_seconds": 0}))
        (task,) = emulator.state.tasks.values()
        secret = task.request["callback_url"].rsplit("/", 1)[1]
        async with httpx2.AsyncClient() as http:
            response = await http.post(base_url + path.replace("SECRET", secret), content=body)
        assert response.status_code == status
        still = structured(
            await client.call_tool("get_task", {"task_id": pending["task_id"], "wait_seconds": 0})
        )
    assert still["status"] == "pending"


# --- stateless replicas ------------------------------------------------------------------------------


async def test_stateless_replicas_share_nothing_but_the_upstream(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 0.5
    first = token_settings(emulator, stateless=True)
    second = token_settings(emulator, stateless=True)  # its own history: a different machine
    async with (
        http_service(first) as replica_a,
        http_service(second) as replica_b,
        mcp_client(replica_a, CLIENT_TOKEN) as on_a,
        mcp_client(replica_b, CLIENT_TOKEN) as on_b,
    ):
        pending = structured(await on_a.call_tool("generate_image", {"prompt": "roaming", "wait_seconds": 0}))
        done = structured(await on_b.call_tool("get_task", {"task_id": pending["task_id"]}))
    assert done["status"] == "succeeded" and done["prompt"] == "roaming"
