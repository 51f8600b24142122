"""The offline sandbox: `flux-mcp --sandbox` and `flux-mcp demo` against the built-in emulator.

Hosts and agent frameworks start a sandbox process per session, some per call, and end their health
checks with SIGTERM; so nothing of the sandbox lives only in its process or in a temporary folder:

- the emulator's tasks are kept in a journal file that every sandbox process shares, so a task
  submitted through one process is found and finished (`get_task`) through the next;
- the emulator listens on a port derived from the sandbox folder whenever that port is free, so the
  image URLs of one sandbox process still work in the next (a second sandbox running at the same
  time falls back to any free port; it still finds every task and serves its files itself);
- history and saved images go to a `sandbox` folder beside the real ones, never into the real
  history: `<data folder>/sandbox/history.db` and `<output folder>/sandbox/`.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import EmulatorConfig, RunningEmulator, TaskJournal, serve_emulator
from flux_mcp.history.sqlite import IN_MEMORY
from flux_mcp.history.store import History

logger = logging.getLogger(__name__)

SANDBOX_TOKEN = "sandbox-token"
FOLDER_NAME = "sandbox"
JOURNAL_NAME = "emulator-tasks.db"
# Below the ephemeral ranges of Linux (32768+), macOS and Windows (49152+): an outgoing connection
# never holds such a port, so it is usually free for the next sandbox process.
PORT_RANGE = range(20000, 30000)


@dataclass(frozen=True)
class SandboxPlaces:
    """Where one user's sandbox keeps everything, and the port its emulator prefers."""

    folder: Path
    history: Path
    images: Path
    journal: Path
    port: int


def sandbox_places(settings: Settings) -> SandboxPlaces:
    """Beside the real history and images (FLUX_MCP_DB and FLUX_MCP_OUTPUT_DIR move them too)."""
    history = settings.history_path()
    folder = history.parent / FOLDER_NAME
    return SandboxPlaces(
        folder=folder,
        history=folder / history.name,
        images=settings.image_folder() / FOLDER_NAME,
        journal=folder / JOURNAL_NAME,
        port=preferred_port(folder),
    )


def preferred_port(folder: Path) -> int:
    """A port that depends only on the sandbox folder: the same for every sandbox process of a user."""
    digest = hashlib.sha256(str(folder.expanduser().absolute()).encode()).digest()
    return PORT_RANGE.start + int.from_bytes(digest[:4], "big") % len(PORT_RANGE)


@asynccontextmanager
async def serve_sandbox(
    settings: Settings, *, latency: float, images: Path | None = None
) -> AsyncIterator[Settings]:
    """Run the sandbox's emulator for the block; yields `settings` pointed at it, its history and images."""
    places = sandbox_places(settings)
    async with _emulator(places, EmulatorConfig(latency=latency)) as emulator:
        folder = images if images is not None else places.images
        logger.info(
            "Flux API emulator at %s; history %s; images in %s", emulator.base_url, places.history, folder
        )
        yield settings.with_changes(
            api_base_url=emulator.base_url,
            platform_base_url=emulator.base_url,
            api_token=SecretStr(SANDBOX_TOKEN),
            db=_usable_history(places.history),
            output_dir=folder,
        )


@asynccontextmanager
async def _emulator(places: SandboxPlaces, config: EmulatorConfig) -> AsyncIterator[RunningEmulator]:
    journal = _usable_journal(places.journal)
    async with AsyncExitStack() as stack:
        try:
            running = await stack.enter_async_context(
                serve_emulator(config, port=places.port, journal=journal)
            )
        except OSError as exc:
            logger.info(
                "port %d is taken (%s); the sandbox uses a free port", places.port, exc.strerror or exc
            )
            running = await stack.enter_async_context(serve_emulator(config, port=0, journal=journal))
        yield running


def _usable_history(path: Path) -> Path:
    """The sandbox's history file, if it can be opened; else one in memory, said in the log.

    A real server does not start without its history file (`server.build`): what it submits is billed.
    The sandbox bills nothing, and is how people try flux-mcp before any setup, so it serves on.
    """
    return path if _opens(path, History, "history") else Path(IN_MEMORY)


def _usable_journal(path: Path) -> Path | None:
    """The journal file, if it can be opened; else none, as with the sandbox's history."""
    return path if _opens(path, TaskJournal, "task journal") else None


def _opens(path: Path, kind: Callable[[Path], History | TaskJournal], what: str) -> bool:
    """Whether the sandbox's `what` at `path` opens; if not, the log says it lasts only this process."""
    try:
        kind(path).close()
    except (OSError, sqlite3.Error) as exc:
        logger.warning(
            "cannot open the sandbox's %s at %s (%s): it lasts only as long as this process; set "
            "FLUX_MCP_DB to a writable place",
            what,
            path,
            exc,
        )
        return False
    return True
