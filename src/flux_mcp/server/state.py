"""What every call of one running server shares (`AppState`), built once in the server's lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flux_mcp.domain.settings import Settings
from flux_mcp.history.store import History
from flux_mcp.jobs.runner import Jobs
from flux_mcp.media.images import ImageKeeper
from flux_mcp.media.uploads import ImageSources
from flux_mcp.media.videos import VideoKeeper
from flux_mcp.upstream.platform import PlatformClient

if TYPE_CHECKING:
    from flux_mcp.server.tasks.core import TaskBoard


@dataclass
class AppState:
    """What every call of one server shares: built once in the lifespan."""

    settings: Settings
    history: History
    keeper: ImageKeeper
    jobs: Jobs  # with the server's own token
    jobs_for: Callable[[str | None, str], Jobs]  # (a caller's token or None, its owner) -> jobs
    sources: ImageSources  # edit inputs: checked, uploaded once
    platform_for: Callable[[str | None], PlatformClient]  # uploads and balance, with a caller's token
    videos: VideoKeeper
    tasks: TaskBoard | None = None  # MCP Tasks (server/tasks); None: FLUX_MCP_TASKS=false
