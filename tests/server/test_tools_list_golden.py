"""What the server publishes, byte for byte: the listings every client reads before its first call.

tools/list, resources/list, resources/templates/list, prompts/list and the initialize answer
(instructions, capabilities) are compared with the files in `tests/golden/`, for the three kinds of
client that see different listings: a plain client, a client on the older protocol (2025-11-25, as
many hosts still speak it) and an MCP Apps client (which also sees the gallery's tools and page).
A refactoring that should change nothing must leave them as they are. When a change to what is
published is intended, regenerate the files and review the diff:

    FLUX_MCP_UPDATE_GOLDEN=1 pytest tests/server/test_tools_list_golden.py
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import mcp.client
import pytest
from mcp import Client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from pydantic import BaseModel

from flux_mcp.domain.settings import Settings
from flux_mcp.server.build import build_server

pytestmark = pytest.mark.anyio

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("FLUX_MCP_UPDATE_GOLDEN") == "1"
CLIENTS = ["plain", "legacy", "apps"]


def wire(value: BaseModel) -> Any:
    return value.model_dump(mode="json", by_alias=True, exclude_none=True)


def canonical(data: Any) -> str:
    """As JSON with sorted keys: equal listings, equal bytes."""
    return json.dumps(data, sort_keys=True, indent=1) + "\n"


def connect(settings: Settings, kind: str) -> Client:
    server = build_server(settings)
    if kind == "apps":
        return Client(server, extensions=[mcp.client.advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})])
    return Client(server, mode="legacy" if kind == "legacy" else "auto")


async def listings(settings: Settings, kind: str) -> dict[str, str]:
    """File name -> canonical JSON of one listing, as this kind of client receives it."""
    async with connect(settings, kind) as client:
        server_info = client.server_info
        initialize = {
            "instructions": client.instructions,
            "capabilities": wire(client.server_capabilities),
            "serverInfo": {"name": server_info.name, "title": server_info.title} if server_info else None,
        }
        tools = await client.list_tools()
        # sort_keys hides the order of a tool's parameters, which hosts show as it is: kept on its own.
        order = {tool.name: list(tool.input_schema.get("properties", {})) for tool in tools.tools}
        return {
            f"{kind}.initialize.json": canonical(initialize),
            f"{kind}.tools.json": canonical(wire(tools)),
            f"{kind}.parameter_order.json": json.dumps(order, indent=1) + "\n",
            f"{kind}.resources.json": canonical(wire(await client.list_resources())),
            f"{kind}.resource_templates.json": canonical(wire(await client.list_resource_templates())),
            f"{kind}.prompts.json": canonical(wire(await client.list_prompts())),
        }


@pytest.mark.parametrize("kind", CLIENTS)
async def test_listings_are_byte_identical_to_the_golden_files(settings: Settings, kind: str) -> None:
    for name, text in (await listings(settings, kind)).items():
        path = GOLDEN / name
        if UPDATE:
            GOLDEN.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
            continue
        assert path.exists(), f"{path} is missing: FLUX_MCP_UPDATE_GOLDEN=1 pytest {Path(__file__).name}"
        expected = path.read_text(encoding="utf-8")
        diff = difflib.unified_diff(expected.splitlines(), text.splitlines(), "golden", "now", lineterm="")
        assert text == expected, f"{name} changed:\n" + "\n".join(list(diff)[:80])


async def test_the_golden_files_cover_every_tool_each_client_sees(settings: Settings) -> None:
    """The files are not empty shells: the Apps listing names the app-only tools, the plain one does not."""
    plain = json.loads((GOLDEN / "plain.tools.json").read_text(encoding="utf-8"))
    apps = json.loads((GOLDEN / "apps.tools.json").read_text(encoding="utf-8"))
    plain_names = {tool["name"] for tool in plain["tools"]}
    apps_names = {tool["name"] for tool in apps["tools"]}
    assert {"generate_image", "edit_image", "generate_video", "get_task", "list_tasks"} <= plain_names
    assert apps_names - plain_names == {"preview_image", "play_video"}
    assert all(tool["inputSchema"]["properties"] is not None for tool in plain["tools"])
