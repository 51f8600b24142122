"""Drivers for agent frameworks (pydantic-ai, openai-agents, google-adk, llama-index), offline models.

Each framework connects to flux-mcp as its users connect it: its own stdio client launching the
`flux-mcp` console script, or its own streamable-HTTP client. A scripted model stands in for the
LLM: it issues the tool calls a real model would and records exactly what the framework handed back
to it (text, images, whether it was flagged as an error). That record is what the tests check.

The frameworks are imported only inside the drivers, so a missing one skips its tests (or fails them
where FLUX_MCP_REQUIRE names `frameworks`) instead of breaking collection.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from flux_mcp.emulator import RunningEmulator
from tests.support import TOKEN, flux_command, http_service, make_settings
from tests.support.prerequisites import require_module

CORE_TOOLS = {"generate_image", "edit_image", "get_task", "get_tasks", "list_tasks"}
CLIENT_TOKEN = "framework-client-token-42"
TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FRAMEWORKS_DOC = Path(__file__).resolve().parents[2] / "docs" / "frameworks.md"

Call = tuple[str, dict[str, Any]]
Step = Call | Callable[["Script"], Call | None]


# --- what the model saw -------------------------------------------------------------------------


@dataclass
class ToolSpec:
    """A tool as the framework offered it to the model."""

    description: str
    schema: dict[str, Any]


@dataclass
class Seen:
    """One tool result as the framework handed it to the model."""

    tool: str
    text: str
    images: list[bytes] = field(default_factory=list)
    flagged_error: bool = False  # the framework marked it as an error (pydantic-ai); openai-agents cannot

    def __str__(self) -> str:
        return f"{self.tool}: {self.text[:200]!r} + {len(self.images)} images"

    def task_id(self) -> str:
        match = TASK_ID.search(self.text)
        assert match is not None, f"no task id in what the model saw: {self.text!r}"
        return match.group(0)


class Script:
    """The scripted model's plan: steps, each a tool call or a function of what was seen so far.

    A function step returns the call to make, or None to make no call for it. After the last step the
    model ends the run with `final` as its answer.
    """

    def __init__(self, *steps: Step, final: str = "done") -> None:
        self.steps: list[Step] = list(steps)
        self.final = final
        self.tools: dict[str, ToolSpec] = {}
        self.seen: list[Seen] = []
        self.calls: list[Call] = []

    def next_call(self) -> Call | None:
        while self.steps:
            step = self.steps.pop(0)
            call = step(self) if callable(step) else step
            if call is not None:
                self.calls.append(call)
                return call
        return None

    def last(self, tool: str) -> Seen:
        matches = [seen for seen in self.seen if seen.tool == tool]
        assert matches, f"the model never saw a {tool} result; it saw {[str(seen) for seen in self.seen]}"
        return matches[-1]


def repeat_until_images(call: Call, attempts: int) -> list[Step]:
    """A model that repeats the identical call, up to `attempts` times in all, until it gets an image.

    That is what frameworks ask of it when a call timed out ("Please try again.").
    """

    def again(script: Script) -> Call | None:
        tries = [seen for seen in script.seen if seen.tool == call[0]]
        return None if tries and tries[-1].images else call

    return [call, *[again] * (attempts - 1)]


def get_task_of(tool: str) -> Step:
    """The next call a model makes after a pending result: get_task with the id it read in the text."""
    return lambda script: ("get_task", {"task_id": script.last(tool).task_id()})


def decode_image(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


# --- where flux-mcp runs -----------------------------------------------------------------------


@dataclass
class Stdio:
    command: str
    args: list[str]
    env: dict[str, str]


@dataclass
class Http:
    url: str
    headers: dict[str, str]


Endpoint = Stdio | Http


def stdio_env(emulator: RunningEmulator, scratch: Path, **values: str) -> dict[str, str]:
    """What a framework's stdio config passes: the token and base URL, files and history in `scratch`.

    PYTHONPATH is passed on so the child runs the same flux_mcp as the tests.
    """
    env = {
        "ACEDATACLOUD_API_TOKEN": TOKEN,
        "ACEDATACLOUD_API_BASE_URL": emulator.base_url,
        "FLUX_MCP_OUTPUT_DIR": str(scratch / "images"),
        "FLUX_MCP_DB": str(scratch / "history.db"),
        "FLUX_MCP_POLL_MIN_SECONDS": "0.05",
        "FLUX_MCP_POLL_MAX_SECONDS": "0.2",
        "FLUX_MCP_LOG_LEVEL": "WARNING",
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(values)
    return env


def stdio_endpoint(emulator: RunningEmulator, scratch: Path, **values: str) -> Stdio:
    command, *args = flux_command()
    return Stdio(command, args, stdio_env(emulator, scratch, **values))


@asynccontextmanager
async def http_endpoint(emulator: RunningEmulator, **overrides: Any) -> AsyncIterator[Http]:
    """The real HTTP app (bearer gate included) on a free loopback port, as `flux-mcp serve` runs it."""
    settings = make_settings(emulator, auth_tokens=CLIENT_TOKEN, **overrides)
    async with http_service(settings) as base_url:
        yield Http(f"{base_url}/mcp", {"authorization": f"Bearer {CLIENT_TOKEN}"})


# --- the frameworks ----------------------------------------------------------------------------


def require_framework(module: str, package: str) -> None:
    require_module("frameworks", module, f"{package} is not installed (pip install -e '.[test,frameworks]')")


class Framework(Protocol):
    name: str

    async def converse(self, endpoint: Endpoint, script: Script, **options: Any) -> str:
        """Run one agent conversation driven by `script`; returns the agent's final output."""
        ...


