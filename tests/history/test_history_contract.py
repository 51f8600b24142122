"""The history's contract, run against both backends: SQLite (embedded default) and a real PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing
import queue
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from mcp import Client

from flux_mcp.domain.errors import HistoryUnavailableError
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.tasks import ImageInfo, TaskError, TaskResult, TaskStatus
from flux_mcp.history.rows import SUBMITTING, UNKNOWN, Claim
from flux_mcp.history.schema import SCHEMA_VERSION
from flux_mcp.history.store import History
from flux_mcp.server.build import build_server
from tests.support import free_port

pytestmark = pytest.mark.anyio
REQUEST: dict[str, Any] = {"action": "generate", "prompt": "a red fox", "model": "flux-dev", "size": "1:1"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where a history lives: a file path or a fresh PostgreSQL database's URL."""
    if backend == "sqlite":
        return str(tmp_path / "history.db")
    return str(request.getfixturevalue("postgres_url"))


async def open_history(location: str) -> AsyncIterator[History]:
    if location.startswith("postgresql://"):
        async with History.connect(location) as history:
            yield history
        return
    history = History(Path(location))
    try:
        yield history
    finally:
        history.close()


@pytest.fixture
async def history(location: str) -> AsyncIterator[History]:
    async for opened in open_history(location):
        yield opened


def result(task_id: str, status: TaskStatus = TaskStatus.SUCCEEDED, **fields: Any) -> TaskResult:
    values: dict[str, Any] = {
        "model": "flux-dev",
        "prompt": "a red fox",
        "size": "1:1",
        "elapsed_seconds": 1.0,
    }
    return TaskResult(task_id=task_id, status=status, **{**values, **fields})


def saved(task_id: str) -> TaskResult:
    """A finished result whose image was saved."""
    return result(
        task_id, images=[ImageInfo(index=0, url=f"https://x/{task_id}.png", path=f"/p/{task_id}.png")]
    )


async def test_a_row_is_written_before_submit_and_follows_the_task(history: History) -> None:
    row = await history.record_submitting(REQUEST)
    entry = await history.find_row(row)
    assert entry is not None and entry.status == SUBMITTING and entry.task_id is None
    await history.mark_submitted(row, "t-1", "trace-1")
    await history.record_state(saved("t-1"))
    entry = await history.find_task("t-1")
    assert entry is not None and entry.row_id == row and entry.status == "succeeded"
    assert entry.trace_id == "trace-1" and entry.request == REQUEST
    assert entry.result == saved("t-1")


async def test_a_record_stores_the_result_it_is_given_and_gives_back_a_task_result(history: History) -> None:
    await history.record_state(result("t-1", TaskStatus.PENDING, trace_id="trace-1"))
    await history.record_state(saved("t-1"))
    entry = await history.find_task("t-1")
    assert entry is not None and isinstance(entry.result, TaskResult)
    assert entry.result == saved("t-1") and entry.trace_id == "trace-1"  # a record without one keeps it
    assert [e.result for e in await history.list_tasks(10)] == [saved("t-1")]


@pytest.mark.parametrize("final", [TaskStatus.SUCCEEDED, TaskStatus.FAILED])
async def test_a_pending_look_recorded_after_the_task_finished_leaves_it_finished(
    history: History, final: TaskStatus
) -> None:
    # Two hosts follow one task; the one that looked a moment before it finished writes last.
    finished = saved("t-1") if final is TaskStatus.SUCCEEDED else result("t-1", final, error=REFUSED)
    await history.record_state(finished)
    await history.record_state(result("t-1", TaskStatus.PENDING))
    entry = await history.find_task("t-1")
    assert entry is not None and entry.status == final.value and entry.result == finished
    assert entry.error == (REFUSED.message if final is TaskStatus.FAILED else None)


async def test_which_task_ids_an_owner_has_and_which_tasks_are_pending(history: History) -> None:
    """What get_tasks asks for a person of their own, and what a replica asks before relaying a callback."""
    await history.record_state(result("alice-1", TaskStatus.PENDING), owner="alice")
    await history.record_state(saved("alice-2"), owner="alice")
    await history.record_state(result("bob-1", TaskStatus.PENDING), owner="bob")
    asked = ["alice-1", "bob-1", "alice-2", "never"]
    assert await history.owned_task_ids(asked, "alice") == {"alice-1", "alice-2"}
    assert (
        await history.owned_task_ids(asked, "") == set()
        and await history.owned_task_ids([], "alice") == set()
    )
    pending = {task_id for task_id in asked if await history.task_pending(task_id)}
    assert pending == {"alice-1", "bob-1"}  # any owner's row: a callback does not say whose task it is


