"""What the test files share: reading tool results, settings kept in the test's folder, waiting on a
condition, loopback ports, small pictures, flux-mcp child processes, the HTTP service, the history file.

Test modules import these from here, and a topic's own pieces from the modules beside this one (`web`:
raw JSON-RPC posts and mcp-remote; `oauth`: the authorization server; `stdio`: a line-by-line stdio
peer; `frameworks`, `schema_rules`). No test module imports another. Fixtures live in conftest.py.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

import anyio
import anyio.abc
import httpx2
import mcp.client
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp_types import CallToolResult, TextContent
from PIL import Image

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator, serve_asgi
from flux_mcp.media.pictures import Picture, decode
from flux_mcp.net.downloads import Downloader
from flux_mcp.web.app import BearerGate, build_http_app
from testkit import TOKEN, flux_command
from testkit import free_port as free_port  # the tests import it from here too

STARTUP_TIMEOUT = 15.0
WAIT_BOUND = 30.0  # only so that a broken build fails instead of hanging

# --- tool results ---------------------------------------------------------------------------------


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def structured(result: CallToolResult) -> dict[str, Any]:
    content: dict[str, Any] | None = result.structured_content
    assert content is not None, text(result)
    return content


def apps_client(server: Any, mode: Any = "auto") -> Client:
    """An in-memory client that advertises MCP Apps support, as Claude or VS Code do."""
    apps = mcp.client.advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
    return Client(server, mode=mode, extensions=[apps])


# --- settings -----------------------------------------------------------------------------------

_test_folder: Path | None = None


@contextmanager
def files_kept_in(folder: Path) -> Iterator[None]:
    """While a test runs, `make_settings` keeps files and history in `folder` (its tmp_path)."""
    global _test_folder
    _test_folder = folder
    try:
        yield
    finally:
        _test_folder = None


def scratch_folder() -> Path:
    """A fresh folder inside the running test's tmp_path."""
    if _test_folder is None:
        raise RuntimeError("no test is running: pass output_dir and db explicitly")
    return Path(tempfile.mkdtemp(prefix="settings-", dir=_test_folder))


def make_settings(upstream: RunningEmulator | str, **overrides: Any) -> Settings:
    """Settings for tests: fast polls; files and history in a fresh folder of the test's tmp_path."""
    base_url = upstream if isinstance(upstream, str) else upstream.base_url
    values: dict[str, Any] = {
        "api_token": TOKEN,
        "api_base_url": base_url,
        "platform_base_url": base_url,
        "wait_seconds": 10.0,
        "poll_min_seconds": 0.05,
        "poll_max_seconds": 0.2,
        "retry_max_seconds": 2.0,
    }
    if "output_dir" not in overrides or "db" not in overrides:
        scratch = scratch_folder()
        values.update(output_dir=scratch / "images", db=scratch / "history.db")
    values.update(overrides)
    return Settings(**values)


def settings_for(upstream: str, **overrides: Any) -> Settings:
    """Settings against a hand-written upstream, with the default wait and retry bounds; files in tmp_path."""
    scratch = scratch_folder()
    values: dict[str, Any] = {
        "api_token": TOKEN,
        "api_base_url": upstream,
        "output_dir": scratch / "images",
        "db": scratch / "history.db",
        "poll_min_seconds": 0.05,
        "poll_max_seconds": 0.2,
    }
    return Settings(**{**values, **overrides})


# --- waiting --------------------------------------------------------------------------------------


async def wait_for(condition: Callable[[], bool], within: float = WAIT_BOUND) -> None:
    """Return once `condition()` holds, looking every 10 ms (for state that offers no event to wait on)."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the emulator and the history offer no event
            await anyio.sleep(0.01)


def finish_tasks_now(emulator: RunningEmulator) -> None:
    """Make every task the emulator is running finish now: a test says when, not the clock."""
    now = time.monotonic()
    for task in emulator.state.tasks.values():
        task.finish_monotonic = min(task.finish_monotonic, now)


# --- ports ----------------------------------------------------------------------------------------


@contextmanager
def listening_socket() -> Iterator[socket.socket]:
    """A socket listening on a loopback port the system chose; hand it to `serve_asgi(app, sock=…)`."""
    # IPPROTO_TCP spelled out, as the emulator's runner does: asyncio sets TCP_NODELAY only then.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        yield sock
    finally:
        sock.close()


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


# --- pictures -------------------------------------------------------------------------------------


RED = (200, 30, 30)


def image_bytes(fmt: str, color: Any = RED, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def png_bytes(width: int = 32, height: int = 32) -> bytes:
    return image_bytes("PNG", "teal", (width, height))


def noise_png(width: int, height: int) -> bytes:
    """Incompressible pixels: the worst case for a preview's byte budget."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --- flux-mcp as a child process --------------------------------------------------------------------


def child_env(scratch: Path, **values: str) -> dict[str, str]:
    """A minimal environment, as a host builds one: no token unless given; files kept under `scratch`."""
    # PYTHONPATH: a child runs the code under test (a worktree's src), not whatever is installed.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "SYSTEMROOT", "PYTHONPATH") if key in os.environ}
    env.update(FLUX_MCP_OUTPUT_DIR=str(scratch / "images"), FLUX_MCP_DB=str(scratch / "history.db"))
    env.update(values)
    return env