class PydanticAI:
    """pydantic-ai's MCPToolset (on fastmcp's client) with a FunctionModel that follows a Script."""

    name = "pydantic-ai"

    def __init__(self) -> None:
        require_framework("pydantic_ai.mcp", "pydantic-ai-slim[mcp]")

    def toolset(self, endpoint: Endpoint, **options: Any) -> Any:
        from fastmcp.client.transports import StdioTransport
        from pydantic_ai.mcp import MCPToolset

        if isinstance(endpoint, Stdio):
            return MCPToolset(StdioTransport(endpoint.command, endpoint.args, env=endpoint.env), **options)
        return MCPToolset(endpoint.url, headers=endpoint.headers, **options)

    def model(self, script: Script) -> Any:
        from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
        from pydantic_ai.models.function import AgentInfo, FunctionModel

        def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            script.tools = {
                tool.name: ToolSpec(tool.description or "", tool.parameters_json_schema)
                for tool in info.function_tools
            }
            script.seen.extend(_pydantic_ai_results(messages[-1]))
            call = script.next_call()
            if call is None:
                return ModelResponse(parts=[TextPart(script.final)])
            return ModelResponse(parts=[ToolCallPart(call[0], call[1])])

        return FunctionModel(respond)

    async def converse(self, endpoint: Endpoint, script: Script, **options: Any) -> str:
        from pydantic_ai import Agent

        toolset = self.toolset(endpoint, **options)
        try:
            result = await Agent(self.model(script), toolsets=[toolset]).run("Draw what the script says.")
        finally:
            if isinstance(endpoint, Stdio):  # fastmcp keeps a stdio server alive after the run otherwise
                await toolset.client.transport.disconnect()
        return str(result.output)


def _pydantic_ai_results(message: Any) -> list[Seen]:
    from pydantic_ai.messages import BinaryContent, RetryPromptPart, ToolReturnPart

    seen: list[Seen] = []
    for part in getattr(message, "parts", []):
        if isinstance(part, ToolReturnPart):
            items = part.content if isinstance(part.content, list) else [part.content]
            images = [item.data for item in items if isinstance(item, BinaryContent) and item.is_image]
            others = [item for item in items if not isinstance(item, BinaryContent)]
            texts = [item if isinstance(item, str) else json.dumps(item, default=str) for item in others]
            seen.append(Seen(part.tool_name, "\n".join(texts), images, part.outcome != "success"))
        elif isinstance(part, RetryPromptPart) and part.tool_name:
            seen.append(Seen(part.tool_name, part.model_response(), [], True))
    return seen


