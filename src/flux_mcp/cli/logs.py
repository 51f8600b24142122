"""Logging and warnings: one readable stderr log, with the third-party loggers that would write payloads
held back. Process-wide settings, so the command sets them (main), never the library.

At DEBUG some libraries log what passes through them: sse-starlette every SSE frame whole (prompts,
results, base64 previews), httpcore2 every response's headers (cookies), the MCP SDK whole messages in
a few places. Those carry users' data, and sometimes a secret an upstream echoed back, so they never
log below the ceilings in PAYLOAD_LOGGERS, whatever FLUX_MCP_LOG_LEVEL says. An application that embeds
the service with its own logging applies them with `hold_back_payload_loggers()`.
"""

from __future__ import annotations

import logging
import sys
import warnings

from mcp.shared.exceptions import MCPDeprecationWarning

PAYLOAD_LOGGERS = {
    "sse_starlette": logging.WARNING,  # DEBUG: each SSE frame whole
    "httpcore2": logging.WARNING,  # DEBUG: each response's status line and headers
    "httpcore": logging.WARNING,  # the same, for a process that also has the older stack
    "mcp.server.runner": logging.INFO,  # DEBUG: frames received before a session's first request
    "mcp.shared.jsonrpc_dispatcher": logging.INFO,  # DEBUG: transport exceptions with their input
    "mcp.server.sse": logging.WARNING,  # DEBUG: every message of the SDK's SSE transport
}


def configure_logging(level: str) -> None:
    """stderr only: in stdio mode stdout carries the protocol."""
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    # httpx2 logs each request (method and URL, never headers) at INFO: worth seeing only when debugging.
    logging.getLogger("httpx2").setLevel(logging.INFO if level == "DEBUG" else logging.WARNING)
    hold_back_payload_loggers(logging.getLevelName(level))


def hold_back_payload_loggers(level: int | None = None) -> None:
    """Keep each payload logger at its ceiling or above: at `level` when given, else as it already is."""
    for name, ceiling in PAYLOAD_LOGGERS.items():
        logger = logging.getLogger(name)
        if level is not None:
            logger.setLevel(max(ceiling, level))
        elif logger.getEffectiveLevel() < ceiling:
            logger.setLevel(ceiling)


def configure_warnings() -> None:
    """Warnings go to the log; the one flux-mcp causes by design is not shown.

    MCP log messages (`ctx.log`) are deprecated from protocol 2026-07-28 on, and the SDK warns at each
    one; flux-mcp sends them to the clients of older protocols that asked for them, on purpose.
    """
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", "The logging capability is deprecated", MCPDeprecationWarning)
