"""Pooled connections' idle check (flux_mcp.net.probes): one poll, and still right about closed connections.

httpcore2 asks of every idle pooled connection, at every request's start and end, whether the server
has closed it. The server's clients (API and downloads) answer with a poll of a socket looked up once,
instead of anyio's attribute map rebuilt (with a getpeername) for every question.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import pytest

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from flux_mcp.net.clients import build_download_client, build_http_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def attribute_maps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often anyio builds a socket stream's attribute map (each build makes a getpeername call)."""
    built: list[int] = []
    original = anyio.abc.SocketStream.extra_attributes

    def counting(self: Any) -> Mapping[Any, Callable[[], Any]]:
        built.append(1)
        return original.fget(self)  # type: ignore[attr-defined, no-any-return]

    monkeypatch.setattr(anyio.abc.SocketStream, "extra_attributes", property(counting))
    return built


async def test_requests_on_pooled_connections_do_not_rebuild_socket_attributes(
    settings: Settings, emulator: RunningEmulator, attribute_maps: list[int]
) -> None:
    url = emulator.base_url + "/flux/tasks"
    body = {"action": "retrieve", "id": "no-such-task"}
    async with build_http_client(settings) as http:

        async def one() -> None:
            await http.post(url, json=body, headers={"authorization": "Bearer x"})

        for _ in range(5):  # several connections in the pool, then sequential requests over them
            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(one)
        for _ in range(30):
            await one()
    # Twice per connection (connecting, then its socket looked up once), not at every request's start and end.
    assert len(attribute_maps) <= 2 * 4, len(attribute_maps)


async def test_a_connection_the_server_closed_while_idle_is_not_reused(settings: Settings) -> None:
    answered, closed = 0, 0
    all_closed = anyio.Event()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        nonlocal answered, closed, all_closed
        async with stream:
            await stream.receive()
            answered += 1
            body = b'{"ok": true}'
            head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            await stream.send(head.encode() + body)
        # Closed without `connection: close`: the client's pool holds an idle connection that is gone.
        closed += 1
        if closed == answered:
            all_closed.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    base = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
    local = settings.model_copy(update={"api_base_url": base})
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        async with build_http_client(local) as http, build_download_client(local) as downloads:
            for client in (http, downloads):
                for _ in range(3):
                    response = await client.get(base + "/")
                    assert response.status_code == 200 and response.json() == {"ok": True}
                    with anyio.fail_after(10):  # the server has closed it before the next request
                        await all_closed.wait()
                    all_closed = anyio.Event()
        group.cancel_scope.cancel()
    assert answered == closed == 6  # every request got a connection of its own, none failed