class OpenAIAgents:
    """openai-agents' MCPServerStdio / MCPServerStreamableHttp with a minimal Model that follows a Script."""

    name = "openai-agents"

    def __init__(self) -> None:
        require_framework("agents.mcp", "openai-agents")
        from agents import set_tracing_disabled

        set_tracing_disabled(True)  # tracing would export to the network

    def server(self, endpoint: Endpoint, **options: Any) -> Any:
        from agents.mcp import MCPServerStdio, MCPServerStreamableHttp

        if isinstance(endpoint, Stdio):
            params = {"command": endpoint.command, "args": endpoint.args, "env": endpoint.env}
            return MCPServerStdio(params, **options)
        return MCPServerStreamableHttp({"url": endpoint.url, "headers": endpoint.headers}, **options)

    def model(self, script: Script) -> Any:
        return scripted_openai_model(script)

    async def converse(self, endpoint: Endpoint, script: Script, **options: Any) -> str:
        async with self.server(endpoint, **options) as server:
            return await self.run(server, script)

    async def run(self, server: Any, script: Script) -> str:
        from agents import Agent, RunConfig, Runner

        agent = Agent(name="illustrator", model=self.model(script), mcp_servers=[server])
        config = RunConfig(tracing_disabled=True)
        result = await Runner.run(agent, "Draw what the script says.", run_config=config)
        return str(result.final_output)


def scripted_openai_model(script: Script) -> Any:
    """A minimal openai-agents Model: issues the Script's next call, or ends with a message."""
    from agents import FunctionTool
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    class ScriptedModel(Model):
        def __init__(self) -> None:
            self.names: dict[str, str] = {}  # call_id -> tool name
            self.answered: set[str] = set()

        async def get_response(
            self,
            system_instructions: str | None,
            input: Any,
            model_settings: Any,
            tools: list[Any],
            output_schema: Any,
            handoffs: list[Any],
            tracing: Any,
            **_: Any,
        ) -> ModelResponse:
            script.tools = {
                tool.name: ToolSpec(tool.description, tool.params_json_schema)
                for tool in tools
                if isinstance(tool, FunctionTool)
            }
            for item in input if isinstance(input, list) else []:
                if isinstance(item, dict) and item.get("type") == "function_call_output":
                    call_id = item["call_id"]
                    if call_id in self.names and call_id not in self.answered:
                        self.answered.add(call_id)
                        script.seen.append(_openai_result(self.names[call_id], item["output"]))
            call = script.next_call()
            if call is None:
                text = ResponseOutputText(type="output_text", text=script.final, annotations=[])
                message = ResponseOutputMessage(
                    id="msg_final", type="message", role="assistant", status="completed", content=[text]
                )
                return ModelResponse(output=[message], usage=Usage(), response_id=None)
            number = len(self.names)
            self.names[f"call_{number}"] = call[0]
            tool_call = ResponseFunctionToolCall(
                id=f"fc_{number}",
                call_id=f"call_{number}",
                type="function_call",
                name=call[0],
                arguments=json.dumps(call[1]),
            )
            return ModelResponse(output=[tool_call], usage=Usage(), response_id=None)

        async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            raise NotImplementedError("the scripted model does not stream")
            yield  # an async generator, as the interface says

    return ScriptedModel()


def _openai_result(tool: str, output: Any) -> Seen:
    """A function_call_output as the model receives it: a string, or input_text / input_image items."""
    items = output if isinstance(output, list) else [output]
    texts: list[str] = []
    images: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif item.get("type") == "input_image":
            header, _, data = item["image_url"].partition(",")
            assert header.startswith("data:image/") and header.endswith(";base64"), header
            images.append(base64.b64decode(data))
        else:
            texts.append(item.get("text", json.dumps(item)))
    return Seen(tool, "\n".join(texts), images)


FRAMEWORKS: dict[str, Callable[[], Framework]] = {"pydantic-ai": PydanticAI, "openai-agents": OpenAIAgents}


# The other two frameworks on mcp 2.x, driven through their snippets in docs/frameworks.md (stdio) only.


class GoogleADK:
    """google-adk's McpToolset in an LlmAgent whose model is a scripted BaseLlm, run by InMemoryRunner."""

    name = "google-adk"

    def __init__(self) -> None:
        require_framework("google.adk.tools.mcp_tool", "google-adk[mcp]")

    def model(self, script: Script) -> Any:
        from google.adk.models.base_llm import BaseLlm
        from google.adk.models.llm_response import LlmResponse
        from google.genai import types

        class ScriptedLlm(BaseLlm):
            model: str = "scripted"

            async def generate_content_async(
                self, llm_request: Any, stream: bool = False
            ) -> AsyncIterator[Any]:
                declarations = [tool.function_declarations or [] for tool in llm_request.config.tools or []]
                script.tools = {
                    declaration.name: ToolSpec(
                        declaration.description or "", declaration.parameters_json_schema
                    )
                    for group in declarations
                    for declaration in group
                }
                for part in llm_request.contents[-1].parts or []:
                    if part.function_response is not None:
                        response = part.function_response
                        script.seen.append(_adk_result(response.name, response.response or {}))
                call = script.next_call()
                if call is None:
                    part = types.Part(text=script.final)
                else:
                    part = types.Part(function_call=types.FunctionCall(name=call[0], args=call[1]))
                yield LlmResponse(content=types.Content(role="model", parts=[part]))

        return ScriptedLlm()

    async def run(self, agent: Any, prompt: str) -> str:
        from google.adk.runners import InMemoryRunner
        from google.genai import types

        runner = InMemoryRunner(agent=agent)
        session = await runner.session_service.create_session(app_name=runner.app_name, user_id="user")
        message = types.Content(role="user", parts=[types.Part(text=prompt)])
        answer = ""
        async for event in runner.run_async(user_id="user", session_id=session.id, new_message=message):
            texts = [part.text for part in (event.content.parts or []) if part.text] if event.content else []
            answer = " ".join(texts) or answer
        return answer


