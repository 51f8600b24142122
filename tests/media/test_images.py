"""Images the assistant sees and the user keeps: previews, saved files, history, resources."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp_types import BlobResourceContents, CallToolResult, ImageContent, ResourceLink, TextResourceContents
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from flux_mcp.domain.errors import ImageError
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import Fault, RunningEmulator, serve_asgi
from flux_mcp.media.images import RESULT_PREVIEW_BUDGET, preview_budget, save
from flux_mcp.media.pictures import PREVIEW_MAX_BYTES, decode
from flux_mcp.net.downloads import Downloader
from flux_mcp.server.build import build_server
from tests.support import fetch_picture, make_settings, noise_png, structured, text

pytestmark = pytest.mark.anyio


def previews_of(result: CallToolResult) -> list[ImageContent]:
    return [block for block in result.content if isinstance(block, ImageContent)]


# --- previews ---------------------------------------------------------------------------------


async def test_one_image_result_has_a_small_preview_and_a_resource_link(
    emulator: RunningEmulator, settings: Settings
) -> None:
    emulator.state.config.image_long_side = 2048
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a cat", "size": "1:1", "model": "flux-pro"}
        )
    (preview,) = previews_of(result)
    assert preview.mime_type == "image/jpeg" and len(preview.data) <= PREVIEW_MAX_BYTES
    assert max(Image.open(io.BytesIO(base64.b64decode(preview.data))).size) == 512
    (link,) = [block for block in result.content if isinstance(block, ResourceLink)]
    task_id = structured(result)["task_id"]
    assert str(link.uri) == f"flux://images/{task_id}/0"
    assert structured(result)["images"][0]["resource_uri"] == str(link.uri)
    assert len(result.model_dump_json(by_alias=True, exclude_none=True)) < 200_000


def test_preview_of_noise_fits_each_budget() -> None:
    data = noise_png(2048, 2048)
    preview = decode(data, "noise", 512, PREVIEW_MAX_BYTES).preview
    assert preview is not None and len(base64.b64encode(preview.data)) <= PREVIEW_MAX_BYTES
    tight = decode(data, "noise", 512, 15_000).preview
    assert tight is not None and len(base64.b64encode(tight.data)) <= 15_000
    assert max(tight.width, tight.height) < 512  # shrunk, since lower JPEG quality alone was not enough


def test_four_previews_of_noise_fit_the_result_budget() -> None:
    # What ImageKeeper.keep does for a result of four images: one decode each, within the shared budget.
    pictures = [decode(noise_png(2048, 2048), "noise", 512, preview_budget(4)) for _ in range(4)]
    sizes = [len(picture.preview.base64()) for picture in pictures if picture.preview is not None]
    assert len(sizes) == 4
    print(f"\npreview sizes for 4 noise images of 2048x2048: {sizes} (total {sum(sizes)})")
    assert all(size <= PREVIEW_MAX_BYTES for size in sizes)
    assert sum(sizes) <= RESULT_PREVIEW_BUDGET


async def test_preview_size_zero_turns_previews_off(emulator: RunningEmulator) -> None:
    async with Client(build_server(make_settings(emulator, preview_size=0))) as client:
        result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert previews_of(result) == []
    assert structured(result)["images"][0]["path"]  # still saved


# --- saved files --------------------------------------------------------------------------------


async def test_saved_file_and_sidecar(emulator: RunningEmulator, settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a tall lighthouse", "size": "1024x1792"}
        )
    data = structured(result)
    path = Path(data["images"][0]["path"])
    assert path.is_absolute() and path.parent == settings.image_folder().resolve()
    assert Image.open(path).size == (1024, 1792) and path.suffix == ".png"
    assert data["task_id"][:8] in path.name and "a-tall-lighthouse" in path.name
    assert str(path) in text(result)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["prompt"] == "a tall lighthouse" and sidecar["model"] == "flux-dev"
    assert sidecar["task_id"] == data["task_id"] and sidecar["trace_id"] == data["trace_id"]
    assert sidecar["seed"] == data["images"][0]["seed"] and sidecar["url"] == data["images"][0]["url"]
    assert sidecar["size"] == "1024x1792" and sidecar["created_at"]


async def test_getting_a_task_again_reuses_the_saved_file(
    emulator: RunningEmulator, settings: Settings
) -> None:
    async with Client(build_server(settings)) as client:
        first = structured(await client.call_tool("generate_image", {"prompt": "a cat"}))
        downloads = emulator.state.file_downloads
        again = structured(await client.call_tool("get_task", {"task_id": first["task_id"]}))
    assert again["images"][0]["path"] == first["images"][0]["path"]
    assert emulator.state.file_downloads == downloads
    assert len(list(settings.image_folder().glob("*.png"))) == 1


async def test_saving_off_keeps_previews_and_resources(emulator: RunningEmulator) -> None:
    settings = make_settings(emulator, save=False)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_image", {"prompt": "a cat"})
        task_id = structured(result)["task_id"]
        blob = (await client.read_resource(f"flux://images/{task_id}/0")).contents[0]
    assert structured(result)["images"][0]["path"] is None and len(previews_of(result)) == 1
    assert not settings.image_folder().exists()
    assert isinstance(blob, BlobResourceContents) and blob.mime_type == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(blob.blob))).size == (1024, 1024)


@pytest.mark.parametrize(
    "prompt",
    ["../../etc/passwd", "a/b\\c:d*e?f", "..", "   ", "猫 と 犬 🐱", "x" * 4000, "CON", ".hidden", "a\x00b"],
)
def test_file_names_stay_inside_the_output_folder(tmp_path: Path, prompt: str) -> None:
    picture = decode(noise_png(16, 16), "test")
    saved = save(tmp_path, picture, {"task_id": "../../evil", "prompt": prompt}, index=0)
    assert saved.path.parent == tmp_path.resolve() and saved.sidecar.parent == tmp_path.resolve()
    assert len(saved.path.name) < 120 and saved.path.read_bytes() == picture.data


async def test_an_image_url_that_fails_leaves_a_note_not_an_error(
    emulator: RunningEmulator, settings: Settings
) -> None:
    emulator.state.faults.append(Fault("500", endpoint="files"))
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_image", {"prompt": "a cat"})
    data = structured(result)
    assert not result.is_error and data["status"] == "succeeded"
    assert data["images"][0]["path"] is None and "HTTP 500" in data["images"][0]["warning"]


# --- bounded downloads -----------------------------------------------------------------------------


@pytest.fixture
async def hostile() -> AsyncIterator[str]:
    """An image host that misbehaves in every way a download must survive."""

    async def big(request: Request) -> Response:
        return Response(b"\x89PNG" + b"0" * 3_000_000, media_type="image/png")

    async def big_undeclared(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b"0" * 100_000

        from starlette.responses import StreamingResponse

        return StreamingResponse(chunks(), media_type="image/png")

    routes = [
        Route("/big.png", big),
        Route("/stream.png", big_undeclared),
        Route("/page.png", lambda request: Response("<html>hi</html>", media_type="text/html")),
        Route("/garbage.png", lambda request: Response(b"not an image at all", media_type="image/png")),
        Route("/to-file", lambda request: RedirectResponse("file:///etc/passwd")),
        Route("/loop", lambda request: RedirectResponse("/loop")),
        Route("/gone.png", lambda request: Response(status_code=404)),
        Route("/ok", lambda request: RedirectResponse("/real.png")),
        Route("/real.png", lambda request: Response(noise_png(32, 32), media_type="image/png")),
    ]
    async with serve_asgi(Starlette(routes=routes)) as base_url:
        yield base_url


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/big.png", "larger than the 1 MB limit"),
        ("/stream.png", "larger than the 1 MB limit"),
        ("/page.png", "not an image"),
        ("/garbage.png", "not a readable image"),
        ("/to-file", "only http(s)"),
        ("/loop", "too many redirects"),
        ("/gone.png", "expired"),
    ],
)
async def test_downloads_are_bounded(hostile: str, path: str, reason: str) -> None:
    import anyio

    async with httpx2.AsyncClient() as http:
        downloader = Downloader(http, anyio.CapacityLimiter(4), max_bytes=1_000_000, timeout=10)
        with pytest.raises(ImageError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            await fetch_picture(downloader, hostile + path)


async def test_redirect_to_an_image_is_followed(hostile: str) -> None:
    import anyio

    async with httpx2.AsyncClient() as http:
        downloader = Downloader(http, anyio.CapacityLimiter(4), max_bytes=1_000_000, timeout=10)
        picture = await fetch_picture(downloader, hostile + "/ok")
    assert (picture.width, picture.height) == (32, 32)


# --- history, restarts and resources ----------------------------------------------------------


async def test_restarted_server_lists_and_completes_a_pending_task(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 0.6
    settings = make_settings(emulator)
    async with Client(build_server(settings)) as client:
        pending = structured(
            await client.call_tool("generate_image", {"prompt": "patience", "wait_seconds": 0})
        )
    assert pending["status"] == "pending"
    async with Client(build_server(settings)) as restarted:  # a new server over the same files and DB
        listed = structured(await restarted.call_tool("list_tasks", {"status": "pending"}))
        assert [task["task_id"] for task in listed["tasks"]] == [pending["task_id"]]
        done = structured(await restarted.call_tool("get_task", {"task_id": pending["task_id"]}))
        assert done["status"] == "succeeded" and done["prompt"] == "patience"
        listed = structured(await restarted.call_tool("list_tasks", {"query": "patience"}))
    assert listed["tasks"][0]["status"] == "succeeded" and listed["tasks"][0]["images"][0]["path"]


async def test_list_tasks_filters_newest_first(client: Client) -> None:
    for prompt in ("red fox", "blue whale", "red panda"):
        await client.call_tool("generate_image", {"prompt": prompt})
    everything = structured(await client.call_tool("list_tasks", {}))
    assert [task["prompt"] for task in everything["tasks"]] == ["red panda", "blue whale", "red fox"]
    reds = structured(await client.call_tool("list_tasks", {"query": "red", "limit": 1}))
    assert [task["prompt"] for task in reds["tasks"]] == ["red panda"]
    assert structured(await client.call_tool("list_tasks", {"query": "%"}))["tasks"] == []


async def test_failed_submission_is_in_history_as_unknown(client: Client, emulator: RunningEmulator) -> None:
    emulator.state.faults.append(Fault("drop_after"))
    result = await client.call_tool("generate_image", {"prompt": "lost in transit"})
    assert result.is_error
    listed = structured(await client.call_tool("list_tasks", {"status": "unknown"}))
    assert [task["prompt"] for task in listed["tasks"]] == ["lost in transit"]
    assert listed["tasks"][0]["task_id"] is None


async def test_resources_read_back_the_saved_file(client: Client) -> None:
    data = structured(await client.call_tool("generate_image", {"prompt": "a cat", "count": 2}))
    for image in data["images"]:
        contents = (await client.read_resource(image["resource_uri"])).contents[0]
        assert isinstance(contents, BlobResourceContents)
        assert base64.b64decode(contents.blob) == Path(image["path"]).read_bytes()
    task = (await client.read_resource(f"flux://tasks/{data['task_id']}")).contents[0]
    assert isinstance(task, TextResourceContents)
    assert json.loads(task.text)["status"] == "succeeded"
    models = (await client.read_resource("flux://models")).contents[0]
    assert isinstance(models, TextResourceContents)
    assert json.loads(models.text)["flux-2-klein"]["can_edit"] is False


async def test_unknown_image_resource_is_a_clear_error(client: Client) -> None:
    from mcp.shared.exceptions import MCPError

    with pytest.raises(MCPError, match="No image 0 of task"):
        await client.read_resource("flux://images/nope/0")


# --- editing an earlier result -----------------------------------------------------------------------


async def test_edit_an_earlier_result_by_its_flux_uri(client: Client, emulator: RunningEmulator) -> None:
    first = structured(await client.call_tool("generate_image", {"prompt": "a cat"}))
    edited = await client.call_tool(
        "edit_image", {"prompt": "make it night", "image_url": "flux://images/" + first["task_id"] + "/0"}
    )
    assert structured(edited)["status"] == "succeeded"
    sent = emulator.state.tasks[structured(edited)["task_id"]].request["image_url"]
    assert sent == first["images"][0]["url"]


async def test_edit_of_an_expired_result_that_was_not_saved_says_so(emulator: RunningEmulator) -> None:
    async with Client(build_server(make_settings(emulator, save=False))) as client:
        first = structured(await client.call_tool("generate_image", {"prompt": "a cat"}))
        emulator.state.faults.append(Fault("403", endpoint="files"))
        result = await client.call_tool(
            "edit_image", {"prompt": "night", "image_url": f"flux://images/{first['task_id']}/0"}
        )
    assert result.is_error and "expired" in text(result) and "not saved" in text(result)
    assert emulator.state.submissions == 1 and emulator.state.platform.upload_requests == 0


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/home/me/cat.png", "outside the folders"),
        ("file:///tmp/cat.png", "outside the folders"),
        ("C:\\cat.png", "Windows path"),
        ("~/no-such-cat.png", "no file"),
        ("./cat.png", "relative path"),
    ],
)
async def test_local_files_are_refused_with_the_reason(
    client: Client, emulator: RunningEmulator, path: str, reason: str
) -> None:
    result = await client.call_tool("edit_image", {"prompt": "night", "image_url": path})
    assert result.is_error and reason in text(result), text(result)
    assert emulator.state.submissions == 0 and emulator.state.platform.upload_requests == 0
