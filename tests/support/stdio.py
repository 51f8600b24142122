"""flux-mcp over stdio spoken to line by line, as a test that checks every byte of stdout needs it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from testkit import flux_command

PROTOCOL = "2025-11-25"  # the initialize handshake most hosts still speak


class RawStdio:
    """flux-mcp over stdio, spoken to line by line; every line it writes to stdout must be JSON-RPC."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.received: list[dict[str, Any]] = []
        self.stdout = bytearray()
        self._responses: dict[Any, dict[str, Any]] = {}
        self._next_id = 1000

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        line = message if isinstance(message, bytes) else message.encode()
        await self._stdin.send(line + b"\n")

    async def read(self) -> dict[str, Any]:
        line = await self._stdout.receive_until(b"\n", 64 * 1024 * 1024)
        self.stdout += line + b"\n"
        message = json.loads(line)  # a line that is not JSON fails the test here
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", line[:300]
        self.received.append(message)
        if "method" not in message:
            assert ("result" in message) != ("error" in message), message
            self._responses[message.get("id")] = message
        return message

    async def response(self, request_id: Any, within: float = 20.0) -> dict[str, Any]:
        with anyio.fail_after(within):
            while request_id not in self._responses:
                await self.read()
        return self._responses.pop(request_id)

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, within: float = 20.0
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return await self.response(self._next_id, within)

    async def call(self, tool: str, arguments: dict[str, Any], *, within: float = 20.0) -> dict[str, Any]:
        answer = await self.request("tools/call", {"name": tool, "arguments": arguments}, within=within)
        result: dict[str, Any] = answer["result"]
        return result

    async def initialize(self) -> None:
        client = {"name": "raw-test", "version": "1"}
        params = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": client}
        answer = await self.request("initialize", params, within=30)
        assert answer["result"]["serverInfo"]["name"] == "flux-mcp"
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


@asynccontextmanager
async def raw_server(env: dict[str, str], errlog: IO[str]) -> AsyncIterator[RawStdio]:
    process = await anyio.open_process(flux_command(), env=env, stderr=errlog)
    try:
        yield RawStdio(process)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()
