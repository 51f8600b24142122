"""Finishing a job: files kept by one component, the state recorded once, rendering without I/O."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp_types import ImageContent, ResourceLink, TextContent
from PIL import Image

from flux_mcp.domain.settings import Settings
from flux_mcp.domain.tasks import ImageInfo, TaskResult, TaskStatus, VideoInfo
from flux_mcp.emulator import RunningEmulator
from flux_mcp.history.store import History
from flux_mcp.jobs.finishing import FinishedJob, Finisher
from flux_mcp.media.images import ImageKeeper
from flux_mcp.media.pictures import Preview
from flux_mcp.media.videos import VideoKeeper
from flux_mcp.net.downloads import Downloader
from flux_mcp.server.build import build_server
from flux_mcp.server.render import present
from tests.support import structured, text

pytestmark = pytest.mark.anyio
CLIP = Path(__file__).resolve().parents[2] / "src" / "flux_mcp" / "emulator" / "clip.mp4"


def png(width: int = 48, height: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def downloader() -> AsyncIterator[Downloader]:
    """Downloads answered in-process: every .png is a small PNG, every .mp4 the emulator's clip."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith(".mp4"):
            return httpx2.Response(200, content=CLIP.read_bytes(), headers={"content-type": "video/mp4"})
        return httpx2.Response(200, content=png(), headers={"content-type": "image/png"})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as http:
        yield Downloader(http, anyio.CapacityLimiter(4), max_bytes=10_000_000, timeout=30)


def finished_result(task_id: str = "t-1", **fields: Any) -> TaskResult:
    images = [ImageInfo(index=index, url=f"https://images.test/{index}.png") for index in range(2)]
    values: dict[str, Any] = {
        "images": images,
        "prompt": "a fox",
        "model": "flux-dev",
        "elapsed_seconds": 1.0,
    }
    return TaskResult(task_id=task_id, status=TaskStatus.SUCCEEDED, **{**values, **fields})


# --- one component finishes a job, and records it once --------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("generate_image", {"prompt": "a cat", "count": 2}),
        ("generate_video", {"prompt": "a cat running", "duration": 5}),
    ],
)
async def test_a_finished_job_is_recorded_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tool: str, arguments: dict[str, Any]
) -> None:
    recorded: list[TaskResult] = []
    record = History.record_state

    async def counting(history: History, result: TaskResult, owner: str = "") -> None:
        recorded.append(result)
        await record(history, result, owner)

    monkeypatch.setattr(History, "record_state", counting)
    async with Client(build_server(settings)) as client:
        shown = structured(await client.call_tool(tool, arguments))
        listed = structured(await client.call_tool("list_tasks", {}))["tasks"]
    assert [(result.task_id, result.status) for result in recorded] == [(shown["task_id"], "succeeded")]
    files = recorded[0].videos if tool == "generate_video" else recorded[0].images
    assert all(file.path and file.resource_uri for file in files)  # recorded with its files, not before
    assert listed[0]["task_id"] == shown["task_id"] and listed[0]["status"] == "succeeded"


async def test_each_call_that_sees_a_task_records_the_state_it_saw_once(
    emulator: RunningEmulator, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[str] = []
    record = History.record_state

    async def counting(history: History, result: TaskResult, owner: str = "") -> None:
        recorded.append(result.status.value)
        await record(history, result, owner)

    monkeypatch.setattr(History, "record_state", counting)
    emulator.state.config.latency = 0.5
    async with Client(build_server(settings)) as client:
        pending = structured(await client.call_tool("generate_image", {"prompt": "a cat", "wait_seconds": 0}))
        done = structured(await client.call_tool("get_task", {"task_id": pending["task_id"]}))
    assert (pending["status"], done["status"]) == ("pending", "succeeded")
    assert recorded == ["pending", "succeeded"]


async def test_a_fault_while_keeping_files_still_records_the_state(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ImageKeeper, "keep", broken)
    failed = await client.call_tool("generate_image", {"prompt": "a cat"})
    listed = structured(await client.call_tool("list_tasks", {}))["tasks"]
    assert failed.is_error and "list_tasks" in text(failed)
    assert [item["status"] for item in listed] == ["succeeded"]  # found again, in its real state


async def test_a_later_finish_keeps_the_files_an_earlier_one_saved(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    try:
        kept = finished_result(images=[ImageInfo(index=0, url="https://images.test/0.png", path="/p/0.png")])
        await history.record_state(kept)
        # A process that keeps nothing (saving off, no previews) finishes the same task later.
        finished = await Finisher(history).finish(
            finished_result(images=[kept.images[0].model_copy(update={"path": None})])
        )
        entry = await history.find_task("t-1")
    finally:
        history.close()
    assert finished.result.images[0].path is None  # the answer says what this call did
    assert entry is not None and entry.result is not None and entry.result.images[0].path == "/p/0.png"


# --- keepers return what they kept, and leave the caller's values alone -----------------------------


async def test_keeping_images_returns_new_values_and_leaves_the_result_as_it_was(
    downloader: Downloader, tmp_path: Path
) -> None:
    keeper = ImageKeeper(downloader, folder=tmp_path, preview_size=256)
    result = finished_result()
    untouched = result.model_copy(deep=True)
    kept = await keeper.keep(result, {})
    assert result == untouched
    assert all(image.info.path and (image.info.width, image.info.height) == (48, 32) for image in kept)
    assert all(image.preview is not None for image in kept)
    again = await keeper.keep(result, {image.info.index: image.info.path or "" for image in kept})
    assert result == untouched and [image.info for image in again] == [image.info for image in kept]
    assert len(list(tmp_path.glob("*.png"))) == 2  # the saved files were reused, not saved again


async def test_keeping_a_video_returns_new_values_and_leaves_the_result_as_it_was(
    downloader: Downloader, tmp_path: Path
) -> None:
    keeper = VideoKeeper(downloader, folder=tmp_path, preview_size=256, max_bytes=10_000_000)
    result = TaskResult(
        task_id="t-v",
        status=TaskStatus.SUCCEEDED,
        kind="video",
        videos=[VideoInfo(index=0, url="https://videos.test/0.mp4", seconds=5)],
        elapsed_seconds=1.0,
    )
    untouched = result.model_copy(deep=True)
    (kept,) = await keeper.keep(result, {})
    assert result == untouched
    assert kept.info.path and kept.info.size_bytes == CLIP.stat().st_size


# --- rendering is pure ------------------------------------------------------------------------------


def test_present_turns_a_finished_job_into_content_without_any_server() -> None:
    preview = Preview(b"\xff\xd8jpeg", "image/jpeg", 8, 8)
    result = finished_result()
    job = FinishedJob(result, (preview, None))
    shown = present(job)
    kinds = [type(block) for block in shown.content]
    assert kinds == [TextContent, ImageContent, ResourceLink, ResourceLink]
    assert shown.structured_content == result.model_dump(mode="json") and not shown.is_error
    assert [type(block) for block in present(job, resource_links=False).content] == [
        TextContent,
        ImageContent,
    ]
    pending = present(FinishedJob(result.model_copy(update={"status": TaskStatus.PENDING, "images": []})))
    assert [type(block) for block in pending.content] == [TextContent]
