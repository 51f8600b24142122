"""Issue 12, item 9: the history (prompts, task ids, file paths) is readable by its owner only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from flux_mcp.cli.doctor import _count_history
from flux_mcp.emulator import RunningEmulator
from flux_mcp.history.store import History
from flux_mcp.server.build import build_server
from tests.support import make_settings

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def everyday_umask() -> Iterator[None]:
    """The umask most accounts have (022): files readable by everyone unless made otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def sqlite_files(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm")]


@pytest.mark.anyio
async def test_a_new_history_is_private_with_its_wal_and_shm(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    db = tmp_path / "data" / "flux-mcp" / "history.db"
    settings = make_settings(emulator, db=db)
    async with Client(build_server(settings)) as client:
        await client.call_tool("generate_image", {"prompt": "a private prompt"})
        assert all(path.exists() for path in sqlite_files(db))  # WAL files exist while it is open
        assert {path.name: mode(path) for path in sqlite_files(db)} == {
            "history.db": 0o600,
            "history.db-wal": 0o600,
            "history.db-shm": 0o600,
        }
    assert mode(db.parent) == 0o700
    assert mode(db.parent.parent) == 0o755  # a parent it had to create is an ordinary folder


def test_existing_history_files_are_narrowed_and_an_existing_folder_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    db = folder / "history.db"
    History(db).close()
    for path in sqlite_files(db):
        path.touch()
        path.chmod(0o644)  # as an older flux-mcp left them
    history = History(db)
    try:
        assert [mode(path) for path in sqlite_files(db)] == [0o600, 0o600, 0o600]
    finally:
        history.close()
    assert mode(folder) == 0o755  # maybe a folder the user shares on purpose: not ours to change


def test_doctor_creates_the_data_folder_the_way_the_server_would(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "history.db"
    assert _count_history(db) == 0
    assert mode(db.parent) == 0o700


def test_an_in_memory_history_touches_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    History(Path(":memory:")).close()
    assert list(tmp_path.iterdir()) == []
