"""Faults found by review, each pinned by the scenario that exposed it."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from PIL import Image

from flux_mcp.cli.main import _parser
from flux_mcp.domain.errors import ImageError, RateLimitedError
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.tasks import ImageRequest, TaskResult, TaskStatus
from flux_mcp.emulator import RunningEmulator
from flux_mcp.history.store import History
from flux_mcp.media.pictures import decode
from flux_mcp.net.downloads import Downloader
from flux_mcp.server.build import build_server
from flux_mcp.upstream.flux import FluxClient
from flux_mcp.web.gate import BearerGate
from tests.support import fetch_picture, make_settings, png_bytes, structured, text, wait_for

pytestmark = pytest.mark.anyio


async def test_a_malformed_image_url_is_an_image_error_not_a_crash() -> None:
    async with httpx2.AsyncClient() as http:
        downloader = Downloader(http, anyio.CapacityLimiter(2), max_bytes=1_000_000, timeout=5)
        with pytest.raises(ImageError, match="could not download"):
            await fetch_picture(downloader, "http://[::1/x.png")
        assert await downloader.reachable("http://[::1/x.png") is False


def test_a_png_with_a_damaged_chunk_is_an_image_error() -> None:
    data = bytearray(png_bytes())
    data[12:16] = b"IHDX"  # the first chunk's type: Pillow raises SyntaxError for this
    with pytest.raises(ImageError, match="not a readable image"):
        decode(bytes(data), "damaged.png")


async def test_concurrent_get_task_calls_save_one_file(emulator: RunningEmulator, settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        pending = structured(await client.call_tool("generate_image", {"prompt": "once", "wait_seconds": 0}))
        task = emulator.state.tasks[pending["task_id"]]
        await wait_for(lambda: task.status == "succeeded")  # upstream; nobody has fetched its image yet
        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(client.call_tool, "get_task", {"task_id": pending["task_id"]})
    assert len(list(settings.image_folder().glob("*.png"))) == 1
    assert emulator.state.file_downloads == 1


async def test_a_damaged_saved_file_is_fetched_again(emulator: RunningEmulator, settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        first = structured(await client.call_tool("generate_image", {"prompt": "damaged later"}))
        Path(first["images"][0]["path"]).write_bytes(b"half a png")
        again = await client.call_tool("get_task", {"task_id": first["task_id"]})
    image = structured(again)["images"][0]
    assert not again.is_error and image["path"] and image["warning"] is None
    assert Image.open(image["path"]).size == (1024, 1024)


async def test_concurrent_history_records_of_a_new_task_do_not_collide(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    result = TaskResult(task_id="fresh", status=TaskStatus.PENDING, elapsed_seconds=0.0)
    for _ in range(20):
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(history.record_state, result)
        result = result.model_copy(update={"task_id": result.task_id + "x"})
    assert len(await history.list_tasks(100)) == 20
    history.close()


async def test_a_retry_after_that_is_not_a_number_falls_back_to_backoff() -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(429, headers={"retry-after": "nan"}, json={"success": False})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as http:
        client = FluxClient(http, "http://upstream.test", "token", sleep=_no_sleep)
        with pytest.raises(RateLimitedError):
            await client.submit(ImageRequest(action="generate", prompt="x", model="flux-dev"))


async def _no_sleep(seconds: float) -> None:
    assert seconds == seconds and seconds >= 0  # never NaN


@pytest.mark.parametrize("index", ["²", "٣", "-1", "99"])
async def test_an_odd_image_index_is_a_clear_resource_error(client: Client, index: str) -> None:
    data = structured(await client.call_tool("generate_image", {"prompt": "a cat"}))
    with pytest.raises(MCPError, match="No image"):
        await client.read_resource(f"flux://images/{data['task_id']}/{index}")


async def test_an_unexpected_fault_is_a_plain_tool_error(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flux_mcp.media import images

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(images.ImageKeeper, "keep", broken)
    result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error and "failed inside flux-mcp" in text(result) and "list_tasks" in text(result)


def test_options_before_serve_still_count() -> None:
    args = _parser().parse_args(["--sandbox", "--transport", "http", "serve", "--port", "9"])
    assert (args.sandbox, args.transport, args.port) == (True, "http", 9)


def test_generic_env_names_are_not_read_as_the_token_or_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ACEDATACLOUD_API_TOKEN", "ACEDATACLOUD_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("API_TOKEN", "someone-elses")
    monkeypatch.setenv("API_BASE_URL", "http://localhost:3000")
    settings = Settings()
    assert settings.api_token is None and settings.api_base_url == "https://api.acedata.cloud"


async def test_the_gate_guards_mcp_under_a_root_path(emulator: RunningEmulator) -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    gate = BearerGate(app, make_settings(emulator, auth_tokens="right"))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/flux/mcp", "root_path": "/flux", "headers": [], "method": "POST"}
    await gate(scope, _empty_body, send)
    assert reached == [] and sent[0]["status"] == 401


async def _empty_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def test_saving_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    from flux_mcp.media.images import save

    picture = decode(png_bytes(), "test")
    first = save(tmp_path, picture, {"task_id": "same", "prompt": "same"}, index=0)
    second = save(tmp_path, picture, {"task_id": "same", "prompt": "same"}, index=0)
    assert first.path != second.path
    assert first.path.read_bytes() == second.path.read_bytes() == picture.data
    written = {first.path.name, first.sidecar.name, second.path.name, second.sidecar.name}
    assert {path.name for path in tmp_path.iterdir()} == written  # and nothing else


def test_a_write_that_fails_halfway_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk mid-write: the error reaches the caller, and no half an image is left to be served."""
    from flux_mcp.media.images import save

    real_open = Path.open

    class FullDisk:
        def __init__(self, file: Any) -> None:
            self.file = file

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, data: bytes) -> int:
            self.file.write(data[: len(data) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_on_a_full_disk(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened = real_open(path, mode, *args, **kwargs)
        return FullDisk(opened) if "x" in mode else opened

    monkeypatch.setattr(Path, "open", open_on_a_full_disk)
    with pytest.raises(OSError, match="No space left"):
        save(tmp_path, decode(png_bytes(), "test"), {"task_id": "full", "prompt": "full"}, index=0)
    assert list(tmp_path.iterdir()) == []
