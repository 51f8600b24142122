"""flux-mcp from real agent frameworks, over streamable HTTP and stdio, each with an offline scripted model.

pydantic-ai and openai-agents (both on mcp 2.x) load the tools, call them and hand the results to
the model; the scripted model records what it was handed (see tests/support/frameworks.py). One test
per behaviour over HTTP; over stdio the snippets of docs/frameworks.md run one conversation with all of
them, with the LLM swapped for the scripted model. The google-adk and llama-index snippets (also on
mcp 2.x) run the same conversation; the langchain and smolagents ones (mcp 1.x) are read, not run. A
framework that is not installed (`pip install -e ".[test,frameworks]"`) skips its tests with the
reason. The retry rule after a client timeout: test_frameworks_retry.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from tests.support.frameworks import (
    CORE_TOOLS,
    FRAMEWORKS,
    Endpoint,
    Framework,
    GoogleADK,
    LlamaIndex,
    OpenAIAgents,
    PydanticAI,
    Script,
    decode_image,
    doc_snippet,
    get_task_of,
    http_endpoint,
    local_flux_launch,
    run_snippet,
    snippet_env,
    stdio_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.frameworks]

# What docs/frameworks.md recommends, so the tests run the settings users are told to use.
RECOMMENDED: dict[str, dict[str, Any]] = {
    "pydantic-ai": {},  # read_timeout defaults to 300 s
    "openai-agents": {"client_session_timeout_seconds": 60, "cache_tools_list": True},
}


@pytest.fixture(params=sorted(FRAMEWORKS))
def framework(request: pytest.FixtureRequest) -> Framework:
    return FRAMEWORKS[request.param]()


@pytest.fixture
async def endpoint(emulator: RunningEmulator) -> AsyncIterator[Endpoint]:
    """Streamable HTTP, for the tests one behaviour each; stdio is the doc snippets' transport below."""
    async with http_endpoint(emulator) as http:
        yield http


async def converse(framework: Framework, endpoint: Endpoint, script: Script) -> str:
    return await framework.converse(endpoint, script, **RECOMMENDED[framework.name])


async def test_tools_load_with_their_schemas(
    framework: Framework, endpoint: Endpoint, emulator: RunningEmulator
) -> None:
    script = Script()
    assert await converse(framework, endpoint, script) == "done"

    assert set(script.tools) >= CORE_TOOLS
    for name in CORE_TOOLS:
        tool = script.tools[name]
        assert tool.description.strip(), f"{name} reached the model without a description"
        assert tool.schema.get("type") == "object", (name, tool.schema)
        for prop, schema in tool.schema.get("properties", {}).items():
            assert str(schema.get("description", "")).strip(), f"{name}.{prop} lost its description: {schema}"
    generate = script.tools["generate_image"]
    assert generate.schema["required"] == ["prompt"]
    assert "flux-dev" in str(generate.schema["properties"]["model"])
    assert "get_task" in generate.description  # what to do with a pending result
    assert set(script.tools["edit_image"].schema["required"]) == {"prompt", "image_url"}
    assert script.tools["get_task"].schema["required"] == ["task_id"]
    assert emulator.state.submissions == 0


async def test_a_call_returns_text_and_an_image(
    framework: Framework, endpoint: Endpoint, emulator: RunningEmulator
) -> None:
    script = Script(("generate_image", {"prompt": "a lighthouse at dusk"}))
    assert await converse(framework, endpoint, script) == "done"

    seen = script.last("generate_image")
    assert not seen.flagged_error, seen.text
    task_id = seen.task_id()
    assert "Generated 1 image" in seen.text and f"/files/{task_id}/0.png" in seen.text, seen.text
    assert len(seen.images) == 1, f"the model got {len(seen.images)} images"
    width, height = decode_image(seen.images[0])
    assert 0 < max(width, height) <= 2048
    assert emulator.state.submissions == 1


