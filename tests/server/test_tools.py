"""The tools as an MCP client sees them, against the emulator on a real loopback port."""

from __future__ import annotations

import io
import logging
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp_types import CallToolResult
from PIL import Image

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import Fault, RunningEmulator
from flux_mcp.server.build import build_server
from tests.support import TOKEN, WAIT_BOUND, finish_tasks_now, make_settings, structured, text, wait_for

pytestmark = pytest.mark.anyio


# --- the tool list -----------------------------------------------------------------------


async def test_tool_list_schemas_and_annotations(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {
        "generate_image",
        "edit_image",
        "generate_variations",
        "generate_video",
        "get_task",
        "get_tasks",
        "list_tasks",
        "get_credits",
    }

    generate = tools["generate_image"].input_schema["properties"]
    assert generate["count"]["minimum"] == 1 and generate["count"]["maximum"] == 4
    # Defaults are published in the description: OpenAI strict mode refuses a `default` keyword.
    assert "flux-2-pro" in generate["model"]["enum"]
    assert "Default: flux-dev." in generate["model"]["description"]
    assert "flux-2-pro" in generate["model"]["description"]  # one line of guidance per model
    assert generate["prompt"]["minLength"] == 1 and generate["prompt"]["maxLength"] >= 1000
    assert "aspect ratio" in generate["size"]["description"]
    assert tools["generate_image"].input_schema["required"] == ["prompt"]

    edit = tools["edit_image"].input_schema["properties"]
    assert "flux-2-klein" not in edit["model"]["enum"]
    assert "Default: flux-kontext-pro." in edit["model"]["description"]
    # Every accepted form of the image, each with an example (paths are not URIs: no "format": "uri").
    described = edit["image_url"]["description"]
    examples = ("https://", "flux://images/", "~/Pictures/cat.jpg", "C:\\Users", "file:///", "data:image/")
    for example in examples:
        assert example in described, example
    assert "format" not in edit["image_url"]
    assert tools["get_tasks"].input_schema["properties"]["task_ids"]["maxItems"] == 50

    for name, tool in tools.items():
        assert tool.description and tool.title, name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", name
        annotations = tool.annotations
        assert annotations is not None and annotations.title
        if name == "list_tasks":
            assert annotations.read_only_hint is True and annotations.open_world_hint is False
        elif name.startswith("get_"):
            assert annotations.read_only_hint is True and annotations.open_world_hint is True
        else:
            assert annotations.idempotent_hint is False and annotations.read_only_hint is False
            assert annotations.open_world_hint is True
    assert set(tools["generate_image"].output_schema["properties"]) >= {
        "task_id",
        "status",
        "model",
        "prompt",
        "images",
        "elapsed_seconds",
        "trace_id",
        "error",
    }


async def test_server_lists_tools_without_a_token(emulator: RunningEmulator) -> None:
    settings = make_settings(emulator, api_token=None)
    async with Client(build_server(settings)) as client:
        assert len((await client.list_tools()).tools) == 8
        result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error and "ACEDATACLOUD_API_TOKEN" in text(result)
    assert emulator.state.submissions == 0


# --- success, pending, failure ----------------------------------------------------------------


async def test_generate_returns_finished_images_in_one_call(
    client: Client, emulator: RunningEmulator
) -> None:
    result = await client.call_tool("generate_image", {"prompt": "a white siamese cat", "count": 2})
    assert not result.is_error, text(result)
    data = structured(result)
    assert data["status"] == "succeeded" and data["model"] == "flux-dev" and data["size"] == "1024x1024"
    assert len(data["images"]) == 2 and data["trace_id"]
    assert data["task_id"] in text(result) and data["images"][1]["url"] in text(result)
    assert emulator.state.submissions == 1
    submitted = emulator.state.tasks[data["task_id"]].request
    assert submitted["async"] is True and submitted["action"] == "generate" and submitted["count"] == 2
    async with httpx2.AsyncClient() as http:
        png = (await http.get(data["images"][0]["url"])).content
    assert Image.open(io.BytesIO(png)).size == (1024, 1024)


async def test_default_size_is_sent_for_ratio_only_models(client: Client, emulator: RunningEmulator) -> None:
    result = await client.call_tool("generate_image", {"prompt": "a poster", "model": "flux-2-pro"})
    data = structured(result)
    assert data["status"] == "succeeded" and data["size"] == "1:1"
    assert emulator.state.tasks[data["task_id"]].request["size"] == "1:1"


async def test_edit_image_uses_kontext_by_default(client: Client, emulator: RunningEmulator) -> None:
    args = {"prompt": "make it night", "image_url": "https://cdn.example.com/photo.png", "size": "16:9"}
    result = await client.call_tool("edit_image", args)
    data = structured(result)
    assert data["status"] == "succeeded" and data["model"] == "flux-kontext-pro"
    request = emulator.state.tasks[data["task_id"]].request
    assert request["action"] == "edit" and request["image_url"] == "https://cdn.example.com/photo.png"


async def test_pending_task_finishes_through_get_task(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 600.0  # finished below, when the test says so
    async with Client(build_server(make_settings(emulator))) as client:
        first = await client.call_tool("generate_image", {"prompt": "a slow cat", "wait_seconds": 0.3})
        data = structured(first)
        assert not first.is_error and data["status"] == "pending" and data["images"] == []
        assert f'get_task with task_id "{data["task_id"]}"' in text(first)
        assert data["next_step"]
        finish_tasks_now(emulator)
        second = await client.call_tool("get_task", {"task_id": data["task_id"]})
    finished = structured(second)
    assert finished["status"] == "succeeded" and finished["images"]
    assert finished["prompt"] == "a slow cat" and finished["model"] == "flux-dev"
    assert emulator.state.submissions == 1


async def test_an_ended_task_is_shown_again_from_the_history_without_asking_upstream(
    client: Client, emulator: RunningEmulator
) -> None:
    """An ended task never changes upstream: get_task shows it again from the history, with its files."""
    done = await client.call_tool("generate_image", {"prompt": "a cat", "count": 2})
    emulator.state.faults.append(Fault("fail_task"))
    failed = await client.call_tool("generate_image", {"prompt": "a dog"})
    reads, downloads = emulator.state.polls + emulator.state.batch_polls, emulator.state.file_downloads
    again = await client.call_tool("get_task", {"task_id": structured(done)["task_id"]})
    failed_again = await client.call_tool("get_task", {"task_id": structured(failed)["task_id"]})
    assert (emulator.state.polls + emulator.state.batch_polls, emulator.state.file_downloads) == (
        reads,
        downloads,
    )
    assert structured(again)["images"] == structured(done)["images"]
    assert [block.type for block in again.content] == [block.type for block in done.content]
    assert failed_again.is_error and structured(failed_again)["error"] == structured(failed)["error"]
    assert not structured(again)["attached"] and "Continuing task" not in text(again)


async def test_wait_seconds_zero_returns_at_once_without_polling(
    client: Client, emulator: RunningEmulator
) -> None:
    result = await client.call_tool("generate_image", {"prompt": "a cat", "wait_seconds": 0})
    assert structured(result)["status"] == "pending"
    assert emulator.state.polls == 0


async def test_call_wait_cannot_exceed_server_limit(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 5.0  # a call that waited its own 60 s would come back succeeded
    async with Client(build_server(make_settings(emulator, wait_seconds=0.2))) as client:
        result = await client.call_tool("generate_image", {"prompt": "a cat", "wait_seconds": 60})
    assert structured(result)["status"] == "pending"
    (task,) = emulator.state.tasks.values()
    assert task.status == "running"  # the server's 0.2 s ended the wait, not the task


async def test_failed_task_reports_the_upstream_reason(client: Client, emulator: RunningEmulator) -> None:
    emulator.state.faults.append(Fault("fail_task"))
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error
    data = structured(result)
    assert data["status"] == "failed" and data["error"]["message"] == "content generation failed (emulated)"
    assert "failed" in text(result) and "content generation failed" in text(result)


async def test_get_tasks_returns_known_and_missing(client: Client, emulator: RunningEmulator) -> None:
    done = structured(await client.call_tool("generate_image", {"prompt": "one"}))
    emulator.state.config.latency = 30.0
    pending = structured(await client.call_tool("generate_image", {"prompt": "two", "wait_seconds": 0}))
    result = await client.call_tool("get_tasks", {"task_ids": [done["task_id"], pending["task_id"], "nope"]})
    batch = structured(result)
    statuses = {task["task_id"]: task["status"] for task in batch["tasks"]}
    assert statuses == {done["task_id"]: "succeeded", pending["task_id"]: "pending"}
    assert batch["missing"] == ["nope"]


async def test_unknown_task_id_says_so(client: Client) -> None:
    result = await client.call_tool("get_task", {"task_id": "does-not-exist"})
    assert result.is_error
    assert "does-not-exist" in text(result) and "no task" in text(result).lower()


# --- progress and cancellation --------------------------------------------------------------


async def test_progress_notifications_reach_the_client(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 600.0  # finished below, once two looks have reported progress
    seen: list[tuple[float, str | None]] = []
    looked_twice = anyio.Event()
    results: list[CallToolResult] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))
        if sum("elapsed" in (said or "") for _, said in seen) >= 2:
            looked_twice.set()

    async with Client(build_server(make_settings(emulator))) as client, anyio.create_task_group() as group:

        async def call() -> None:
            results.append(
                await client.call_tool("generate_image", {"prompt": "a cat"}, progress_callback=on_progress)
            )

        group.start_soon(call)
        with anyio.fail_after(WAIT_BOUND):
            await looked_twice.wait()
        finish_tasks_now(emulator)
    (result,) = results
    assert structured(result)["status"] == "succeeded"
    assert len(seen) >= 3
    assert any("Submitted" in (message or "") for _, message in seen)
    assert any("elapsed" in (message or "") for _, message in seen)
    progress_values = [progress for progress, _ in seen]
    assert progress_values == sorted(progress_values)


async def test_cancelled_call_stops_waiting_but_not_the_task(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 600.0
    submitted = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if "Submitted" in (message or ""):
            submitted.set()

    async with Client(build_server(make_settings(emulator))) as client:
        async with anyio.create_task_group() as group:

            async def call() -> None:
                arguments = {"prompt": "cancel me"}
                await client.call_tool("generate_image", arguments, progress_callback=on_progress)
                pytest.fail("the call should have been cancelled")

            group.start_soon(call)
            with anyio.fail_after(WAIT_BOUND):
                await submitted.wait()
            group.cancel_scope.cancel()
        assert emulator.state.accepted == 1
        (task_id,) = emulator.state.tasks
        finish_tasks_now(emulator)
        result = await client.call_tool("get_task", {"task_id": task_id})
    assert structured(result)["status"] == "succeeded"
    assert emulator.state.submissions == 1


async def test_legacy_protocol_clients_get_the_same_result(settings: Settings) -> None:
    async with Client(build_server(settings), mode="legacy") as client:
        result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert structured(result)["status"] == "succeeded"


# --- errors -------------------------------------------------------------------------------------


async def test_wrong_token_names_the_setting(emulator: RunningEmulator) -> None:
    async with Client(build_server(make_settings(emulator, api_token="wrong-token"))) as client:
        result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error and "ACEDATACLOUD_API_TOKEN" in text(result)
    assert "wrong-token" not in text(result)


async def test_rate_limit_is_retried_honouring_retry_after(client: Client, emulator: RunningEmulator) -> None:
    emulator.state.config.retry_after = 0.2
    emulator.state.faults.extend([Fault("429"), Fault("429")])
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert structured(result)["status"] == "succeeded"
    assert emulator.state.submissions == 3 and emulator.state.accepted == 1


async def test_persistent_rate_limit_says_when_to_retry(client: Client, emulator: RunningEmulator) -> None:
    emulator.state.config.retry_after = 0.1
    emulator.state.faults.extend([Fault("429")] * 10)
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error and "rate limit" in text(result) and "try again in" in text(result)
    assert emulator.state.accepted == 0


async def test_long_retry_after_is_reported_not_slept(client: Client, emulator: RunningEmulator) -> None:
    emulator.state.config.retry_after = 120
    emulator.state.faults.append(Fault("429"))
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error and "try again in 120 s" in text(result)
    assert emulator.state.submissions == 1


@pytest.mark.parametrize("kind", ["500", "drop_after"])
async def test_ambiguous_submit_failure_is_never_resubmitted(
    client: Client, emulator: RunningEmulator, kind: str
) -> None:
    emulator.state.faults.append(Fault(kind))  # type: ignore[arg-type]
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error and "not resubmitted" in text(result)
    assert emulator.state.submissions == 1


async def test_refused_connection_is_retried_then_reported(emulator: RunningEmulator) -> None:
    settings = make_settings(emulator, api_base_url="http://127.0.0.1:9", retry_max_seconds=0.05)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error and "Could not connect" in text(result)


@pytest.mark.parametrize("kind", ["500", "502_html", "drop_before", "truncated_json"])
async def test_retrieval_failures_are_retried(client: Client, emulator: RunningEmulator, kind: str) -> None:
    emulator.state.faults.append(Fault(kind, endpoint="tasks"))  # type: ignore[arg-type]
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert structured(result)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("403", "moderation"),
        ("502_html", "HTTP 502"),
        ("empty", "not JSON"),
        ("not_json_200", "not JSON"),
        ("success_false_200", "plain string error"),
        ("400", "rejected"),
    ],
)
async def test_odd_upstream_answers_become_clear_errors(
    client: Client, emulator: RunningEmulator, kind: str, expected: str
) -> None:
    emulator.state.faults.append(Fault(kind))  # type: ignore[arg-type]
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error and expected in text(result), text(result)
    assert "Traceback" not in text(result) and "<html" not in text(result)


async def test_token_never_appears_in_results_or_logs(
    client: Client, emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    emulator.state.faults.extend([Fault("429"), Fault("500"), Fault("401"), Fault("success_false_200")])
    for _ in range(5):
        result = await client.call_tool("generate_image", {"prompt": f"a cat {TOKEN}"})
        outputs.append(result.model_dump_json())
    outputs.append((await client.call_tool("get_task", {"task_id": "missing"})).model_dump_json())
    outputs.append((await client.list_tools()).model_dump_json())
    assert TOKEN in emulator.state.tokens_seen  # the token was used...
    for output in outputs:
        # ...but the only place it may show is the caller's own prompt echoed back.
        assert TOKEN not in output.replace(f"a cat {TOKEN}", "")
    assert TOKEN not in caplog.text


# --- load ---------------------------------------------------------------------------------------


async def test_two_hundred_concurrent_calls_finish_together(emulator: RunningEmulator) -> None:
    """All 200 are waiting at once, then all finish; how fast is `python -m benchmarks` (concurrency)."""
    emulator.state.config.latency = 600.0  # no task ends before every call is waiting on its own
    # The waiting machinery alone: image files and previews are measured in their own tests.
    settings = make_settings(
        emulator, poll_min_seconds=1.0, poll_max_seconds=1.0, wait_seconds=60, save=False, preview_size=0
    )
    results: list[CallToolResult] = []
    async with Client(build_server(settings)) as client, anyio.create_task_group() as group:

        async def one(index: int) -> None:
            results.append(await client.call_tool("generate_image", {"prompt": f"cat {index}"}))

        for index in range(200):
            group.start_soon(one, index)
        await wait_for(lambda: emulator.state.accepted == 200)
        assert results == []  # nobody's call waited for another's to end before submitting
        finish_tasks_now(emulator)
    assert len(results) == 200
    assert all(structured(result)["status"] == "succeeded" for result in results)
    assert emulator.state.submissions == emulator.state.accepted == 200


async def test_calls_beyond_the_concurrency_limit_say_they_are_queued(emulator: RunningEmulator) -> None:
    emulator.state.faults.append(Fault("slow", delay=600))  # the first submit holds the only slot
    messages: list[str] = []
    queued = anyio.Event()
    results: list[CallToolResult] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")
        if (message or "").startswith("Queued: 1 upstream requests ahead"):
            queued.set()

    async def second(client: Client) -> None:
        arguments = {"prompt": "second"}
        results.append(await client.call_tool("generate_image", arguments, progress_callback=on_progress))

    holder = anyio.CancelScope()

    async def first(client: Client) -> None:
        with holder:
            await client.call_tool("generate_image", {"prompt": "first"})

    async with (
        Client(build_server(make_settings(emulator, max_concurrency=1))) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(first, client)
        await wait_for(lambda: emulator.state.submissions == 1)  # the first is held in its slow submit
        group.start_soon(second, client)
        with anyio.fail_after(WAIT_BOUND):
            await queued.wait()
        holder.cancel()  # the first call gives its slot up: the second goes ahead
    (result,) = results
    assert structured(result)["status"] == "succeeded", text(result)


async def test_a_final_503_with_retry_after_is_not_reported_as_maybe_billed(
    client: Client, emulator: RunningEmulator
) -> None:
    emulator.state.config.retry_after = 0.05
    emulator.state.faults.extend([Fault("503")] * 10)
    result = await client.call_tool("generate_image", {"prompt": "refused"})
    assert result.is_error and "not resubmitted" not in text(result)
    listed = structured(await client.call_tool("list_tasks", {}))
    assert listed["tasks"][0]["status"] == "rejected"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_clients_that_ask_for_logs_get_milestones_and_warnings(
    emulator: RunningEmulator, settings: Settings, mode: str
) -> None:
    emulator.state.faults.append(Fault("500", endpoint="files"))  # the image cannot be saved
    received: list[tuple[str, str]] = []

    async def on_log(params: Any) -> None:
        received.append((str(params.level), str(params.data)))

    async with Client(build_server(settings), mode=mode, log_level="info", logging_callback=on_log) as client:
        await client.call_tool("generate_image", {"prompt": "a logged cat"})
    levels = [level for level, _ in received]
    assert any(message.startswith("Submitted task") for _, message in received), received
    assert "warning" in levels and any("HTTP 500" in message for _, message in received), received
    assert all(TOKEN not in message for _, message in received)


async def test_clients_that_do_not_ask_get_no_logs(settings: Settings) -> None:
    received: list[Any] = []

    async def on_log(params: Any) -> None:
        received.append(params)

    async with Client(build_server(settings), logging_callback=on_log) as client:  # no log_level: no opt-in
        result = await client.call_tool("generate_image", {"prompt": "a quiet cat"})
    assert structured(result)["status"] == "succeeded" and received == []
