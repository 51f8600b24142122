"""Budgets (issue 26): a call that would pass a person's or the server's budget is refused before any
upstream request, two calls for the last credits cannot both pass (one process, two processes on one SQLite
file, two replicas on PostgreSQL), and a person over budget can still read, list and finish their tasks.

Submissions are counted from the emulator's own records (`emulator.state.submissions`). The emulator charges
`image_price` (0.5) credits per image and reports it as the result's `cost`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult

from flux_mcp.cli.main import main
from flux_mcp.domain.errors import BudgetExceededError
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.team import Budget, Spend
from flux_mcp.emulator import RunningEmulator
from flux_mcp.history.store import History
from flux_mcp.server.build import build_server
from testkit.replicas import Replica, run_replicas
from testkit.tasks import RawTasks, call_as_task
from tests.support import (
    finish_tasks_now,
    history_rows,
    http_service,
    make_settings,
    mcp_client,
    structured,
    text,
)

pytestmark = pytest.mark.anyio

PRICE = 0.5  # the emulator's price of one image


async def generate(client: Client, prompt: str, **arguments: Any) -> CallToolResult:
    return await client.call_tool("generate_image", {"prompt": prompt, **arguments})


async def test_at_the_limit_a_call_is_refused_with_zero_submissions(emulator: RunningEmulator) -> None:
    settings = make_settings(emulator, budget_per_person="1/day")
    async with Client(build_server(settings)) as client:
        first = await generate(client, "a red fox")  # nothing known yet: allowed, then its cost is kept
        assert not first.is_error, text(first)
        assert structured(first)["cost"]["amount"] == PRICE
        second = await generate(client, "a blue fox")  # 0.5 spent + 0.5 reckoned = 1: just fits
        assert not second.is_error, text(second)
        submitted = emulator.state.submissions
        refused = await generate(client, "a green fox")
        assert refused.is_error
        message = text(refused)
        for part in ("Not submitted", "1 credits a day", "1 are spent", "about 0.5 credits", "resets at"):
            assert part in message, message
        assert "FLUX_MCP_BUDGET_PER_PERSON" in message
        assert emulator.state.submissions == submitted  # zero upstream requests
        # Over budget, a person still reads, lists and finishes what they started (looking is free).
        task_id = structured(first)["task_id"]
        assert not (await client.call_tool("get_task", {"task_id": task_id})).is_error
        listed = await client.call_tool("list_tasks", {})
        assert not listed.is_error and task_id in text(listed)
        credits = await client.call_tool("get_credits", {})
        budget = structured(credits)["budget"]
        assert budget["person"] == "local"
        assert budget["yours"]["spent"] == 1.0 and budget["yours"]["left"] == 0.0
        assert budget["yours"]["limit"] == 1.0 and budget["yours"]["period"] == "day"
        assert budget["server"] is None
        assert "0 of 1 credits left today" in text(credits)
    assert emulator.state.submissions == submitted


async def test_the_server_budget_counts_everyone(emulator: RunningEmulator) -> None:
    settings = make_settings(emulator, budget_total="0.5/month")
    async with Client(build_server(settings)) as client:
        assert not (await generate(client, "a lone owl")).is_error
        submitted = emulator.state.submissions
        refused = await generate(client, "a second owl", count=2)
        assert refused.is_error and "This server's budget" in text(refused)
        assert "FLUX_MCP_BUDGET_TOTAL" in text(refused) and "this month" in text(refused)
    assert emulator.state.submissions == submitted


async def test_an_edit_over_budget_uploads_nothing(emulator: RunningEmulator, tmp_path: Path) -> None:
    from tests.support import png_bytes

    picture = tmp_path / "cat.png"
    picture.write_bytes(png_bytes())
    settings = make_settings(emulator, budget_per_person="0/day", input_dirs=str(tmp_path))
    async with Client(build_server(settings)) as client:
        refused = await client.call_tool("edit_image", {"prompt": "make it blue", "image_url": str(picture)})
    assert refused.is_error and "Not submitted" in text(refused)
    assert emulator.state.submissions == 0
    assert emulator.state.platform.upload_requests == 0


async def spend_one_image(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        assert not (await generate(client, "the first image of the day")).is_error


async def race_for_the_last_credits(calls: list[Any]) -> list[CallToolResult]:
    """Start every call at once; their results, in order."""
    results: list[CallToolResult | None] = [None] * len(calls)

    async def run(index: int) -> None:
        results[index] = await calls[index]()

    async with anyio.create_task_group() as race:
        for index in range(len(calls)):
            race.start_soon(run, index)
    return [result for result in results if result is not None]


def exactly_one_passed(results: list[CallToolResult]) -> None:
    passed = [result for result in results if not result.is_error]
    refused = [result for result in results if result.is_error]
    assert len(passed) == 1, [text(result) for result in results]
    assert all("Not submitted" in text(result) for result in refused)


async def test_two_calls_for_the_last_credits_cannot_both_pass_on_one_sqlite_file(
    emulator: RunningEmulator,
) -> None:
    settings = make_settings(emulator, budget_per_person="1/day")
    await spend_one_image(settings)  # 0.5 spent; each call is reckoned at 0.5: one more fits
    before = emulator.state.submissions
    # Two servers on one history file, as two processes would be; and two calls in each.
    async with Client(build_server(settings)) as one, Client(build_server(settings)) as other:
        results = await race_for_the_last_credits(
            [
                lambda: generate(one, "a cat racing"),
                lambda: generate(other, "a dog racing"),
                lambda: generate(one, "a hare racing"),
                lambda: generate(other, "a snail racing"),
            ]
        )
    exactly_one_passed(results)
    assert emulator.state.submissions == before + 1
    people = [row["person"] for row in history_rows(settings.history_path())]
    assert people == ["local", "local"]


async def test_named_server_tokens_are_people_with_their_own_budget(emulator: RunningEmulator) -> None:
    settings = make_settings(
        emulator, auth_tokens="alice:tok-alice-1,bob:tok-bob-2", budget_per_person="0.5/day"
    )
    async with http_service(settings) as base_url:
        async with mcp_client(base_url, "tok-alice-1") as alice:
            assert not (await generate(alice, "alice's fox")).is_error
            refused = await generate(alice, "alice's second fox")
            assert refused.is_error and "Your budget" in text(refused)
            credits = structured(await alice.call_tool("get_credits", {}))
            assert credits["budget"]["person"] == "alice"
        async with mcp_client(base_url, "tok-bob-2") as bob:
            assert not (await generate(bob, "bob's fox")).is_error  # Alice's spending is not Bob's
            listed = text(await bob.call_tool("list_tasks", {}))
            assert "alice's fox" in listed  # token holders share the team's history, as documented
    rows = history_rows(settings.history_path())
    assert [(row["person"], row["owner"]) for row in rows] == [("alice", ""), ("bob", "")]
    assert all("tok-" not in str(row) for row in rows)  # a person is a name, never a token
    assert emulator.state.submissions == 2


@pytest.mark.postgres
@pytest.mark.slow
async def test_two_replicas_cannot_both_take_the_last_credits(
    emulator: RunningEmulator, postgres_url: str, tmp_path: Path
) -> None:
    budget = {"FLUX_MCP_BUDGET_PER_PERSON": "1/day", "FLUX_MCP_BUDGET_TOTAL": "100/month"}
    async with run_replicas(2, emulator, tmp_path, postgres_url, None, **budget) as (a, b):
        first = await call(a, "the first image of the day")
        assert not first.is_error, text(first)
        before = emulator.state.submissions
        results = await race_for_the_last_credits(
            [
                lambda: call(a, "a cat on replica A"),
                lambda: call(b, "a dog on replica B"),
                lambda: call(a, "a hare on replica A"),
                lambda: call(b, "a snail on replica B"),
            ]
        )
        exactly_one_passed(results)
        assert emulator.state.submissions == before + 1


async def call(replica: Replica, prompt: str) -> CallToolResult:
    async with Client(replica.mcp_url) as client:
        return await generate(client, prompt)


async def test_continuing_an_identical_call_is_free_even_at_the_limit(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    spend = Spend("alice", 1.0, person_budget=Budget(1.0, "day"))
    body = {"action": "generate", "model": "flux-dev", "prompt": "a fox"}
    try:
        first = await history.claim_submission(body, "fox", since=0.0, spend=spend)  # takes the whole budget
        assert first.earlier is None
        again = await history.claim_submission(body, "fox", since=0.0, spend=spend)
        assert again.earlier is not None and again.row_id == first.row_id  # continued: nothing new to pay
        await history.check_budgets(spend, "fox", since=0.0)
        with pytest.raises(BudgetExceededError, match="1 are spent today"):
            await history.check_budgets(spend, "another fox", since=0.0)
        with pytest.raises(BudgetExceededError):
            await history.claim_submission(body, "another fox", since=0.0, spend=spend)
        assert await history.spent(0.0, "alice") == 1.0 and await history.spent(0.0, "bob") == 0.0
    finally:
        history.close()


async def test_a_video_over_budget_is_refused_before_any_request(emulator: RunningEmulator) -> None:
    settings = make_settings(emulator, budget_per_person="0/day")
    async with Client(build_server(settings)) as client:
        refused = await client.call_tool("generate_video", {"prompt": "a paper boat on a rainy street"})
    assert refused.is_error and "Not submitted" in text(refused)
    assert emulator.state.submissions == emulator.state.video_submissions == 0


async def test_task_augmented_calls_keep_to_the_budget_in_both_protocols(emulator: RunningEmulator) -> None:
    """MCP Tasks (issue 25) run on the same claim: one reserved task takes the last credits, the calls that
    race it and a later one are refused with zero submissions (2026-07-28: a tool error; 2025-11-25:
    -32602)."""
    emulator.state.config.latency = 3600.0  # the tasks stay working: their cost is only reserved
    settings = make_settings(emulator, budget_per_person="1/day")
    async with Client(build_server(settings)) as plain:
        first = await generate(plain, "a priced fox", wait_seconds=0)  # teaches the estimate (0.5)
        finish_tasks_now(emulator)
        assert (
            structured(await plain.call_tool("get_task", {"task_id": structured(first)["task_id"]}))["cost"][
                "amount"
            ]
            == PRICE
        )
    emulator.state.config.latency = 3600.0
    answers: list[dict[str, Any]] = []
    async with Client(build_server(settings), extensions=[RawTasks()]) as modern:

        async def race(prompt: str) -> None:
            answers.append(await call_as_task(modern, "generate_image", {"prompt": prompt}))

        async with anyio.create_task_group() as racing:
            for index in range(3):
                racing.start_soon(race, f"racing fox {index}")
    assert sorted(answer.get("resultType", "complete") for answer in answers) == [
        "complete",
        "complete",
        "task",
    ]
    assert all("Not submitted" in text_of(answer) for answer in answers if answer.get("isError"))
    assert emulator.state.submissions == 2
    async with Client(build_server(settings), mode="legacy") as legacy:
        call = {"name": "generate_image", "arguments": {"prompt": "a legacy fox"}, "task": {}}
        with pytest.raises(MCPError) as refused:
            await legacy.session._dispatcher.send_raw_request("tools/call", call, {})  # type: ignore[attr-defined]
    assert refused.value.error.code == INVALID_PARAMS and "Not submitted" in refused.value.error.message
    assert emulator.state.submissions == 2


def text_of(answer: dict[str, Any]) -> str:
    return " ".join(block.get("text", "") for block in answer.get("content", []))


async def test_each_job_names_its_person_without_any_budget(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Named tokens and no budget (the default): `flux-mcp report --by person` still tells Alice from Bob
    (the person was written only with a reservation, so every job was "(shared)")."""
    settings = make_settings(emulator, auth_tokens="alice:tok-alice-1,bob:tok-bob-2")
    async with http_service(settings) as base_url:
        for person, token in (("alice", "tok-alice-1"), ("bob", "tok-bob-2")):
            async with mcp_client(base_url, token) as client:
                assert not (await generate(client, f"{person}'s fox")).is_error
    assert [row["person"] for row in history_rows(settings.history_path())] == ["alice", "bob"]
    monkeypatch.setenv("FLUX_MCP_DB", str(settings.history_path()))
    assert await anyio.to_thread.run_sync(main, ["report", "--format", "json"]) == 0  # runs its own loop
    people = [row["person"] for row in json.loads(capsys.readouterr().out)["rows"]]
    assert people == ["alice", "bob"]
