"""The server driven as real clients drive it: the `flux-mcp` console script over stdio, and streamable HTTP.

The in-memory client of test_tools.py skips JSON-RPC framing, the stdio pipes and the HTTP/SSE layer;
these tests go through them against the emulator on a loopback port.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator, serve_asgi
from flux_mcp.server.build import build_server
from tests.support import (
    TOKEN,
    Recorder,
    child_env,
    emulator_env,
    flux_command,
    free_port,
    stderr_file,
    stdio_session,
    structured,
    text,
    wait_until_listening,
)

pytestmark = pytest.mark.anyio

# The four core tools; others (e.g. a history lookup) may be added without breaking these tests.
TOOLS = {"generate_image", "edit_image", "get_task", "get_tasks"}
STARTUP_TIMEOUT = 15.0


# --- stdio --------------------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_stdio_console_script_round_trip(emulator: RunningEmulator, tmp_path: Path) -> None:
    recorder = Recorder()
    with stderr_file(tmp_path) as errlog:
        async with stdio_session([], emulator_env(emulator, tmp_path), errlog, recorder) as client:
            tools = (await client.list_tools()).tools
            assert {tool.name for tool in tools} >= TOOLS

            result = await client.call_tool(
                "generate_image",
                {"prompt": "a cat over stdio", "count": 2},
                progress_callback=recorder.on_progress,
            )
            data = structured(result)
            assert not result.is_error and data["status"] == "succeeded", text(result)
            assert len(data["images"]) == 2 and all(
                image["url"].startswith("http") for image in data["images"]
            )

            pending = structured(
                await client.call_tool("generate_image", {"prompt": "later", "wait_seconds": 0})
            )
            assert pending["status"] == "pending"
            finished = await client.call_tool("get_task", {"task_id": pending["task_id"]})
            assert structured(finished)["status"] == "succeeded" and structured(finished)["prompt"] == "later"
        errlog.seek(0)
        log = errlog.read()

    # Progress crossed the pipe as notifications: the submit note, then at least one look while running.
    messages = [message or "" for _, message in recorder.progress]
    assert any("Submitted" in message for message in messages), recorder.progress
    assert any("elapsed" in message for message in messages), recorder.progress
    # stdout carried only JSON-RPC: any other line would have reached the message handler as a fault.
    assert recorder.faults == []
    assert emulator.state.submissions == 2 and TOKEN in emulator.state.tokens_seen
    # The DEBUG log went to stderr (so it was captured), and the token is nowhere in it.
    assert "submitted generate task" in log, log[-2000:]
    assert TOKEN not in log


@pytest.mark.subprocess
async def test_stdio_sandbox_works_offline_without_a_token(tmp_path: Path) -> None:
    recorder = Recorder()
    env = child_env(tmp_path, FLUX_MCP_POLL_MIN_SECONDS="0.1", FLUX_MCP_POLL_MAX_SECONDS="0.3")
    with stderr_file(tmp_path) as errlog:
        async with stdio_session(["--sandbox"], env, errlog, recorder) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} >= TOOLS
            result = await client.call_tool(
                "generate_image", {"prompt": "a sandbox cat"}, progress_callback=recorder.on_progress
            )
        errlog.seek(0)
        log = errlog.read()
    data = structured(result)
    assert not result.is_error and data["status"] == "succeeded", text(result)
    assert data["images"][0]["url"].startswith("http://127.0.0.1:")
    assert recorder.progress and recorder.faults == []
    assert "Traceback" not in log


# --- streamable HTTP ------------------------------------------------------------------------------


@asynccontextmanager
async def http_server(settings: Settings) -> AsyncIterator[str]:
    """build_server + streamable_http_app under uvicorn on a free loopback port; yields the MCP URL.

    serve_asgi runs uvicorn with lifespan="off", so the session manager (which enters the server's
    own lifespan) is run here, around it.
    """
    server = build_server(settings)
    app = server.streamable_http_app()
    async with server.session_manager.run(), serve_asgi(app) as base_url:
        yield f"{base_url}/mcp"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_streamable_http_round_trip_with_progress(
    emulator: RunningEmulator, settings: Settings, mode: str
) -> None:
    emulator.state.config.latency = 0.5
    recorder = Recorder()
    async with (
        http_server(settings) as url,
        Client(url, mode=mode, message_handler=recorder.on_message) as client,
    ):
        assert {tool.name for tool in (await client.list_tools()).tools} >= TOOLS
        result = await client.call_tool(
            "generate_image", {"prompt": "a cat over http"}, progress_callback=recorder.on_progress
        )
        invalid = await client.call_tool("generate_image", {"prompt": "x", "size": "7:3"})
    data = structured(result)
    assert not result.is_error and data["status"] == "succeeded" and data["images"], text(result)
    messages = [message or "" for _, message in recorder.progress]
    assert any("Submitted" in message for message in messages), recorder.progress
    assert any("elapsed" in message for message in messages), recorder.progress
    assert invalid.is_error and "16:9" in text(invalid)
    assert recorder.faults == [] and emulator.state.submissions == 1


@pytest.mark.subprocess
async def test_serve_http_subprocess(emulator: RunningEmulator, tmp_path: Path) -> None:
    port = free_port()
    command = [*flux_command(), "serve", "--transport", "http", "--port", str(port)]
    with stderr_file(tmp_path) as errlog:
        process = await anyio.open_process(
            command,
            env=emulator_env(emulator, tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=errlog,
            stderr=errlog,
        )
        try:
            await wait_until_listening(port, process)
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                assert {tool.name for tool in (await client.list_tools()).tools} >= TOOLS
                result = await client.call_tool("generate_image", {"prompt": "a cat from a subprocess"})
            process.terminate()
            with anyio.fail_after(5):
                returncode = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        errlog.seek(0)
        log = errlog.read()
    assert structured(result)["status"] == "succeeded", text(result)
    assert emulator.state.submissions == 1
    # SIGTERM: uvicorn shuts down gracefully, then re-raises the signal (so -SIGTERM), or exits 0.
    assert returncode in (0, -signal.SIGTERM), (returncode, log[-2000:])
    assert "Application shutdown complete" in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
    assert TOKEN not in log
