"""Shared fixtures: a real emulator on a loopback port and servers built against it."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import EmulatorConfig, RunningEmulator, serve_emulator
from flux_mcp.server.build import build_server
from testkit.postgres import ClusterUnavailable, PostgresCluster
from tests.support import TOKEN, files_kept_in, listening_socket, make_settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True, scope="session")
def _keep_out_of_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test, nor any server a test starts, writes into the user's Pictures or data folder."""
    scratch = tmp_path_factory.mktemp("defaults")
    saved = {name: os.environ.get(name) for name in ("FLUX_MCP_OUTPUT_DIR", "FLUX_MCP_DB")}
    os.environ["FLUX_MCP_OUTPUT_DIR"] = str(scratch / "images")
    os.environ["FLUX_MCP_DB"] = str(scratch / "history.db")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _settings_in_tmp_path(tmp_path: Path) -> Iterator[None]:
    """`make_settings` keeps each test's files and history under its own tmp_path."""
    with files_kept_in(tmp_path):
        yield


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with serve_emulator(EmulatorConfig(latency=0.3, tokens=frozenset({TOKEN}), seed=7)) as running:
        yield running


@pytest.fixture
def settings(emulator: RunningEmulator) -> Settings:
    return make_settings(emulator)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as connected:
        yield connected


@pytest.fixture
def loopback_socket() -> Iterator[socket.socket]:
    """A socket listening on a loopback port the system chose, for a server whose URL is needed first."""
    with listening_socket() as sock:
        yield sock


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL cluster for the session (skipped, with the reason, if none can start)."""
    try:
        cluster = PostgresCluster()
    except ClusterUnavailable as exc:
        pytest.skip(f"PostgreSQL is not available here: {exc}")
    yield cluster
    cluster.remove()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database in the session's cluster."""
    return postgres_cluster.create_database()


@pytest.fixture
def mcp_remote_proxy() -> list[str]:
    """The command of the pinned mcp-remote in tests/bridges, or a skip saying how to install it.

    A fixture, so that the skip happens at setup: raised inside a test's task group it would turn
    into an error group, and the emulator's teardown would then fail on a closed event loop.
    """
    node = shutil.which("node")
    if node is None:
        pytest.skip("mcp-remote test: node not found; install Node.js to run it")
    script = Path(__file__).parent / "bridges" / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
    if not script.is_file():
        pytest.skip("mcp-remote test: no tests/bridges/node_modules; run `npm ci --prefix tests/bridges`")
    return [node, str(script)]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image Pillow decodes in this process (worker threads included), once each."""
    from PIL import ImageFile  # here, not at import: some tests check what a process has imported

    sizes: list[tuple[int, int]] = []
    seen: set[int] = set()
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        if id(self) not in seen:
            seen.add(id(self))
            sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes
