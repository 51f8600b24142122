"""What flux-mcp reaches inside the MCP SDK beyond its public API, and the SDK versions known to have it.

Three private names: `MCPServer._lowlevel_server` (serving stdio on flux-mcp's own streams, stdio.py),
`StreamableHTTPSessionManager._server_instances` (the open sessions, web/gate.py) and its
`_discard_session` (ending a credential's least recently used session, web/gate.py). Private names may
move in any release, so pyproject.toml allows only the minor versions the tests ran against:
MCP_REQUIREMENT is that dependency, word for word (tests/server/test_sdk.py holds them equal).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flux_mcp.domain.errors import UnsupportedSdkError

MCP_VERSIONS = ((2, 3), (2, 4))  # from (inclusive) .. to (exclusive): the versions tested
MCP_REQUIREMENT = "mcp>={}.{},<{}.{}".format(*MCP_VERSIONS[0], *MCP_VERSIONS[1])


def sdk_internal(owner: object, name: str) -> Any:
    """`owner.<name>`, which flux-mcp needs and the SDK does not publish; an error naming the fix if gone."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise unsupported_sdk(f"{type(owner).__name__}.{name}") from None


def unsupported_sdk(missing: str) -> UnsupportedSdkError:
    """The error for an SDK without `missing`: which mcp is installed, and the range to install."""
    return UnsupportedSdkError(
        f"the installed MCP SDK (mcp {_installed()}) has no {missing}, which flux-mcp needs: "
        f'install a version it supports, pip install "{MCP_REQUIREMENT}"'
    )


def _installed() -> str:
    try:
        return version("mcp")
    except PackageNotFoundError:
        return "unknown version"
