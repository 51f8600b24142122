"""The published tool schemas survive every framework's conversion, and lose nothing on the way.

Each tool in tools/list (for plain clients and for MCP Apps clients) goes through the conversions of
`schema_rules` (openai-agents and langchain in strict mode, then OpenAI's strict rules; google-adk's
Gemini conversion; smolagents' typing) and, where they are installed, through the frameworks' own
functions. The old pydantic shapes are put through the same checks to show they catch what broke.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import anyio
import jsonschema
import mcp.client
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp_types import Tool
from pydantic import ValidationError

from flux_mcp.domain.arguments import ASPECT_RATIOS, TOOL_ARGUMENTS
from flux_mcp.domain.catalogue import MODELS
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from flux_mcp.server.build import build_server
from flux_mcp.server.gallery import APP_ONLY_TOOLS
from flux_mcp.server.schemas import portable_schema
from tests.support import make_settings, scratch_folder, text
from tests.support import schema_rules as rules
from tests.support.prerequisites import require_module

CLIENTS = ["plain", "legacy", "apps"]  # legacy: protocol 2025-11-25, as many hosts still speak it


@cache
def listed(kind: str) -> tuple[Tool, ...]:
    """tools/list as a plain, legacy-protocol or MCP Apps client gets it."""

    async def listing() -> tuple[Tool, ...]:
        scratch = scratch_folder()  # in the tmp_path of the first test that asks
        server = build_server(Settings(api_base_url="http://127.0.0.1:9", db=scratch / "history.db"))
        extensions = (
            [mcp.client.advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})] if kind == "apps" else []
        )
        mode = "legacy" if kind == "legacy" else "auto"
        async with Client(server, extensions=extensions, mode=mode) as client:
            return tuple((await client.list_tools()).tools)

    return anyio.run(listing)


def published(kind: str) -> dict[str, dict[str, Any]]:
    """Tool name -> input schema, as `kind` of client gets them."""
    return {tool.name: tool.input_schema for tool in listed(kind)}


def tools_of(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return sorted(published(kind).items())


def test_both_kinds_of_client_are_covered() -> None:
    assert set(TOOL_ARGUMENTS) <= set(published("plain"))
    assert set(published("apps")) == set(published("plain")) | APP_ONLY_TOOLS
    assert published("legacy") == published("plain")


# --- OpenAI strict function calling --------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_openai_strict_accepts_every_tool_after_openai_agents_conversion(kind: str) -> None:
    for name, schema in tools_of(kind):
        assert rules.openai_strict_violations(rules.openai_agents_strict(schema)) == [], name


@pytest.mark.parametrize("kind", CLIENTS)
def test_openai_strict_accepts_every_tool_after_langchain_conversion(kind: str) -> None:
    for name, schema in tools_of(kind):
        assert rules.openai_strict_violations(rules.langchain_strict(schema)) == [], name


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_strict_model_knows_what_to_send_for_every_optional_argument(kind: str) -> None:
    """Strict mode makes every argument required: each optional one is nullable or states its default."""
    for name, schema in tools_of(kind):
        for field, prop in schema["properties"].items():
            if field in schema.get("required", []):
                continue
            assert "null" in prop["type"] or "Default: " in prop["description"], (name, field)


def test_every_default_is_in_the_description() -> None:
    for name, arguments in TOOL_ARGUMENTS.items():
        schema = published("plain")[name]
        for field, info in arguments.model_fields.items():
            if info.is_required() or info.default is None:
                continue
            default = info.default if isinstance(info.default, str) else json.dumps(info.default)  # as sent
            assert f"Default: {default}." in schema["properties"][field]["description"], (name, field)


# --- Gemini (google-adk) and smolagents ----------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_gemini_conversion_keeps_every_description_and_constraint(kind: str) -> None:
    for name, schema in tools_of(kind):
        assert rules.gemini_losses(schema) == [], name


@pytest.mark.parametrize("kind", CLIENTS)
def test_smolagents_sees_the_real_type_of_every_argument(kind: str) -> None:
    for name, schema in tools_of(kind):
        assert rules.smolagents_violations(schema) == [], name


def test_nullable_enum_keeps_its_values_and_admits_null() -> None:
    status = published("plain")["list_tasks"]["properties"]["status"]
    assert status["type"] == ["string", "null"] and status["enum"][-1] is None
    assert "succeeded" in status["enum"] and status["description"].startswith("Only tasks in this state")


# --- the checks catch what broke before ----------------------------------------------------------


def test_the_checks_catch_the_shapes_that_broke_frameworks() -> None:
    """pydantic's own schemas (what the SDK publishes unchanged) fail each check, for the reported reasons."""
    raw = TOOL_ARGUMENTS["list_tasks"].model_json_schema()
    strict = rules.openai_strict_violations(rules.openai_agents_strict(raw))
    assert any("limit: 'default' is not permitted" in problem for problem in strict)
    assert any(
        "status: 'default' is not permitted" in problem
        for problem in rules.openai_strict_violations(rules.langchain_strict(raw))
    )
    assert {"status: description lost", "query: description lost"} <= set(rules.gemini_losses(raw))
    assert len(rules.smolagents_violations(raw)) == 2  # status and query: anyOf, no type

    uri = {"type": "object", "properties": {"url": {"type": "string", "format": "uri", "description": "u"}}}
    assert any(
        "'uri' is not a valid format" in p
        for p in rules.openai_strict_violations(rules.openai_agents_strict(uri))
    )
    assert rules.gemini_losses(uri) == ["url: format lost"]

    null_in_a_string_enum = {"type": "string", "enum": ["a", None]}
    closed = {"type": "object", "properties": {"x": null_in_a_string_enum}, "required": ["x"]}
    assert rules.openai_strict_violations({**closed, "additionalProperties": False}) == [
        "(root).x: enum value None does not validate against type ['string']"
    ]
    assert rules.openai_strict_violations({**closed, "properties": {}}) == [
        "(root): 'additionalProperties' is required to be supplied and to be false",
        "(root): every property must be listed in 'required'",
    ]


