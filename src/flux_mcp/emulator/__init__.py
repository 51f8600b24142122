"""A faithful local emulator of the AceDataCloud Flux REST API, for tests, benchmarks and offline use.

It plays the third-party upstream, so it imports nothing else from flux_mcp.
"""

from .app import create_app
from .journal import TaskJournal
from .runner import RunningEmulator, run_emulator_forever, serve_asgi, serve_emulator
from .state import EmulatorConfig, EmulatorState, Fault, FaultKind, TaskRead, TaskRecord

__all__ = [
    "EmulatorConfig",
    "EmulatorState",
    "Fault",
    "FaultKind",
    "RunningEmulator",
    "TaskJournal",
    "TaskRead",
    "TaskRecord",
    "create_app",
    "run_emulator_forever",
    "serve_asgi",
    "serve_emulator",
]
