"""Hosts as they really are: their config files, their way of ending a server, prompts, the gallery resource.

- `flux-mcp config HOST [--sandbox]` for every host, Gemini CLI's settings.json and Codex's config.toml
  included, parsed the way the host parses them;
- the stdio server stopped by Ctrl-C (SIGINT) or SIGTERM while it idles on stdin: it exits at once and
  cleans up as on stdin EOF;
- the MCP prompts, listed and rendered, and bad arguments refused in words;
- the gallery's ui:// resource listed only to clients that negotiated MCP Apps.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, TextContent

from flux_mcp.cli.hostconfig import (
    HOSTS,
    SANDBOX_FLAG,
    TOKEN_PLACEHOLDER,
    TOKEN_VAR,
    TOOL_TIMEOUT_SECONDS,
    add_command,
    render,
    write_config,
)
from flux_mcp.domain.arguments import ASPECT_RATIOS
from flux_mcp.domain.catalogue import MODELS
from flux_mcp.domain.settings import Settings
from flux_mcp.server.build import build_server
from flux_mcp.server.ui import GALLERY_URI
from tests.support import apps_client, child_env, flux_command

pytestmark = pytest.mark.anyio

DEFAULT_WAIT = Settings.model_fields["wait_seconds"].default
EXIT_BOUND_SECONDS = 30.0  # only there so a broken build fails instead of hanging the suite


def config_server(host: str, text: str, name: str) -> dict[str, Any]:
    """The server entry of a printed config, parsed the way the host reads it."""
    if host == "codex":
        server: dict[str, Any] = tomllib.loads(text)["mcp_servers"][name]
        return server
    config = json.loads(text)
    return dict(config["servers" if host == "vscode" else "mcpServers"][name])


# --- config HOST ---------------------------------------------------------------------------------


def test_gemini_config_is_settings_json_with_a_timeout_for_image_jobs() -> None:
    server = config_server("gemini", render("gemini", ["uvx", "flux-mcp"]), "flux")
    assert server["command"] == "uvx" and server["args"] == ["flux-mcp"]
    assert server["env"] == {TOKEN_VAR: TOKEN_PLACEHOLDER}
    # Gemini's timeout is in milliseconds; it must outlast a call that waits the whole default budget.
    assert isinstance(server["timeout"], int) and server["timeout"] / 1000 > 2 * DEFAULT_WAIT


def test_codex_config_is_toml_with_startup_and_tool_timeouts() -> None:
    text = render("codex", ["/opt/My Tools/bin/flux-mcp"])
    server = config_server("codex", text, "flux")
    assert server["command"] == "/opt/My Tools/bin/flux-mcp" and server["args"] == []
    assert server["env"] == {TOKEN_VAR: TOKEN_PLACEHOLDER}
    assert server["tool_timeout_sec"] > 2 * DEFAULT_WAIT  # Codex's own default (60 s) is too tight
    assert server["startup_timeout_sec"] > 10  # Codex's default; uvx installs on its first start


@given(st.lists(st.text(min_size=1), min_size=1, max_size=4))
def test_codex_toml_keeps_any_command_exactly(command: list[str]) -> None:
    server = config_server("codex", render("codex", command), "flux")
    assert [server["command"], *server["args"]] == command


@pytest.mark.parametrize("host", HOSTS)
def test_every_host_gets_a_sandbox_config_that_needs_no_token(host: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert write_config(host, out, err, command=["uvx", "flux-mcp"], sandbox=True) == 0
    text = out.getvalue()
    assert TOKEN_VAR not in text and TOKEN_PLACEHOLDER not in text
    assert TOKEN_PLACEHOLDER not in err.getvalue() and SANDBOX_FLAG in err.getvalue()
    if host == "claude-code":
        assert shlex.split(text) == [
            "claude",
            "mcp",
            "add",
            "flux-sandbox",
            "--",
            "uvx",
            "flux-mcp",
            "--sandbox",
        ]
        return
    server = config_server(host, text, "flux-sandbox")
    assert (server["command"], server["args"]) == ("uvx", ["flux-mcp", SANDBOX_FLAG])
    assert "env" not in server


def test_gemini_and_codex_add_lines_put_each_word_where_their_parsers_expect_it() -> None:
    command = ["/Users/me/My venv/bin/flux-mcp"]
    gemini = shlex.split(add_command("gemini", command))
    # gemini mcp add [options] <name> <commandOrUrl> [args...]; -e last, so an old greedy -e eats nothing.
    assert gemini[:5] == ["gemini", "mcp", "add", "flux", command[0]]
    assert gemini[5:] == [
        "--scope",
        "user",
        "--timeout",
        str(TOOL_TIMEOUT_SECONDS * 1000),
        "-e",
        f"{TOKEN_VAR}={TOKEN_PLACEHOLDER}",
    ]
    sandbox = shlex.split(add_command("gemini", ["uvx", "flux-mcp", SANDBOX_FLAG], sandbox=True))
    assert sandbox[3:5] == ["flux-sandbox", "uvx"] and sandbox[-3:] == ["--", "flux-mcp", SANDBOX_FLAG]
    # codex mcp add [OPTIONS] <NAME> -- <COMMAND>...
    codex = shlex.split(add_command("codex", command))
    assert codex == [
        "codex",
        "mcp",
        "add",
        "flux",
        "--env",
        f"{TOKEN_VAR}={TOKEN_PLACEHOLDER}",
        "--",
        *command,
    ]


@pytest.mark.subprocess
def test_config_command_prints_parseable_gemini_and_codex_configs(tmp_path: Path) -> None:
    env = child_env(tmp_path)
    for host, parse in (("gemini", json.loads), ("codex", tomllib.loads)):
        for extra in ([], ["--sandbox"]):
            result = subprocess.run(
                [*flux_command(), "config", host, *extra],
                capture_output=True,
                text=True,
                encoding="utf-8",
                env=env,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert parse(result.stdout), result.stdout
            assert f"{host} mcp add" in result.stderr


# --- Ctrl-C and SIGTERM --------------------------------------------------------------------------


def _initialize(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """One JSON-RPC initialize round trip: afterwards the server is up and idles on stdin."""
    assert process.stdin is not None and process.stdout is not None
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    process.stdin.write((json.dumps(request) + "\n").encode())
    process.stdin.flush()
    answer: dict[str, Any] = json.loads(process.stdout.readline())
    return answer


@pytest.mark.subprocess
@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stdio_server_stops_at_once_on_a_stop_signal_and_cleans_up(
    tmp_path: Path, stop: signal.Signals
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = child_env(tmp_path, TMPDIR=str(temp), TEMP=str(temp), TMP=str(temp))
    with (tmp_path / "stderr.log").open("w+", encoding="utf-8") as errlog:
        process = subprocess.Popen(
            [*flux_command(), "--sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            env=env,
        )
        try:
            assert "result" in _initialize(process)
            process.send_signal(stop)
            try:
                returncode = process.wait(timeout=EXIT_BOUND_SECONDS)
            except subprocess.TimeoutExpired:
                pytest.fail(f"flux-mcp still running {EXIT_BOUND_SECONDS:.0f} s after {stop.name}")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdin is not None
            process.stdin.close()
        errlog.seek(0)
        log = errlog.read()
    assert returncode == 128 + stop, (returncode, log[-2000:])
    assert "Traceback" not in log, log[-2000:]
    assert f"stopped by {stop.name}" in log
    assert list(temp.iterdir()) == []  # no /tmp/flux-mcp-sandbox-* left behind
    history = tmp_path / "sandbox" / "history.db"
    assert history.exists()
    assert not Path(f"{history}-wal").exists()  # the history was closed (SQLite removes its WAL then)


# --- prompts -------------------------------------------------------------------------------------


def prompt_text(messages: list[Any]) -> str:
    [message] = messages
    assert message.role == "user" and isinstance(message.content, TextContent)
    return message.content.text


async def test_prompts_are_listed_with_their_arguments(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        listed = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
    assert set(listed) == {"flux_prompt", "choose_model", "edit_instruction"}
    arguments = {
        name: {argument.name: argument.required for argument in prompt.arguments or []}
        for name, prompt in listed.items()
    }
    assert arguments == {
        "flux_prompt": {"idea": True, "use": False},
        "choose_model": {"purpose": True},
        "edit_instruction": {"change": True, "image_url": False},
    }
    assert all(
        prompt.title and prompt.description and "\n" not in prompt.description for prompt in listed.values()
    )


async def test_prompts_carry_the_model_catalogue_and_the_callers_words(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        written = prompt_text(
            (await client.get_prompt("flux_prompt", {"idea": "a fox in the snow"})).messages
        )
        chosen = prompt_text(
            (await client.get_prompt("choose_model", {"purpose": "a poster titled OPEN"})).messages
        )
        edit = prompt_text(
            (await client.get_prompt("edit_instruction", {"change": "make the sky stormy"})).messages
        )
    assert "a fox in the snow" in written and "generate_image" in written
    for word in ("Subject", "Lighting", "Composition", "Camera"):
        assert word in written
    for text in (written, chosen):
        assert all(name in text for name in MODELS)
        assert all(ratio in text for ratio in ASPECT_RATIOS)
    assert "a poster titled OPEN" in chosen and "Do not generate" in chosen
    assert "make the sky stormy" in edit and "edit_image" in edit
    editors = edit.split("Models that can edit:", 1)[1]
    assert all((name in editors) == info.can_edit for name, info in MODELS.items())


@pytest.mark.parametrize(
    ("name", "arguments", "words"),
    [
        ("flux_prompt", {}, "idea"),
        ("flux_prompt", {"idea": "x" * 5000}, "at most"),
        ("choose_model", {"purpose": "drafts", "budget": "low"}, "budget"),
        ("write_a_poem", {}, "flux_prompt"),
    ],
)
async def test_bad_prompt_requests_are_invalid_params_naming_the_problem(
    settings: Settings, name: str, arguments: dict[str, str], words: str
) -> None:
    async with Client(build_server(settings)) as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt(name, arguments)
    assert caught.value.code == INVALID_PARAMS
    assert name in caught.value.message and words in caught.value.message


# --- the gallery resource ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_only_apps_clients_see_the_gallery_in_the_resource_list(settings: Settings, mode: str) -> None:
    async with Client(build_server(settings), mode=mode) as plain:
        plain_uris = {str(resource.uri) for resource in (await plain.list_resources()).resources}
        # Not listed, but still served by its URI: an inert page to anyone who was never told of it.
        assert (await plain.read_resource(GALLERY_URI)).contents
    async with apps_client(build_server(settings), mode) as apps:
        apps_uris = {str(resource.uri) for resource in (await apps.list_resources()).resources}
    assert GALLERY_URI in apps_uris
    assert not any(uri.startswith("ui://") for uri in plain_uris)
    assert plain_uris == apps_uris - {GALLERY_URI}
