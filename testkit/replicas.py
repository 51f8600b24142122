"""Replicas for tests and benchmarks: `flux-mcp serve --transport http` processes on one database,
and a callback router standing in for the load balancer (it decides which replica gets each callback).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flux_mcp.emulator import RunningEmulator
from flux_mcp.emulator.runner import serve_asgi
from testkit import TOKEN, flux_command, free_port

READY_TIMEOUT_SECONDS = 60.0


@dataclass
class Replica:
    name: str
    port: int
    process: anyio.abc.Process
    log: IO[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def read_log(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


def replica_env(
    emulator: RunningEmulator,
    scratch: Path,
    database_url: str,
    public_url: str | None,
    key: str,
    **extra: str,
) -> dict[str, str]:
    env = {name: os.environ[name] for name in ("PATH", "PYTHONPATH") if name in os.environ}
    env.update(
        HOME=str(scratch),  # nothing of a replica's lands in the real home folder
        ACEDATACLOUD_API_TOKEN=TOKEN,
        ACEDATACLOUD_API_BASE_URL=emulator.base_url,
        ACEDATACLOUD_PLATFORM_BASE_URL=emulator.base_url,
        FLUX_MCP_DATABASE_URL=database_url,
        FLUX_MCP_CALLBACK_KEY=key,
        FLUX_MCP_OUTPUT_DIR=str(scratch / "images"),
        FLUX_MCP_STATELESS="true",
        FLUX_MCP_WAIT_SECONDS="60",
        FLUX_MCP_POLL_MIN_SECONDS="0.05",
        FLUX_MCP_POLL_MAX_SECONDS="0.2",
        FLUX_MCP_LOG_LEVEL="INFO",
    )
    if public_url is not None:
        env["FLUX_MCP_PUBLIC_URL"] = public_url
    env.update(extra)
    return env


@asynccontextmanager
async def run_replicas(
    count: int,
    emulator: RunningEmulator,
    scratch: Path,
    database_url: str,
    public_url: str | None,
    **extra: str,
) -> AsyncIterator[list[Replica]]:
    """`count` replicas sharing `database_url` and one callback key; each ready (/healthz 200) on entry."""
    key = secrets.token_hex(32)
    async with AsyncExitStack() as stack:
        replicas = []
        for index in range(count):
            name = "ABCDEFGH"[index]
            env = replica_env(emulator, scratch / name, database_url, public_url, key, **extra)
            replicas.append(await stack.enter_async_context(_replica(name, env, scratch)))
        for replica in replicas:
            await wait_healthy(replica)
        yield replicas


@asynccontextmanager
async def _replica(name: str, env: dict[str, str], scratch: Path) -> AsyncIterator[Replica]:
    port = free_port()
    command = [*flux_command(), "serve", "--transport", "http", "--port", str(port)]
    scratch.mkdir(parents=True, exist_ok=True)
    with open(scratch / f"replica-{name}.log", "w+") as log:
        process = await anyio.open_process(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            yield Replica(name, port, process, log)
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                    with anyio.move_on_after(15):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()


async def health(replica: Replica) -> tuple[int, dict[str, Any]]:
    async with httpx2.AsyncClient(timeout=10, trust_env=False) as http:
        answer = await http.get(f"{replica.url}/healthz")
    return answer.status_code, answer.json()


async def wait_healthy(replica: Replica, *, within: float = READY_TIMEOUT_SECONDS) -> None:
    """Until /healthz answers 200 (history reachable); fails at once if the process exits."""
    with anyio.fail_after(within):
        while True:
            if replica.process.returncode is not None:
                raise AssertionError(f"replica {replica.name} exited: {replica.read_log()[-3000:]}")
            try:
                status, _ = await health(replica)
            except httpx2.HTTPError:
                status = 0
            if status == 200:
                return
            await anyio.sleep(0.1)


@dataclass
class CallbackRouter:
    """The load balancer's part in callbacks: each one the upstream sends goes to `choose()`'s replicas.

    `delivered` lists, per callback, the names of the replicas it was handed to and when (monotonic);
    `statuses`, the HTTP status each of those replicas answered.
    """

    choose: Callable[[], Sequence[Replica]]
    delivered: list[tuple[list[str], float]]
    statuses: list[int] = field(default_factory=list)
    url: str = ""


@asynccontextmanager
async def callback_router(choose: Callable[[], Sequence[Replica]]) -> AsyncIterator[CallbackRouter]:
    router = CallbackRouter(choose, [])
    async with httpx2.AsyncClient(timeout=30, trust_env=False) as http:

        async def forward(request: Request) -> Response:
            body = await request.body()
            targets = list(router.choose())
            router.delivered.append(([t.name for t in targets], anyio.current_time()))
            status = 502
            for target in targets:
                answer = await http.post(
                    f"{target.url}{request.url.path}",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                router.statuses.append(answer.status_code)
                status = answer.status_code
            return Response(status_code=status)

        app = Starlette(routes=[Route("/callbacks/flux/{secret}", forward, methods=["POST"])])
        async with serve_asgi(app) as base_url:
            router.url = base_url
            yield router
