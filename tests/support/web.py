"""What the HTTP-service tests share: the team-token settings, raw JSON-RPC posts, mcp-remote as a bridge."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from tests.support import make_settings

CLIENT_TOKEN = "team-token-0123456789"


def token_settings(emulator: RunningEmulator, **overrides: Any) -> Settings:
    return make_settings(emulator, auth_tokens=f"other-token,{CLIENT_TOKEN}", **overrides)


LEGACY = "2025-06-18"
ACCEPT = "application/json, text/event-stream"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}


def headers_for(token: str | None, session: str | None = None) -> dict[str, str]:
    headers = {"accept": ACCEPT, "mcp-protocol-version": LEGACY}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if session is not None:
        headers["mcp-session-id"] = session
    return headers


async def post(http: httpx2.AsyncClient, base_url: str, body: Any, token: str | None, **kw: Any) -> Any:
    headers = headers_for(token, kw.pop("session", None)) | kw.pop("headers", {})
    return await http.post(f"{base_url}/mcp", json=body, headers=headers, **kw)


def mcp_remote(proxy: list[str], base_url: str, token: str, home: Path) -> tuple[list[str], dict[str, str]]:
    """The `mcp_remote_proxy` fixture's mcp-remote bridging to `base_url` with `token`."""
    home.mkdir(exist_ok=True)  # mcp-remote keeps its OAuth state under HOME
    command = [*proxy, f"{base_url}/mcp", "--header", f"Authorization: Bearer {token}"]
    return command, {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}


def json_lines(*messages: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(message).encode() + b"\n" for message in messages)


async def text_lines(stream: Any) -> AsyncIterator[str]:
    """The non-blank lines a child process writes, as they arrive."""
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode()


async def json_rpc_answers(stream: Any) -> AsyncIterator[dict[str, Any]]:
    """The JSON-RPC answers (with an id) a stdio peer such as mcp-remote writes, skipping notifications."""
    async for line in text_lines(stream):
        message = json.loads(line)
        if "id" in message:
            yield message
