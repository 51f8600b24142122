"""More of a result (generate_variations), what it cost (cost/usage), and what is left (get_credits).

All against the emulator on loopback, which charges a configurable price per image from a
configurable balance, reports `cost` and `usage` in results, lists the account's applications, and
answers 403 `used_up` once the balance is spent.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.domain.tasks import parse_cost, parse_task_record
from flux_mcp.emulator import Fault, RunningEmulator, serve_asgi
from flux_mcp.server.build import build_server
from tests.support import TOKEN, http_service, image_bytes, make_settings, mcp_client, structured, text

pytestmark = pytest.mark.anyio


# --- variations ------------------------------------------------------------------------------------


async def test_variations_reuse_prompt_model_and_size_and_link_to_their_source(
    client: Client, emulator: RunningEmulator
) -> None:
    source = structured(
        await client.call_tool(
            "generate_image", {"prompt": "a red fox", "model": "flux-2-pro", "size": "16:9"}
        )
    )
    result = await client.call_tool(
        "generate_variations", {"task_id": source["task_id"], "count": 3, "prompt_suffix": " at night "}
    )
    varied = structured(result)
    assert varied["status"] == "succeeded" and len(varied["images"]) == 3, text(result)
    assert all(image["path"] and Path(image["path"]).is_file() for image in varied["images"])
    assert (varied["prompt"], varied["model"], varied["size"]) == ("a red fox at night", "flux-2-pro", "16:9")
    assert varied["variation_of"] == source["task_id"]

    sent = emulator.state.tasks[varied["task_id"]].request
    assert (sent["prompt"], sent["model"], sent["size"], sent["count"]) == (
        "a red fox at night",
        "flux-2-pro",
        "16:9",
        3,
    )
    assert "variation_of" not in sent  # ours, never sent upstream

    listed = {item["task_id"]: item for item in structured(await client.call_tool("list_tasks", {}))["tasks"]}
    assert listed[varied["task_id"]]["variation_of"] == source["task_id"]
    assert listed[source["task_id"]]["variation_of"] is None
    again = structured(await client.call_tool("get_task", {"task_id": varied["task_id"]}))
    assert again["variation_of"] == source["task_id"]
    sidecar = json.loads(Path(varied["images"][0]["path"]).with_suffix(".json").read_text())
    assert sidecar["variation_of"] == source["task_id"]


async def test_variations_default_to_two_and_wait_like_generate(
    client: Client, emulator: RunningEmulator
) -> None:
    source = structured(await client.call_tool("generate_image", {"prompt": "a lighthouse"}))
    pending = structured(
        await client.call_tool("generate_variations", {"task_id": source["task_id"], "wait_seconds": 0})
    )
    assert pending["status"] == "pending" and "get_task" in pending["next_step"]
    done = structured(await client.call_tool("get_task", {"task_id": pending["task_id"]}))
    assert done["status"] == "succeeded" and len(done["images"]) == 2
    assert emulator.state.tasks[pending["task_id"]].request["prompt"] == "a lighthouse"


async def test_variations_of_an_unknown_task_are_refused(client: Client, emulator: RunningEmulator) -> None:
    result = await client.call_tool("generate_variations", {"task_id": "no-such-task"})
    assert result.is_error and "No task 'no-such-task'" in text(result) and "list_tasks" in text(result)
    assert emulator.state.submissions == 0


async def test_variations_of_an_edit_say_what_to_do_instead(
    client: Client, emulator: RunningEmulator
) -> None:
    edited = structured(
        await client.call_tool(
            "edit_image", {"prompt": "night", "image_url": "https://cdn.example.com/a.png"}
        )
    )
    result = await client.call_tool("generate_variations", {"task_id": edited["task_id"]})
    assert result.is_error and "edit_image" in text(result)
    assert emulator.state.submissions == 1


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"count": 5}, "count"), ({"prompt_suffix": "x" * 501}, "prompt_suffix"), ({"seed": 1}, "seed")],
)
async def test_bad_variation_arguments_are_refused_before_any_call(
    client: Client, emulator: RunningEmulator, arguments: dict[str, Any], field: str
) -> None:
    result = await client.call_tool("generate_variations", {"task_id": "abc", **arguments})
    assert result.is_error and text(result).startswith("Invalid arguments for generate_variations")
    assert field in text(result) and emulator.state.submissions == 0


async def test_a_suffix_that_makes_the_prompt_too_long_is_refused(
    client: Client, emulator: RunningEmulator
) -> None:
    source = structured(await client.call_tool("generate_image", {"prompt": "y" * 3800}))
    result = await client.call_tool(
        "generate_variations", {"task_id": source["task_id"], "prompt_suffix": "z" * 300}
    )
    assert result.is_error and "4000 characters" in text(result)
    assert emulator.state.submissions == 1


# --- cost ----------------------------------------------------------------------------------------------


async def test_cost_and_usage_are_kept_in_the_result_the_sidecar_and_the_history(
    client: Client, emulator: RunningEmulator
) -> None:
    result = await client.call_tool("generate_image", {"prompt": "a cat", "count": 2})
    data = structured(result)
    assert data["cost"] == {"amount": 1.0, "currency": "credit", "list_amount": 1.2}
    assert data["usage"] == {"images": 2}
    assert "Cost: 1 credit (list price 1.2)" in text(result)
    sidecar = json.loads(Path(data["images"][0]["path"]).with_suffix(".json").read_text())
    assert sidecar["cost"] == data["cost"] and sidecar["usage"] == data["usage"]
    [item] = structured(await client.call_tool("list_tasks", {}))["tasks"]
    assert item["cost"] == data["cost"]
    task = json.loads((await client.read_resource(f"flux://tasks/{data['task_id']}")).contents[0].text)  # type: ignore[union-attr]
    assert task["result"]["cost"] == data["cost"]


async def test_absent_cost_is_absent(client: Client, emulator: RunningEmulator) -> None:
    emulator.state.platform.report_cost = False
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    data = structured(result)
    assert data["cost"] is None and data["usage"] is None and "Cost" not in text(result)
    sidecar = json.loads(Path(data["images"][0]["path"]).with_suffix(".json").read_text())
    assert "cost" not in sidecar and "usage" not in sidecar


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        ({"amount": 0.5, "currency": "credit", "list_amount": 0.6}, (0.5, "credit", 0.6)),
        ({"amount": "2", "currency": "credit"}, (2.0, "credit", None)),
        ({"amount": 1}, (1.0, None, None)),
        ({"amount": True}, None),
        ({"amount": "NaN"}, None),
        ({"currency": "credit"}, None),
        ("0.5 credits", None),
        (None, None),
    ],
)
def test_cost_is_read_only_when_it_is_there(cost: Any, expected: tuple[Any, ...] | None) -> None:
    parsed = parse_cost(cost)
    assert (None if parsed is None else (parsed.amount, parsed.currency, parsed.list_amount)) == expected
    record = {"id": "t", "finished_at": "x", "response": {"success": True, "cost": cost, "data": []}}
    assert parse_task_record(record).cost == parsed


# --- credits ---------------------------------------------------------------------------------------------


async def test_get_credits_reports_the_flux_balance_and_the_others(
    client: Client, emulator: RunningEmulator
) -> None:
    emulator.state.platform.balance = 10.0
    await client.call_tool("generate_image", {"prompt": "a cat", "count": 2})
    result = await client.call_tool("get_credits", {})
    credits = structured(result)
    [flux] = credits["flux"]
    assert (flux["service"], flux["remaining_amount"], flux["used_amount"], flux["unit"]) == (
        "Flux",
        9.0,
        1.0,
        "credit",
    )
    assert [other["service"] for other in credits["others"]] == ["Midjourney"]
    assert "Flux: 9 credit left, 1 credit used" in text(result) and "Midjourney" in text(result)
    assert emulator.state.platform.application_lookups == 1


async def test_a_spent_balance_stops_generation_with_a_way_forward(
    client: Client, emulator: RunningEmulator
) -> None:
    emulator.state.platform.balance = 0.0
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    message = text(result)
    assert result.is_error and "used up" in message and "get_credits" in message
    assert "platform.acedata.cloud" in message and "billed twice" not in message
    assert emulator.state.accepted == 0 and emulator.state.rejected == {"used_up": 1}
    [row] = structured(await client.call_tool("list_tasks", {}))["tasks"]
    assert row["status"] == "rejected"
    credits = await client.call_tool("get_credits", {})
    assert "used up" in text(credits) and "platform.acedata.cloud" in text(credits)


async def test_get_credits_with_a_refused_token_says_so(emulator: RunningEmulator) -> None:
    async with Client(build_server(make_settings(emulator, api_token="sk-wrong-0000"))) as client:
        result = await client.call_tool("get_credits", {})
    assert result.is_error and "refused the token" in text(result) and "sk-wrong-0000" not in text(result)


@pytest.mark.parametrize(
    ("answer", "status", "expected"),
    [
        ([{"service": {"alias": "flux"}, "remaining_amount": 1}], 200, "Flux: 1 left"),
        ({"count": 0}, 200, "shape flux-mcp does not know"),
        ({"count": 1, "items": "many"}, 200, "shape flux-mcp does not know"),
        ({"count": 1, "items": [{"id": "a", "service": {"title": "Flux"}}]}, 200, "No Flux application"),
        ({"items": [{"service": "flux", "remaining_amount": "7.5", "used_amount": None}]}, 200, "7.5 left"),
        ({"error": {"code": "forbidden", "message": "no"}}, 403, "refused the token"),
        ("<html>oops</html>", 502, "failed with HTTP 502"),
    ],
)
async def test_get_credits_survives_unknown_shapes_and_refusals(
    emulator: RunningEmulator, answer: Any, status: int, expected: str
) -> None:
    async def applications(request: Request) -> Response:
        if isinstance(answer, str):
            return Response(answer, status_code=status, media_type="text/html")
        return JSONResponse(answer, status_code=status)

    platform = Starlette(routes=[Route("/api/v1/applications/", applications, methods=["GET"])])
    async with serve_asgi(platform) as platform_url:
        settings = make_settings(emulator, platform_base_url=platform_url, max_retries=0)
        async with Client(build_server(settings)) as client:
            result = await client.call_tool("get_credits", {})
    assert expected in text(result), text(result)


async def test_credits_are_read_again_after_a_rate_limit(client: Client, emulator: RunningEmulator) -> None:
    emulator.state.config.retry_after = 0
    emulator.state.faults.append(Fault("429", endpoint="applications"))
    result = await client.call_tool("get_credits", {})
    assert not result.is_error and emulator.state.platform.application_lookups == 2


async def test_pass_through_callers_upload_and_read_credits_with_their_own_token(
    emulator: RunningEmulator,
) -> None:
    alice = "sk-alice-1111111111"
    emulator.state.config.tokens = frozenset({alice, TOKEN})
    emulator.state.platform.balance = 3.0
    png = base64.b64encode(image_bytes("PNG")).decode()
    async with (
        http_service(make_settings(emulator, auth="passthrough")) as base_url,
        mcp_client(base_url, alice) as client,
    ):
        edited = await client.call_tool(
            "edit_image", {"prompt": "night", "image_url": f"data:image/png;base64,{png}"}
        )
        credits = await client.call_tool("get_credits", {})
    assert structured(edited)["status"] == "succeeded", text(edited)
    assert structured(credits)["flux"][0]["remaining_amount"] == 2.5
    [upload] = emulator.state.platform.uploads.values()
    assert upload.token == alice
    assert TOKEN not in emulator.state.tokens_seen and alice not in text(credits) + text(edited)