# --- the frameworks' own conversions, where installed --------------------------------------------

OPENAI_AGENTS = "openai-agents is not installed (pip install -e '.[test,frameworks]')"
GOOGLE_ADK = "google-adk is not installed (pip install -e '.[test,frameworks]')"


@pytest.mark.frameworks
@pytest.mark.parametrize("kind", CLIENTS)
def test_openai_agents_own_strict_conversion(kind: str) -> None:
    strict_schema = require_module("frameworks", "agents.strict_schema", OPENAI_AGENTS)
    for name, schema in tools_of(kind):
        converted = strict_schema.ensure_strict_json_schema(copy.deepcopy(schema))
        assert converted == rules.openai_agents_strict(schema), name  # the checker converts as it does
        assert rules.openai_strict_violations(converted) == [], name


@pytest.mark.frameworks
@pytest.mark.parametrize("kind", CLIENTS)
def test_openai_agents_turns_every_tool_into_a_strict_function_tool(kind: str) -> None:
    """The conversion openai-agents runs on each listed tool with `convert_schemas_to_strict=True`
    (`MCPUtil.to_function_tool`): a schema it cannot make strict is sent non-strict, with only an
    INFO log line ("Error converting MCP schema to strict mode") to say so."""
    agents_mcp = pytest.importorskip("agents.mcp")
    server = agents_mcp.MCPServerStreamableHttp({"url": "http://127.0.0.1:9/mcp"})  # never connected
    for tool in listed(kind):
        converted = agents_mcp.MCPUtil.to_function_tool(tool, server, convert_schemas_to_strict=True)
        assert converted.strict_json_schema, tool.name
        assert rules.openai_strict_violations(converted.params_json_schema) == [], tool.name


