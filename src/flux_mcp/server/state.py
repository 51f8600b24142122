"""What every call of one running server shares (`AppState`), built once in the server's lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from flux_mcp.domain.settings import Settings
from flux_mcp.domain.team import LOCAL_PERSON
from flux_mcp.domain.telemetry import NO_OBSERVER, Observer
from flux_mcp.history.store import History
from flux_mcp.jobs.runner import Jobs
from flux_mcp.media.images import ImageKeeper
from flux_mcp.media.uploads import ImageSources
from flux_mcp.media.videos import VideoKeeper
from flux_mcp.upstream.platform import PlatformClient

if TYPE_CHECKING:
    from flux_mcp.server.tasks.core import TaskBoard


class JobsFor(Protocol):
    """The jobs of one caller: the token that pays (None: the server's), its owner, and its person."""

    def __call__(self, token: str | None, owner: str = "", person: str = LOCAL_PERSON) -> Jobs: ...


@dataclass
class AppState:
    """What every call of one server shares: built once in the lifespan."""

    settings: Settings
    history: History
    keeper: ImageKeeper
    jobs: Jobs  # with the server's own token
    jobs_for: JobsFor
    sources: ImageSources  # edit inputs: checked, uploaded once
    platform_for: Callable[[str | None], PlatformClient]  # uploads and balance, with a caller's token
    videos: VideoKeeper
    # Told what happens; `state.observer.budget_refused()` when a budget refuses a call.
    observer: Observer = NO_OBSERVER
    tasks: TaskBoard | None = None  # MCP Tasks (server/tasks); None: FLUX_MCP_TASKS=false