async def test_a_bad_call_is_a_readable_tool_error(
    framework: Framework, endpoint: Endpoint, emulator: RunningEmulator
) -> None:
    script = Script(("generate_image", {"prompt": "a cat", "model": "nope"}))
    assert await converse(framework, endpoint, script) == "done"  # the run went on: no crash

    seen = script.last("generate_image")
    assert "model" in seen.text and "flux-dev" in seen.text, seen.text  # says what is allowed
    assert "Traceback" not in seen.text and not seen.images
    if isinstance(framework, PydanticAI):
        assert seen.flagged_error  # pydantic-ai tells its model the call failed and may be retried
    assert emulator.state.submissions == 0  # refused before any upstream call


async def test_a_pending_job_completes_with_get_task(framework: Framework, emulator: RunningEmulator) -> None:
    script = Script(
        ("generate_image", {"prompt": "a slow lighthouse", "wait_seconds": 0}),
        get_task_of("generate_image"),
    )
    # The path of a host without MCP Tasks (with fastmcp-tasks installed, pydantic-ai's fastmcp client
    # declares them, and the call is one task instead: tests/clients/test_tasks_fastmcp.py).
    async with http_endpoint(emulator, tasks=False) as endpoint:
        assert await converse(framework, endpoint, script) == "done"

    pending, finished = script.last("generate_image"), script.last("get_task")
    assert not pending.images and "get_task" in pending.text, pending.text
    assert finished.task_id() == pending.task_id()
    assert "Generated 1 image" in finished.text and len(finished.images) == 1, finished.text
    assert emulator.state.submissions == 1


# --- over stdio: docs/frameworks.md's snippets as written, with the scripted model in place of the LLM


def whole_conversation() -> Script:
    """Every behaviour above in one conversation (one flux-mcp process to start, not four)."""
    return Script(
        ("generate_image", {"prompt": "a cat", "model": "nope"}),
        ("generate_image", {"prompt": "a lighthouse at dusk"}),
        ("generate_image", {"prompt": "a slow lighthouse", "wait_seconds": 0}),
        get_task_of("generate_image"),
        final="Here it is.",
    )


def check_whole_conversation(script: Script, emulator: RunningEmulator, *, previews: int = 1) -> None:
    """`previews`: images the model sees per finished result (0 when the snippet turns previews off)."""
    assert set(script.tools) >= CORE_TOOLS
    assert script.tools["generate_image"].schema["required"] == ["prompt"]
    refused, finished, pending = [seen for seen in script.seen if seen.tool == "generate_image"]
    assert "flux-dev" in refused.text and not refused.images, refused.text
    assert "Generated 1 image" in finished.text and len(finished.images) == previews, finished.text
    for image in finished.images:
        decode_image(image)
    assert not pending.images and "get_task" in pending.text, pending.text
    resumed = script.last("get_task")
    assert resumed.task_id() == pending.task_id()
    assert "Generated 1 image" in resumed.text and len(resumed.images) == previews, resumed.text
    assert emulator.state.submissions == 2


