"""A finished task shown again is not decoded again (issue 16 §4): previews remembered by content.

get_task on a finished task, the gallery and an attached retry preview the saved file once more; the
file's bytes are the ones previewed when the task finished. `images.PreviewCache` remembers each
decode's outcome by the bytes' digest and the preview's size, bounded in bytes, so the same picture
costs a hash, while a file that changed on disk is decoded afresh.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from mcp import Client
from mcp_types import CallToolResult, ImageContent
from PIL import Image

from flux_mcp.domain.settings import Settings
from flux_mcp.media.images import PreviewCache
from flux_mcp.media.pictures import decode
from flux_mcp.server.build import build_server

pytestmark = pytest.mark.anyio


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def preview_color(result: CallToolResult) -> tuple[int, ...]:
    [block] = [block for block in result.content if isinstance(block, ImageContent)]
    with Image.open(io.BytesIO(base64.b64decode(block.data))) as image:
        pixel = image.convert("RGB").getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return pixel


async def test_a_finished_task_shown_again_is_not_decoded_again(
    settings: Settings, decodes: list[tuple[int, int]]
) -> None:
    async with Client(build_server(settings)) as client:
        made = await client.call_tool("generate_image", {"prompt": "a red kite"})
        task_id = (made.structured_content or {})["task_id"]
        after_generate = len(decodes)
        again = [await client.call_tool("get_task", {"task_id": task_id}) for _ in range(3)]
    assert after_generate == 1  # downloaded, checked and previewed in one decode
    assert len(decodes) == after_generate  # the saved file's bytes were previewed already: no decode
    for result in again:
        assert (result.structured_content or {})["status"] == "succeeded"
        assert any(isinstance(block, ImageContent) for block in result.content)  # the preview is kept


async def test_a_saved_file_changed_on_disk_is_previewed_afresh(
    settings: Settings, decodes: list[tuple[int, int]]
) -> None:
    async with Client(build_server(settings)) as client:
        made = await client.call_tool("generate_image", {"prompt": "a kite"})
        data = made.structured_content or {}
        path = Path(data["images"][0]["path"])
        width, height = data["images"][0]["width"], data["images"][0]["height"]
        path.write_bytes(png(width, height, (0, 200, 0)))  # the user painted it green
        shown = await client.call_tool("get_task", {"task_id": data["task_id"]})
    assert len(decodes) == 2
    red, green, blue = preview_color(shown)[:3]
    assert green > 150 and red < 60 and blue < 60


def test_the_cache_keeps_within_its_byte_bound_dropping_the_least_recently_used() -> None:
    pictures = [png(64, 64, (index * 40, 0, 0)) for index in range(6)]
    sizes = [len(decode(data, "x.png", 64).preview.data) for data in pictures]  # type: ignore[union-attr]
    bound = PreviewCache.ENTRY_OVERHEAD * 3 + sum(sorted(sizes)[-3:])  # room for three, whichever they are
    cache = PreviewCache(max_bytes=bound)
    for data in pictures[:3]:
        cache.decode(data, "x.png", 64)
    cache.decode(pictures[0], "x.png", 64)  # used again: now the most recent
    cache.decode(pictures[3], "x.png", 64)  # one has to go: the least recently used, pictures[1]
    assert cache.size_bytes <= bound
    assert cache.holds(pictures[0], 64) and cache.holds(pictures[2], 64) and cache.holds(pictures[3], 64)
    assert not cache.holds(pictures[1], 64)
    assert not cache.holds(pictures[0], 32)  # another preview size is another entry


def test_a_remembered_decode_answers_as_the_decode_did() -> None:
    data = png(300, 200, (10, 20, 30))
    cache = PreviewCache()
    first, second = cache.decode(data, "a.png", 128), cache.decode(data, "b.png", 128)
    assert second == first == decode(data, "a.png", 128)