async def test_two_processes_recording_the_same_tasks_leave_one_finished_row_each(location: str) -> None:
    """Two hosts on one history (a file, or a database), one a step behind: no error, no stale state."""
    task_ids = [f"t-{index}" for index in range(30)]
    context = multiprocessing.get_context("spawn")
    start, handed_over = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=follow_tasks, args=(location, role, task_ids, start, handed_over))
        for role in ("ahead", "behind")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=PROCESS_BOUND_SECONDS)
    assert [worker.exitcode for worker in workers] == [0, 0]
    async for history in open_history(location):
        entries = await history.list_tasks(100)
    assert sorted(entry.task_id or "" for entry in entries) == sorted(task_ids)  # one row per task
    assert [(entry.task_id, entry.status) for entry in entries if entry.status != "succeeded"] == []
    assert all(entry.result == saved(entry.task_id or "") and entry.error is None for entry in entries)


PROCESS_BOUND_SECONDS = 120.0  # only against a hang: each process takes a second or two
REFUSED = TaskError(code="moderated", message="refused")


def follow_tasks(
    location: str, role: str, task_ids: list[str], start: Barrier, handed_over: queue.Queue[str]
) -> None:
    """One process: "ahead" records each task pending, then finished, and hands it over; "behind" first
    records every task pending (newest first, meeting "ahead" on rows neither has written), then a late
    pending look at each task "ahead" has finished."""
    anyio.run(_follow_tasks, location, role, task_ids, start, handed_over)


async def _follow_tasks(
    location: str, role: str, task_ids: list[str], start: Barrier, handed_over: queue.Queue[str]
) -> None:
    async for history in open_history(location):
        start.wait(timeout=PROCESS_BOUND_SECONDS)
        if role == "ahead":
            for task_id in task_ids:
                await history.record_state(result(task_id, TaskStatus.PENDING))
                await history.record_state(saved(task_id))
                handed_over.put(task_id)
            return
        for task_id in reversed(task_ids):
            await history.record_state(result(task_id, TaskStatus.PENDING))
        for _ in task_ids:
            task_id = await anyio.to_thread.run_sync(handed_over.get, True, PROCESS_BOUND_SECONDS)
            await history.record_state(result(task_id, TaskStatus.PENDING))


async def test_submit_failures_are_unknown_or_rejected(history: History) -> None:
    maybe, refused = await history.record_submitting(REQUEST), await history.record_submitting(REQUEST)
    await history.mark_submit_failed(maybe, "timed out", maybe_accepted=True)
    await history.mark_submit_failed(refused, "400", maybe_accepted=False)
    assert [(e.status, e.error) for e in await history.list_tasks(10)] == [
        ("rejected", "400"),
        (UNKNOWN, "timed out"),
    ]


async def test_claim_continues_an_undelivered_identical_request_until_it_is_delivered(
    history: History,
) -> None:
    first = await history.claim_submission(REQUEST, "fp", since=0)
    assert first.earlier is None
    await history.mark_submitted(first.row_id, "t-1", None)
    again = await history.claim_submission(REQUEST, "fp", since=0)
    assert again.earlier is not None and again.row_id == first.row_id and again.earlier.task_id == "t-1"
    assert (await history.claim_submission(REQUEST, "other-fp", since=0)).earlier is None
    assert (await history.claim_submission(REQUEST, "fp", owner="someone-else", since=0)).earlier is None
    await history.mark_delivered(task_ids=["t-1"])
    assert (await history.claim_submission(REQUEST, "fp", since=0)).earlier is None


async def test_claim_ignores_rows_older_than_the_horizon_and_rejected_ones(history: History) -> None:
    old = await history.claim_submission(REQUEST, "fp", since=0)
    await history.mark_submit_failed(old.row_id, "400", maybe_accepted=False)
    assert (await history.claim_submission(REQUEST, "fp", since=0)).earlier is None
    assert (await history.claim_submission(REQUEST, "fp2", since=0)).earlier is None
    assert (await history.claim_submission(REQUEST, "fp2", since=anyio_time_far_ahead())).earlier is None


