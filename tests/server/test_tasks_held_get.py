"""A tasks/get on a working task this server drives is answered when there is news: the images saved, or the
poller's next look back still pending (bounded); pollIntervalMs asks the host back just before that look.
Event-driven and over virtual time: no test here reads the clock."""

from __future__ import annotations

import math

import anyio
import pytest
from anyio.abc import TaskStatus as StartedStatus
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client

from flux_mcp.domain.settings import Settings
from flux_mcp.domain.tasks import TaskSnapshot, TaskStatus
from flux_mcp.emulator import RunningEmulator
from flux_mcp.jobs.poller import PollSchedule, Watch
from flux_mcp.server import build
from flux_mcp.server.tasks import core
from flux_mcp.server.tasks.core import (
    LEAD_SHARE,
    MAX_HOLD_SECONDS,
    _Driver,
    held_interval_ms,
    hold_for_news,
    hold_seconds,
)
from testkit.tasks import RawTasks, call_as_task, task_request
from tests.support import WAIT_BOUND, finish_tasks_now

pytestmark = pytest.mark.anyio


async def holding(driver: _Driver, ended: list[bool], *, task_status: StartedStatus[None]) -> None:
    task_status.started()
    await hold_for_news(driver, math.inf)
    ended.append(True)


def watched(driver: _Driver) -> Watch:
    watch = Watch("t1", PollSchedule(), age=0.0, now=0.0)
    driver.note_watch(watch)
    return watch


async def test_a_held_get_is_answered_when_the_job_has_ended() -> None:
    driver, ended = _Driver(), []
    async with anyio.create_task_group() as group:
        await group.start(holding, driver, ended)
        watched(driver)
        await anyio.wait_all_tasks_blocked()
        assert not ended  # a watch is no news
        driver.done.set()
    assert ended


async def test_a_look_back_still_pending_is_news_but_one_that_saw_the_end_waits_for_the_files() -> None:
    driver, ended = _Driver(), []
    watch = watched(driver)
    async with anyio.create_task_group() as group:
        await group.start(holding, driver, ended)
        watch.answered()  # the poller's look came back: still pending
    assert ended

    ended.clear()
    async with anyio.create_task_group() as group:
        await group.start(holding, driver, ended)
        watch.see(TaskSnapshot(task_id="t1", status=TaskStatus.SUCCEEDED))
        watch.answered()  # saw it done: the files are being saved
        await anyio.wait_all_tasks_blocked()
        assert not ended
        driver.done.set()
    assert ended


@given(until_look=st.floats(0, 900), first=st.floats(0.01, 30))
@settings(max_examples=200, deadline=None)
def test_the_host_comes_back_just_before_the_next_look_within_its_held_get(
    until_look: float, first: float
) -> None:
    back_in = held_interval_ms(until_look, first) / 1000
    hold = hold_seconds(PollSchedule(first=first))
    assert back_in > 0 and hold <= MAX_HOLD_SECONDS
    # It arrives before the look (or at once when due), and its held get spans the look.
    assert back_in <= max(until_look, 0.05 * first) + 0.001
    assert back_in + hold >= until_look
    assert back_in >= until_look - LEAD_SHARE * first - 0.001


async def test_a_get_sent_once_the_job_ended_upstream_answers_with_the_images(
    settings: Settings, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No bound on the hold: the answer waits for news, whatever the machine's speed.
    monkeypatch.setattr(core, "MAX_HOLD_SECONDS", math.inf)
    monkeypatch.setattr(core, "HOLD_FIRSTS", math.inf)
    emulator.state.config.latency = 600.0
    async with Client(build.build_server(settings), extensions=[RawTasks()]) as client:
        created = await call_as_task(client, "generate_image", {"prompt": "a fox"})
        finish_tasks_now(emulator)
        with anyio.fail_after(WAIT_BOUND):
            answer = await task_request(client, "tasks/get", created["taskId"])
    # One tasks/get: held over the poller's look that saw the end, and the saving after it.
    assert answer["status"] == "completed"
    assert answer["result"]["structuredContent"]["status"] == "succeeded"
