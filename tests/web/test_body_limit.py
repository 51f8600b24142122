"""A `data:` URL over real streamable HTTP: the promised 20 MB fits in one request, and a request too large
for the service is answered with an error the client passes on to the model, not a bare HTTP 413.
"""

from __future__ import annotations

import base64
import io
import os

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult
from PIL import Image

from flux_mcp.domain.inputs import MAX_INPUT_BYTES
from flux_mcp.emulator import RunningEmulator
from flux_mcp.web.gate import MAX_BODY_BYTES
from tests.support import http_service, mcp_client, structured, text
from tests.support.web import CLIENT_TOKEN, token_settings

pytestmark = pytest.mark.anyio


def noise_png(side: int) -> bytes:
    """A PNG of random pixels: it compresses to about its raw size, 3 bytes a pixel."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


async def edit(client: Client, image_url: str) -> CallToolResult:
    return await client.call_tool("edit_image", {"prompt": "make it a watercolor", "image_url": image_url})


async def test_a_5_mb_data_url_is_edited_over_http(emulator: RunningEmulator) -> None:
    png = noise_png(1300)
    assert len(png) > 5_000_000  # beyond the SDK's default limit of 4 MiB a request
    async with (
        http_service(token_settings(emulator)) as base_url,
        mcp_client(base_url, CLIENT_TOKEN) as client,
    ):
        result = await edit(client, data_url(png))
    assert structured(result)["status"] == "succeeded", text(result)
    assert [upload.data for upload in emulator.state.platform.uploads.values()] == [png]


async def test_a_data_url_of_the_largest_accepted_size_reaches_the_tool(emulator: RunningEmulator) -> None:
    largest = "data:image/png;base64," + "A" * (4 * (MAX_INPUT_BYTES // 3))  # 20 MB of zeros once decoded
    async with (
        http_service(token_settings(emulator)) as base_url,
        mcp_client(base_url, CLIENT_TOKEN) as client,
    ):
        result = await edit(client, largest)
    # The tool itself looked at it (and found no image there): the request was not refused for its size.
    assert result.is_error and "not an image" in text(result), text(result)
    assert emulator.state.platform.upload_requests == emulator.state.submissions == 0


async def test_a_request_over_the_limit_gets_an_error_the_model_can_read(emulator: RunningEmulator) -> None:
    too_big = "data:image/png;base64," + "A" * MAX_BODY_BYTES
    async with (
        http_service(token_settings(emulator)) as base_url,
        mcp_client(base_url, CLIENT_TOKEN) as client,
    ):
        with pytest.raises(MCPError) as refused:
            await edit(client, too_big)
        still = await client.call_tool("list_tasks", {})  # the session is unharmed
    message = str(refused.value)
    assert "at most 28 MB" in message and "one image of up to 20 MB" in message, message
    assert not still.is_error
    assert emulator.state.platform.upload_requests == emulator.state.submissions == 0
