"""Serving the emulator with uvicorn: embedded in a test or benchmark, or in the foreground for the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from .app import EmulatorRuntime, create_app
from .journal import TaskJournal
from .state import EmulatorConfig, EmulatorState

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 10.0
SHUTDOWN_GRACE = 2.0
BACKLOG = 4096


@dataclass
class RunningEmulator:
    """A live emulator: point a client at `base_url`; script and inspect it through `state`."""

    base_url: str
    state: EmulatorState
    app: Starlette

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    async def reset(self) -> None:
        """Make it the emulator it was when it started, on the same port (`EmulatorRuntime.reset`)."""
        runtime: EmulatorRuntime = self.app.state.runtime
        await runtime.reset()


@asynccontextmanager
async def serve_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    journal: Path | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Serve a fresh emulator on `host:port` (0 = any free port) for the duration of the block.

    With `journal`, its tasks are kept in that file and it answers for the tasks of every other
    emulator sharing the file (the sandbox's processes); without, they live in memory only.
    A busy `port` raises OSError before anything is served.
    """
    tasks = TaskJournal(journal) if journal is not None else None
    try:
        state = EmulatorState(config if config is not None else EmulatorConfig(), journal=tasks)
        app = create_app(state)
        async with serve_asgi(app, host=host, port=port) as base_url:
            yield RunningEmulator(base_url=base_url, state=state, app=app)
    finally:
        if tasks is not None:
            tasks.close()


@asynccontextmanager
async def serve_asgi(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn inside the current event loop; yields its base URL.

    Tests use it for small helper apps too (a webhook receiver, say). No signal handlers are
    installed, so it is safe inside pytest or another program's loop. `sock`, a socket the caller
    already listens on, replaces host and port: for an app that must know its own URL when built.
    """
    runtime = _runtime_of(app)
    if sock is not None:
        host, port = sock.getsockname()[:2]
    else:
        sock = _bind(host, port)
    server = _Server(_uvicorn_config(app, host, port), runtime=runtime, signals=False)
    stopped = anyio.Event()

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                with anyio.fail_after(STARTUP_TIMEOUT):
                    while not server.started:
                        if stopped.is_set():
                            raise RuntimeError("uvicorn stopped during startup")
                        await anyio.sleep(0.005)
                yield _base_url(host, server.servers[0].sockets[0].getsockname()[1])
            finally:
                with anyio.CancelScope(shield=True):
                    server.should_exit = True
                    with anyio.move_on_after(SHUTDOWN_GRACE + 2.0):
                        await stopped.wait()
                    if not stopped.is_set():
                        logger.warning("emulator: uvicorn did not stop in time; cancelling it")
                        server.force_exit = True
                        tg.cancel_scope.cancel()
    finally:
        if runtime is not None:
            with anyio.CancelScope(shield=True):
                await runtime.aclose()


def run_emulator_forever(
    config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> None:
    """Serve the emulator in the foreground until SIGINT/SIGTERM (the `flux-mcp emulator` command).

    Its address is logged at INFO: the command configures logging, as any program running it would.
    """
    app = create_app(EmulatorState(config if config is not None else EmulatorConfig()))
    runtime: EmulatorRuntime = app.state.runtime
    sock = _bind(host, port)
    server = _Server(_uvicorn_config(app, host, port), runtime=runtime, signals=True)
    logger.info("Flux API emulator listening on %s", _base_url(host, sock.getsockname()[1]))

    async def main() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            await runtime.aclose()

    # uvicorn re-raises a captured SIGINT after its graceful shutdown.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    logger.info("Flux API emulator stopped")


class _Server(uvicorn.Server):
    """uvicorn that stops quickly and, when embedded, leaves signal handlers to the process's owner.

    Stock uvicorn notices `should_exit` on a 0.1 s tick and then sleeps another 0.1 s before draining;
    with a fresh emulator per test that fixed cost dominated the suite.
    """

    def __init__(self, config: uvicorn.Config, *, runtime: EmulatorRuntime | None, signals: bool) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.signals = signals
        if runtime is not None:
            runtime.attach(self.server_state)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self.signals:
            with super().capture_signals():
                yield
        else:
            yield

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            # on_tick refreshes the Date header every 10th call: once per 0.1 s here.
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.01)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        if self.runtime is not None:
            self.runtime.begin_shutdown()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        # The emulator's waiting requests give up on begin_shutdown, so this drains in milliseconds.
        # uvicorn offers no event for "drained", hence the poll.
        with anyio.move_on_after(SHUTDOWN_GRACE):
            while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        if state.tasks:
            logger.info("emulator: cancelling %d unfinished request(s) at shutdown", len(state.tasks))
            for task in list(state.tasks):
                task.cancel()
            for connection in list(state.connections):
                connection.transport.close()
        for server in self.servers:
            await server.wait_closed()


def _runtime_of(app: ASGIApp) -> EmulatorRuntime | None:
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    return runtime if isinstance(runtime, EmulatorRuntime) else None


def _uvicorn_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    # log_config=None: uvicorn must not reconfigure the process's logging (its access log goes to
    # stdout, which may be an MCP stdio channel).
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
        backlog=BACKLOG,
        timeout_keep_alive=30,
    )


def _bind(host: str, port: int) -> socket.socket:
    """Bind and listen up front: a busy port is an OSError here, not uvicorn's sys.exit.

    Listening here too (uvicorn listens again, harmlessly) matters on Linux, where two sockets with
    SO_REUSEADDR may both bind one port and only the second listen() fails.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    # An explicit IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every keep-alive request stalls ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _base_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
