"""The TypeScript SDK 1.x client's Tasks (`client.experimental.tasks`, protocol 2025-11-25), as VS Code-style
hosts use them, over stdio and streamable HTTP.

tests/bridges/ts-sdk-tasks.mjs is the client; the test drives it one command per line and reads its JSON
answers, so that the emulated job ends when the test says (`finish_tasks_now`), never on a clock. The
transcript of the stdio run is printed (pytest -s): the immediate task, the polls, the completed result.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from tests.support import emulator_env, finish_tasks_now, flux_command, http_service, make_settings
from tests.support.prerequisites import require
from tests.support.web import text_lines

pytestmark = [pytest.mark.anyio, pytest.mark.node, pytest.mark.subprocess]

BRIDGES = Path(__file__).resolve().parents[1] / "bridges"
DRIVER = BRIDGES / "ts-sdk-tasks.mjs"
ALICE, BOB = "sk-alice-ts-0123456789abcdef", "sk-bob-ts-fedcba9876543210"
BOUND = 60.0  # only so that a broken build fails instead of hanging


class TsError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.code = error.get("code")


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None:
        require("node", "TypeScript SDK test: node not found; install Node.js to run it")
    if not (BRIDGES / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json").is_file():
        require(
            "node", "TypeScript SDK test: no tests/bridges/node_modules; run `npm ci --prefix tests/bridges`"
        )
    return found


class TsClient:
    """One running ts-sdk-tasks.mjs: `ask` sends a command and returns its answer's value (or raises)."""

    def __init__(self, process: anyio.abc.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._lines = text_lines(process.stdout)
        self.events: list[dict[str, Any]] = []
        self.transcript: list[str] = []

    async def send(self, op: str, **fields: Any) -> None:
        line = json.dumps({"op": op, **fields})
        self.transcript.append(f"> {line}")
        await self._stdin.send(line.encode() + b"\n")

    async def answer(self) -> Any:
        """The next answer line (events before it are kept in `events`)."""
        with anyio.fail_after(BOUND):
            while True:
                message = json.loads(await self._lines.__anext__())
                self.transcript.append(f"< {json.dumps(message)[:400]}")
                if "event" in message:
                    self.events.append(message)
                    return message
                if not message["ok"]:
                    raise TsError(message["error"])
                return message["value"]

    async def ask(self, op: str, **fields: Any) -> Any:
        await self.send(op, **fields)
        return await self.answer()


@asynccontextmanager
async def ts_client(node: str, how: dict[str, Any]) -> AsyncIterator[TsClient]:
    async with await anyio.open_process([node, str(DRIVER)], cwd=BRIDGES) as process:
        client = TsClient(process)
        try:
            await client._stdin.send(json.dumps(how).encode() + b"\n")
            assert await client.answer() == {"connected": True}
            yield client
            await client.send("close")
            with anyio.fail_after(BOUND):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()


def over_stdio(emulator: RunningEmulator, tmp_path: Path) -> dict[str, Any]:
    command, *args = flux_command()
    return {"transport": "stdio", "command": command, "args": args, "env": emulator_env(emulator, tmp_path)}


async def run_a_task_to_its_images(client: TsClient, emulator: RunningEmulator) -> dict[str, Any]:
    """callToolStream as a host calls it: the SDK makes it a task, polls tasks/get, fetches tasks/result."""
    capabilities = await client.ask("capabilities")
    assert capabilities["server"]["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    tools = {tool["name"]: tool["execution"] for tool in await client.ask("listTools")}
    assert tools["generate_image"] == {"taskSupport": "optional"} and tools["get_credits"] is None
    await client.send("callToolStream", name="generate_image", arguments={"prompt": "a lighthouse at dusk"})
    created = await client.answer()
    assert created["event"] == "taskCreated" and created["task"]["status"] == "working"
    task_id = created["task"]["taskId"]
    polled = await client.answer()  # the SDK's first tasks/get, while the job still runs
    assert polled == {"event": "taskStatus", "task": polled["task"]} and polled["task"]["status"] == "working"
    finish_tasks_now(emulator)
    while (message := await client.answer()).get("event") == "taskStatus":
        pass
    result: dict[str, Any] = message
    assert result["structuredContent"]["status"] == "succeeded" and not result.get("isError")
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert any(block["type"] == "image" for block in result["content"])
    assert [event["task"]["status"] for event in client.events][-1] == "completed"
    assert (await client.ask("getTask", taskId=task_id))["status"] == "completed"
    again = await client.ask("getTaskResult", taskId=task_id)
    assert again["structuredContent"]["task_id"] == result["structuredContent"]["task_id"]
    listed = await client.ask("listTasks")
    assert task_id in [task["taskId"] for task in listed["tasks"]]
    return result


async def cancel_a_running_task(client: TsClient, emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 3600
    created = await client.ask(
        "createTask", name="generate_image", arguments={"prompt": "a cancelled cat"}, task={"ttl": 60000}
    )
    task_id = created["task"]["taskId"]
    assert created["task"]["ttl"] == 60000
    cancelled = await client.ask("cancelTask", taskId=task_id)
    assert cancelled["status"] == "cancelled" and "billed" in cancelled["statusMessage"]
    assert (await client.ask("getTask", taskId=task_id))["status"] == "cancelled"
    with pytest.raises(TsError) as again:
        await client.ask("cancelTask", taskId=task_id)
    assert again.value.code == -32602


async def test_typescript_sdk_tasks_over_stdio(node: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.state.config.latency = 3600  # each job ends when the test says
    async with ts_client(node, over_stdio(emulator, tmp_path)) as client:
        await run_a_task_to_its_images(client, emulator)
        with pytest.raises(TsError) as bad:  # refused before any task exists: nothing submitted
            await client.ask("createTask", name="generate_image", arguments={"prompt": ""})
        assert bad.value.code == -32602 and "prompt" in str(bad.value)
        assert emulator.state.submissions == 1
        await cancel_a_running_task(client, emulator)
    print("\nTypeScript SDK 1.x over stdio, protocol 2025-11-25:\n" + "\n".join(client.transcript[:12]))


async def test_typescript_sdk_tasks_over_http_are_each_callers_own(
    node: str, emulator: RunningEmulator
) -> None:
    emulator.state.config.latency = 3600
    settings: Settings = make_settings(emulator, auth_tokens=f"{ALICE},{BOB}")
    async with http_service(settings) as base_url:
        url = f"{base_url}/mcp"
        async with ts_client(node, {"transport": "http", "url": url, "token": ALICE}) as alice:
            result = await run_a_task_to_its_images(alice, emulator)
            task_id = result["_meta"]["io.modelcontextprotocol/related-task"]["taskId"]
            await cancel_a_running_task(alice, emulator)
            async with ts_client(node, {"transport": "http", "url": url, "token": BOB}) as bob:
                for op in ("getTask", "getTaskResult", "cancelTask"):
                    with pytest.raises(TsError) as refused:
                        await bob.ask(op, taskId=task_id)
                    assert refused.value.code == -32602, op
                assert (await bob.ask("listTasks"))["tasks"] == []
