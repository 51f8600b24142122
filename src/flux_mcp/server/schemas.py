"""Tool input schemas in the subset every agent framework and model provider accepts, nothing lost.

pydantic writes an optional argument as `anyOf: [X, {"type": "null"}]` with `default: null`, and any
other default as `default: ...`. Frameworks hand these schemas on to model providers, and several
break on them: OpenAI's strict function calling (openai-agents `convert_schemas_to_strict`,
langchain `bind_tools(strict=True)`) rejects `default` and every `format` outside a short list;
google-adk's Gemini conversion drops the description of an `anyOf` property; smolagents types every
`anyOf` property as a string. `portable_schema` rewrites a schema once into what they all take,
keeping every constraint:

- `anyOf: [X, {"type": "null"}]` becomes X with `"type": [X, "null"]` beside the description, and
  a nullable enum lists `null` among its values (so a strict model can still choose "none of them");
- a default moves into the description ("Default: flux-dev."); `default: null` is already said by
  the nullable type;
- a `format` that OpenAI strict mode or Gemini would refuse or drop moves into the description;
- a tool without arguments says that it takes none (`additionalProperties: false`, as its arguments
  model refuses any): openai-agents will not make an object with no properties strict unless it is
  closed, and sends such a tool non-strict.

Only what is published changes: arguments are still validated by the models in `arguments.py`, so an
omitted argument still gets its default and a bad one the same error.
"""

from __future__ import annotations

import json
from typing import Any

JsonSchema = dict[str, Any]

# The string formats both OpenAI strict mode (date-time, time, date, duration, email, hostname, ipv4,
# ipv6, uuid) and google-adk's Gemini conversion (date-time, enum) keep.
PORTABLE_FORMATS = frozenset({"date-time"})
NULL_SCHEMA: JsonSchema = {"type": "null"}

_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")


def portable_schema(schema: JsonSchema) -> JsonSchema:
    """A rewritten copy of one tool's input schema; the argument is left as it was."""
    return _closed_if_empty(_portable(schema))


def _closed_if_empty(root: JsonSchema) -> JsonSchema:
    if root.get("type") != "object" or root.get("properties") or "additionalProperties" in root:
        return root
    return {**root, "additionalProperties": False}


def _portable(node: JsonSchema) -> JsonSchema:
    rewritten = {key: _portable_children(key, value) for key, value in node.items()}
    return _describe_format(_describe_default(_collapse_nullable(rewritten)))


def _portable_children(key: str, value: Any) -> Any:
    if key in _SCHEMA_MAPS and isinstance(value, dict):
        return {name: _portable(child) if isinstance(child, dict) else child for name, child in value.items()}
    if key in _SCHEMA_LISTS and isinstance(value, list):
        return [_portable(child) if isinstance(child, dict) else child for child in value]
    if key in _SCHEMA_VALUES and isinstance(value, dict):
        return _portable(value)
    return value


def _collapse_nullable(node: JsonSchema) -> JsonSchema:
    """`anyOf: [X, null]` -> X with a nullable type, where X is a single plain type."""
    branches = node.get("anyOf")
    if not isinstance(branches, list) or len(branches) != 2 or NULL_SCHEMA not in branches:
        return node
    [value] = [branch for branch in branches if branch != NULL_SCHEMA]
    if not isinstance(value, dict) or not isinstance(value.get("type"), str) or "anyOf" in value:
        return node
    outer = {key: item for key, item in node.items() if key != "anyOf"}
    collapsed = {**value, **outer, "type": [value["type"], "null"]}
    if "const" in collapsed:
        collapsed["enum"] = [collapsed.pop("const")]
    if isinstance(collapsed.get("enum"), list) and None not in collapsed["enum"]:
        collapsed["enum"] = [*collapsed["enum"], None]
    return collapsed


def _describe_default(node: JsonSchema) -> JsonSchema:
    if "default" not in node:
        return node
    described = {key: item for key, item in node.items() if key != "default"}
    default = node["default"]
    return described if default is None else _with_note(described, f"Default: {_shown(default)}.")


def _describe_format(node: JsonSchema) -> JsonSchema:
    value = node.get("format")
    if value is None or value in PORTABLE_FORMATS:
        return node
    described = {key: item for key, item in node.items() if key != "format"}
    return _with_note(described, f"Format: {_shown(value)}.")


def _with_note(node: JsonSchema, note: str) -> JsonSchema:
    description = node.get("description")
    if not isinstance(description, str) or not description.strip():
        return {**node, "description": note}
    separator = "\n" if "\n" in description else " "
    return {**node, "description": f"{description.rstrip()}{separator}{note}"}


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
