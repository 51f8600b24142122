"""What agent frameworks do to an MCP tool's input schema, and what their model providers refuse.

Written from the frameworks' sources and the providers' documentation, so tests can put every
published tool schema through them without a network or the frameworks installed:

- `openai_agents_strict`: openai-agents `ensure_strict_json_schema` (`convert_schemas_to_strict=True`):
  every property required, `additionalProperties: false`, `default: null` dropped, oneOf -> anyOf.
- `langchain_strict`: langchain-core `convert_to_openai_tool(tool, strict=True)`: titles stripped
  (but property titles), every property required, `additionalProperties: false`.
- `openai_strict_violations`: OpenAI's "Supported schemas" for strict function calling: a closed
  list of types, keywords and string formats; objects closed and fully required; enum values of
  the declared type. A schema with any violation fails the whole request.
- `gemini_schema` / `gemini_losses`: google-adk's `_to_gemini_schema` (then google-genai's
  `Schema.from_json_schema`): snake_case fields of Gemini's Schema only, `anyOf [X, null]` unwrapped
  to X (the outer description is lost), formats other than date-time dropped, null dropped from
  string enums; and which descriptions and constraints did not survive.
- `smolagents_violations`: mcpadapt's SmolAgentsAdapter types a property without `type` as a string.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

Schema = dict[str, Any]

# --- openai-agents and langchain in strict mode -----------------------------------------------


def openai_agents_strict(schema: Schema) -> Schema:
    return _agents_strict(copy.deepcopy(schema), schema)


def _agents_strict(node: Schema, root: Schema) -> Schema:
    for key in ("$defs", "definitions"):
        for child in (node.get(key) or {}).values():
            _agents_strict(child, root)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False
    properties = node.get("properties")
    if isinstance(properties, dict):
        node["required"] = list(properties)
        node["properties"] = {name: _agents_strict(child, root) for name, child in properties.items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _agents_strict(node["items"], root)
    if isinstance(node.get("anyOf"), list):
        node["anyOf"] = [_agents_strict(branch, root) for branch in node["anyOf"]]
    if isinstance(node.get("oneOf"), list):
        node["anyOf"] = node.get("anyOf", []) + [_agents_strict(branch, root) for branch in node.pop("oneOf")]
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        node.update(_agents_strict(node.pop("allOf")[0], root))
    if "default" in node and node["default"] is None:
        del node["default"]
    return node


def langchain_strict(schema: Schema) -> Schema:
    return _closed(_without_titles(copy.deepcopy(schema)))


def _without_titles(node: Any, parent_key: str = "") -> Any:
    if not isinstance(node, dict):
        return node
    return {
        key: _without_titles(value, key)
        for key, value in node.items()
        if key != "title" or (isinstance(value, dict) and parent_key == "properties")
    }


def _closed(node: Schema) -> Schema:
    properties = node.get("properties")
    if isinstance(properties, dict) and properties:
        node["required"] = list(properties)
    if "required" in node or node.get("properties") == {} or "additionalProperties" in node:
        node["additionalProperties"] = False
    for branch in node.get("anyOf", []) + node.get("allOf", []):
        _closed(branch)
    for child in (properties or {}).values():
        _closed(child)
    if isinstance(node.get("items"), dict):
        _closed(node["items"])
    return node


# --- OpenAI strict function calling -------------------------------------------------------------

OPENAI_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}
OPENAI_FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
# The documented subset. minLength/maxLength are listed as unsupported only for fine-tuned models.
OPENAI_KEYWORDS = {
    "type",
    "description",
    "title",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "anyOf",
    "$ref",
    "$defs",
    "definitions",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
}
_LOOKAROUND = ("(?=", "(?!", "(?<=", "(?<!")
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def openai_strict_violations(schema: Schema) -> list[str]:
    """Everything OpenAI strict function calling would refuse in this (converted) schema."""
    problems = []
    if schema.get("type") != "object" or "anyOf" in schema:
        problems.append("(root): must be a plain object schema")
    for path, node in _nodes(schema):
        problems += [f"{path}: {problem}" for problem in _openai_node_problems(node)]
    return problems


def _openai_node_problems(node: Schema) -> Iterator[str]:
    for keyword in sorted(set(node) - OPENAI_KEYWORDS):
        yield f"{keyword!r} is not permitted"
    types = _types(node)
    for name in sorted(set(types) - OPENAI_TYPES):
        yield f"type {name!r} is not supported"
    if "format" in node and node["format"] not in OPENAI_FORMATS:
        yield f"{node['format']!r} is not a valid format"
    if "object" in types or "properties" in node:
        if node.get("additionalProperties") is not False:
            yield "'additionalProperties' is required to be supplied and to be false"
        if set(node.get("required", [])) != set(node.get("properties", {})):
            yield "every property must be listed in 'required'"
    if "array" in types and not isinstance(node.get("items"), dict):
        yield "array schema missing items"
    if isinstance(node.get("pattern"), str) and any(token in node["pattern"] for token in _LOOKAROUND):
        yield "pattern uses lookaround"
    for value in node.get("enum", []):
        if types and not any(_is_json_type(value, name) for name in types):
            yield f"enum value {value!r} does not validate against type {types}"


# --- smolagents (mcpadapt) ----------------------------------------------------------------------

SMOLAGENTS_TYPES = {
    "string",
    "boolean",
    "integer",
    "number",
    "image",
    "audio",
    "array",
    "object",
    "any",
    "null",
}


def smolagents_violations(schema: Schema) -> list[str]:
    """Properties mcpadapt would type wrongly: it reads `type` alone, and calls a missing one a string."""
    problems = []
    for name, prop in schema.get("properties", {}).items():
        if "type" not in prop:
            problems.append(f"{name}: no 'type' (smolagents would call it a string)")
        elif not set(_types(prop)) <= SMOLAGENTS_TYPES:
            problems.append(f"{name}: type {prop['type']!r} is not one smolagents knows")
    return problems


# --- Gemini (google-adk) ------------------------------------------------------------------------

GEMINI_FIELDS = {
    "any_of",
    "default",
    "description",
    "enum",
    "format",
    "items",
    "max_items",
    "max_length",
    "max_properties",
    "maximum",
    "min_items",
    "min_length",
    "min_properties",
    "minimum",
    "nullable",
    "pattern",
    "properties",
    "property_ordering",
    "required",
    "title",
    "type",
}
# JSON Schema keyword -> Gemini field (None: Gemini has none): constraints a model should still see.
GEMINI_CONSTRAINTS: dict[str, str | None] = {
    "enum": "enum",
    "format": "format",
    "pattern": "pattern",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minimum": "minimum",
    "maximum": "maximum",
    "minItems": "min_items",
    "maxItems": "max_items",
    "items": "items",
    "exclusiveMinimum": None,
    "exclusiveMaximum": None,
    "multipleOf": None,
    "const": None,
    "uniqueItems": None,
}


def gemini_schema(schema: Schema) -> Schema:
    """The Gemini Schema (as a dict of its fields) google-adk makes of a tool's input schema."""
    return _gemini(_dereferenced(schema, schema))


