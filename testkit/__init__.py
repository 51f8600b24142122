"""What the tests and the benchmarks both run: ports, the flux-mcp command, PostgreSQL, replicas.

Not part of the package: `tests/` and `benchmarks/` import it from the repository root.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

TOKEN = "sk-test-SECRET-7f3a9c1e"


def free_port() -> int:
    """A loopback port nothing listens on now: for a child process told its port, or a refused address.

    In-process servers bind port 0 themselves instead (`serve_asgi`, or `listening_socket` when the
    URL must be known before the app is built), so no other program can take the port meanwhile.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def flux_command() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script = Path(sys.executable).parent / ("flux-mcp.exe" if os.name == "nt" else "flux-mcp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flux_mcp.cli.main"]
