"""The SDK's own cold-start floor (measurement 5): a bare `MCPServer` with one tool, over stdio.

`python -m benchmarks.sdk_floor` is started exactly as flux-mcp is, so the difference between the two
is what flux-mcp itself adds to a start (its imports, settings, history, tools).
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("sdk-floor")


@server.tool()
def echo(text: str) -> str:
    """Say `text` back."""
    return text


if __name__ == "__main__":
    server.run()
