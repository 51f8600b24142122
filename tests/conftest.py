"""Shared fixtures: a real emulator on a loopback port and servers built against it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from flux_mcp.emulator import EmulatorConfig, RunningEmulator, serve_emulator
from flux_mcp.server import build_server
from flux_mcp.settings import Settings
from tests.pgcluster import ClusterUnavailable, PostgresCluster

TOKEN = "sk-test-SECRET-7f3a9c1e"


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


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with serve_emulator(EmulatorConfig(latency=0.3, tokens=frozenset({TOKEN}), seed=7)) as running:
        yield running


def make_settings(emulator: RunningEmulator, **overrides: Any) -> Settings:
    """Settings for tests: fast polls, and files and history in a fresh temporary folder."""
    scratch = Path(tempfile.mkdtemp(prefix="flux-mcp-test-"))
    values: dict[str, Any] = {
        "output_dir": scratch / "images",
        "db": scratch / "history.db",
        "api_token": TOKEN,
        "api_base_url": emulator.base_url,
        "platform_base_url": emulator.base_url,
        "wait_seconds": 10.0,
        "poll_min_seconds": 0.05,
        "poll_max_seconds": 0.2,
        "retry_max_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(emulator: RunningEmulator) -> Settings:
    return make_settings(emulator)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as connected:
        yield connected


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
