"""Shared fixtures (a real emulator on a loopback port, servers built against it), the tiers and markers.

Markers say what a test needs (pyproject.toml lists them). The fixtures below add them where a fixture
tells (`postgres_url` → postgres), and one marker implies others (a test that needs node starts a
process). `pytest --quick` is the day-to-day tier: every test that needs none of them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from mcp import Client

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import EmulatorConfig, RunningEmulator, serve_emulator
from flux_mcp.server.build import build_server
from testkit.postgres import ClusterUnavailable, PostgresCluster
from tests.support import TOKEN, files_kept_in, listening_socket, make_settings
from tests.support.prerequisites import require, required

# The day-to-day tier leaves out what needs an installed service, a browser, an agent framework, another
# process, or long scenarios; `pytest --quick` is `pytest -m "not (...)"` with this expression.
QUICK = "not (postgres or browser or frameworks or node or subprocess or slow)"
# A fixture that needs a prerequisite marks the tests that use it.
FIXTURE_MARKERS = {"postgres_cluster": "postgres", "postgres_url": "postgres", "mcp_remote_proxy": "node"}
# What each marker brings with it: PostgreSQL, node and Chromium all run as processes of their own.
IMPLIED_MARKERS = {"postgres": ("subprocess",), "node": ("subprocess",), "browser": ("node", "subprocess")}

# Hypothesis: CI replays the same examples every run (a failure there is reproducible, never a fluke of
# the draw) and keeps no example database; locally each run draws new ones. No deadline in either: the
# tests run beside busy xdist workers, and a slow example is not a wrong one.
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI", "").lower() in {"true", "1"} else "dev")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true", help=f"the day-to-day tier: -m {QUICK!r}")


def pytest_configure(config: pytest.Config) -> None:
    required()  # an unknown name in FLUX_MCP_REQUIRE stops the run before any test
    if config.getoption("quick"):
        given = config.option.markexpr
        config.option.markexpr = f"({given}) and {QUICK}" if given else QUICK


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by them
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        names = {FIXTURE_MARKERS[name] for name in fixtures if name in FIXTURE_MARKERS}
        names |= {marker.name for marker in item.iter_markers()}
        for name in sorted(names):
            for implied in (name, *IMPLIED_MARKERS.get(name, ())):
                if item.get_closest_marker(implied) is None:
                    item.add_marker(implied)
    items.sort(key=lasting_first)


def lasting_first(item: pytest.Item) -> int:
    """Long scenarios first, then tests that start processes, then the rest (the order within each kept):
    with `-n`, the many short tests fill the workers' gaps at the end instead of a long one running alone
    (`--maxschedchunk=1` in pyproject.toml: xdist hands out one test at a time, in this order)."""
    if item.get_closest_marker("slow") is not None:
        return 0
    return 1 if item.get_closest_marker("subprocess") is not None else 2


@pytest.fixture(autouse=True)
def _processes_only_where_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that starts a process carries the `subprocess` marker, so the quick tier stays quick."""
    if request.node.get_closest_marker("subprocess") is not None:
        return

    def refuse(popen: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise AssertionError(f"this test starts a process ({args!r}): mark it @pytest.mark.subprocess")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


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
        require("postgres", f"PostgreSQL is not available here: {exc}")
    yield cluster
    cluster.remove()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database in the session's cluster."""
    return postgres_cluster.create_database()


@pytest.fixture
def mcp_remote_proxy() -> list[str]:
    """The command of the pinned mcp-remote in tests/bridges, or a skip saying how to install it (a failure
    where FLUX_MCP_REQUIRE names node).

    A fixture, so that the skip happens at setup: raised inside a test's task group it would turn
    into an error group, and the emulator's teardown would then fail on a closed event loop.
    """
    node = shutil.which("node")
    if node is None:
        require("node", "mcp-remote test: node not found; install Node.js to run it")
    script = Path(__file__).parent / "bridges" / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
    if not script.is_file():
        require("node", "mcp-remote test: no tests/bridges/node_modules; run `npm ci --prefix tests/bridges`")
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
