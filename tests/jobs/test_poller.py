"""One poller per upstream token: due looks merged, requests of at most 50 ids, riders, tokens apart.

The planning is pure and is checked over virtual time (properties with hypothesis). Everything else
runs against the emulator on a real loopback port, whose `task_reads` records every POST /flux/tasks
as it arrived: when, with which token, for which ids.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CallToolResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.domain.catalogue import MAX_BATCH
from flux_mcp.domain.tasks import ImageRequest
from flux_mcp.emulator import Fault, RunningEmulator, TaskRead, serve_asgi
from flux_mcp.jobs.poller import (
    MERGE_WINDOW,
    Pollers,
    PollSchedule,
    Watch,
    next_request_at,
    plan_requests,
    running_pollers,
)
from flux_mcp.server.build import build_server
from flux_mcp.upstream.flux import TOKEN_PROBE_ID, FluxClient
from tests.support import TOKEN, http_service, make_settings, mcp_client, structured, text, wait_for

pytestmark = pytest.mark.anyio

SCHEDULE = PollSchedule()  # the defaults: first look at 2 s, 35% of the age, at most 15 s


# --- planning over virtual time -----------------------------------------------------------------


def watch_at(task_id: str, now: float, *, age: float = 0.0, schedule: PollSchedule = SCHEDULE) -> Watch:
    watch = Watch(task_id, schedule, age=age, now=now)
    watch.deadlines.append(math.inf)
    return watch


def simulate(watches: list[Watch], until_time: float) -> list[tuple[float, list[list[str]]]]:
    """Drive the planner as the poller does, each look answered at once (pending); the rounds sent."""
    rounds: list[tuple[float, list[list[str]]]] = []
    now = 0.0
    while (at := next_request_at(watches, now)) <= until_time:
        now = max(now, at)
        for watch in (w for w in watches if w.due(now)):
            assert now - watch.next_due <= MERGE_WINDOW * watch.pause + 1e-9  # a due look is never late
        requests = plan_requests(watches, now)
        assert all(watch.savings >= 0 for watch in watches)
        if not requests:  # an extra look its savers could not pay for yet: the poller waits on
            assert next_request_at(watches, now) > now  # and does not spin
            continue
        for request in requests:
            for watch in request:
                watch.looked_at(now)
                watch.in_flight = False
        rounds.append((now, [[watch.task_id for watch in request] for request in requests]))
    return rounds


def looks_at(task_id: str, rounds: list[tuple[float, list[list[str]]]]) -> list[float]:
    return [at for at, requests in rounds if any(task_id in request for request in requests)]


def own_looks(age: float, registered: float, until_time: float) -> list[float]:
    """When a task polled by itself (the schedule before the poller) would be looked at."""
    looks, now = [], registered + SCHEDULE.pause(age)
    while now <= until_time:
        looks.append(now)
        now += SCHEDULE.pause(age + now - registered)
    return looks


@given(age=st.floats(0, 300))
@settings(max_examples=60, deadline=None)
async def test_a_lone_task_is_looked_at_exactly_on_its_own_schedule(age: float) -> None:
    rounds = simulate([watch_at("lone", 0.0, age=age)], 150.0)
    assert [at for at, _ in rounds] == pytest.approx(own_looks(age, 0.0, 150.0))
    assert all(requests == [["lone"]] for _, requests in rounds)  # one request, one id: nothing added


tasks_in_flight = st.lists(st.tuples(st.floats(0, 40), st.floats(0, 120)), min_size=1, max_size=160)


@given(tasks=tasks_in_flight)
@settings(max_examples=60, deadline=None)
async def test_requests_never_outnumber_the_tasks_own_looks(tasks: list[tuple[float, float]]) -> None:
    """(registered at, age): however tasks come and go, batching only ever saves requests."""
    horizon = 90.0
    watches = [watch_at(f"t{index}", 0.0, age=age) for index, (_, age) in enumerate(tasks)]
    for watch, (registered, age) in zip(watches, tasks, strict=True):  # as if registered later
        watch.born, watch.last_look, watch.next_due = registered - age, registered, registered + watch.pause
    rounds = simulate(watches, horizon)
    sent = [request for _, requests in rounds for request in requests]
    alone = sum(len(own_looks(age, registered, horizon)) for registered, age in tasks)
    assert len(sent) <= alone
    assert all(0 < len(request) <= MAX_BATCH and len(set(request)) == len(request) for request in sent)


async def test_tasks_submitted_together_are_looked_at_every_first_seconds_for_less() -> None:
    """200 tasks whose looks fall due together: what their shared requests saved buys extra looks."""
    watches = [watch_at(f"t{index}", index * 0.001) for index in range(200)]
    rounds = simulate(watches, 30.0)
    sent = sum(len(requests) for _, requests in rounds)
    for watch in watches:
        looks = looks_at(watch.task_id, rounds)
        assert looks[0] <= 2.0 + MERGE_WINDOW * 2.0
        assert max(later - earlier for earlier, later in itertools.pairwise(looks)) <= 2.0 + 1e-6
    own = sum(len(own_looks(0.0, index * 0.001, 30.0)) for index in range(200))
    print(f"\n200 tasks together for 30 s: {sent} requests (on their own: {own})")
    assert sent <= 200  # at most one request per task (on their own: 9 each)


watch_states = st.lists(
    st.tuples(st.floats(-30, 30), st.floats(-30, 0), st.booleans(), st.booleans()), min_size=0, max_size=180
)


@given(states=watch_states)
@settings(max_examples=80, deadline=None)
async def test_every_due_look_is_sent_and_riders_only_fill_the_room(
    states: list[tuple[float, float, bool, bool]],
) -> None:
    """(next due, last look, asked for, leaving): the due looks all go, riders never add a request."""
    now = 0.0
    watches = []
    for index, (next_due, last_look, forced, leaving) in enumerate(states):
        watch = watch_at(f"t{index}", last_look)
        watch.next_due, watch.forced = next_due, forced
        watch.deadlines = [now - 1.0] if leaving else [math.inf]
        watches.append(watch)
    requests = plan_requests(watches, now)
    chosen = [watch for request in requests for watch in request]
    due = [watch for watch in watches if watch.due(now)]
    assert len(requests) == math.ceil(len(due) / MAX_BATCH)
    assert all(len(request) <= MAX_BATCH for request in requests)
    assert len({id(watch) for watch in chosen}) == len(chosen)
    assert {id(watch) for watch in due} <= {id(watch) for watch in chosen}
    riders = [watch for watch in chosen if not watch.due(now)]
    assert all(watch.may_ride(now) for watch in riders)
    assert not any(watch.next_due <= now and watch.triggers() for watch in riders)


async def test_a_ride_does_not_move_the_riders_own_schedule() -> None:
    """A look taken early would see a task finishing just after it one pause late: rides are extras."""
    old = watch_at("old", 0.0, age=40.0)  # pause 14 s: its own look is due at 14 s
    young = watch_at("young", 9.0)  # due at 11 s
    (request,) = plan_requests([old, young], 11.0)
    assert [watch.task_id for watch in request] == ["young", "old"]
    for watch in request:
        watch.looked_at(11.0)
    assert old.next_due == 14.0 and old.last_look == 11.0
    assert young.next_due == 11.0 + SCHEDULE.pause(2.0)


async def test_looks_due_close_together_wait_for_each_other_but_not_past_a_deadline() -> None:
    first = watch_at("first", 0.0)  # due at 2.0, may wait 0.2 s
    second = watch_at("second", 0.15)  # due at 2.15
    third = watch_at("third", 0.5)  # due at 2.5: too far
    assert next_request_at([first, second, third], 0.0) == pytest.approx(2.15)
    first.deadlines = [2.1]  # its only waiter stops wanting looks at 2.1 s
    assert next_request_at([first, second, third], 0.0) == pytest.approx(2.0)


# --- against the emulator ----------------------------------------------------------------------


@pytest.fixture
async def pollers() -> AsyncIterator[Pollers]:
    async with running_pollers() as running:
        yield running


async def submit_pending(
    emulator: RunningEmulator, http: httpx2.AsyncClient, token: str, count: int
) -> list[str]:
    client = FluxClient(http, emulator.base_url, token)
    request = ImageRequest(action="generate", prompt="a cat", model="flux-dev")
    return [(await client.submit(request)).task_id for _ in range(count)]


def reads(emulator: RunningEmulator) -> list[TaskRead]:
    return list(emulator.state.task_reads)


async def test_tasks_waiting_on_one_token_are_read_in_batches_of_at_most_50(
    emulator: RunningEmulator, pollers: Pollers
) -> None:
    emulator.state.config.latency = 600.0
    schedule = PollSchedule(first=0.3, cap=0.3)
    async with httpx2.AsyncClient() as http:
        task_ids = await submit_pending(emulator, http, TOKEN, 120)
        emulator.state.task_reads.clear()
        client = FluxClient(http, emulator.base_url, TOKEN)
        with ExitStack() as stack:
            for task_id in task_ids:
                stack.enter_context(
                    pollers.watching(
                        client, task_id, schedule=schedule, age=0.0, just_submitted=True, look_until=math.inf
                    )
                )
            await wait_for(lambda: len(emulator.state.task_reads) >= 6)
        await wait_for(lambda: len(pollers) == 0)  # nothing to watch: the poller's loop ended
    seen = reads(emulator)
    # Which reads of a round reach the emulator first depends on the machine, so no order is asserted:
    # every read holds at most 50 ids, the 120 tasks due together fill reads to 50, and every task is read.
    assert max(len(read.ids) for read in seen) == 50
    assert {task_id for read in seen for task_id in read.ids} == set(task_ids)
    assert all(read.action == "retrieve_batch" and read.token == TOKEN for read in seen)


async def test_a_lone_task_is_read_as_before_with_retrieve(
    emulator: RunningEmulator, pollers: Pollers
) -> None:
    emulator.state.config.latency = 600.0
    async with httpx2.AsyncClient() as http:
        (task_id,) = await submit_pending(emulator, http, TOKEN, 1)
        client = FluxClient(http, emulator.base_url, TOKEN)
        schedule = PollSchedule(first=0.05, cap=0.1)
        with pollers.watching(
            client, task_id, schedule=schedule, age=0.0, just_submitted=True, look_until=math.inf
        ):
            await wait_for(lambda: len(emulator.state.task_reads) >= 3)
    assert {(read.action, read.ids) for read in reads(emulator)} == {("retrieve", (task_id,))}


async def test_two_tokens_never_share_a_request(emulator: RunningEmulator, pollers: Pollers) -> None:
    alice, bob = "sk-alice-1111111111", "sk-bob-2222222222"
    emulator.state.config.tokens = frozenset({alice, bob})
    emulator.state.config.latency = 600.0
    schedule = PollSchedule(first=0.2, cap=0.2)
    async with httpx2.AsyncClient() as http:
        owned = {token: await submit_pending(emulator, http, token, 5) for token in (alice, bob)}
        emulator.state.task_reads.clear()
        with ExitStack() as stack:
            for token, task_ids in owned.items():
                client = FluxClient(http, emulator.base_url, token)
                for task_id in task_ids:
                    stack.enter_context(
                        pollers.watching(
                            client,
                            task_id,
                            schedule=schedule,
                            age=0.0,
                            just_submitted=True,
                            look_until=math.inf,
                        )
                    )
            await wait_for(lambda: {read.token for read in emulator.state.task_reads} == {alice, bob})
    for read in reads(emulator):
        assert read.token in owned and set(read.ids) <= set(owned[read.token]), read
    for token, task_ids in owned.items():
        first = next(read for read in reads(emulator) if read.token == token)
        assert sorted(first.ids) == sorted(task_ids)  # the token's five tasks in one request


async def test_calls_waiting_together_share_batched_reads(emulator: RunningEmulator) -> None:
    """60 calls through the server: the per-call polling read each task on its own (60+ requests)."""
    emulator.state.config.latency = 2.5
    settings = make_settings(
        emulator, poll_min_seconds=3.0, poll_max_seconds=3.0, wait_seconds=20, save=False, preview_size=0
    )
    results: list[CallToolResult] = []
    async with Client(build_server(settings)) as client, anyio.create_task_group() as group:

        async def one(index: int) -> None:
            results.append(await client.call_tool("generate_image", {"prompt": f"cat {index}"}))

        for index in range(60):
            group.start_soon(one, index)
    assert [structured(result)["status"] for result in results] == ["succeeded"] * 60
    seen = reads(emulator)
    print(f"\n60 waiting calls: {len(seen)} task reads, ids per read {[len(read.ids) for read in seen]}")
    assert all(len(read.ids) <= MAX_BATCH for read in seen)
    assert max(len(read.ids) for read in seen) > 1 and len(seen) < 60


async def test_pass_through_callers_tasks_are_never_read_with_another_token(
    emulator: RunningEmulator,
) -> None:
    alice, bob = "sk-alice-1111111111", "sk-bob-2222222222"
    emulator.state.config.tokens = frozenset({alice, bob})
    emulator.state.config.latency = 1.0
    results: dict[str, list[CallToolResult]] = {alice: [], bob: []}
    async with http_service(make_settings(emulator, auth="passthrough")) as base_url:

        async def user(token: str) -> None:
            async with mcp_client(base_url, token) as client, anyio.create_task_group() as group:
                for index in range(3):
                    group.start_soon(call, client, token, index)

        async def call(client: Client, token: str, index: int) -> None:
            prompt = f"{token[:8]} picture {index}"
            results[token].append(await client.call_tool("generate_image", {"prompt": prompt}))

        async with anyio.create_task_group() as group:
            group.start_soon(user, alice)
            group.start_soon(user, bob)
    owned = {token: {structured(result)["task_id"] for result in done} for token, done in results.items()}
    assert all(structured(result)["status"] == "succeeded" for done in results.values() for result in done)
    # The HTTP gate's one look-up per new pass-through token (the nil-UUID probe) is not a task read.
    task_reads = [read for read in reads(emulator) if read.ids != (TOKEN_PROBE_ID,)]
    for read in task_reads:
        assert read.token in owned and set(read.ids) <= owned[read.token], read
    assert {read.token for read in task_reads} == {alice, bob}


# --- waiters: cancellation, shutdown, not found -----------------------------------------------------


async def test_cancelling_one_waiter_leaves_the_others_and_the_watch(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flux_mcp.jobs.runner")
    emulator.state.config.latency = 600.0
    async with Client(build_server(make_settings(emulator, wait_seconds=60))) as client:
        pending = structured(await client.call_tool("generate_image", {"prompt": "a cat", "wait_seconds": 0}))
        task_id = pending["task_id"]
        survivor: list[CallToolResult] = []

        async def keep_waiting() -> None:
            survivor.append(await client.call_tool("get_task", {"task_id": task_id}))

        leaving = anyio.CancelScope()
        async with anyio.create_task_group() as group:
            group.start_soon(keep_waiting)
            group.start_soon(_call_in, leaving, client, task_id)
            await wait_for(lambda: len(emulator.state.task_reads) >= 3)  # both waiting, looks going on
            leaving.cancel()
            await wait_for(lambda: "stopped waiting for task" in caplog.text)  # the server side left too
            reads_at_cancel = len(emulator.state.task_reads)
            await wait_for(lambda: len(emulator.state.task_reads) > reads_at_cancel + 1)  # still watched
            emulator.state.tasks[task_id].finish_monotonic = 0.0  # the job is done now
    assert structured(survivor[0])["status"] == "succeeded", text(survivor[0])


async def _call_in(scope: anyio.CancelScope, client: Client, task_id: str) -> None:
    with scope:
        await client.call_tool("get_task", {"task_id": task_id})
        pytest.fail("the call should have been cancelled")


async def test_shutdown_answers_every_waiting_call_with_pending_at_once(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 600.0
    stop = anyio.Event()
    settings = make_settings(emulator, wait_seconds=600)
    results: list[dict[str, Any]] = []
    async with Client(build_server(settings, stop=stop)) as client, anyio.create_task_group() as group:

        async def call(tool: str, arguments: dict[str, Any]) -> None:
            results.append(structured(await client.call_tool(tool, arguments)))

        for index in range(3):
            group.start_soon(call, "generate_image", {"prompt": f"slow cat {index}"})
        await wait_for(lambda: len(emulator.state.tasks) == 3)
        first = next(iter(emulator.state.tasks))
        group.start_soon(call, "get_task", {"task_id": first})  # a second waiter on one watch
        await wait_for(
            lambda: any(read.ids == (first,) and read.action == "retrieve" for read in reads(emulator))
        )
        await wait_for(lambda: len(emulator.state.task_reads) >= 3)
        stop.set()
        await wait_for(lambda: len(results) == 4)
    assert sorted(result["status"] for result in results) == ["pending"] * 4
    assert sorted(result["task_id"] for result in results).count(first) == 2


class HidingUpstream:
    """An upstream whose task store is slow to show "late-1" (one read) and never shows "ghost-1"."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.reads: list[list[str]] = []
        self.base = ""
        self.app = Starlette(
            routes=[
                Route("/flux/images", self.images, methods=["POST"]),
                Route("/flux/tasks", self.tasks, methods=["POST"]),
                Route("/img.png", self.image),
            ]
        )

    async def images(self, request: Request) -> Response:
        task_id = (await request.json())["prompt"]
        self.submitted.append(task_id)
        return JSONResponse({"task_id": task_id})

    async def tasks(self, request: Request) -> Response:
        body = await request.json()
        ids = body["ids"] if body["action"] == "retrieve_batch" else [body["id"]]
        self.reads.append(ids)
        shown = [self.record(task_id) for task_id in ids if self.shows(task_id)]
        if body["action"] == "retrieve_batch":
            return JSONResponse({"items": shown, "count": len(shown)})
        if not shown:
            return JSONResponse({"success": False, "error": {"code": "not_found", "message": "no"}}, 404)
        return JSONResponse(shown[0])

    async def image(self, request: Request) -> Response:
        return Response(status_code=404)

    def shows(self, task_id: str) -> bool:
        times_read = sum(task_id in ids for ids in self.reads)
        return task_id != "ghost-1" and (task_id != "late-1" or times_read > 1)

    def record(self, task_id: str) -> dict[str, Any]:
        response = {"success": True, "data": [{"image_url": f"{self.base}/img.png"}]}
        return {"id": task_id, "finished_at": "now", "response": response}


async def test_a_task_missing_from_batches_is_unknown_only_after_the_grace(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flux_mcp.jobs.poller.NOT_FOUND_GRACE_SECONDS", 1.5)
    upstream = HidingUpstream()
    async with serve_asgi(upstream.app) as base:
        upstream.base = base
        settings = make_settings(
            emulator,
            api_base_url=base,
            save=False,
            preview_size=0,
            poll_min_seconds=0.5,
            poll_max_seconds=0.5,
        )
        outcomes: dict[str, CallToolResult] = {}
        async with Client(build_server(settings)) as client, anyio.create_task_group() as group:

            async def call(task_id: str) -> None:
                outcomes[task_id] = await client.call_tool("generate_image", {"prompt": task_id})

            group.start_soon(call, "late-1")
            group.start_soon(call, "ghost-1")
    assert structured(outcomes["late-1"])["status"] == "succeeded"  # missing at first, not final then
    ghost = outcomes["ghost-1"]
    assert ghost.is_error and "No task with id 'ghost-1'" in text(ghost), text(ghost)
    assert sum("ghost-1" in ids for ids in upstream.reads) >= 2  # missing, looked at again, then given up
    assert any(len(ids) == 2 for ids in upstream.reads)  # the two were read in one batch


async def test_a_long_retry_after_holds_every_read_of_that_token(emulator: RunningEmulator) -> None:
    """The upstream says come back in 3 s (beyond the client's own 2 s retry cap): no read comes sooner."""
    emulator.state.config.latency = 0.3
    emulator.state.config.retry_after = 3.0
    emulator.state.faults.append(Fault("429", endpoint="tasks"))
    async with Client(build_server(make_settings(emulator))) as client, anyio.create_task_group() as group:
        results: list[CallToolResult] = []

        async def one(index: int) -> None:
            results.append(await client.call_tool("generate_image", {"prompt": f"cat {index}"}))

        for index in range(2):
            group.start_soon(one, index)
    assert all(structured(result)["status"] == "succeeded" for result in results)
    limited, *later = reads(emulator)
    assert emulator.state.faults_applied == {"429": 1} and later
    assert later[0].at - limited.at >= 3.0  # a promise of the protocol, not a measurement
