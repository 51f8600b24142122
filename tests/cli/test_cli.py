"""The first five minutes: `doctor`, `config HOST`, the example configs, server.json and the CLI itself."""

from __future__ import annotations

import io
import json
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from PIL import Image
from pydantic import ValidationError

from flux_mcp import __version__
from flux_mcp.cli.doctor import (
    CHECKS,
    CheckResult,
    DoctorContext,
    Status,
    check_settings,
    check_token,
    describe_settings_error,
    load_settings,
    mask,
    ok,
    run_doctor,
)
from flux_mcp.cli.hostconfig import (
    HOSTS,
    TOKEN_PLACEHOLDER,
    detect_command,
    location,
    render,
    write_config,
)
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from testkit import flux_command
from tests.support import STARTUP_TIMEOUT, TOKEN, child_env, free_port, make_settings, run_cli

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


async def doctor_output(settings: Settings | None, **kwargs: Any) -> tuple[bool, str, dict[str, str]]:
    """(passed, full output, {check name: its line})."""
    out = io.StringIO()
    passed = await run_doctor(settings, out, **kwargs)
    text = out.getvalue()
    lines = {}
    for line in text.splitlines():
        status, _, rest = line.partition(" ")
        if status in {s.value for s in Status}:
            lines[rest.split(":")[0].split(" ")[0].lower()] = line
    return passed, text, lines


# ---- doctor ---------------------------------------------------------------------------------------


async def test_doctor_passes_against_the_emulator_with_the_right_token(emulator: RunningEmulator) -> None:
    passed, text, lines = await doctor_output(make_settings(emulator))
    assert passed, text
    assert len(lines) == len(CHECKS)
    assert all(line.startswith("✓") for line in lines.values()), text
    assert "fix:" not in text
    assert TOKEN not in text
    assert f"…{TOKEN[-4:]}" in lines["token"]
    assert "token accepted" in lines["upstream"]
    assert "All 8 checks passed." in text


async def test_doctor_names_the_variable_when_the_token_is_rejected(emulator: RunningEmulator) -> None:
    wrong = "sk-wrong-token-0000-zzzz"
    passed, text, lines = await doctor_output(make_settings(emulator, api_token=wrong))
    assert not passed
    assert lines["token"].startswith("✓")  # present and well-formed; the upstream is what says no
    assert lines["upstream"].startswith("✗") and "rejected the token" in lines["upstream"]
    fix = text.split(lines["upstream"], 1)[1].splitlines()[1]
    assert fix.strip().startswith("fix:") and "ACEDATACLOUD_API_TOKEN" in fix
    assert wrong not in text and TOKEN not in text


async def test_doctor_fails_without_a_token_and_says_how_to_set_it(emulator: RunningEmulator) -> None:
    passed, text, lines = await doctor_output(make_settings(emulator, api_token=None))
    assert not passed
    assert lines["token"].startswith("✗") and "not set" in lines["token"]
    assert "fix:" in text and "export ACEDATACLOUD_API_TOKEN" in text
    assert lines["upstream"].startswith("-")  # not checked without a token
    assert "1 of 8 checks failed, 1 not checked." in text


async def test_doctor_reports_an_unreachable_upstream(emulator: RunningEmulator) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    passed, text, lines = await doctor_output(make_settings(emulator, api_base_url=base))
    assert not passed
    assert lines["upstream"].startswith("✗") and "unreachable" in lines["upstream"]
    assert "ACEDATACLOUD_API_BASE_URL" in text and TOKEN not in text


async def test_doctor_warns_but_passes_when_the_wait_outlasts_desktop_hosts(
    emulator: RunningEmulator,
) -> None:
    passed, text, lines = await doctor_output(make_settings(emulator, wait_seconds=90))
    assert passed, text
    assert lines["settings"].startswith("!") and "FLUX_MCP_WAIT_SECONDS=90" in lines["settings"]
    assert "FLUX_MCP_WAIT_SECONDS=45" in text


async def test_doctor_reports_invalid_settings_without_echoing_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACEDATACLOUD_API_TOKEN", TOKEN)
    monkeypatch.setenv("ACEDATACLOUD_API_BASE_URL", "ftp://example.invalid")
    monkeypatch.setenv("FLUX_MCP_WAIT_SECONDS", "soon")
    settings, error = load_settings()
    assert settings is None and error is not None
    assert "ACEDATACLOUD_API_BASE_URL" in error and "FLUX_MCP_WAIT_SECONDS" in error
    assert "ftp://example.invalid" not in error and "soon" not in error
    passed, text, lines = await doctor_output(None, settings_error=error)
    assert not passed
    assert lines["settings"].startswith("✗") and lines["python"].startswith("✓")
    assert lines["token"].startswith("-") and lines["upstream"].startswith("-")
    assert TOKEN not in text


