"""A long-running server's per-task memory stays bounded: the keepers' locks and saved-path maps."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx2
import pytest
from PIL import Image

import flux_mcp.media.images
import flux_mcp.media.videos
from flux_mcp.domain.tasks import ImageInfo, TaskResult, TaskStatus, VideoInfo
from flux_mcp.media.bounded import KeyedLocks, Recent
from flux_mcp.media.images import ImageKeeper
from flux_mcp.media.videos import VideoKeeper
from flux_mcp.net.downloads import Downloader

pytestmark = pytest.mark.anyio
CLIP = Path(flux_mcp.media.videos.__file__).parent.parent / "emulator" / "clip.mp4"
TASKS = 60
AT_ONCE = 4  # tasks finishing at the same time: far fewer than are remembered, as in a server
REMEMBERED = 16


@pytest.fixture
async def downloader() -> AsyncIterator[Downloader]:
    """Downloads answered in-process: every .png a small PNG, every .mp4 the emulator's clip."""
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), "teal").save(buffer, format="PNG")
    png, clip = buffer.getvalue(), CLIP.read_bytes()

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith(".mp4"):
            return httpx2.Response(200, content=clip, headers={"content-type": "video/mp4"})
        return httpx2.Response(200, content=png, headers={"content-type": "image/png"})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as http:
        yield Downloader(http, anyio.CapacityLimiter(4), max_bytes=10_000_000, timeout=30)


@pytest.fixture(autouse=True)
def small_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bound small enough that TASKS tasks pass it several times."""
    monkeypatch.setattr(flux_mcp.media.images, "SAVED_PATHS_REMEMBERED", REMEMBERED)
    monkeypatch.setattr(flux_mcp.media.videos, "SAVED_PATHS_REMEMBERED", REMEMBERED)


def image_task(number: int) -> TaskResult:
    image = ImageInfo(index=0, url=f"https://images.test/{number}.png")
    return TaskResult(task_id=f"t-{number}", status=TaskStatus.SUCCEEDED, images=[image], elapsed_seconds=1.0)


def video_task(number: int) -> TaskResult:
    video = VideoInfo(index=0, url=f"https://videos.test/{number}.mp4", seconds=5)
    return TaskResult(
        task_id=f"v-{number}", status=TaskStatus.SUCCEEDED, kind="video", videos=[video], elapsed_seconds=1.0
    )


async def keep_in_waves(keeper: ImageKeeper | VideoKeeper, task: Callable[[int], TaskResult]) -> None:
    """TASKS tasks, AT_ONCE at a time, each kept by two calls at once (the lock makes them save it once)."""
    for wave in range(0, TASKS, AT_ONCE):
        async with anyio.create_task_group() as group:
            for number in range(wave, wave + AT_ONCE):
                for _ in range(2):
                    group.start_soon(keeper.keep, task(number), {})


async def test_many_image_tasks_leave_no_lock_and_a_bounded_map_of_saved_files(
    downloader: Downloader, tmp_path: Path
) -> None:
    keeper = ImageKeeper(downloader, folder=tmp_path, preview_size=0)
    await keep_in_waves(keeper, image_task)
    assert len(list(tmp_path.glob("*.png"))) == TASKS
    assert len(keeper._locks) == 0  # private: what this test is about
    assert len(keeper._saved) == REMEMBERED


async def test_many_video_tasks_leave_no_lock_and_a_bounded_map_of_saved_files(
    downloader: Downloader, tmp_path: Path
) -> None:
    keeper = VideoKeeper(downloader, folder=tmp_path, preview_size=0, max_bytes=10_000_000)
    await keep_in_waves(keeper, video_task)
    assert len(list(tmp_path.glob("*.mp4"))) == TASKS
    assert len(keeper._locks) == 0
    assert len(keeper._saved) == REMEMBERED


# --- the two bounded shapes ---------------------------------------------------------------------------


async def test_a_keyed_lock_excludes_while_held_and_is_forgotten_after() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    inside: list[str] = []
    most = 0

    async def hold(key: str) -> None:
        nonlocal most
        async with locks.hold(key):
            inside.append(key)
            most = max(most, inside.count("a"))
            await anyio.lowlevel.checkpoint()  # let the others try meanwhile
            inside.remove(key)

    async with anyio.create_task_group() as group:
        for key in ["a", "a", "a", "b"]:
            group.start_soon(hold, key)
    assert most == 1 and len(locks) == 0


async def test_a_cancelled_waiter_does_not_leave_its_lock_behind() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    holding, release = anyio.Event(), anyio.Event()

    async def holder() -> None:
        async with locks.hold("a"):
            holding.set()
            await release.wait()

    async def waiter(scope: anyio.CancelScope) -> None:
        with scope:
            async with locks.hold("a"):
                pytest.fail("the waiter got the lock while it was held")

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(holder)
        await holding.wait()
        group.start_soon(waiter, scope)
        await anyio.wait_all_tasks_blocked()
        assert len(locks) == 1
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert len(locks) == 0


def test_recent_keeps_the_last_values_used() -> None:
    recent: Recent[int, str] = Recent(3)
    for number in range(5):
        recent.put(number, str(number))
    assert len(recent) == 3 and recent.get(0) is None and recent.get(2) == "2"
    recent.put(5, "5")  # 2 was read: 3 is now the oldest
    assert recent.get(3) is None and [recent.get(key) for key in (2, 4, 5)] == ["2", "4", "5"]
