"""`flux-mcp config HOST`: a ready-to-paste MCP host config, with the command that works for this install.

The config goes to stdout (so `flux-mcp config cursor > ~/.cursor/mcp.json` works); where the file
lives for that host on this OS, and the host's own `mcp add` command where it has one, go to stderr.
The token is always a placeholder, never the value of ACEDATACLOUD_API_TOKEN, even when it is set:
configs get pasted into chats and issues. `--sandbox` gives a config for `flux-mcp --sandbox` instead
(the offline emulator: no token, no network), under its own name so it can sit beside the real one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

TOKEN_VAR = "ACEDATACLOUD_API_TOKEN"
TOKEN_PLACEHOLDER = "<your-acedatacloud-token>"
SERVER_NAME = "flux"
SANDBOX_SERVER_NAME = "flux-sandbox"
SANDBOX_FLAG = "--sandbox"
SCRIPT = "flux-mcp"
VSCODE_INPUT_ID = "acedatacloud-token"
HOSTS = ("claude-desktop", "claude-code", "cursor", "vscode", "windsurf", "gemini", "codex")
# A call returns within FLUX_MCP_WAIT_SECONDS (45 s by default) plus saving the images. Codex's own
# default (60 s) leaves little room; 3 minutes also covers a wait raised to a slow job's ~2 minutes.
TOOL_TIMEOUT_SECONDS = 180
STARTUP_TIMEOUT_SECONDS = 60  # `uvx flux-mcp` installs on its first start; Codex's default is 10 s

_UV_PREFIX = re.compile(r"/uv/(tools|archive-v\d+|cache/archive-v\d+|archive)(/|$)")
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_./:=@%+,-]+")


def detect_command(
    *,
    prefix: str | None = None,
    base_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    script: Path | None = None,
) -> list[str]:
    """The command an MCP host should run to start this flux-mcp.

    - installed by uv (`uvx flux-mcp`, `uv tool install`): `uvx flux-mcp`;
    - in a virtualenv whose `flux-mcp` is not on PATH, or only on PATH because the venv is activated
      in this shell (hosts do not share the shell's PATH): the absolute path of the venv's script;
    - otherwise (pipx, a system or user install): `flux-mcp`.
    """
    prefix = prefix if prefix is not None else sys.prefix
    base_prefix = base_prefix if base_prefix is not None else sys.base_prefix
    environ = environ if environ is not None else os.environ
    if _installed_by_uv(prefix, environ):
        return ["uvx", SCRIPT]
    if prefix != base_prefix:  # a virtualenv
        own = script if script is not None else _venv_script()
        found = which(SCRIPT)
        if found is None or (own is not None and _same_dir(Path(found), own)):
            if own is not None:
                return [str(own)]
            return [sys.executable, "-m", "flux_mcp.cli.main"]
    return [SCRIPT]


def render(host: str, command: list[str], *, sandbox: bool = False) -> str:
    """The config text for one host: JSON, TOML for codex, or for claude-code the `claude mcp add` line."""
    name = server_name(sandbox)
    command = [*command, SANDBOX_FLAG] if sandbox else command
    env = {} if sandbox else {TOKEN_VAR: TOKEN_PLACEHOLDER}
    if host == "claude-code":
        return add_command(host, command, sandbox=sandbox)
    if host == "codex":
        return _codex_toml(name, command, env)
    executable, args = command[0], command[1:]
    server: dict[str, Any] = {"command": executable, "args": args} | ({"env": env} if env else {})
    if host == "vscode":
        config: dict[str, Any] = {"servers": {name: {"type": "stdio", **server}}}
        if not sandbox:
            config["servers"][name]["env"] = {TOKEN_VAR: f"${{input:{VSCODE_INPUT_ID}}}"}
            config["inputs"] = [
                {
                    "type": "promptString",
                    "id": VSCODE_INPUT_ID,
                    "description": "AceDataCloud API token (https://platform.acedata.cloud)",
                    "password": True,
                }
            ]
    elif host == "gemini":
        config = {"mcpServers": {name: {**server, "timeout": TOOL_TIMEOUT_SECONDS * 1000}}}
    elif host in ("claude-desktop", "cursor", "windsurf"):
        config = {"mcpServers": {name: server}}
    else:
        raise ValueError(f"unknown host {host!r}; expected one of: {', '.join(HOSTS)}")
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def add_command(host: str, command: list[str], *, sandbox: bool = False) -> str:
    """The host's own `mcp add` line (claude-code, gemini, codex), `command` already complete."""
    name = server_name(sandbox)
    env = [] if sandbox else [f"{TOKEN_VAR}={TOKEN_PLACEHOLDER}"]
    executable, args = command[0], command[1:]
    if host == "claude-code":
        words = ["claude", "mcp", "add", name, *_each("--env", env), "--", *command]
    elif host == "gemini":
        # Options after the positionals and the server's own arguments after `--`: older Gemini CLIs
        # let a leading `-e` swallow the words that follow it.
        options = ["--scope", "user", "--timeout", str(TOOL_TIMEOUT_SECONDS * 1000), *_each("-e", env)]
        words = ["gemini", "mcp", "add", name, executable, *options, *(["--", *args] if args else [])]
    elif host == "codex":
        words = ["codex", "mcp", "add", name, *_each("--env", env), "--", *command]
    else:
        raise ValueError(f"{host} has no `mcp add` command")
    return " ".join(_quote(word) for word in words) + "\n"


def server_name(sandbox: bool) -> str:
    return SANDBOX_SERVER_NAME if sandbox else SERVER_NAME


def location(host: str, platform: str | None = None, *, sandbox: bool = False) -> str:
    """Where this host's config lives on this OS, and what to do with the printed text."""
    platform = platform or sys.platform
    windows = platform.startswith("win")
    home = "%USERPROFILE%" if windows else "~"
    sep = "\\" if windows else "/"
    replace = "" if sandbox else f", and replace {TOKEN_PLACEHOLDER}"
    if host == "claude-desktop":
        if platform == "darwin":
            path = "~/Library/Application Support/Claude/claude_desktop_config.json"
        elif windows:
            path = "%APPDATA%\\Claude\\claude_desktop_config.json"
        else:
            path = "~/.config/Claude/claude_desktop_config.json"
        return (
            f"Claude Desktop: merge this into {path} (Settings → Developer → Edit Config){replace}, "
            "then restart Claude Desktop."
        )
    if host == "claude-code":
        after = "" if sandbox else f" after replacing {TOKEN_PLACEHOLDER}"
        return (
            f"Claude Code: run this line in a terminal{after} "
            "(add `--scope user` after `add` to use it in every project)."
        )
    if host == "cursor":
        path = sep.join([home, ".cursor", "mcp.json"])
        return f"Cursor: merge this into {path} (all projects) or .cursor{sep}mcp.json in a project{replace}."
    if host == "vscode":
        asks = "" if sandbox else "; VS Code asks for the token on first start"
        return (
            f"VS Code: save this as .vscode{sep}mcp.json in your workspace (or run 'MCP: Open User "
            f"Configuration' for every workspace){asks}."
        )
    if host == "windsurf":
        path = sep.join([home, ".codeium", "windsurf", "mcp_config.json"])
        return f"Windsurf: merge this into {path}{replace}."
    if host == "gemini":
        path = sep.join([home, ".gemini", "settings.json"])
        from_env = "" if sandbox else f' (or write "${TOKEN_VAR}" to take it from your environment)'
        return (
            f"Gemini CLI: merge this into {path} (all projects) or .gemini{sep}settings.json in a "
            f"project{replace}{from_env}. Or run this instead:"
        )
    if host == "codex":
        path = sep.join([home, ".codex", "config.toml"])
        return (
            f"Codex CLI: add this to {path} (or $CODEX_HOME{sep}config.toml){replace}. Or run the line "
            "below, which writes the same entry without the timeouts (Codex's default of 60 s per tool "
            "call is tight for image jobs; add tool_timeout_sec by hand):"
        )
    raise ValueError(f"unknown host {host!r}; expected one of: {', '.join(HOSTS)}")


def write_config(
    host: str, out: TextIO, err: TextIO, *, command: list[str] | None = None, sandbox: bool = False
) -> int:
    """`flux-mcp config HOST [--sandbox]`: the config on `out`; where it goes (and how else) on `err`."""
    command = command if command is not None else detect_command()
    out.write(render(host, command, sandbox=sandbox))
    out.flush()
    err.write(location(host, sandbox=sandbox) + "\n")
    if host in ("gemini", "codex"):
        err.write("  " + add_command(host, [*command, SANDBOX_FLAG] if sandbox else command, sandbox=sandbox))
    if sandbox:
        err.write(
            f"It runs `{SCRIPT} {SANDBOX_FLAG}`: the offline emulator, no token needed; its images and "
            "history are kept apart from real ones (README: The sandbox).\n"
        )
    if Path(command[0]).is_absolute():
        err.write(
            f"The command is this install's absolute path ({command[0]}): MCP hosts do not see your "
            "shell's PATH or activated virtualenv. Rerun `flux-mcp config` if you move or recreate it.\n"
        )
    return 0


def main(host: str, *, sandbox: bool = False) -> int:
    return write_config(host, sys.stdout, sys.stderr, sandbox=sandbox)


def _installed_by_uv(prefix: str, environ: Mapping[str, str]) -> bool:
    normalized = prefix.replace("\\", "/").rstrip("/").lower()
    if _UV_PREFIX.search(normalized):
        return True
    for variable in ("UV_TOOL_DIR", "UV_CACHE_DIR"):
        root = environ.get(variable, "").replace("\\", "/").rstrip("/").lower()
        if root and (normalized == root or normalized.startswith(root + "/")):
            return True
    return False


def _venv_script() -> Path | None:
    name = SCRIPT + (".exe" if sys.platform.startswith("win") else "")
    scripts = sysconfig.get_path("scripts")
    path = Path(scripts) / name if scripts else None
    return path.absolute() if path is not None and path.exists() else None


def _same_dir(found: Path, own: Path) -> bool:
    ours, theirs = found.absolute().parent, own.absolute().parent
    if os.path.normcase(ours) == os.path.normcase(theirs):
        return True
    try:
        return ours.samefile(theirs)
    except OSError:
        return False


def _each(option: str, values: list[str]) -> list[str]:
    return [word for value in values for word in (option, value)]


def _codex_toml(name: str, command: list[str], env: dict[str, str]) -> str:
    lines = [
        f"[mcp_servers.{name}]",
        f"command = {_toml_string(command[0])}",
        "args = [" + ", ".join(_toml_string(arg) for arg in command[1:]) + "]",
        f"startup_timeout_sec = {STARTUP_TIMEOUT_SECONDS}",
        f"tool_timeout_sec = {TOOL_TIMEOUT_SECONDS}",
    ]
    if env:
        lines += ["", f"[mcp_servers.{name}.env]"]
        lines += [f"{key} = {_toml_string(value)}" for key, value in env.items()]
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except that TOML also wants DEL escaped."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _quote(word: str) -> str:
    """Quoted the same way for bash, zsh, PowerShell and cmd: double quotes, only where needed."""
    return word if _SHELL_SAFE.fullmatch(word) else f'"{word}"'
