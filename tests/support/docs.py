"""The docs' generated parts: the settings table, rendered from `Settings`, and the marked regions holding it.

A generated region sits between `<!-- generated: NAME -->` and `<!-- /generated: NAME -->`; tests/test_docs.py
compares it with what the code renders now, and rewrites it when FLUX_MCP_UPDATE_DOCS=1.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from flux_mcp.domain.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
UPDATE_VARIABLE = "FLUX_MCP_UPDATE_DOCS"
UNSET = "—"


def settings_table() -> str:
    """One row per setting, in declaration order: its variable, its default, and its description."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(
            f"| `{env_name(name, field)}` | {default_text(field)} | {_cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def env_name(name: str, field: FieldInfo) -> str:
    """The environment variable a setting is read from: its alias, else the prefix and its name."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def env_names() -> set[str]:
    return {env_name(name, field) for name, field in Settings.model_fields.items()}


def default_text(field: FieldInfo) -> str:
    default = field.default
    if default is None or default is PydanticUndefined:
        return UNSET
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def region(text: str, name: str) -> str:
    """The generated region `name` of a document (what lies between its two markers)."""
    match = _region_pattern(name).search(text)
    if match is None:
        raise AssertionError(f"no <!-- generated: {name} --> … <!-- /generated: {name} --> region")
    return match.group("body")


def with_region(text: str, name: str, body: str) -> str:
    """The document with region `name` holding `body` instead."""
    region(text, name)  # it must exist
    return _region_pattern(name).sub(lambda match: match.group("start") + body + match.group("end"), text)


def _region_pattern(name: str) -> re.Pattern[str]:
    marker = re.escape(name)
    return re.compile(
        rf"(?P<start><!-- generated: {marker} [^\n]*-->\n)"
        rf"(?P<body>.*?)"
        rf"(?P<end><!-- /generated: {marker} -->)",
        re.S,
    )


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