def _gemini(node: Schema) -> Schema:
    converted: Schema = {}
    for key, value in node.items():
        field = _snake_case(key)
        if field == "any_of":
            converted["any_of"] = [_gemini(branch) for branch in value]
        elif field == "items" and isinstance(value, dict):
            converted["items"] = _gemini(value)
        elif field == "properties":
            converted["properties"] = {name: _gemini(child) for name, child in value.items()}
        elif field == "type":
            non_null = [name for name in _types(node) if name != "null"]
            if "null" in _types(node):
                converted["nullable"] = True
            if non_null:
                converted["type"] = non_null[0].upper()
            if len(non_null) > 1:
                converted["union_types"] = non_null  # Gemini splits these into any_of branches
        elif field == "format":
            if _gemini_keeps_format(node.get("type"), value):
                converted["format"] = value
        elif field in GEMINI_FIELDS and value is not None:
            converted[field] = value
    if converted.get("type") == "STRING" and isinstance(converted.get("enum"), list):
        enum = converted["enum"]
        converted["enum"] = [
            value if isinstance(value, str) else json.dumps(value) for value in enum if value is not None
        ]
    return _unwrap_nullable(converted)


def _unwrap_nullable(converted: Schema) -> Schema:
    """google-genai: `any_of` of one schema and null becomes that schema; the outer fields are lost."""
    branches = converted.get("any_of")
    if not isinstance(branches, list) or len(branches) != 2:
        return converted
    nulls = [branch for branch in branches if branch in ({"type": "NULL"}, {"nullable": True})]
    others = [branch for branch in branches if branch not in nulls]
    if len(nulls) != 1 or len(others) != 1:
        return converted
    unwrapped = {**others[0], "nullable": True}
    if converted.get("default") is not None:
        unwrapped["default"] = converted["default"]
    return unwrapped


def _gemini_keeps_format(json_type: Any, value: Any) -> bool:
    if json_type in ("integer", "number"):
        return value in ("int32", "int64")
    return json_type == "string" and value in ("date-time", "enum")


def gemini_losses(schema: Schema) -> list[str]:
    """Each property's description or constraint that does not reach Gemini, and any union type."""
    converted = gemini_schema(schema)
    problems = []
    for path, original, kept in _paired_properties(_dereferenced(schema, schema), converted):
        if original.get("description") and kept.get("description") != original["description"]:
            problems.append(f"{path}: description lost")
        for keyword, field in GEMINI_CONSTRAINTS.items():
            if keyword in original and (field is None or field not in kept):
                problems.append(f"{path}: {keyword} lost")
        if "union_types" in kept:
            problems.append(f"{path}: union type {kept['union_types']} is split into any_of")
    return problems


def _paired_properties(
    original: Schema, converted: Schema, path: str = ""
) -> Iterator[tuple[str, Schema, Schema]]:
    for name, child in original.get("properties", {}).items():
        kept = converted.get("properties", {}).get(name, {})
        yield f"{path}{name}", child, kept
        yield from _paired_properties(child, kept, f"{path}{name}.")
    if isinstance(original.get("items"), dict):
        yield from _paired_properties(original["items"], converted.get("items", {}), f"{path}[].")


# --- helpers ------------------------------------------------------------------------------------


def _nodes(node: Schema, path: str = "(root)") -> Iterator[tuple[str, Schema]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.{name}")
    for key in ("$defs", "definitions"):
        for name, child in (node.get(key) or {}).items():
            yield from _nodes(child, f"{path}.{key}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    for index, branch in enumerate(node.get("anyOf") or []):
        yield from _nodes(branch, f"{path}.anyOf[{index}]")


def _types(node: Schema) -> list[str]:
    declared = node.get("type")
    if isinstance(declared, str):
        return [declared]
    return list(declared) if isinstance(declared, list) else []


def _is_json_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _JSON_TYPES.get(name, ()))


def _dereferenced(node: Any, root: Schema) -> Any:
    if isinstance(node, list):
        return [_dereferenced(item, root) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        merged = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
        return _dereferenced(merged, root)
    return {
        key: _dereferenced(value, root) for key, value in node.items() if key not in ("$defs", "definitions")
    }


def _snake_case(name: str) -> str:
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
