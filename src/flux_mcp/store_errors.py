"""The one failure every history backend reports the same way: the database cannot be reached."""

from __future__ import annotations

from mcp.server.mcpserver.exceptions import ToolError


class HistoryUnavailableError(ToolError):
    """The shared history does not answer; `message` says where and why (never a password).

    A ToolError, so that a tool it escapes from answers with this message (the SDK's tool error), never
    "Error executing tool"."""

    def __init__(self, where: str, reason: str) -> None:
        self.where, self.reason = where, reason
        self.message = (
            f"The task history ({where}) cannot be reached: {reason}. Nothing was submitted or billed by "
            "this call, and every task recorded so far is kept there. Try again in a minute; if it "
            "persists, the server's operator should check the database (GET /healthz shows the reason)."
        )
        super().__init__(self.message)
