"""flux-mcp: an MCP server that turns a prompt into finished Flux images.

The server submits jobs to the AceDataCloud Flux API, waits for them on the server side
(with progress notifications and a bounded budget) and returns the images, or a task
handle that `get_task` resumes.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flux-mcp")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
