"""Hostile answers from the platform and the Flux API: an echoed token, numbers no float can hold.

A hostile platform and Flux API on loopback (small Starlette apps written here) echo the caller's token
in every text field of an application, and put 400-digit numbers (and `NaN`, `1e400`, a 5000-digit
integer past Python's own conversion limit) where figures belong. get_credits shows no token and no
traceback; a task record with such a number costs that number only, never the other tasks of a batch.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flux_mcp.domain.errors import MalformedResponseError
from flux_mcp.domain.tasks import finite_number, parse_task_record
from flux_mcp.emulator import RunningEmulator, serve_asgi
from flux_mcp.server.build import build_server
from flux_mcp.upstream.call import json_value
from flux_mcp.upstream.flux import FluxClient
from flux_mcp.upstream.platform import PlatformClient
from tests.support import TOKEN, make_settings, structured, text

pytestmark = pytest.mark.anyio

HUGE = "9" * 400  # a JSON integer no float holds: float() of it raises OverflowError
PAST_PYTHONS_LIMIT = "7" * 5000  # past int()'s 4300-digit limit: json.loads raises ValueError


def answering(path: str, body: str, methods: tuple[str, ...] = ("GET",)) -> Starlette:
    """A loopback service answering `body` (raw JSON text, so any number can be spelled) at `path`."""

    async def answer(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route(path, answer, methods=list(methods))])


async def credits_from(emulator: RunningEmulator, body: str) -> Any:
    async with serve_asgi(answering("/api/v1/applications/", body)) as platform_url:
        settings = make_settings(emulator, platform_base_url=platform_url, max_retries=0)
        async with Client(build_server(settings)) as client:
            return await client.call_tool("get_credits", {})


# --- 24.6 the token echoed by the platform ----------------------------------------------------------


async def test_a_token_the_platform_echoes_is_never_shown_by_get_credits(emulator: RunningEmulator) -> None:
    echoed = {
        "id": TOKEN,
        "remaining_amount": 12,
        "used_amount": 3,
        "name": f"app of {TOKEN}",
        "unit": TOKEN,
        "service": {"title": f"Flux <b>{TOKEN}</b>", "alias": "flux", "unit": TOKEN},
    }
    other = {"remaining_amount": 1, "service": {"title": f"Other {TOKEN}"}}
    result = await credits_from(emulator, json.dumps({"items": [echoed, other]}))
    assert not result.is_error, text(result)
    shown = text(result) + json.dumps(structured(result))
    assert TOKEN not in shown and "[redacted]" in shown
    assert structured(result)["flux"][0]["remaining_amount"] == 12


async def test_an_upload_whose_file_url_echoes_the_token_is_not_used() -> None:
    body = json.dumps({"file_url": f"https://files.test/{TOKEN}/a.png"})
    async with (
        serve_asgi(answering("/api/v1/files/", body, methods=("POST",))) as platform_url,
        httpx2.AsyncClient(timeout=5) as http,
    ):
        with pytest.raises(MalformedResponseError, match="holding the API token") as refused:
            await PlatformClient(http, platform_url, TOKEN).upload(b"png", "a.png", "image/png")
    assert TOKEN not in str(refused.value)


# --- 24.7 numbers too big -----------------------------------------------------------------------------


NUMBER_IDS = {HUGE: "400-digits", f"-{HUGE}": "minus-400-digits", PAST_PYTHONS_LIMIT: "5000-digits"}


@pytest.mark.parametrize(
    "number", [HUGE, f"-{HUGE}", "1e400", "NaN", "-Infinity", PAST_PYTHONS_LIMIT], ids=NUMBER_IDS.get
)
async def test_get_credits_ignores_a_figure_no_float_holds(emulator: RunningEmulator, number: str) -> None:
    body = (
        f'{{"items": [{{"remaining_amount": {number}, "used_amount": 2, "service": {{"alias": "flux"}}}},'
        f' {{"remaining_amount": 5, "used_amount": {number}, "service": {{"title": "Other"}}}}]}}'
    )
    result = await credits_from(emulator, body)
    assert not result.is_error, text(result)
    [flux], [other] = structured(result)["flux"], structured(result)["others"]
    assert flux["remaining_amount"] is None and flux["used_amount"] == 2
    assert other["remaining_amount"] == 5 and other["used_amount"] is None
    assert "balance unknown" in text(result)


def task_record(task_id: str, number: str) -> str:
    """A finished image task with `number` in every numeric field the server reads."""
    return (
        f'{{"id": "{task_id}", "trace_id": "tr", "elapsed": {number}, "finished_at": 1, "request": '
        f'{{"action": "generate", "count": {number}}}, "response": {{"success": true, "task_id": "{task_id}",'
        f' "data": [{{"image_url": "https://img.test/{task_id}.png", "seed": {number}}}],'
        f' "cost": {{"amount": {number}, "list_amount": {number}}},'
        f' "usage": {{"tokens": {number}, "n": 1}}}}}}'
    )


@pytest.mark.parametrize("number", [HUGE, "1e400", "NaN", "Infinity", PAST_PYTHONS_LIMIT], ids=NUMBER_IDS.get)
async def test_a_huge_number_in_one_task_record_fails_no_task_of_the_batch(
    number: str, caplog: pytest.LogCaptureFixture
) -> None:
    records = [task_record("t-1", "7"), task_record("t-2", number), task_record("t-3", "0.5")]
    body = f'{{"items": [{", ".join(records)}]}}'
    async with (
        serve_asgi(answering("/flux/tasks", body, methods=("POST",))) as base_url,
        httpx2.AsyncClient(timeout=5) as http,
    ):
        snapshots = await FluxClient(http, base_url, TOKEN).retrieve_batch(["t-1", "t-2", "t-3"])
    assert [snapshot.task_id for snapshot in snapshots] == ["t-1", "t-2", "t-3"]
    assert all(snapshot.status == "succeeded" for snapshot in snapshots)
    first, hostile, last = snapshots
    assert first.images[0].seed == 7 and first.cost is not None and first.cost.amount == 7
    assert hostile.images[0].seed is None and hostile.cost is None and hostile.elapsed_seconds is None
    assert hostile.usage == {"n": 1}
    assert last.elapsed_seconds == 0.5
    assert "an upstream figure was ignored" in caplog.text  # the note


JSON_NUMBERS = st.one_of(
    st.integers().map(str),
    st.integers(min_value=0, max_value=10**6).map(lambda digits: "9" * (digits % 6000 + 1)),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(st.integers(-(10**6), 10**6), st.integers(-2000, 2000)).map(lambda p: f"{p[0]}e{p[1]}"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E-400", "-0"]),
)


@given(JSON_NUMBERS)
def test_any_json_number_is_read_as_a_finite_value_or_ignored(number: str) -> None:
    """The one rule, for every number an upstream can spell: a finite float, or None; never an error."""
    value = json_value(f'{{"n": {number}}}'.encode())
    assert isinstance(value, dict)
    read = finite_number(value["n"])
    assert read is None or math.isfinite(read)
    record = json_value(task_record("t", number).encode())
    assert isinstance(record, dict)
    snapshot = parse_task_record(record)
    for figure in (snapshot.elapsed_seconds, snapshot.cost and snapshot.cost.amount):
        assert figure is None or math.isfinite(figure)
    seed = snapshot.images[0].seed
    assert seed is None or -(2**63) <= seed < 2**64
    if number.lstrip("-").isdigit() and len(number) < 30 and -(2**63) <= int(number) < 2**64:
        assert seed == int(number)  # a 64-bit seed is kept exactly
    assert snapshot.videos == ()
    json.dumps(snapshot.usage, allow_nan=False)  # stored and shown as JSON: finite figures only
