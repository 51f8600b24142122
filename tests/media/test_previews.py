"""How much image a result carries: the preview choice per call and per server, and the resource links.

google-adk and llama-index paste the whole tool result, base64 included, into the model's text, and
langchain-mcp-adapters turns a resource link into an image the provider must fetch. So a call (or
the server, FLUX_MCP_PREVIEW) chooses previews `default`, `small` or `none`, links can be left out
(FLUX_MCP_RESOURCE_LINKS), and whatever is left out, the text summary alone says what happened.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, ImageContent, ResourceLink
from PIL import Image
from pydantic import ValidationError

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from flux_mcp.media.images import SMALL_PREVIEW_MAX_BYTES, SMALL_PREVIEW_SIDE, SMALL_RESULT_PREVIEW_BUDGET
from flux_mcp.media.pictures import PREVIEW_MAX_BYTES
from flux_mcp.server.build import build_server
from tests.support import Recorder, emulator_env, make_settings, stderr_file, stdio_session, text

pytestmark = pytest.mark.anyio

# A result with preview "none", one image: text, structured content and a link, all as JSON.
NONE_RESULT_MAX_BYTES = 3_000


def images_of(result: CallToolResult) -> list[ImageContent]:
    return [block for block in result.content if isinstance(block, ImageContent)]


def links_of(result: CallToolResult) -> list[ResourceLink]:
    return [block for block in result.content if isinstance(block, ResourceLink)]


def longest_side(block: ImageContent) -> int:
    with Image.open(io.BytesIO(base64.b64decode(block.data))) as image:
        return max(image.size)


def wire_size(result: CallToolResult) -> int:
    """Bytes of the result as it travels (and as frameworks that dump it into the model's text see it)."""
    return len(json.dumps(result.model_dump(by_alias=True, exclude_none=True, mode="json")))


def assert_summary_is_enough(result: CallToolResult) -> None:
    """The text alone names the task, every image's URL and saved file."""
    data = result.structured_content
    assert data is not None and data["status"] == "succeeded", text(result)
    summary = text(result)
    assert data["task_id"] in summary
    for image in data["images"]:
        assert image["url"] in summary and image["path"] in summary


async def test_each_preview_choice_in_one_call(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        results = {
            choice: await client.call_tool(
                "generate_image", {"prompt": f"a fox, {choice}", "preview": choice}
            )
            for choice in ("default", "small", "none")
        }
        omitted = await client.call_tool("generate_image", {"prompt": "a fox, the server's choice"})

    default, small, none = results["default"], results["small"], results["none"]
    for result in (*results.values(), omitted):
        assert not result.is_error, text(result)
        assert_summary_is_enough(result)
        assert len(links_of(result)) == 1 and links_of(result)[0].uri.startswith("flux://images/")
    [full], [thumb] = images_of(default), images_of(small)
    assert longest_side(full) == settings.preview_size and len(full.data) <= PREVIEW_MAX_BYTES
    assert longest_side(thumb) <= SMALL_PREVIEW_SIDE and len(thumb.data) <= SMALL_PREVIEW_MAX_BYTES
    assert len(thumb.data) * 2 < len(full.data)
    assert images_of(none) == []
    assert len(images_of(omitted)) == 1 and longest_side(images_of(omitted)[0]) == settings.preview_size
    assert wire_size(none) <= NONE_RESULT_MAX_BYTES < wire_size(small) < wire_size(default)


async def test_small_previews_share_a_small_budget(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "four foxes", "count": 4, "preview": "small"}
        )
    previews = images_of(result)
    assert len(previews) == 4 and all(longest_side(block) <= SMALL_PREVIEW_SIDE for block in previews)
    assert sum(len(block.data) for block in previews) <= SMALL_RESULT_PREVIEW_BUDGET


async def test_the_server_setting_is_the_default_and_a_call_overrides_it(emulator: RunningEmulator) -> None:
    async with Client(build_server(make_settings(emulator, preview="none"))) as client:
        quiet = await client.call_tool("generate_image", {"prompt": "a quiet fox"})
        asked = await client.call_tool("generate_image", {"prompt": "a fox to see", "preview": "small"})
    assert images_of(quiet) == [] and len(links_of(quiet)) == 1
    assert_summary_is_enough(quiet)
    assert len(images_of(asked)) == 1 and longest_side(images_of(asked)[0]) <= SMALL_PREVIEW_SIDE


async def test_get_task_takes_the_preview_choice_too(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        pending = await client.call_tool("generate_image", {"prompt": "later", "wait_seconds": 0})
        assert pending.structured_content is not None and pending.structured_content["status"] == "pending"
        task_id = pending.structured_content["task_id"]
        none = await client.call_tool("get_task", {"task_id": task_id, "preview": "none"})
        again = await client.call_tool("get_task", {"task_id": task_id})
    assert images_of(none) == [] and len(links_of(none)) == 1
    assert_summary_is_enough(none)
    assert len(images_of(again)) == 1  # the same finished task, previewed on request


async def test_resource_links_can_be_left_out(emulator: RunningEmulator) -> None:
    async with Client(build_server(make_settings(emulator, resource_links=False))) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a fox without links", "preview": "none"}
        )
        data = result.structured_content
        assert data is not None
        # Hosts that want the full image still find it: the URI is in the structured content, and readable.
        [image] = data["images"]
        contents = (await client.read_resource(image["resource_uri"])).contents
    assert links_of(result) == [] and images_of(result) == []
    assert_summary_is_enough(result)
    assert len(contents) == 1


async def test_a_bad_preview_choice_is_refused_before_anything_is_sent(
    emulator: RunningEmulator, settings: Settings
) -> None:
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "preview": "huge"})
    assert result.is_error and "preview" in text(result) and "'none'" in text(result)
    assert emulator.state.submissions == 0


def test_preview_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_MCP_PREVIEW", " Small ")
    monkeypatch.setenv("FLUX_MCP_RESOURCE_LINKS", "false")
    loaded = Settings()
    assert loaded.preview == "small" and loaded.resource_links is False
    monkeypatch.setenv("FLUX_MCP_PREVIEW", "tiny")
    with pytest.raises(ValidationError, match="preview"):
        Settings()


@pytest.mark.subprocess
async def test_preview_choices_over_stdio(emulator: RunningEmulator, tmp_path: Path) -> None:
    recorder = Recorder()
    env = emulator_env(emulator, tmp_path) | {"FLUX_MCP_PREVIEW": "small"}
    if "PYTHONPATH" in os.environ:  # a source tree under test, not the installed package
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    sizes: dict[str, Any] = {}
    with stderr_file(tmp_path) as errlog:
        async with stdio_session([], env, errlog, recorder) as client:
            for choice in ("default", None, "none"):
                arguments = {"prompt": f"a fox over stdio, {choice}"} | (
                    {"preview": choice} if choice else {}
                )
                result = await client.call_tool("generate_image", arguments)
                assert not result.is_error, text(result)
                assert_summary_is_enough(result)
                sizes[str(choice)] = [longest_side(block) for block in images_of(result)], wire_size(result)
    assert (
        sizes["default"][0] == [512] and sizes["None"][0] == [SMALL_PREVIEW_SIDE] and sizes["none"][0] == []
    )
    assert sizes["none"][1] <= NONE_RESULT_MAX_BYTES
    assert recorder.faults == []
