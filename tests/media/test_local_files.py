"""Local edit inputs under attack: folders swapped while they are read, hard links, links leading out.

An edit reads the file with in-memory MCP calls against the emulator; what left the machine is read
from the emulator's own record of uploads, never from the server's word.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult

from flux_mcp.emulator import RunningEmulator
from flux_mcp.media import uploads
from flux_mcp.server.build import build_server
from tests.support import image_bytes, make_settings, structured, text

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX folders and links"),
]

RACE_CALLS = 300
RENAME_EXCHANGE = 2  # linux/fs.h


async def edit(client: Client, image_url: str) -> CallToolResult:
    return await client.call_tool("edit_image", {"prompt": "make it a watercolor", "image_url": image_url})


def uploaded(emulator: RunningEmulator) -> list[bytes]:
    return [upload.data for upload in emulator.state.platform.uploads.values()]


def exchanger() -> Callable[[Path, Path], None]:
    """Swaps two names atomically (renameat2 RENAME_EXCHANGE), or by a rename dance where that is missing."""
    renameat2: Any = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    at_fdcwd = -100
    atomic = [renameat2 is not None]

    def swap(first: Path, second: Path) -> None:
        if atomic[0] and renameat2(at_fdcwd, bytes(first), at_fdcwd, bytes(second), RENAME_EXCHANGE) == 0:
            return
        if atomic[0] and ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        atomic[0] = False  # the kernel or file system cannot exchange: a dance, not atomic
        aside = first.with_name(".aside")
        os.rename(first, aside)
        os.rename(second, first)
        os.rename(aside, second)

    return swap


@contextmanager
def swapping(first: Path, second: Path) -> Iterator[list[int]]:
    """A thread swapping `first` and `second` as fast as it can while the block runs; yields the count."""
    swap = exchanger()
    stop = threading.Event()
    swaps = [0]

    def run() -> None:
        while not stop.is_set():
            swap(first, second)
            swaps[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over often, so that swaps land between the reader's steps
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield swaps
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


CLEAR_REFUSALS = (
    "leads outside",
    "changed while it was being read",
    "there is no file at",
    "is not a folder",
)


async def test_a_folder_swapped_mid_read_never_uploads_a_file_from_outside(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    emulator.state.config.latency = 0.0
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    deep = Path(*"abcdefghijkl")  # the deeper the path, the longer the window of a check-then-open reader
    (allowed / "sub" / deep).mkdir(parents=True)
    (secret / deep).mkdir(parents=True)
    (allowed / "sub" / deep / "a.png").write_bytes(image_bytes("PNG", color=(10, 200, 10)))
    secret_png = image_bytes("PNG", color=(200, 10, 10))
    (secret / deep / "a.png").write_bytes(secret_png)
    (allowed / ".alt").symlink_to("../secret", target_is_directory=True)
    settings = make_settings(emulator, input_dirs=str(allowed), wait_seconds=0.0)
    outcomes: list[str] = []
    async with Client(build_server(settings)) as client:
        with swapping(allowed / "sub", allowed / ".alt") as swaps:
            for _ in range(RACE_CALLS):
                result = await edit(client, str(allowed / "sub" / deep / "a.png"))
                if secret_png in uploaded(emulator):
                    break
                outcomes.append(text(result) if result.is_error else structured(result)["status"])
    leaked = secret_png in uploaded(emulator)
    assert not leaked, f"the secret was uploaded after {len(outcomes) + 1} calls"
    assert swaps[0] > RACE_CALLS  # the swaps really raced the reads
    for outcome in outcomes:
        assert outcome in ("pending", "succeeded") or any(clear in outcome for clear in CLEAR_REFUSALS), (
            outcome
        )
        assert "Error executing tool" not in outcome and "Traceback" not in outcome, outcome


async def test_a_hard_link_is_read_only_when_the_setting_allows_it(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    secret_png = image_bytes("PNG", color=(200, 10, 10))
    (secret / "private.png").write_bytes(secret_png)
    os.link(secret / "private.png", allowed / "innocent.png")
    async with Client(build_server(make_settings(emulator, input_dirs=str(allowed)))) as client:
        refused = await edit(client, str(allowed / "innocent.png"))
    assert refused.is_error and "hard links" in text(refused) and "FLUX_MCP_ALLOW_HARD_LINKS" in text(refused)
    assert str(secret) not in text(refused) and uploaded(emulator) == []
    settings = make_settings(emulator, input_dirs=str(allowed), allow_hard_links=True)
    async with Client(build_server(settings)) as client:
        accepted = await edit(client, str(allowed / "innocent.png"))
    assert structured(accepted)["status"] == "succeeded", text(accepted)
    assert uploaded(emulator) == [secret_png]


def links_that_stay_inside(tmp_path: Path) -> tuple[Path, list[Path]]:
    """An allowed folder, and paths to its picture through links that never leave it."""
    allowed = tmp_path / "allowed"
    (allowed / "albums" / "2026").mkdir(parents=True)
    (allowed / "albums" / "2026" / "cat.png").write_bytes(image_bytes("PNG"))
    (allowed / "cat.png").symlink_to("albums/2026/cat.png")  # relative, to a file
    (allowed / "latest").symlink_to(allowed / "albums" / "2026", target_is_directory=True)  # absolute
    (allowed / "albums" / "up").symlink_to("..", target_is_directory=True)
    (tmp_path / "shortcut").symlink_to(allowed, target_is_directory=True)  # from outside, into it
    return allowed, [
        allowed / "cat.png",
        allowed / "latest" / "cat.png",
        allowed / "latest" / ".." / "2026" / "cat.png",  # `..` of a linked folder is its real parent
        allowed / "albums" / "up" / "albums" / "up" / "cat.png",
        tmp_path / "shortcut" / "latest" / "cat.png",
    ]


async def test_links_that_stay_inside_the_allowed_folder_keep_working(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    allowed, paths = links_that_stay_inside(tmp_path)
    async with Client(build_server(make_settings(emulator, input_dirs=str(allowed)))) as client:
        for path in paths:
            result = await edit(client, str(path))
            assert not result.is_error and structured(result)["status"] == "succeeded", (path, text(result))
    assert len(uploaded(emulator)) == 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda allowed: (allowed / "loop").symlink_to("loop") or allowed / "loop" / "a.png",
            "too many links",
        ),
        (lambda allowed: allowed / "cat.png" / "a.png", "not a folder"),
        (lambda allowed: allowed / "missing" / "a.png", "there is no file at"),
        (lambda allowed: allowed / "albums" / "..", "is a folder"),
        (lambda allowed: allowed / "..", "outside the folders"),
        (
            lambda allowed: (allowed / "up").symlink_to("../..") or allowed / "up" / "etc" / "a.png",
            "leads outside",
        ),
    ],
    ids=["loop", "through-a-file", "missing-folder", "ends-in-dot-dot", "above", "link-above"],
)
async def test_every_refusal_of_a_path_is_a_clear_tool_error(
    emulator: RunningEmulator, tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "albums").mkdir(parents=True)
    (allowed / "cat.png").write_bytes(image_bytes("PNG"))
    path = make(allowed)
    async with Client(build_server(make_settings(emulator, input_dirs=str(allowed)))) as client:
        result = await edit(client, str(path))
    assert result.is_error and reason in text(result), text(result)
    assert "Nothing was uploaded or submitted" in text(result) and uploaded(emulator) == []


async def test_where_folders_cannot_be_opened_the_check_by_path_keeps_the_same_rules(
    emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "dir_fd_supported", lambda: False)  # as on Windows
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (secret / "private.png").write_bytes(image_bytes("PNG", color=(200, 10, 10)))
    (allowed / "door").symlink_to(secret / "private.png")
    os.link(secret / "private.png", allowed / "twin.png")
    (allowed / "cat.png").write_bytes(image_bytes("PNG"))
    async with Client(build_server(make_settings(emulator, input_dirs=str(allowed)))) as client:
        door, twin = await edit(client, str(allowed / "door")), await edit(client, str(allowed / "twin.png"))
        cat = await edit(client, str(allowed / "cat.png"))
    assert door.is_error and "leads outside" in text(door) and str(secret) not in text(door), text(door)
    assert twin.is_error and "hard links" in text(twin), text(twin)
    assert structured(cat)["status"] == "succeeded", text(cat)
    assert uploaded(emulator) == [(allowed / "cat.png").read_bytes()]