def test_the_strict_function_tool_check_catches_an_open_empty_object() -> None:
    """What get_credits published before: an object without properties that did not say it is closed."""
    agents_mcp = pytest.importorskip("agents.mcp")
    server = agents_mcp.MCPServerStreamableHttp({"url": "http://127.0.0.1:9/mcp"})
    [credits] = [tool for tool in listed("plain") if tool.name == "get_credits"]
    opened = credits.model_copy(update={"input_schema": {"properties": {}, "type": "object"}})
    assert not agents_mcp.MCPUtil.to_function_tool(
        opened, server, convert_schemas_to_strict=True
    ).strict_json_schema


@pytest.mark.parametrize("kind", CLIENTS)
def test_google_adk_own_gemini_conversion_keeps_descriptions(kind: str) -> None:
    gemini = require_module("frameworks", "google.adk.tools._gemini_schema_util", GOOGLE_ADK)
    for name, schema in tools_of(kind):
        converted = gemini._to_gemini_schema(copy.deepcopy(schema))
        for field, prop in schema["properties"].items():
            kept = converted.properties[field]
            assert kept.description == prop["description"], (name, field)
            assert bool(kept.nullable) == ("null" in prop["type"]), (name, field)
            if "enum" in prop:
                assert kept.enum == [value for value in prop["enum"] if value is not None], (name, field)


@pytest.mark.frameworks
def test_google_adk_own_conversion_dropped_descriptions_of_the_old_shapes() -> None:
    gemini = require_module("frameworks", "google.adk.tools._gemini_schema_util", GOOGLE_ADK)
    converted = gemini._to_gemini_schema(TOOL_ARGUMENTS["list_tasks"].model_json_schema())
    assert not converted.properties["status"].description and not converted.properties["query"].description


# --- the rewrite itself ---------------------------------------------------------------------------


def test_rewrite_collapses_nullable_unions_and_describes_defaults_and_formats() -> None:
    original = {
        "type": "object",
        "properties": {
            "mode": {
                "anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "null"}],
                "default": None,
                "description": "Mode.",
            },
            "only": {"anyOf": [{"const": "x", "type": "string"}, {"type": "null"}], "default": "x"},
            "tags": {"type": "array", "items": {"type": "string", "format": "uri"}, "default": ["a"]},
            "models": {"type": "string", "description": "Pick one:\n- a\n- b", "default": "a"},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}], "description": "Two types."},
        },
    }
    before = copy.deepcopy(original)
    rewritten = portable_schema(original)
    assert original == before  # the argument is not changed
    props = rewritten["properties"]
    assert props["mode"] == {"type": ["string", "null"], "enum": ["a", "b", None], "description": "Mode."}
    assert props["only"] == {"type": ["string", "null"], "enum": ["x", None], "description": "Default: x."}
    assert props["tags"] == {
        "type": "array",
        "items": {"type": "string", "description": "Format: uri."},
        "description": 'Default: ["a"].',
    }
    assert props["models"]["description"] == "Pick one:\n- a\n- b\nDefault: a."
    assert props["either"] == original["properties"]["either"]  # a real union is left for the checks to flag


def test_rewrite_closes_only_a_tool_without_arguments() -> None:
    empty = {"type": "object", "properties": {}, "title": "get_creditsArguments"}
    assert portable_schema(empty) == {**empty, "additionalProperties": False}
    with_arguments = {"type": "object", "properties": {"x": {"type": "integer", "description": "X."}}}
    assert portable_schema(with_arguments) == with_arguments  # the frameworks close these themselves


# --- what a strict model sends is still accepted, and validated as before -------------------------


