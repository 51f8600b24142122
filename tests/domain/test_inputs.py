"""Any image as the input of an edit: local files, file:// URIs, data: URLs, expired flux:// images.

Every edit here runs end to end over loopback HTTP: the server checks the input, uploads it to the
emulated platform, and the emulated Flux API fetches the uploaded file for real and draws its result
from it. Uploads and submissions are counted from the emulator's own records; a refused input must
leave both at zero.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import string
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import ListRootsResult, Root
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.domain.arguments import check_image_url
from flux_mcp.domain.errors import ImageInputError
from flux_mcp.domain.inputs import FluxImage, InlineImage, LocalImage, RemoteImage, parse_image_input
from flux_mcp.emulator import Fault, RunningEmulator, serve_asgi
from flux_mcp.history.store import History
from flux_mcp.media.uploads import UPLOAD_REUSE_SECONDS
from flux_mcp.server import roots as roots_module
from flux_mcp.server.build import build_server
from tests.support import (
    RED,
    TOKEN,
    Recorder,
    child_env,
    http_service,
    image_bytes,
    make_settings,
    mcp_client,
    run_cli,
    stderr_file,
    stdio_session,
    structured,
    text,
)
from tests.support.web import CLIENT_TOKEN, token_settings

pytestmark = pytest.mark.anyio


def counts(emulator: RunningEmulator) -> tuple[int, int]:
    """(upload requests, Flux submissions) as the emulator saw them."""
    return emulator.state.platform.upload_requests, emulator.state.submissions


def corner_color(path: str) -> tuple[int, ...]:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        pixel: tuple[int, ...] = rgb.getpixel((rgb.width - 1, rgb.height - 1))  # type: ignore[assignment]
        return pixel


def close_to(color: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(color, expected, strict=True))


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    folder = tmp_path / "Pictures"
    folder.mkdir()
    return folder


async def edit(client: Client, image_url: str, prompt: str = "make it a watercolor") -> Any:
    return await client.call_tool("edit_image", {"prompt": prompt, "image_url": image_url})


# --- the parser ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("C:\\Users\\me\\Pictures\\cat.jpg", PureWindowsPath("C:/Users/me/Pictures/cat.jpg")),
        ("c:/Users/me/cat.jpg", PureWindowsPath("C:/Users/me/cat.jpg")),
        ("file:///C:/Users/me/My%20Pictures/cat.jpg", PureWindowsPath("C:/Users/me/My Pictures/cat.jpg")),
        ("file://localhost/D:/photos/cat.png", PureWindowsPath("D:/photos/cat.png")),
        ("file:///C|/legacy/cat.png", PureWindowsPath("C:/legacy/cat.png")),
        ("\\\\nas\\photos\\cat.webp", PureWindowsPath("//nas/photos/cat.webp")),
        ("file://nas/photos/cat.webp", PureWindowsPath("//nas/photos/cat.webp")),
    ],
)
def test_windows_paths_are_parsed_as_windows_paths(given: str, expected: PureWindowsPath) -> None:
    parsed = parse_image_input(given)
    assert isinstance(parsed, LocalImage) and parsed.windows
    assert parsed.path == expected


@pytest.mark.parametrize(
    ("given", "expected", "home_relative"),
    [
        ("/home/me/cat.jpg", "/home/me/cat.jpg", False),
        ("file:///home/me/My%20cat.jpg", "/home/me/My cat.jpg", False),
        ("file:/home/me/cat.jpg", "/home/me/cat.jpg", False),
        ("~/Pictures/cat.jpg", "~/Pictures/cat.jpg", True),
        ("  /home/me/cat.jpg\n", "/home/me/cat.jpg", False),
    ],
)
def test_posix_paths_and_file_uris(given: str, expected: str, home_relative: bool) -> None:
    parsed = parse_image_input(given)
    assert isinstance(parsed, LocalImage) and not parsed.windows
    assert parsed.path == PurePosixPath(expected) and parsed.home_relative is home_relative


def test_the_other_forms() -> None:
    assert parse_image_input("https://cdn.example.com/a.png") == RemoteImage("https://cdn.example.com/a.png")
    assert parse_image_input("flux://images/abc-1/2") == FluxImage("flux://images/abc-1/2", "abc-1", 2)
    png = image_bytes("PNG")
    encoded = base64.b64encode(png).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    for url in (f"data:image/png;base64,{encoded}", f"DATA:image/png;charset=x;BASE64,{wrapped}"):
        parsed = parse_image_input(url)
        assert isinstance(parsed, InlineImage) and parsed.data == png


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("", "empty"),
        ("cat.jpg", "not an image reference"),
        ("Pictures/cat.jpg", "relative path"),
        ("../cat.jpg", "relative path"),
        ("~bob/cat.jpg", "home folder"),
        ("C:cat.jpg", "scheme"),
        ("ftp://example.com/a.png", "scheme"),
        ("file:///home/me/a.png?x=1", "query"),
        ("file://host/", "shared folder"),
        ("flux://images/../../etc/0", "flux://images/{task_id}/{index}"),
        ("data:image/png,rawbytes", "base64"),
        ("data:text/html;base64,PGh0bWw+", "image"),
        ("data:image/png;base64,@@@@", "base64"),
        ("data:image/png;base64,", "empty"),
        ("/home/me/\x00cat.png", "NUL"),
        ("http://", "http(s) URL"),
    ],
)
def test_malformed_inputs_are_refused_with_the_reason(given: str, reason: str) -> None:
    with pytest.raises(ImageInputError, match=None) as refused:
        parse_image_input(given)
    assert reason in str(refused.value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda prefix, rest: prefix + rest,
            st.sampled_from(
                [
                    "",
                    "/",
                    "~",
                    "~/",
                    "C:\\",
                    "\\\\",
                    "file:",
                    "file://",
                    "file:///",
                    "data:",
                    "data:image/png;base64,",
                    "flux://images/",
                    "http://",
                    "https://",
                    "./",
                    "%",
                    "C|/",
                ]
            ),
            st.text(alphabet=string.printable + "é€\x00%|:", max_size=120),
        ),
    )
)
def test_any_string_is_accepted_or_refused_clearly(value: str) -> None:
    try:
        parsed = parse_image_input(value)
    except ImageInputError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        with pytest.raises(ValueError):
            check_image_url(value)
        return
    assert isinstance(parsed, RemoteImage | FluxImage | LocalImage | InlineImage)
    assert isinstance(check_image_url(value), str)


# --- local files, end to end -----------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
async def test_edit_of_a_local_file(emulator: RunningEmulator, pictures: Path, fmt: str, suffix: str) -> None:
    photo = pictures / f"cat.{suffix}"
    photo.write_bytes(image_bytes(fmt))
    async with Client(build_server(make_settings(emulator, input_dirs=str(pictures)))) as client:
        result = await edit(client, str(photo))
        data = structured(result)
    assert data["status"] == "succeeded", text(result)
    [upload] = emulator.state.platform.uploads.values()
    assert upload.data == photo.read_bytes() and upload.content_type == f"image/{fmt.lower()}"
    task = emulator.state.tasks[data["task_id"]]
    assert task.request["image_url"] == f"{emulator.base_url}/files/uploads/{upload.id}/{upload.filename}"
    # The emulated Flux API fetched the uploaded file and drew its result from it.
    assert task.source_image == upload.data
    assert close_to(corner_color(data["images"][0]["path"]), RED)
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (512, 384)  # the input's 4:3 kept
    assert counts(emulator) == (1, 1)


async def test_the_same_content_is_uploaded_once(emulator: RunningEmulator, pictures: Path) -> None:
    photo = pictures / "cat.png"
    photo.write_bytes(image_bytes("PNG"))
    (pictures / "copy.png").write_bytes(photo.read_bytes())
    async with Client(build_server(make_settings(emulator, input_dirs=str(pictures)))) as client:
        first = structured(await edit(client, str(photo)))
        second = structured(await edit(client, f"file://{pictures / 'copy.png'}", "make it night"))
    assert first["status"] == second["status"] == "succeeded"
    assert counts(emulator) == (1, 2)
    urls = {emulator.state.tasks[data["task_id"]].request["image_url"] for data in (first, second)}
    assert len(urls) == 1


async def test_home_relative_path_reads_the_home_folder(
    emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "Pictures").mkdir(parents=True)
    (home / "Pictures" / "cat.jpg").write_bytes(image_bytes("JPEG"))
    monkeypatch.setenv("HOME", str(home))
    async with Client(build_server(make_settings(emulator))) as client:  # default folders: the home folder
        result = await edit(client, "~/Pictures/cat.jpg")
    assert structured(result)["status"] == "succeeded", text(result)
    assert counts(emulator) == (1, 1)


async def test_edit_of_a_data_url(client: Client, emulator: RunningEmulator) -> None:
    png = image_bytes("PNG", color=(20, 160, 40))
    result = await edit(client, "data:image/png;base64," + base64.b64encode(png).decode())
    data = structured(result)
    assert data["status"] == "succeeded", text(result)
    [upload] = emulator.state.platform.uploads.values()
    assert upload.data == png
    assert close_to(corner_color(data["images"][0]["path"]), (20, 160, 40))
    # The history keeps the uploaded URL, not megabytes of base64.
    listed = structured(await client.call_tool("list_tasks", {}))
    assert "data:" not in str(listed)


async def test_over_http_a_data_url_works_and_a_local_path_is_refused(
    emulator: RunningEmulator, pictures: Path
) -> None:
    photo = pictures / "cat.png"
    photo.write_bytes(image_bytes("PNG"))
    settings = token_settings(emulator, input_dirs=str(pictures))
    async with http_service(settings) as base_url, mcp_client(base_url, CLIENT_TOKEN) as client:
        refused = await edit(client, str(photo))
        assert refused.is_error and "not read over HTTP" in text(refused), text(refused)
        assert counts(emulator) == (0, 0)
        inline = "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode()
        accepted = await edit(client, inline)
    assert structured(accepted)["status"] == "succeeded", text(accepted)
    assert counts(emulator) == (1, 1)


async def test_an_expired_flux_image_is_uploaded_from_its_saved_file_once(
    client: Client, emulator: RunningEmulator
) -> None:
    first = structured(await client.call_tool("generate_image", {"prompt": "a cat"}))
    saved = Path(first["images"][0]["path"]).read_bytes()
    uri = f"flux://images/{first['task_id']}/0"
    edits = []
    for prompt in ("make it night", "make it snow"):
        emulator.state.faults.append(Fault("403", endpoint="files"))  # the upstream URL has expired
        edits.append(structured(await edit(client, uri, prompt)))
    assert [data["status"] for data in edits] == ["succeeded", "succeeded"]
    [upload] = emulator.state.platform.uploads.values()
    assert upload.data == saved
    assert counts(emulator) == (1, 3)
    assert {emulator.state.tasks[data["task_id"]].request["image_url"] for data in edits} == {
        f"{emulator.base_url}/files/uploads/{upload.id}/{upload.filename}"
    }


async def test_a_reachable_flux_image_is_passed_as_its_url(client: Client, emulator: RunningEmulator) -> None:
    first = structured(await client.call_tool("generate_image", {"prompt": "a cat"}))
    edited = structured(await edit(client, f"flux://images/{first['task_id']}/0"))
    assert emulator.state.tasks[edited["task_id"]].request["image_url"] == first["images"][0]["url"]
    assert counts(emulator) == (0, 2)


# --- refusals: nothing uploaded, nothing submitted ----------------------------------------------


def big_sparse_file(path: Path, size: int) -> Path:
    with path.open("wb") as file:
        file.truncate(size)
    return path


def many_pixels_png(path: Path) -> Path:
    Image.new("1", (7000, 6000)).save(path, format="PNG")  # 42 megapixels, a few kB on disk
    return path


def heic_like(path: Path) -> Path:
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda folder: folder / "missing.png", "no file"),
        (lambda folder: folder, "is a folder"),
        (lambda folder: big_sparse_file(folder / "huge.png", 21_000_000), "at most 20 MB"),
        (
            lambda folder: (folder / "notes.png").write_text("not a picture") and folder / "notes.png",
            "not an image",
        ),
        (lambda folder: (folder / "anim.gif").write_bytes(image_bytes("GIF")) and folder / "anim.gif", "GIF"),
        (lambda folder: many_pixels_png(folder / "bomb.png"), "megapixels"),
        (lambda folder: heic_like(folder / "IMG_0001.HEIC"), "HEIC"),
        (lambda folder: (folder / "empty.png").write_bytes(b"") or folder / "empty.png", "empty"),
    ],
    ids=["missing", "directory", "too-big", "not-an-image", "gif", "too-many-pixels", "heic", "empty"],
)
async def test_a_bad_local_file_is_refused_before_any_upload(
    emulator: RunningEmulator, pictures: Path, make: Any, reason: str
) -> None:
    target: Path = make(pictures)
    async with Client(build_server(make_settings(emulator, input_dirs=str(pictures)))) as client:
        result = await edit(client, str(target))
    assert result.is_error and reason in text(result), text(result)
    assert "Nothing was uploaded or submitted" in text(result)
    assert counts(emulator) == (0, 0)


async def test_a_file_outside_the_allowed_folders_is_refused(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir(), elsewhere.mkdir()
    (elsewhere / "cat.png").write_bytes(image_bytes("PNG"))
    async with Client(build_server(make_settings(emulator, input_dirs=str(allowed)))) as client:
        for attempt in (str(elsewhere / "cat.png"), f"{allowed}/../elsewhere/cat.png"):
            result = await edit(client, attempt)
            assert result.is_error and "outside the folders" in text(result), text(result)
    assert counts(emulator) == (0, 0)


async def test_a_symlink_leading_outside_is_refused(emulator: RunningEmulator, tmp_path: Path) -> None:
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir(), secret.mkdir()
    (secret / "private.png").write_bytes(image_bytes("PNG"))
    (allowed / "innocent.png").symlink_to(secret / "private.png")
    (allowed / "door").symlink_to(secret, target_is_directory=True)
    async with Client(build_server(make_settings(emulator, input_dirs=str(allowed)))) as client:
        for attempt in (allowed / "innocent.png", allowed / "door" / "private.png"):
            result = await edit(client, str(attempt))
            assert result.is_error and "a link that leads outside" in text(result), text(result)
            assert str(secret) not in text(result) and "private" not in text(result).replace(str(attempt), "")
    assert counts(emulator) == (0, 0)


async def test_a_symlink_inside_the_allowed_folder_is_followed(
    emulator: RunningEmulator, pictures: Path
) -> None:
    (pictures / "real.png").write_bytes(image_bytes("PNG"))
    (pictures / "alias.png").symlink_to(pictures / "real.png")
    async with Client(build_server(make_settings(emulator, input_dirs=str(pictures)))) as client:
        result = await edit(client, str(pictures / "alias.png"))
    assert structured(result)["status"] == "succeeded", text(result)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
async def test_a_device_or_a_pipe_is_refused_without_being_read(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    folders = os.pathsep.join(["/dev", str(tmp_path)])
    async with Client(build_server(make_settings(emulator, input_dirs=folders))) as client:
        for attempt in ("/dev/zero", str(fifo)):
            with anyio.fail_after(30):
                result = await edit(client, attempt)
            assert result.is_error and "not a regular file" in text(result), text(result)
    assert counts(emulator) == (0, 0)


async def test_no_allowed_folder_refuses_every_local_file(emulator: RunningEmulator, pictures: Path) -> None:
    (pictures / "cat.png").write_bytes(image_bytes("PNG"))
    async with Client(build_server(make_settings(emulator, input_dirs=""))) as client:
        result = await edit(client, str(pictures / "cat.png"))
    assert result.is_error and "outside the folders" in text(result) and "(none)" in text(result)
    assert counts(emulator) == (0, 0)


# --- the client's roots ----------------------------------------------------------------------------


def roots_callback(*folders: Path) -> Any:
    async def list_roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=folder.as_uri(), name=folder.name) for folder in folders])  # type: ignore[arg-type]

    return list_roots


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_file_in_one_of_the_clients_roots_is_accepted(
    emulator: RunningEmulator, tmp_path: Path, mode: str
) -> None:
    project, other = tmp_path / "project", tmp_path / "other"
    project.mkdir(), other.mkdir()
    (project / "logo.png").write_bytes(image_bytes("PNG"))
    (other / "logo.png").write_bytes(image_bytes("PNG", color=(1, 2, 3)))
    settings = make_settings(emulator, input_dirs="")
    async with Client(
        build_server(settings), mode=mode, list_roots_callback=roots_callback(project)
    ) as client:
        inside = await edit(client, str(project / "logo.png"))
        outside = await edit(client, str(other / "logo.png"))
    assert structured(inside)["status"] == "succeeded", text(inside)
    assert outside.is_error and "outside the folders" in text(outside), text(outside)
    async with Client(build_server(settings), mode=mode) as plain:  # no roots offered: nothing allowed
        refused = await edit(plain, str(project / "logo.png"))
    assert refused.is_error and "outside the folders" in text(refused)
    assert counts(emulator) == (1, 1)


async def test_a_client_that_never_lists_its_roots_does_not_hang_the_call(
    emulator: RunningEmulator, pictures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(roots_module, "ROOTS_TIMEOUT_SECONDS", 0.2)
    (pictures / "cat.png").write_bytes(image_bytes("PNG"))

    async def never(context: Any) -> ListRootsResult:
        await anyio.sleep_forever()
        raise AssertionError

    settings = make_settings(emulator, input_dirs=str(pictures))
    async with Client(build_server(settings), mode="legacy", list_roots_callback=never) as client:
        with anyio.fail_after(30):
            result = await edit(client, str(pictures / "cat.png"))
    assert structured(result)["status"] == "succeeded", text(result)  # FLUX_MCP_INPUT_DIRS still counts


async def test_roots_are_not_asked_for_a_url(emulator: RunningEmulator) -> None:
    asked: list[int] = []

    async def list_roots(context: Any) -> ListRootsResult:
        asked.append(1)
        return ListRootsResult(roots=[])

    async with Client(
        build_server(make_settings(emulator)), mode="legacy", list_roots_callback=list_roots
    ) as c:
        result = await edit(c, "https://cdn.example.com/photo.png")
    assert structured(result)["status"] == "succeeded" and asked == []


# --- the upload itself -------------------------------------------------------------------------------


async def test_a_rate_limited_upload_is_retried(emulator: RunningEmulator, pictures: Path) -> None:
    (pictures / "cat.png").write_bytes(image_bytes("PNG"))
    emulator.state.faults.append(Fault("429", endpoint="uploads"))
    emulator.state.config.retry_after = 0
    async with Client(build_server(make_settings(emulator, input_dirs=str(pictures)))) as client:
        result = await edit(client, str(pictures / "cat.png"))
    assert structured(result)["status"] == "succeeded", text(result)
    assert counts(emulator) == (2, 1) and len(emulator.state.platform.uploads) == 1


async def test_an_upload_whose_answer_was_lost_is_not_repeated_blindly(
    emulator: RunningEmulator, pictures: Path
) -> None:
    (pictures / "cat.png").write_bytes(image_bytes("PNG"))
    emulator.state.faults.append(Fault("drop_after", endpoint="uploads"))
    async with Client(build_server(make_settings(emulator, input_dirs=str(pictures)))) as client:
        result = await edit(client, str(pictures / "cat.png"))
    message = text(result)
    assert result.is_error and "may have reached" in message and "nothing was billed" in message, message
    assert counts(emulator) == (1, 0)


async def test_an_upload_answer_without_file_url_is_a_clear_error(
    emulator: RunningEmulator, pictures: Path
) -> None:
    (pictures / "cat.png").write_bytes(image_bytes("PNG"))
    seen: list[bytes] = []

    async def files(request: Request) -> Response:
        seen.append(await request.body())
        return JSONResponse({"id": "f1", "url_of_the_file": "https://x.test/f1.png"})

    platform = Starlette(routes=[Route("/api/v1/files/", files, methods=["POST"])])
    async with serve_asgi(platform) as platform_url:
        settings = make_settings(emulator, input_dirs=str(pictures), platform_base_url=platform_url)
        async with Client(build_server(settings)) as client:
            result = await edit(client, str(pictures / "cat.png"))
    assert result.is_error and "no file_url" in text(result), text(result)
    assert len(seen) == 1 and emulator.state.submissions == 0


async def test_the_platform_refuses_a_bad_token(emulator: RunningEmulator, pictures: Path) -> None:
    (pictures / "cat.png").write_bytes(image_bytes("PNG"))
    settings = make_settings(emulator, input_dirs=str(pictures), api_token="not-the-token")
    async with Client(build_server(settings)) as client:
        result = await edit(client, str(pictures / "cat.png"))
    assert result.is_error and "refused the token" in text(result) and "not-the-token" not in text(result)
    assert emulator.state.submissions == 0


async def test_a_remembered_upload_is_reused_only_while_fresh(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    digest = hashlib.sha256(b"x").hexdigest()
    await history.record_upload(digest, "https://files.test/x.png")
    assert await history.find_upload(digest, max_age=UPLOAD_REUSE_SECONDS) == "https://files.test/x.png"
    assert await history.find_upload(digest, "someone-else", max_age=UPLOAD_REUSE_SECONDS) is None
    history._execute("UPDATE uploads SET uploaded_at = uploaded_at - ?", (UPLOAD_REUSE_SECONDS + 1,))
    assert await history.find_upload(digest, max_age=UPLOAD_REUSE_SECONDS) is None
    history.close()


# --- the whole story, as a user runs it -------------------------------------------------------------


@pytest.mark.subprocess
async def test_a_photo_in_the_home_folder_is_edited_in_one_call_over_stdio(tmp_path: Path) -> None:
    """ "make my photo at ~/Pictures/cat.jpg look like a watercolor", against `flux-mcp --sandbox`."""
    home = tmp_path / "home"
    (home / "Pictures").mkdir(parents=True)
    (home / "Pictures" / "cat.jpg").write_bytes(image_bytes("JPEG"))
    recorder = Recorder()
    with stderr_file(tmp_path) as errlog:
        env = child_env(tmp_path, HOME=str(home))
        if "PYTHONPATH" in os.environ:  # the code under test, not whatever is installed
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        async with stdio_session(["--sandbox"], env, errlog, recorder) as client:
            result = await client.call_tool(
                "edit_image",
                {"prompt": "make it look like a watercolor", "image_url": "~/Pictures/cat.jpg"},
                progress_callback=recorder.on_progress,
            )
    data = structured(result)
    assert data["status"] == "succeeded" and data["model"] == "flux-kontext-pro", text(result)
    assert close_to(corner_color(data["images"][0]["path"]), RED)
    assert recorder.progress and not recorder.faults


@pytest.mark.subprocess
def test_demo_edits_a_local_file_offline(tmp_path: Path) -> None:
    photo = tmp_path / "holiday" / "photo.jpg"
    photo.parent.mkdir()
    photo.write_bytes(image_bytes("JPEG", color=(30, 60, 200)))
    out = tmp_path / "out"
    elsewhere = {"FLUX_MCP_DB": str(tmp_path / "history.db"), "FLUX_MCP_INPUT_DIRS": str(tmp_path / "none")}
    result = run_cli(
        "demo", "--edit", str(photo), "make it a watercolor", "--out", str(out), "--latency", "0.5",
        timeout=120, **elsewhere,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Editing" in result.stderr and "flux-kontext-pro" in result.stdout
    (png,) = out.glob("*.png")
    assert close_to(corner_color(str(png)), (30, 60, 200))


async def test_an_unreachable_platform_is_reported_and_nothing_is_submitted(
    emulator: RunningEmulator, pictures: Path
) -> None:
    (pictures / "cat.png").write_bytes(image_bytes("PNG"))
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(emulator, input_dirs=str(pictures), platform_base_url=closed, max_retries=1)
    async with Client(build_server(settings)) as client:
        result = await edit(client, str(pictures / "cat.png"))
    message = text(result)
    assert result.is_error and "Could not connect" in message and "failed" in message, message
    assert "nothing was billed" in message and emulator.state.submissions == 0


# --- the emulated platform, as a client sees it -----------------------------------------------------


async def test_the_emulated_upload_endpoint(emulator: RunningEmulator) -> None:
    png = image_bytes("PNG")
    auth = {"authorization": f"Bearer {TOKEN}"}
    emulator.state.platform.max_upload_bytes = 1000
    async with httpx2.AsyncClient(base_url=emulator.base_url) as http:
        ok = await http.post("/api/v1/files/", files={"file": ("a b.png", png, "image/png")}, headers=auth)
        assert ok.status_code == 200 and ok.json()["file_url"].startswith(emulator.base_url)
        served = await http.get(ok.json()["file_url"])
        assert served.content == png and served.headers["content-type"] == "image/png"
        too_big = await http.post("/api/v1/files/", files={"file": ("b.png", b"x" * 5000)}, headers=auth)
        no_file = await http.post("/api/v1/files/", files={"other": ("c.png", png)}, headers=auth)
        no_token = await http.post("/api/v1/files/", files={"file": ("d.png", png)})
        unknown = await http.get("/files/uploads/nope/a.png")
    assert (too_big.status_code, no_file.status_code, no_token.status_code, unknown.status_code) == (
        413,
        400,
        401,
        404,
    )
    assert len(emulator.state.platform.uploads) == 1 and emulator.state.platform.upload_requests == 4
