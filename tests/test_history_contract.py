"""The history's contract, run against both backends: SQLite (embedded default) and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from flux_mcp.models import ImageInfo, TaskResult, TaskStatus
from flux_mcp.store import SUBMITTING, UNKNOWN, Claim, History, HistoryUnavailableError
from flux_mcp.store_postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION

from .support import free_port

pytestmark = pytest.mark.anyio
REQUEST: dict[str, Any] = {"action": "generate", "prompt": "a red fox", "model": "flux-dev", "size": "1:1"}


@pytest.fixture(params=["sqlite", "postgresql"])
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


async def test_a_row_is_written_before_submit_and_follows_the_task(history: History) -> None:
    row = await history.begin(REQUEST)
    entry = await history.row(row)
    assert entry is not None and entry.status == SUBMITTING and entry.task_id is None
    await history.submitted(row, "t-1", "trace-1")
    await history.record(result("t-1", images=[ImageInfo(index=0, url="https://x/0.png", path="/p/0.png")]))
    entry = await history.get("t-1")
    assert entry is not None and entry.row_id == row and entry.status == "succeeded"
    assert entry.trace_id == "trace-1" and entry.request == REQUEST
    assert entry.result is not None and entry.result["images"][0]["path"] == "/p/0.png"


async def test_a_later_record_keeps_the_files_an_earlier_one_saved(history: History) -> None:
    await history.record(result("t-1", images=[ImageInfo(index=0, url="https://x/0.png", path="/p/0.png")]))
    await history.record(result("t-1", images=[ImageInfo(index=0, url="https://x/0.png")]))
    entry = await history.get("t-1")
    assert entry is not None and entry.result is not None
    assert entry.result["images"][0]["path"] == "/p/0.png"
    assert len(await history.recent(10)) == 1


async def test_submit_failures_are_unknown_or_rejected(history: History) -> None:
    maybe, refused = await history.begin(REQUEST), await history.begin(REQUEST)
    await history.submit_failed(maybe, "timed out", maybe_accepted=True)
    await history.submit_failed(refused, "400", maybe_accepted=False)
    assert [(e.status, e.error) for e in await history.recent(10)] == [
        ("rejected", "400"),
        (UNKNOWN, "timed out"),
    ]


async def test_claim_continues_an_undelivered_identical_request_until_it_is_delivered(
    history: History,
) -> None:
    first = await history.claim(REQUEST, "fp", since=0)
    assert first.earlier is None
    await history.submitted(first.row_id, "t-1", None)
    again = await history.claim(REQUEST, "fp", since=0)
    assert again.earlier is not None and again.row_id == first.row_id and again.earlier.task_id == "t-1"
    assert (await history.claim(REQUEST, "other-fp", since=0)).earlier is None
    assert (await history.claim(REQUEST, "fp", owner="someone-else", since=0)).earlier is None
    await history.deliver(task_ids=["t-1"])
    assert (await history.claim(REQUEST, "fp", since=0)).earlier is None


async def test_claim_ignores_rows_older_than_the_horizon_and_rejected_ones(history: History) -> None:
    old = await history.claim(REQUEST, "fp", since=0)
    await history.submit_failed(old.row_id, "400", maybe_accepted=False)
    assert (await history.claim(REQUEST, "fp", since=0)).earlier is None
    assert (await history.claim(REQUEST, "fp2", since=0)).earlier is None
    assert (await history.claim(REQUEST, "fp2", since=anyio_time_far_ahead())).earlier is None


def anyio_time_far_ahead() -> float:
    import time

    return time.time() + 3600


async def test_identical_claims_at_once_make_one_row(history: History) -> None:
    claims = []

    async def claim() -> None:
        claims.append(await history.claim(REQUEST, "fp", since=0))

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
                into.append(await history.claim(REQUEST, "fp", since=0))

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
                    group.start_soon((first if index % 2 else second).record, result("t-new"))
            assert [entry.task_id for entry in await first.recent(50)] == ["t-new"]


async def test_owners_never_see_each_others_rows(history: History) -> None:
    await history.record(result("t-a"), owner="alice")
    await history.record(result("t-b"), owner="bob")
    assert [e.task_id for e in await history.recent(10, owner="alice")] == ["t-a"]
    assert await history.get("t-b", owner="alice") is None


async def test_recent_filters_by_status_and_by_prompt_text_literally(history: History) -> None:
    await history.record(result("t-1", prompt="100% cat_photo"))
    await history.record(result("t-2", TaskStatus.FAILED, prompt="1000 cats"))
    assert [e.task_id for e in await history.recent(10, query="0% cat_")] == ["t-1"]
    assert [e.task_id for e in await history.recent(10, status="failed")] == ["t-2"]
    assert [e.task_id for e in await history.recent(1)] == ["t-2"]


async def test_abandoned_submissions_become_unknown(history: History) -> None:
    row = await history.begin(REQUEST)
    await history.abandoned(row)
    entry = await history.row(row)
    assert entry is not None and entry.status == UNKNOWN and entry.error is not None


async def test_the_upload_cache_is_per_owner_and_expires(history: History) -> None:
    await history.remember_upload("abc", "https://files.test/1.png")
    await history.remember_upload("abc", "https://files.test/2.png")
    assert await history.uploaded("abc", max_age=60) == "https://files.test/2.png"
    assert await history.uploaded("abc", "bob", max_age=60) is None
    assert await history.uploaded("abc", max_age=-1) is None


async def test_replicas_starting_together_migrate_a_fresh_database_once(postgres_url: str) -> None:
    async def start() -> None:
        async with History.connect(postgres_url) as history:
            await history.probe()

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(start)
    with psycopg.connect(postgres_url) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM flux_mcp_migrations ORDER BY version")]
    assert versions == list(range(1, PG_SCHEMA_VERSION + 1))


async def test_an_unreachable_database_is_a_clear_error_that_names_no_password() -> None:
    url = f"postgresql://flux:hunter2-secret@127.0.0.1:{free_port()}/flux"
    async with History.connect(url) as history:
        with pytest.raises(HistoryUnavailableError) as raised:
            await history.probe()
        with pytest.raises(HistoryUnavailableError):
            await history.claim(REQUEST, "fp", since=0)
        with pytest.raises(HistoryUnavailableError):
            history.owner_of("sk-token")
    message = raised.value.message
    assert "127.0.0.1" in message and "cannot be reached" in message and "hunter2" not in message