@pytest.mark.anyio
async def test_a_strict_models_call_with_every_argument_gets_the_defaults(emulator: RunningEmulator) -> None:
    """Strict mode sends every argument, null for the optional ones: the server treats null as omitted."""
    async with Client(build_server(make_settings(emulator))) as client:
        result = await client.call_tool(
            "generate_image",
            {
                "prompt": "a fox",
                "model": "flux-dev",
                "size": None,
                "count": 1,
                "wait_seconds": None,
                "preview": None,
            },
        )
        assert not result.is_error, text(result)
        assert result.structured_content is not None and result.structured_content["size"] == "1024x1024"
        listed = await client.call_tool("list_tasks", {"limit": 20, "status": None, "query": None})
        assert not listed.is_error and "a fox" in text(listed)
        refused = await client.call_tool("list_tasks", {"limit": 20, "status": "done", "query": None})
        assert refused.is_error and "status" in text(refused)


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=10))
IMAGE_URLS = [
    "https://cdn.example.com/a.png",
    "HTTP://example.com/x",
    "hTTpS://example.com/x",
    "https:example.com/a.png",
    "  https://example.com/padded.png ",
    "\thttps://example.com/tab.png",
    "flux://images/abc_1/0",
    "flux://images/abc/99",
    " flux://images/abc/1",
    "FLUX://images/abc/1",
    "file:///etc/passwd",
    "/tmp/a.png",
    "ftp://example.com/a.png",
]
# Values a caller might send for each argument: valid ones, edge cases and wrong ones.
ARGUMENT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.one_of(st.text(max_size=30), st.just(" "), st.just("x" * 4001)),
    "model": st.one_of(st.sampled_from([*MODELS, "flux-3", ""]), st.none()),
    "size": st.one_of(
        st.none(),
        st.sampled_from([*ASPECT_RATIOS, "1024x1024", "512X768", "512*512", " 1:1 ", "7:5"]),
        st.text(max_size=25),
    ),
    "count": st.one_of(st.integers(-1, 6), st.booleans(), st.none()),
    "wait_seconds": st.one_of(st.none(), st.floats(-1, 4000, allow_nan=False), st.integers(-1, 4000)),
    "preview": st.one_of(st.none(), st.sampled_from(["none", "small", "default", "big", "NONE"])),
    "image_url": st.one_of(st.sampled_from(IMAGE_URLS), st.text(max_size=20)),
    "task_id": st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True), st.text(max_size=10)),
    "task_ids": st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), max_size=3),
    "limit": st.one_of(st.integers(-1, 120), st.none()),
    "status": st.one_of(st.none(), st.sampled_from(["succeeded", "pending", "unknown", "done"])),
    "query": st.one_of(st.none(), st.text(max_size=30)),
}


@st.composite
def tool_call(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(TOOL_ARGUMENTS)))
    fields = TOOL_ARGUMENTS[name].model_fields
    required = [field for field, info in fields.items() if info.is_required()]
    others = [field for field in fields if field not in required]
    optional = draw(st.lists(st.sampled_from(others), unique=True)) if others else []
    return name, {field: draw(ARGUMENT_VALUES.get(field, ANY_VALUE)) for field in [*required, *optional]}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tool_call())
@example(("generate_video", {"prompt": "0", "draft": 0}))  # a lax bool once slipped through
@example(("generate_video", {"prompt": "0", "duration": 5}))  # taken as "5" (`as_published`)
def test_every_call_the_server_accepts_fits_the_published_schema(call: tuple[str, dict[str, Any]]) -> None:
    """A client that checks arguments against the schema never refuses a call the server would take."""
    name, arguments = call
    try:
        TOOL_ARGUMENTS[name].model_validate(arguments)
    except ValidationError:
        return
    jsonschema.Draft202012Validator(published("plain")[name]).validate(as_published(arguments))


def as_published(arguments: dict[str, Any]) -> dict[str, Any]:
    """The one leniency beyond the schema, on purpose: a whole-number `duration` (5) is taken as its string
    ("5"), which is what the schema publishes (a type union would break Gemini's schema conversion)."""
    duration = arguments.get("duration")
    if isinstance(duration, int) and not isinstance(duration, bool):
        return {**arguments, "duration": str(duration)}
    return arguments
