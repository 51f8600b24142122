"""flux-mcp: an MCP server that turns a prompt into finished Flux images.

The server submits jobs to the AceDataCloud Flux API, waits for them on the server side
(with progress notifications and a bounded budget) and returns the images, or a task
handle that `get_task` resumes.

The package API is `__all__`: `build_server(settings)` for stdio or in-process use,
`build_http_app(settings)` for the streamable HTTP service in any ASGI server (it refuses unsafe
settings with `StartupError`), `Settings`, `FluxClient`, and the error tree under `FluxMcpError`.
Each name is imported on first use (PEP 562), so `import flux_mcp` stays cheap: the MCP SDK loads
only when a server is built.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("flux-mcp")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

_ERRORS = (  # the whole tree of flux_mcp.domain.errors, root first
    "FluxMcpError",
    "ImageInputError",
    "UploadFailedError",
    "ImageError",
    "VideoError",
    "HistoryUnavailableError",
    "StartupError",
    "UnsupportedSdkError",
    "FluxError",
    "MissingTokenError",
    "UndecidedRepeatError",
    "BudgetExceededError",
    "UpstreamError",
    "AuthenticationError",
    "RequestRejectedError",
    "TaskNotFoundError",
    "RateLimitedError",
    "ServerError",
    "MalformedResponseError",
    "TransportError",
    "NotSentError",
    "ResponseLostError",
)
# Where each public name lives.
_HOMES = {
    "build_server": "flux_mcp.server.build",
    "build_http_app": "flux_mcp.web.app",
    "Settings": "flux_mcp.domain.settings",
    "FluxClient": "flux_mcp.upstream.flux",
    **dict.fromkeys(_ERRORS, "flux_mcp.domain.errors"),
}

__all__ = ["__version__", *_HOMES]

if TYPE_CHECKING:  # what type checkers see; tests/test_package.py holds it to _HOMES
    from flux_mcp.domain.errors import AuthenticationError as AuthenticationError
    from flux_mcp.domain.errors import BudgetExceededError as BudgetExceededError
    from flux_mcp.domain.errors import FluxError as FluxError
    from flux_mcp.domain.errors import FluxMcpError as FluxMcpError
    from flux_mcp.domain.errors import HistoryUnavailableError as HistoryUnavailableError
    from flux_mcp.domain.errors import ImageError as ImageError
    from flux_mcp.domain.errors import ImageInputError as ImageInputError
    from flux_mcp.domain.errors import MalformedResponseError as MalformedResponseError
    from flux_mcp.domain.errors import MissingTokenError as MissingTokenError
    from flux_mcp.domain.errors import NotSentError as NotSentError
    from flux_mcp.domain.errors import RateLimitedError as RateLimitedError
    from flux_mcp.domain.errors import RequestRejectedError as RequestRejectedError
    from flux_mcp.domain.errors import ResponseLostError as ResponseLostError
    from flux_mcp.domain.errors import ServerError as ServerError
    from flux_mcp.domain.errors import StartupError as StartupError
    from flux_mcp.domain.errors import TaskNotFoundError as TaskNotFoundError
    from flux_mcp.domain.errors import TransportError as TransportError
    from flux_mcp.domain.errors import UndecidedRepeatError as UndecidedRepeatError
    from flux_mcp.domain.errors import UnsupportedSdkError as UnsupportedSdkError
    from flux_mcp.domain.errors import UploadFailedError as UploadFailedError
    from flux_mcp.domain.errors import UpstreamError as UpstreamError
    from flux_mcp.domain.errors import VideoError as VideoError
    from flux_mcp.domain.settings import Settings as Settings
    from flux_mcp.server.build import build_server as build_server
    from flux_mcp.upstream.flux import FluxClient as FluxClient
    from flux_mcp.web.app import build_http_app as build_http_app


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