async def test_doctor_catches_common_token_mistakes() -> None:
    for token, words in [
        ("Bearer sk-abcdefghijklmnop", "Bearer"),
        ("<your-acedatacloud-token>", "placeholder"),
        ('"sk-abcdefghijklmnop"', "quotes"),
    ]:
        result = await check_token(DoctorContext(Settings(api_token=token)))
        assert result.status is Status.FAIL and words in result.text, result
        assert "sk-abcdefghijklmnop" not in result.text


async def test_a_crashing_check_is_a_failed_line_and_the_token_is_always_redacted() -> None:
    settings = Settings(api_token=TOKEN)

    async def leaky(_: DoctorContext) -> CheckResult:
        return ok(f"oops {TOKEN}")

    async def broken(_: DoctorContext) -> CheckResult:
        raise RuntimeError("boom")

    passed, text, _ = await doctor_output(settings, checks=[check_settings, leaky, broken])
    assert not passed
    assert TOKEN not in text and "oops [redacted]" in text
    assert "✗ broken: crashed: RuntimeError: boom" in text


def test_mask_shows_only_the_last_four_characters() -> None:
    assert mask("sk-0123456789abcd") == "…abcd"
    assert mask("short") == "5 characters"  # too short to show any of it safely


def test_settings_errors_name_env_variables() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(wait_seconds=-1)
    assert "FLUX_MCP_WAIT_SECONDS" in describe_settings_error(info.value)


def test_settings_changed_in_code_are_validated_like_the_environment() -> None:
    settings = Settings(ACEDATACLOUD_API_TOKEN="sk-kept-0123456789", callback_key="k" * 32)
    with pytest.raises(ValidationError, match=r"port\n.*less than or equal to 65535"):
        settings.with_changes(port=99999)
    with pytest.raises(ValueError, match="no such setting: prot"):
        settings.with_changes(prot=8001)
    changed = settings.with_changes(port=8001, db="postgresql://flux@db.internal/flux")
    assert changed.port == 8001 and settings.port == 8000  # a copy; the original is untouched
    assert changed.api_token == settings.api_token and changed.callback_key == settings.callback_key
    assert changed.db is None and changed.history_url() == "postgresql://flux@db.internal/flux"


@pytest.mark.subprocess
def test_serve_refuses_an_out_of_range_port_before_serving(tmp_path: Path) -> None:
    result = run_cli("serve", "--transport", "http", "--port", "99999", FLUX_MCP_DB=str(tmp_path / "h.db"))
    assert result.returncode == 2, result.stderr
    assert "invalid settings" in result.stderr and "65535" in result.stderr
    assert "Traceback" not in result.stderr and "serving MCP" not in result.stderr


@pytest.mark.subprocess
async def test_serve_on_port_0_listens_on_a_port_the_os_chose_and_logs_it(tmp_path: Path) -> None:
    command = [*flux_command(), "serve", "--transport", "http", "--port", "0"]
    with socket.create_server(("127.0.0.1", 0)) as taken:  # FLUX_MCP_PORT's port is busy: 0 must not mean it
        busy = taken.getsockname()[1]
        env = child_env(tmp_path, ACEDATACLOUD_API_TOKEN=TOKEN, FLUX_MCP_PORT=str(busy))
        async with await anyio.open_process(command, env=env, stdin=subprocess.DEVNULL) as process:
            assert process.stderr is not None
            seen = ""
            with anyio.fail_after(STARTUP_TIMEOUT):
                while (served := re.search(r"serving MCP over streamable HTTP at (\S+)/mcp", seen)) is None:
                    try:
                        seen += (await process.stderr.receive()).decode()
                    except anyio.EndOfStream:
                        pytest.fail(f"flux-mcp serve ended before it said where it listens:\n{seen}")
            base = served.group(1)
            port = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", base)
            assert port is not None and int(port.group(1)) not in (0, busy), base
            async with httpx2.AsyncClient() as http:
                assert (await http.get(f"{base}/healthz")).status_code == 200
            process.terminate()
            await process.wait()