def anyio_time_far_ahead() -> float:
    import time

    return time.time() + 3600


async def test_identical_claims_at_once_make_one_row(history: History) -> None:
    claims = []

    async def claim() -> None:
        claims.append(await history.claim_submission(REQUEST, "fp", since=0))

    async with anyio.create_task_group() as group:
        for _ in range(12):
            group.start_soon(claim)
    assert sum(1 for claim_ in claims if claim_.earlier is None) == 1
    assert len({claim_.row_id for claim_ in claims}) == 1


async def test_two_histories_on_one_database_claim_once_and_agree_on_owners(location: str) -> None:
    async for first in open_history(location):
        async for second in open_history(location):
            claims: list[Claim] = []

            async def claim(history: History, into: list[Claim] = claims) -> None:
                into.append(await history.claim_submission(REQUEST, "fp", since=0))

            async with anyio.create_task_group() as group:
                for index in range(10):
                    group.start_soon(claim, first if index % 2 else second)
            assert sum(1 for claim_ in claims if claim_.earlier is None) == 1
            assert first.owner_of("sk-token") == second.owner_of("sk-token") != "sk-token"
            assert "sk-token" not in first.owner_of("sk-token")


async def test_records_of_one_new_task_from_two_histories_make_one_row(location: str) -> None:
    async for first in open_history(location):
        async for second in open_history(location):
            async with anyio.create_task_group() as group:
                for index in range(10):
                    group.start_soon((first if index % 2 else second).record_state, result("t-new"))
            assert [entry.task_id for entry in await first.list_tasks(50)] == ["t-new"]


async def test_owners_never_see_each_others_rows(history: History) -> None:
    await history.record_state(result("t-a"), owner="alice")
    await history.record_state(result("t-b"), owner="bob")
    assert [e.task_id for e in await history.list_tasks(10, owner="alice")] == ["t-a"]
    assert await history.find_task("t-b", owner="alice") is None


async def test_list_tasks_filters_by_status_and_by_prompt_text_literally(history: History) -> None:
    await history.record_state(result("t-1", prompt="100% cat_photo"))
    await history.record_state(result("t-2", TaskStatus.FAILED, prompt="1000 cats"))
    assert [e.task_id for e in await history.list_tasks(10, query="0% cat_")] == ["t-1"]
    assert [e.task_id for e in await history.list_tasks(10, status="failed")] == ["t-2"]
    assert [e.task_id for e in await history.list_tasks(1)] == ["t-2"]


# What each query finds among the prompts of SEARCHED, on both backends alike: case ignored beyond ASCII
# (`ß` is `ss`), composed and decomposed accents equal, and LIKE's `%`, `_` and `\` taken literally.
SEARCHED = {
    "t-cat": "a cat on a mat",
    "t-summer": "un été à Paris",
    "t-katze": "Katze im Schnee",
    "t-street": "Straße bei Nacht",
    "t-percent": "100% Cat_photo",
    "t-slash": "Fox \\ Hound",
}
FOUND = {
    "Cat": {"t-cat", "t-percent"},
    "A CAT": {"t-cat"},
    "ÉTÉ": {"t-summer"},
    "E\u0301TE\u0301 À": {"t-summer"},
    "KATZE": {"t-katze"},
    "katze": {"t-katze"},
    "STRASSE": {"t-street"},
    "straße BEI": {"t-street"},
    "0% CAT_": {"t-percent"},
    "%": {"t-percent"},
    "_": {"t-percent"},
    "x \\ h": {"t-slash"},
    "Ça": set(),
}


async def test_list_tasks_finds_prompts_whatever_their_case_on_both_backends(history: History) -> None:
    for task_id, prompt in SEARCHED.items():
        if task_id == "t-katze":  # written as a submission is, before the task has an id
            row = await history.record_submitting({**REQUEST, "prompt": prompt})
            await history.mark_submitted(row, task_id, None)
        else:
            await history.record_state(result(task_id, prompt=prompt))
    found = {query: {e.task_id for e in await history.list_tasks(50, query=query)} for query in FOUND}
    assert found == FOUND


async def test_abandoned_submissions_become_unknown(history: History) -> None:
    row = await history.record_submitting(REQUEST)
    await history.mark_abandoned(row)
    entry = await history.find_row(row)
    assert entry is not None and entry.status == UNKNOWN and entry.error is not None


