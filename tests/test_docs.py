"""The docs say what the code does: generated parts match the code, and every name they use exists.

The README's settings table and host configs are generated (tests/support/docs.py); when one differs,
`FLUX_MCP_UPDATE_DOCS=1 pytest tests/test_docs.py` rewrites it from the code. The agent-framework
snippets of docs/frameworks.md run in tests/clients/test_frameworks.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import flux_mcp.domain.videos  # noqa: F401  (registers generate_video's arguments)
from flux_mcp.cli import hostconfig
from flux_mcp.domain.arguments import TOOL_ARGUMENTS
from flux_mcp.server.tools import job_tools, task_tools
from tests.support.docs import README, ROOT, UPDATE_VARIABLE, env_names, region, settings_table, with_region

# The documents a user reads; each is checked for the names and links it uses.
USER_DOCS = [
    README,
    ROOT / "CONTRIBUTING.md",
    *(ROOT / "docs" / name for name in ("frameworks.md", "deploy.md", "tools.md")),
]
# Variables of the tests, not of the server.
NOT_SETTINGS = {UPDATE_VARIABLE, "FLUX_MCP_UPDATE_GOLDEN", "FLUX_MCP_REQUIRE"}
THIS = "tests/test_docs.py"
SHOWN_HOSTS = ("claude-desktop", "claude-code", "codex")  # the hosts whose config the README shows
FENCES = {"claude-code": "bash", "codex": "toml"}  # the other hosts' configs are JSON


def test_the_generated_parts_of_the_readme_are_what_the_code_says() -> None:
    """The settings table and the host configs; FLUX_MCP_UPDATE_DOCS=1 rewrites them (all in one write)."""
    text = README.read_text(encoding="utf-8")
    expected = generated_regions()
    if os.environ.get(UPDATE_VARIABLE) == "1":
        for name, body in expected.items():
            text = with_region(text, name, body)
        README.write_text(text, encoding="utf-8")
    stale = [name for name, body in expected.items() if region(text, name) != body]
    assert stale == [], f"README.md differs from the code in {stale}: {UPDATE_VARIABLE}=1 pytest {THIS}"


def generated_regions() -> dict[str, str]:
    """Each generated region of the README, as the code renders it now."""
    configs = {f"config {host}": fenced_config(host) for host in SHOWN_HOSTS}
    return {"settings": settings_table(), **configs}


def fenced_config(host: str) -> str:
    """What `flux-mcp config HOST` prints for a plain `flux-mcp` install, as a Markdown code block."""
    return f"```{FENCES.get(host, 'json')}\n{hostconfig.render(host, [hostconfig.SCRIPT])}```\n"


def test_every_host_flux_mcp_config_knows_is_named() -> None:
    text = README.read_text(encoding="utf-8")
    assert all(f"`{host}`" in text for host in hostconfig.HOSTS)


def test_the_tools_table_lists_every_tool_with_an_example_it_accepts() -> None:
    examples = tools_table(README.read_text(encoding="utf-8"))
    assert sorted(examples) == sorted(tool.name for tool in [*job_tools(), *task_tools()])
    for tool, arguments in examples.items():
        TOOL_ARGUMENTS[tool].model_validate(arguments)


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda path: path.name)
def test_every_variable_the_docs_name_is_a_setting(doc: Path) -> None:
    named = set(re.findall(r"\b(?:FLUX_MCP|ACEDATACLOUD)_[A-Z_]+\b", doc.read_text(encoding="utf-8")))
    assert named - env_names() - NOT_SETTINGS == set()


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file_and_heading(doc: Path) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8"))
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        path, _, anchor = link.partition("#")
        target = (doc.parent / path) if path else doc
        if not target.exists() or (anchor and target.suffix == ".md" and anchor not in anchors(target)):
            broken.append(link)
    assert broken == []


def anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def tools_table(text: str) -> dict[str, dict[str, object]]:
    """The README's tools table: each tool's name and its example arguments."""
    rows = re.findall(r"^\| `(\w+)` \|.*\| `(\{.*\})` \|$", text, re.M)
    return {name: json.loads(example) for name, example in rows}