@pytest.mark.subprocess
async def test_pydantic_ai_snippet_over_stdio(
    emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = PydanticAI()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-offline-never-used")  # the snippet names an OpenAI model
    snippet = run_snippet("pydantic-ai")
    transport = snippet["flux"].client.transport
    transport.command, transport.args = local_flux_launch(transport.command, transport.args)
    # A host without MCP Tasks (pending, then get_task), even where fastmcp-tasks is installed.
    transport.env = {**transport.env, **stdio_env(emulator, tmp_path, FLUX_MCP_TASKS="false")}
    script = whole_conversation()
    try:
        with snippet["agent"].override(model=driver.model(script)):
            await snippet["main"]()
    finally:
        await transport.disconnect()

    assert snippet["printed"] == ["Here it is."]
    check_whole_conversation(script, emulator)
    refused, finished = script.seen[:2]
    assert refused.flagged_error and not finished.flagged_error  # pydantic-ai flags a failed call


@pytest.mark.subprocess
async def test_openai_agents_snippet_over_stdio(emulator: RunningEmulator, tmp_path: Path) -> None:
    driver = OpenAIAgents()
    snippet = run_snippet("openai-agents")
    params = snippet["flux"].params
    params.command, params.args = local_flux_launch(params.command, params.args)
    params.env = {**(params.env or {}), **stdio_env(emulator, tmp_path)}
    script = whole_conversation()
    snippet["agent"].model = driver.model(script)
    await snippet["main"]()

    assert snippet["printed"] == ["Here it is."]
    assert snippet["flux"].client_session_timeout_seconds > 45  # above the server's default wait
    check_whole_conversation(script, emulator)


@pytest.mark.subprocess
async def test_google_adk_snippet_over_stdio(emulator: RunningEmulator, tmp_path: Path) -> None:
    driver = GoogleADK()
    snippet = run_snippet("google-adk")
    toolset, agent = snippet["flux"], snippet["root_agent"]
    params = toolset._connection_params  # the snippet's StdioConnectionParams
    server = params.server_params
    server.command, server.args = local_flux_launch(server.command, server.args)
    server.env = {**(server.env or {}), **stdio_env(emulator, tmp_path)}
    script = whole_conversation()
    agent.model = driver.model(script)
    try:
        answer = await driver.run(agent, "Draw a lighthouse at dusk.")
    finally:
        await toolset.close()

    assert answer == "Here it is."
    assert params.timeout > 45  # StdioConnectionParams.timeout is the call timeout: above the wait
    # The snippet sets FLUX_MCP_PREVIEW=none: ADK pastes results into the model's text, so no base64.
    check_whole_conversation(script, emulator, previews=0)
    assert all(len(seen.text) < 3000 for seen in script.seen), [len(seen.text) for seen in script.seen]
    assert script.seen[0].flagged_error and not script.seen[1].flagged_error


@pytest.mark.subprocess
async def test_llama_index_snippet_over_stdio(emulator: RunningEmulator, tmp_path: Path) -> None:
    driver = LlamaIndex()
    snippet = run_snippet("llama-index")
    client = snippet["flux"]
    client.command_or_url, client.args = local_flux_launch(client.command_or_url, client.args)
    client.env = {**(client.env or {}), **stdio_env(emulator, tmp_path)}
    script = whole_conversation()
    await driver.call_tools(client, script)

    assert client.timeout > 45  # BasicMCPClient(timeout=) is the call timeout: above the wait
    assert set(script.tools) >= CORE_TOOLS
    refused, finished, pending = [seen for seen in script.seen if seen.tool == "generate_image"]
    assert refused.flagged_error and "flux-dev" in refused.text, refused.text
    # llama-index gives its LLM the whole result as text (previews included, unless FLUX_MCP_PREVIEW says no).
    assert "Generated 1 image" in finished.text, finished.text[:500]
    assert "get_task" in pending.text and script.last("get_task").task_id() == pending.task_id()
    assert "Generated 1 image" in script.last("get_task").text
    assert emulator.state.submissions == 2


# --- the two snippets on mcp 1.x: flux-mcp cannot be installed beside them, so they are read, not run


@pytest.mark.parametrize("name", ["langchain-mcp-adapters", "smolagents"])
def test_the_mcp_1_snippets_compile_and_pass_the_token(name: str) -> None:
    compile(doc_snippet(name), f"docs/frameworks.md:{name}", "exec")
    assert snippet_env(name)["ACEDATACLOUD_API_TOKEN"] == "your-token"


def test_the_langchain_snippet_turns_resource_links_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """langchain hands a resource link to the model provider as an image URL it cannot fetch."""
    for name, value in snippet_env("langchain-mcp-adapters").items():
        monkeypatch.setenv(name, value)
    assert Settings().resource_links is False