async def test_the_upload_cache_is_per_owner_and_expires(history: History) -> None:
    await history.record_upload("abc", "https://files.test/1.png")
    await history.record_upload("abc", "https://files.test/2.png")
    assert await history.find_upload("abc", max_age=60) == "https://files.test/2.png"
    assert await history.find_upload("abc", "bob", max_age=60) is None
    assert await history.find_upload("abc", max_age=-1) is None


async def test_replicas_starting_together_migrate_a_fresh_database_once(postgres_url: str) -> None:
    async def start() -> None:
        async with History.connect(postgres_url) as history:
            await history.probe()

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(start)
    with psycopg.connect(postgres_url) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM flux_mcp_migrations ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


async def test_an_unreachable_database_is_a_clear_error_that_names_no_password() -> None:
    url = f"postgresql://flux:hunter2-secret@127.0.0.1:{free_port()}/flux"
    async with History.connect(url) as history:
        with pytest.raises(HistoryUnavailableError) as raised:
            await history.probe()
        with pytest.raises(HistoryUnavailableError):
            await history.claim_submission(REQUEST, "fp", since=0)
        with pytest.raises(HistoryUnavailableError):
            history.owner_of("sk-token")
    message = raised.value.message
    assert "127.0.0.1" in message and "cannot be reached" in message and "hunter2" not in message


# A history.db the previous release wrote (schema 1, results as JSON text): six tasks (two generations,
# a variation, one pending, one failed, an edit of an uploaded file, a video) and an upload.
EARLIER_RELEASE = Path(__file__).resolve().parents[1] / "data" / "history-v1.sql"


async def test_a_history_written_by_the_previous_release_opens_and_reads(
    tmp_path: Path, settings: Settings
) -> None:
    path = tmp_path / "history.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(EARLIER_RELEASE.read_text())
        stored = {row[0]: json.loads(row[1]) for row in db.execute("SELECT task_id, result FROM tasks")}
        foxes = {row[0] for row in db.execute("SELECT task_id FROM tasks WHERE prompt LIKE '%red fox%'")}
    history = History(path)
    try:
        assert len(foxes) == 2 and {e.task_id for e in await history.list_tasks(10, query="RED Fox")} == foxes
        entries = await history.list_tasks(10)
        assert {entry.task_id: entry.result for entry in entries} == {
            task_id: TaskResult.model_validate(result) for task_id, result in stored.items()
        }
        assert {e.task_id: e.result.model_dump(mode="json") for e in entries if e.result} == stored
        pending = next(entry for entry in entries if entry.status == "pending")
        assert pending.result is not None and pending.task_id is not None
        await history.record_state(pending.result.model_copy(update={"status": TaskStatus.SUCCEEDED}))
        again = await history.find_task(pending.task_id)
        assert again is not None and again.row_id == pending.row_id and again.status == "succeeded"
        assert len(await history.list_tasks(10)) == len(stored)
    finally:
        history.close()
    async with Client(build_server(settings.model_copy(update={"db": path}))) as client:
        listed = (await client.call_tool("list_tasks", {})).structured_content
        fox = next(item for item in (listed or {})["tasks"] if item["prompt"] == "a red fox in snow")
        resource = await client.read_resource(f"flux://tasks/{fox['task_id']}")
    assert listed is not None and len(listed["tasks"]) == len(stored)
    assert sorted(item["kind"] for item in listed["tasks"]) == ["image"] * 5 + ["video"]
    assert json.loads(getattr(resource.contents[0], "text", ""))["result"] == stored[fox["task_id"]]


async def test_a_postgres_history_written_by_the_previous_release_is_upgraded_and_searchable(
    postgres_url: str,
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute((EARLIER_RELEASE.parent / "history-v1-postgres.sql").read_text().encode())
    async with History.connect(postgres_url) as history:
        found = {query: {e.task_id for e in await history.list_tasks(10, query=query)} for query in QUERIES}
        fox = await history.find_task("t-fox")
    assert found == QUERIES
    assert fox is not None and fox.result is not None and fox.result.prompt == "A Red Fox in Snow"
    with psycopg.connect(postgres_url) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM flux_mcp_migrations ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


QUERIES = {"red FOX": {"t-fox"}, "ÉTÉ À": {"t-summer"}, "STRASSE": {"t-street"}, "paris": {"t-summer"}}