@pytest.mark.subprocess
def test_the_command_sends_warnings_to_its_log_but_not_the_deprecation_it_causes_by_design() -> None:
    script = (
        "import warnings\n"
        "from mcp.shared.exceptions import MCPDeprecationWarning\n"
        "from flux_mcp.cli.logs import configure_logging, configure_warnings\n"
        "configure_logging('INFO')\n"
        "configure_warnings()\n"
        "warnings.warn('The logging capability is deprecated as of 2026-07-28.', MCPDeprecationWarning)\n"
        "warnings.warn('something else', UserWarning)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "logging capability" not in done.stderr
    assert re.search(r"WARNING py\.warnings: .*UserWarning: something else", done.stderr), done.stderr


# ---- config HOST ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
def test_config_for_every_host_is_ready_to_paste(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACEDATACLOUD_API_TOKEN", TOKEN)
    out, err = io.StringIO(), io.StringIO()
    assert write_config(host, out, err, command=["flux-mcp"]) == 0
    text = out.getvalue()
    assert TOKEN not in text and TOKEN not in err.getvalue()
    assert err.getvalue().strip()
    if host == "claude-code":
        words = shlex.split(text)
        assert words[:4] == ["claude", "mcp", "add", "flux"]
        assert words[4:7] == ["--env", f"ACEDATACLOUD_API_TOKEN={TOKEN_PLACEHOLDER}", "--"]
        assert words[7:] == ["flux-mcp"]
        return
    if host == "codex":
        server = tomllib.loads(text)["mcp_servers"]["flux"]
        assert server["env"]["ACEDATACLOUD_API_TOKEN"] == TOKEN_PLACEHOLDER
        assert (server["command"], server["args"]) == ("flux-mcp", [])
        return
    config = json.loads(text)
    if host == "vscode":
        server = config["servers"]["flux"]
        assert server["type"] == "stdio"
        assert server["env"]["ACEDATACLOUD_API_TOKEN"] == "${input:acedatacloud-token}"
        assert config["inputs"] == [
            {
                "type": "promptString",
                "id": "acedatacloud-token",
                "description": config["inputs"][0]["description"],
                "password": True,
            }
        ]
    else:
        server = config["mcpServers"]["flux"]
        assert server["env"]["ACEDATACLOUD_API_TOKEN"] == TOKEN_PLACEHOLDER
    assert (server["command"], server["args"]) == ("flux-mcp", [])


def test_config_keeps_uvx_arguments_and_quotes_paths_with_spaces() -> None:
    config = json.loads(render("cursor", ["uvx", "flux-mcp"]))
    assert config["mcpServers"]["flux"]["command"] == "uvx"
    assert config["mcpServers"]["flux"]["args"] == ["flux-mcp"]
    line = render("claude-code", ["/Users/me/My Tools/venv/bin/flux-mcp"])
    assert shlex.split(line)[-1] == "/Users/me/My Tools/venv/bin/flux-mcp"


def test_config_locations_per_os() -> None:
    assert "~/Library/Application Support/Claude/claude_desktop_config.json" in location(
        "claude-desktop", "darwin"
    )
    assert "%APPDATA%\\Claude\\claude_desktop_config.json" in location("claude-desktop", "win32")
    assert "~/.config/Claude/claude_desktop_config.json" in location("claude-desktop", "linux")
    assert "~/.cursor/mcp.json" in location("cursor", "linux")
    assert "~/.codeium/windsurf/mcp_config.json" in location("windsurf", "darwin")
    assert "%USERPROFILE%\\.codeium\\windsurf\\mcp_config.json" in location("windsurf", "win32")
    assert ".vscode/mcp.json" in location("vscode", "linux")


def test_detect_command_for_each_kind_of_install(tmp_path: Path) -> None:
    script = tmp_path / "venv" / "bin" / "flux-mcp"
    nowhere: dict[str, str] = {}

    def on_path(path: str | None) -> Any:
        return lambda _: path

    uv_tool = "/home/me/.local/share/uv/tools/flux-mcp"
    uvx_cache = "C:\\Users\\me\\AppData\\Local\\uv\\cache\\archive-v0\\abc123"
    for prefix in (uv_tool, uvx_cache, "/home/me/.cache/uv/archive-v0/Xy12"):
        assert detect_command(prefix=prefix, base_prefix="/usr", environ=nowhere) == ["uvx", "flux-mcp"]
    custom = {"UV_TOOL_DIR": "/opt/uvtools"}
    assert detect_command(prefix="/opt/uvtools/flux-mcp", base_prefix="/usr", environ=custom) == [
        "uvx",
        "flux-mcp",
    ]

    def in_venv(found: str | None) -> list[str]:
        return detect_command(
            prefix=str(tmp_path / "venv"),
            base_prefix="/usr",
            environ=nowhere,
            which=on_path(found),
            script=script,
        )

    # A venv whose script is not on PATH, or only because the venv is activated: its absolute path.
    assert in_venv(None) == [str(script)]
    assert in_venv(str(script)) == [str(script)]
    # pipx: a venv, with a launcher elsewhere on PATH.
    assert in_venv("/home/me/.local/bin/flux-mcp") == ["flux-mcp"]
    # A plain install.
    assert detect_command(prefix="/usr", base_prefix="/usr", environ=nowhere) == ["flux-mcp"]


# ---- example files and server.json ----------------------------------------------------------------


def test_example_configs_are_valid_json_with_the_expected_shape() -> None:
    for name in ("claude_config.json", "cursor_mcp.json"):
        server = json.loads((ROOT / "examples" / name).read_text(encoding="utf-8"))["mcpServers"]["flux"]
        assert server["command"] == "flux-mcp" and isinstance(server["args"], list)
        assert "ACEDATACLOUD_API_TOKEN" in server["env"]
    vscode = json.loads((ROOT / "examples" / "vscode_mcp.json").read_text(encoding="utf-8"))
    server = vscode["servers"]["flux"]
    assert server["type"] == "stdio" and server["command"] == "flux-mcp"
    ref = server["env"]["ACEDATACLOUD_API_TOKEN"]
    assert ref == "${input:" + vscode["inputs"][0]["id"] + "}"
    assert vscode["inputs"][0]["type"] == "promptString" and vscode["inputs"][0]["password"] is True


def test_server_json_follows_the_registry_schema() -> None:
    server = json.loads((ROOT / "server.json").read_text(encoding="utf-8"))
    assert server["$schema"].startswith("https://static.modelcontextprotocol.io/schemas/")
    assert server["name"] == "io.github.flux-mcp/flux-mcp"
    assert 1 <= len(server["description"]) <= 100  # the registry's limit
    assert server["version"] == __version__ == "0.1.0"
    (package,) = server["packages"]
    assert package["registryType"] == "pypi" and package["identifier"] == "flux-mcp"
    assert package["version"] == server["version"]
    assert package["transport"] == {"type": "stdio"}
    env = {item["name"]: item for item in package["environmentVariables"]}
    assert set(env) == {
        "ACEDATACLOUD_API_TOKEN",
        "ACEDATACLOUD_API_BASE_URL",
        "FLUX_MCP_WAIT_SECONDS",
        "FLUX_MCP_LOG_LEVEL",
    }
    assert env["ACEDATACLOUD_API_TOKEN"]["isSecret"] is True
    assert env["ACEDATACLOUD_API_TOKEN"]["isRequired"] is True
    assert all(item["description"] for item in env.values())
    assert not any(item.get("isSecret") for name, item in env.items() if name != "ACEDATACLOUD_API_TOKEN")


# ---- the command itself, as a user runs it --------------------------------------------------------


@pytest.mark.subprocess
def test_version_and_help() -> None:
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"flux-mcp {__version__}"
    shown = run_cli("--help")
    assert shown.returncode == 0
    assert "examples:" in shown.stdout
    for command in ("demo", "doctor", "config"):
        assert f"flux-mcp {command}" in shown.stdout


@pytest.mark.subprocess
def test_config_command_prints_json_and_says_where_it_goes() -> None:
    result = run_cli("config", "cursor", ACEDATACLOUD_API_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    assert "mcpServers" in json.loads(result.stdout)
    assert "mcp.json" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.subprocess
def test_doctor_command_without_a_token_exits_non_zero(tmp_path: Path) -> None:
    result = run_cli("doctor", ACEDATACLOUD_API_BASE_URL=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "✗ token" in result.stdout and "ACEDATACLOUD_API_TOKEN" in result.stdout


@pytest.mark.subprocess
def test_demo_saves_a_png_that_decodes(tmp_path: Path) -> None:
    elsewhere = {"FLUX_MCP_OUTPUT_DIR": str(tmp_path / "saved"), "FLUX_MCP_DB": str(tmp_path / "history.db")}
    result = run_cli(
        "demo", "a test cat", "--out", str(tmp_path), "--latency", "0.5", timeout=120, **elsewhere
    )
    assert result.returncode == 0, result.stderr
    (png,) = tmp_path.glob("*.png")
    assert str(png.resolve()) in result.stdout
    with Image.open(png) as image:
        image.load()
        assert image.format == "PNG" and image.width > 0


async def test_doctor_reports_an_unwritable_output_folder(emulator: RunningEmulator, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    passed, text, lines = await doctor_output(make_settings(emulator, output_dir=blocker / "images"))
    assert not passed
    assert lines["output"].startswith("✗") and "FLUX_MCP_OUTPUT_DIR" in text


async def test_doctor_flags_an_unsafe_http_bind(emulator: RunningEmulator) -> None:
    passed, text, lines = await doctor_output(make_settings(emulator, host="0.0.0.0"))
    assert not passed and lines["http"].startswith("✗") and "FLUX_MCP_AUTH_TOKENS" in text
    passed, text, lines = await doctor_output(
        make_settings(emulator, host="0.0.0.0", auth_tokens="team-token")
    )
    assert passed and "auth tokens" in lines["http"] and "team-token" not in text
