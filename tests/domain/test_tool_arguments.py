"""Each tool's arguments are declared once, by its model in `domain/arguments.py`, validated once per call.

The published parameters are the model's fields (names, order, which are required); a call's arguments
go through the model exactly once, before the tool runs, and the tool gets what the model validated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import pytest
from mcp import Client
from mcp_types import CallToolRequest, CallToolRequestParams, CallToolResult, TextContent

import flux_mcp.domain.arguments
import flux_mcp.domain.videos
from flux_mcp.domain.arguments import TOOL_ARGUMENTS, EditModel, FluxModel
from flux_mcp.domain.catalogue import MODELS
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from flux_mcp.server.build import build_server

pytestmark = pytest.mark.anyio

IMAGE_URL = "https://cdn.example.com/photo.png"


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def test_the_model_literals_name_the_models_of_the_catalogue() -> None:
    assert set(get_args(FluxModel)) == set(MODELS)
    assert set(get_args(EditModel)) == {name for name, info in MODELS.items() if info.can_edit}


async def test_each_tool_publishes_the_fields_of_its_arguments_model(client: Client) -> None:
    published = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
    for name, model in TOOL_ARGUMENTS.items():
        schema = published[name]
        assert list(schema.get("properties", {})) == list(model.model_fields), name
        required = [field for field, info in model.model_fields.items() if info.is_required()]
        assert schema.get("required", []) == required, name


CALLS = [
    ("generate_image", {"prompt": "a red kite", "size": "16:9"}, flux_mcp.domain.arguments, "check_size"),
    (
        "edit_image",
        {"prompt": "stormy sky", "image_url": IMAGE_URL},
        flux_mcp.domain.arguments,
        "check_image_url",
    ),
    (
        "generate_video",
        {"prompt": "a kite flies", "mode": "i2v", "keyframes": [IMAGE_URL]},
        flux_mcp.domain.videos,
        "check_image_url",
    ),
]


@pytest.mark.parametrize(("tool", "arguments", "module", "check"), CALLS, ids=[call[0] for call in CALLS])
async def test_a_call_is_validated_once_by_its_arguments_model(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    tool: str,
    arguments: dict[str, Any],
    module: Any,
    check: str,
) -> None:
    """One of the model's own checks runs once per call (it ran twice: before the tool and inside it)."""
    original: Callable[..., str] = getattr(module, check)
    calls: list[tuple[Any, ...]] = []

    def counted(*args: Any) -> str:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(module, check, counted)
    result = await client.call_tool(tool, {**arguments, "wait_seconds": 0})
    assert not result.is_error, text(result)
    assert len(calls) == 1, calls


async def test_a_text_argument_that_looks_like_json_is_taken_as_text(
    client: Client, emulator: RunningEmulator
) -> None:
    """It used to be decoded after validation and then refused with pydantic's raw report."""
    listed = await client.call_tool("list_tasks", {"query": '["kite"]'})
    assert not listed.is_error, text(listed)
    assert text(listed) == "No generations recorded yet."
    varied = await client.call_tool(
        "generate_variations", {"task_id": "abc", "prompt_suffix": '{"at": "night"}'}
    )
    assert varied.is_error and text(varied).startswith("No task 'abc' in this server's history."), text(
        varied
    )
    assert emulator.state.submissions == 0


async def test_a_json_list_sent_as_a_string_is_refused_as_the_schema_says(client: Client) -> None:
    result = await client.call_tool("get_tasks", {"task_ids": '["a", "b"]'})
    assert result.is_error
    assert text(result) == "Invalid arguments for get_tasks: task_ids: Input should be a valid list"


async def test_arguments_that_are_not_an_object_get_the_tools_refusal(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        odd: list[Any] = ["a cat", [1], 5]
        for arguments in odd:
            # Built without validation: a client library would not let these through.
            params = CallToolRequestParams.model_construct(name="generate_image", arguments=arguments)
            request = CallToolRequest.model_construct(method="tools/call", params=params)
            with pytest.warns(UserWarning):  # pydantic, serialising the odd value on the client side
                result = await client.session.send_request(request, CallToolResult)
            assert result.is_error
            assert text(result) == "Invalid arguments for generate_image: arguments must be a JSON object"
