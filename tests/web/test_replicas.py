"""Three `flux-mcp serve` replicas on one PostgreSQL database, the emulator as their upstream.

"0 polls" means: the emulator answers no `/flux/tasks` request for the task before its callback. The
one request it does count is the re-read the woken call makes with its own token (a callback is a
wake-up, never a result), so a task finished through callbacks costs exactly 1 `/flux/tasks` request.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import psycopg
import pytest
from mcp import Client
from mcp_types import CallToolResult

from flux_mcp.emulator import EmulatorConfig, RunningEmulator, serve_emulator
from flux_mcp.history.postgres import CALLBACK_CHANNEL
from flux_mcp.jobs.callbacks import RELAYS_PER_SLOT, CallbackHub
from testkit.postgres import PostgresCluster
from testkit.replicas import Replica, callback_router, health, run_replicas, wait_healthy
from tests.support import TOKEN, structured, text, wait_for
from tests.support.callbacks import SharedHistory

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]


async def call(replica: Replica, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    async with Client(replica.mcp_url) as client:
        return await client.call_tool(tool, arguments)


async def call_cut_short(replica: Replica, arguments: dict[str, Any]) -> None:
    """generate_image on a replica that is killed meanwhile: its connection simply breaks."""
    try:
        await call(replica, "generate_image", arguments)
    except Exception:  # the killed replica's answer never comes; which error says so is the SDK's
        return
    raise AssertionError(f"replica {replica.name} answered although it was killed")


def task_rows(database_url: str, task_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as db:
        return db.execute("SELECT status, task_id FROM tasks WHERE task_id=%s", (task_id,)).fetchall()


@pytest.fixture
async def slow_emulator() -> Any:
    async with serve_emulator(EmulatorConfig(latency=1.5, tokens=frozenset({TOKEN}), seed=3)) as running:
        yield running


async def test_callback_on_replica_b_wakes_the_call_on_a_without_polling(
    slow_emulator: RunningEmulator, postgres_url: str, tmp_path: Path
) -> None:
    replicas: list[Replica] = []
    async with (
        callback_router(lambda: [replicas[1]]) as router,
        run_replicas(3, slow_emulator, tmp_path, postgres_url, router.url) as started,
    ):
        replicas.extend(started)
        a, _, c = replicas
        result = await call(a, "generate_image", {"prompt": "a fox on replica A", "wait_seconds": 50})
        data = structured(result)
        assert data["status"] == "succeeded", text(result)
        assert [names for names, _ in router.delivered] == [["B"]]  # the callback reached B only
        await wait_for(lambda: len(router.statuses) == 1)  # B's answer may trail A's: it relayed first
        assert router.statuses == [200]  # B accepted A's callback URL
        assert slow_emulator.state.polls == 1  # 0 polls: only the re-read after the wake-up
        listed = structured(await call(c, "list_tasks", {}))
        assert [(t["task_id"], t["status"]) for t in listed["tasks"]] == [(data["task_id"], "succeeded")]


async def test_the_same_callback_on_two_replicas_is_recorded_once(
    slow_emulator: RunningEmulator, postgres_url: str, tmp_path: Path
) -> None:
    replicas: list[Replica] = []
    async with (
        callback_router(lambda: [replicas[1], replicas[2]]) as router,
        run_replicas(3, slow_emulator, tmp_path, postgres_url, router.url) as started,
    ):
        replicas.extend(started)
        result = await call(replicas[0], "generate_image", {"prompt": "a fox told twice", "wait_seconds": 50})
        data = structured(result)
        assert data["status"] == "succeeded", text(result)
        assert [names for names, _ in router.delivered] == [["B", "C"]]
        await wait_for(lambda: len(router.statuses) == 2)
        assert router.statuses == [200, 200]
        assert task_rows(postgres_url, data["task_id"]) == [("succeeded", data["task_id"])]
        assert slow_emulator.state.polls == 1 and slow_emulator.state.submissions == 1


async def test_a_replica_killed_mid_wait_leaves_the_task_to_the_others(
    postgres_url: str, tmp_path: Path
) -> None:
    config = EmulatorConfig(latency=600.0, tokens=frozenset({TOKEN}), seed=4)
    async with serve_emulator(config) as emulator:
        replicas: list[Replica] = []
        async with (
            callback_router(lambda: [replicas[1]]) as router,
            run_replicas(3, emulator, tmp_path, postgres_url, router.url) as started,
        ):
            replicas.extend(started)
            a, b, _ = replicas
            async with anyio.create_task_group() as group:
                group.start_soon(call_cut_short, a, {"prompt": "a fox left behind", "wait_seconds": 50})
                await wait_for(lambda: len(emulator.state.tasks) == 1)
                (task_id,) = emulator.state.tasks
                await wait_for(lambda: task_rows(postgres_url, task_id) == [("pending", task_id)])
                a.process.send_signal(signal.SIGKILL)
                await a.process.wait()
                group.cancel_scope.cancel()
            listed = structured(await call(b, "list_tasks", {}))
            assert [(t["task_id"], t["status"]) for t in listed["tasks"]] == [(task_id, "pending")]
            emulator.state.tasks[task_id].finish_monotonic = 0.0  # the upstream finishes it now
            done = structured(await call(b, "get_task", {"task_id": task_id, "wait_seconds": 30}))
            assert done["status"] == "succeeded" and done["prompt"] == "a fox left behind"
            assert task_rows(postgres_url, task_id) == [("succeeded", task_id)]
            assert emulator.state.submissions == 1


async def test_the_database_stopped_mid_run_gives_clear_errors_and_loses_nothing(tmp_path: Path) -> None:
    cluster = PostgresCluster()
    try:
        database_url = cluster.create_database()
        config = EmulatorConfig(latency=0.5, tokens=frozenset({TOKEN}), seed=5)
        async with (
            serve_emulator(config) as emulator,
            run_replicas(2, emulator, tmp_path, database_url, None) as (
                a,
                b,
            ),
        ):
            first = structured(await call(a, "generate_image", {"prompt": "before the outage"}))
            assert first["status"] == "succeeded"
            emulator.state.config.latency = 4.0
            outcome: dict[str, Any] = {}

            async def during() -> None:
                outcome["result"] = await call(a, "generate_image", {"prompt": "across the outage"})

            async with anyio.create_task_group() as group:
                group.start_soon(during)
                await wait_for(lambda: len(emulator.state.tasks) == 2)
                (second_id,) = [task_id for task_id in emulator.state.tasks if task_id != first["task_id"]]
                await wait_for(lambda: bool(task_rows(database_url, second_id)))
                cluster.stop()
            # The call that was waiting when the database went away still answers with its images.
            assert structured(outcome["result"])["status"] == "succeeded", text(outcome["result"])

            status, body = await health(b)
            assert status == 503 and body["history"]["ok"] is False
            assert body["history"]["backend"] == "postgresql" and "127.0.0.1" in body["history"]["reason"]
            listed = await call(b, "list_tasks", {})
            assert listed.is_error and "cannot be reached" in text(listed), text(listed)
            submissions = emulator.state.submissions
            refused = await call(b, "generate_image", {"prompt": "during the outage"})
            assert refused.is_error and "Nothing was submitted" in text(refused), text(refused)
            assert emulator.state.submissions == submissions  # nothing was sent, so nothing billed

            cluster.start()
            await wait_healthy(a)
            await wait_healthy(b)
            tasks = structured(await call(b, "list_tasks", {}))["tasks"]
            assert {t["task_id"]: t["status"] for t in tasks} == {
                first["task_id"]: "succeeded",
                second_id: "succeeded",  # written while the database was down, kept until it came back
            }
    finally:
        cluster.remove()


async def test_a_callback_url_ends_with_its_task_on_every_replica_and_its_relays_are_bounded(
    postgres_url: str, tmp_path: Path
) -> None:
    """Issue 24 item 4: a finished task's URL is 404 on both replicas; a pending one's relays are bounded."""
    config = EmulatorConfig(latency=0.3, tokens=frozenset({TOKEN}), seed=6)
    replicas: list[Replica] = []
    async with (
        serve_emulator(config) as emulator,
        callback_router(lambda: replicas[:1]) as router,  # the upstream's own callbacks reach A
        run_replicas(2, emulator, tmp_path, postgres_url, router.url) as (a, b),
        notifications(postgres_url) as notified,
        httpx2.AsyncClient(timeout=30, trust_env=False) as http,
    ):

        async def replay(replica: Replica, task_id: str, times: int) -> list[int]:
            task = emulator.state.tasks[task_id]
            path = urlsplit(task.request["callback_url"]).path
            body = task.result() if task.finish_monotonic <= time.monotonic() else {"task_id": task_id}
            return [(await http.post(f"{replica.url}{path}", json=body)).status_code for _ in range(times)]

        replicas.append(a)
        finished = structured(await call(a, "generate_image", {"prompt": "a fox long done"}))
        assert finished["status"] == "succeeded"
        assert await replay(a, finished["task_id"], 3) == [404] * 3
        assert await replay(b, finished["task_id"], 3) == [404] * 3

        emulator.state.config.latency = 600.0
        pending = structured(
            await call(a, "generate_image", {"prompt": "a fox still out", "wait_seconds": 1})
        )
        assert pending["status"] == "pending"
        replays = await replay(b, pending["task_id"], 200)
        assert replays == [200] * RELAYS_PER_SLOT + [404] * (200 - RELAYS_PER_SLOT)
        assert await replay(a, pending["task_id"], 1) == [200]  # its holder: a wake-up, no NOTIFY
        assert await notified() == [pending["task_id"]] * RELAYS_PER_SLOT


@asynccontextmanager
async def notifications(database_url: str) -> AsyncIterator[Callable[[], Awaitable[list[str]]]]:
    """The tasks named by every callback NOTIFY the replicas send; the function returns those sent so far."""
    seen: list[str] = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CALLBACK_CHANNEL}")

        async def so_far() -> list[str]:
            # Notifications arrive in commit order: once this one is here, every earlier one is too.
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as sender:
                await sender.execute("SELECT pg_notify(%s, 'end')", (CALLBACK_CHANNEL,))
            with anyio.fail_after(60):
                async with aclosing(listener.notifies()) as received:
                    async for notification in received:
                        if notification.payload == "end":
                            return list(seen)
                        seen.append(notification.payload.partition(" ")[2])
            raise AssertionError("the listener stopped")

        yield so_far


async def test_callback_urls_verify_on_every_hub_with_the_key_and_forgeries_nowhere() -> None:
    key = b"k" * 32
    holder, other = CallbackHub("https://flux.example", key=key), CallbackHub("https://flux.example", key=key)
    stranger = CallbackHub("https://flux.example")  # its own random key
    relay = SharedHistory(pending={"task-1", "someone-elses-task"})
    other.relay = stranger.relay = relay
    slot = holder.open()
    holder.bind(slot, "task-1")
    secret = slot.url.rsplit("/", 1)[1]
    slot_id, issued, mac = secret.split(".")
    forged = f"{slot_id}.{issued}.{'0' * len(mac)}"
    assert holder.knows(secret) and other.knows(secret) and not stranger.knows(secret)
    assert not any(hub.knows(forged) for hub in (holder, other, stranger))
    assert not await other.receive(forged, {}) and not await stranger.receive(secret, {})
    assert await other.receive(secret, {"task_id": "task-1"})
    assert relay.notified == [f"{slot_id} task-1"] and mac not in relay.notified[0]  # never the signature
    holder.relayed(relay.notified[0])
    assert slot.wakeups == 1
    await other.receive(secret, {"task_id": "someone-elses-task"})
    holder.relayed(relay.notified[-1])
    assert slot.wakeups == 1  # a body naming another task wakes nothing
