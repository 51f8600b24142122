"""`flux-mcp config HOST`: a ready-to-paste MCP host config, with the command that works for this install.

The config goes to stdout (so `flux-mcp config cursor > ~/.cursor/mcp.json` works); where the file
lives for that host on this OS goes to stderr. The token is always a placeholder, never the value of
ACEDATACLOUD_API_TOKEN, even when it is set: configs get pasted into chats and issues.
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
SCRIPT = "flux-mcp"
VSCODE_INPUT_ID = "acedatacloud-token"
HOSTS = ("claude-desktop", "claude-code", "cursor", "vscode", "windsurf")

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
            return [sys.executable, "-m", "flux_mcp.cli"]
    return [SCRIPT]


def render(host: str, command: list[str]) -> str:
    """The config text for one host: JSON, or for claude-code the `claude mcp add` line."""
    executable, args = command[0], command[1:]
    if host == "claude-code":
        words = ["claude", "mcp", "add", SERVER_NAME, "--env", f"{TOKEN_VAR}={TOKEN_PLACEHOLDER}", "--"]
        return " ".join(_quote(word) for word in [*words, *command]) + "\n"
    if host == "vscode":
        config: dict[str, Any] = {
            "servers": {
                SERVER_NAME: {
                    "type": "stdio",
                    "command": executable,
                    "args": args,
                    "env": {TOKEN_VAR: f"${{input:{VSCODE_INPUT_ID}}}"},
                }
            },
            "inputs": [
                {
                    "type": "promptString",
                    "id": VSCODE_INPUT_ID,
                    "description": "AceDataCloud API token (https://platform.acedata.cloud)",
                    "password": True,
                }
            ],
        }
    elif host in ("claude-desktop", "cursor", "windsurf"):
        config = {
            "mcpServers": {
                SERVER_NAME: {"command": executable, "args": args, "env": {TOKEN_VAR: TOKEN_PLACEHOLDER}}
            }
        }
    else:
        raise ValueError(f"unknown host {host!r}; expected one of: {', '.join(HOSTS)}")
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def location(host: str, platform: str | None = None) -> str:
    """Where this host's config lives on this OS, and what to do with the printed text."""
    platform = platform or sys.platform
    windows = platform.startswith("win")
    home = "%USERPROFILE%" if windows else "~"
    sep = "\\" if windows else "/"
    if host == "claude-desktop":
        if platform == "darwin":
            path = "~/Library/Application Support/Claude/claude_desktop_config.json"
        elif windows:
            path = "%APPDATA%\\Claude\\claude_desktop_config.json"
        else:
            path = "~/.config/Claude/claude_desktop_config.json"
        return (
            f"Claude Desktop: merge this into {path} (Settings → Developer → Edit Config), "
            f"replace {TOKEN_PLACEHOLDER}, then restart Claude Desktop."
        )
    if host == "claude-code":
        return (
            f"Claude Code: run this line in a terminal after replacing {TOKEN_PLACEHOLDER} "
            "(add `--scope user` after `add` to use it in every project)."
        )
    if host == "cursor":
        path = sep.join([home, ".cursor", "mcp.json"])
        return (
            f"Cursor: merge this into {path} (all projects) or .cursor{sep}mcp.json in a project, "
            f"and replace {TOKEN_PLACEHOLDER}."
        )
    if host == "vscode":
        return (
            f"VS Code: save this as .vscode{sep}mcp.json in your workspace (or run 'MCP: Open User "
            "Configuration' for every workspace); VS Code asks for the token on first start."
        )
    if host == "windsurf":
        path = sep.join([home, ".codeium", "windsurf", "mcp_config.json"])
        return f"Windsurf: merge this into {path} and replace {TOKEN_PLACEHOLDER}."
    raise ValueError(f"unknown host {host!r}; expected one of: {', '.join(HOSTS)}")


def write_config(host: str, out: TextIO, err: TextIO, *, command: list[str] | None = None) -> int:
    """`flux-mcp config HOST`: the config on `out`, where it goes on `err`."""
    command = command if command is not None else detect_command()
    out.write(render(host, command))
    out.flush()
    err.write(location(host) + "\n")
    if Path(command[0]).is_absolute():
        err.write(
            f"The command is this install's absolute path ({command[0]}): MCP hosts do not see your "
            "shell's PATH or activated virtualenv. Rerun `flux-mcp config` if you move or recreate it.\n"
        )
    return 0


def main(host: str) -> int:
    return write_config(host, sys.stdout, sys.stderr)


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


def _quote(word: str) -> str:
    """Quoted the same way for bash, zsh, PowerShell and cmd: double quotes, only where needed."""
    return word if _SHELL_SAFE.fullmatch(word) else f'"{word}"'