def emulator_env(emulator: RunningEmulator, scratch: Path) -> dict[str, str]:
    return child_env(
        scratch,
        ACEDATACLOUD_API_TOKEN=TOKEN,
        ACEDATACLOUD_API_BASE_URL=emulator.base_url,
        FLUX_MCP_POLL_MIN_SECONDS="0.05",
        FLUX_MCP_POLL_MAX_SECONDS="0.2",
        FLUX_MCP_LOG_LEVEL="DEBUG",
    )


def run_cli(*args: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    """`flux-mcp ARGS` as a user runs it: this environment without the API token, plus `env`."""
    environ = {key: value for key, value in os.environ.items() if key != "ACEDATACLOUD_API_TOKEN"}
    environ.update(env)
    return subprocess.run(
        [*flux_command(), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        env=environ,
        check=False,
    )


@contextmanager
def stderr_file(tmp_path: Path) -> Iterator[TextIO]:
    with (tmp_path / "server-stderr.log").open("w+", encoding="utf-8") as errlog:
        yield errlog


def read_log(errlog: IO[str]) -> str:
    errlog.flush()
    errlog.seek(0)
    return errlog.read()


async def wait_until_listening(port: int, process: anyio.abc.Process) -> None:
    with anyio.fail_after(STARTUP_TIMEOUT):
        while True:
            if process.returncode is not None:
                pytest.fail(f"flux-mcp serve exited early with code {process.returncode}")
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
            else:
                await stream.aclose()
                return


class Recorder:
    """Collects progress notifications and transport-level faults (e.g. a non-JSON line on stdout)."""

    def __init__(self) -> None:
        self.progress: list[tuple[float, str | None]] = []
        self.faults: list[Exception] = []

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, message))

    async def on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.faults.append(message)


@asynccontextmanager
async def stdio_session(
    args: list[str], env: dict[str, str], errlog: TextIO, recorder: Recorder
) -> AsyncIterator[Client]:
    command, *base_args = flux_command()
    params = StdioServerParameters(command=command, args=[*base_args, *args], env=env)
    async with Client(stdio_client(params, errlog=errlog), message_handler=recorder.on_message) as client:
        yield client


# --- the HTTP service in process ------------------------------------------------------------------


@asynccontextmanager
async def http_service(
    settings: Settings, *, sock: socket.socket | None = None, **kwargs: Any
) -> AsyncIterator[str]:
    """The whole HTTP app under uvicorn on a loopback port (port 0, or `sock`); yields its base URL.

    serve_asgi runs uvicorn without lifespan events, so the app's lifespan (which starts the MCP
    session manager) is entered here.
    """
    gate = build_http_app(settings, **kwargs)
    assert isinstance(gate, BearerGate)
    inner: Any = gate.app
    async with inner.router.lifespan_context(inner), serve_asgi(gate, sock=sock) as base_url:
        yield base_url


@asynccontextmanager
async def mcp_client(base_url: str, token: str | None) -> AsyncIterator[Client]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http)) as client,
    ):
        yield client


# --- what the server left on disk -----------------------------------------------------------------


def history_rows(path: Path) -> list[dict[str, Any]]:
    """The history table as another process sees it (also while a server has it open); none if no file."""
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM tasks ORDER BY id")]


def scan_files(root: Path, secret: str) -> list[Path]:
    """Every file under `root` (history DB, its -wal, images, sidecars, logs) that holds the secret."""
    files = [path for path in root.rglob("*") if path.is_file()]
    assert files
    return [path for path in files if secret.encode() in path.read_bytes()]


def initialize_request(request_id: int) -> dict[str, Any]:
    """A JSON-RPC initialize request, as a host's first line on stdio."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }


def stdio_exchange(
    argv: list[str],
    env: dict[str, str],
    messages: list[dict[str, Any]],
    answers: int,
    *,
    tmp_path: Path,
    exit_within: float,
) -> tuple[list[dict[str, Any]], str]:
    """Write `messages` to a fresh process's stdin in one write, read `answers` lines, then close stdin
    (EOF ends a stdio server); the answers and what the process wrote to stderr."""
    wire = "".join(json.dumps(message) + "\n" for message in messages)
    with (tmp_path / "stderr.log").open("w+", encoding="utf-8") as errlog:
        server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, env=env)
        assert server.stdin is not None and server.stdout is not None
        try:
            server.stdin.write(wire.encode())  # all at once, as a busy host sends it
            server.stdin.flush()
            read = [json.loads(server.stdout.readline()) for _ in range(answers)]
            server.stdin.close()
            server.wait(timeout=exit_within)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        errlog.seek(0)
        return read, errlog.read()


async def fetch_picture(downloader: Downloader, url: str) -> Picture:
    """A download decoded as the image keeper decodes it: what a result image goes through."""
    return decode(await downloader.fetch_bytes(url), url)