def _adk_result(tool: str, response: dict[str, Any]) -> Seen:
    """ADK hands the model the whole CallToolResult as a dict (as JSON text, base64 previews included)."""
    blocks = response.get("content", [])
    texts = [block["text"] for block in blocks if block.get("type") == "text"]
    images = [base64.b64decode(block["data"]) for block in blocks if block.get("type") == "image"]
    if "error" in response:  # ADK's own wrapping of a failed call
        texts.append(str(response["error"]))
    return Seen(tool, "\n".join(texts), images, bool(response.get("isError") or "error" in response))


class LlamaIndex:
    """llama-index-tools-mcp's converted tools (McpToolSpec over BasicMCPClient), called as an agent would.

    A llama-index agent calls `tool.acall(**arguments)` and gives its LLM `ToolOutput.content`: that text
    is what is recorded. The calls follow a Script; no LLM loop is needed for that.
    """

    name = "llama-index"

    def __init__(self) -> None:
        require_framework("llama_index.tools.mcp", "llama-index-tools-mcp")

    async def call_tools(self, client: Any, script: Script) -> None:
        from llama_index.tools.mcp import McpToolSpec

        tools = {tool.metadata.name: tool for tool in await McpToolSpec(client=client).to_tool_list_async()}
        script.tools = {
            name: ToolSpec(tool.metadata.description, tool.metadata.get_parameters_dict())
            for name, tool in tools.items()
        }
        while (call := script.next_call()) is not None:
            output = await tools[call[0]].acall(**call[1])
            flagged = bool(getattr(output.raw_output, "is_error", False))
            script.seen.append(Seen(call[0], output.content, [], flagged))


# --- the snippets of docs/frameworks.md ------------------------------------------------------------


def doc_snippet(name: str) -> str:
    """The ```python block after `<!-- snippet: NAME -->` in docs/frameworks.md."""
    text = FRAMEWORKS_DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```python\n(.*?)```", text, re.S)
    assert match is not None, f"docs/frameworks.md has no snippet marked {name!r}"
    return match.group(1)


def snippet_env(name: str) -> dict[str, str]:
    """The environment a snippet gives flux-mcp: its `env` literal (a keyword or a dict entry), read unrun."""
    for node in ast.walk(ast.parse(doc_snippet(name))):
        if isinstance(node, ast.keyword) and node.arg == "env":
            return dict(ast.literal_eval(node.value))
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "env":
                    return dict(ast.literal_eval(value))
    raise AssertionError(f"the {name} snippet passes flux-mcp no env")


def run_snippet(name: str) -> dict[str, Any]:
    """Execute a snippet of docs/frameworks.md as a module; what it prints is collected in `printed`.

    (`print` is replaced rather than captured: pytest's captured stderr has no file descriptor to hand
    to a stdio server.)
    """
    printed: list[str] = []
    namespace: dict[str, Any] = {
        "__name__": f"snippet_{name.replace('-', '_')}",
        "printed": printed,
        "print": lambda *values: printed.append(" ".join(str(value) for value in values)),
    }
    exec(compile(doc_snippet(name), f"docs/frameworks.md:{name}", "exec"), namespace)
    return namespace


def local_flux_launch(command: str, args: list[str]) -> tuple[str, list[str]]:
    """The snippet's `flux-mcp ARGS`, run with this environment's flux-mcp (hosts need full paths too)."""
    assert command == "flux-mcp", f"the snippet launches {command!r}, not flux-mcp"
    local, *local_args = flux_command()
    return local, [*local_args, *args]
