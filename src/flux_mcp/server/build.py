"""The composition: `build_server(settings)` puts the tools, resources, prompts and the gallery together
over what the server's calls share (`AppState`), opened and closed by its lifespan.

Nothing here is global, so tests build as many servers as they like. The tools are in `tools.py`
(each declared by its arguments model in `arguments.py`), the `flux://` resources in `resources.py`, the
MCP App in `gallery.py`; who a call is for is `caller.caller_of`, and how a result reaches the caller
is `delivery`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import httpx2
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from flux_mcp import __version__
from flux_mcp.domain.errors import HistoryUnavailableError, StartupError
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.team import LOCAL_PERSON, Budgets
from flux_mcp.domain.telemetry import NO_OBSERVER, Observer
from flux_mcp.history.sqlite import UNOPENABLE_FIX
from flux_mcp.history.store import History
from flux_mcp.jobs.callbacks import CallbackHub
from flux_mcp.jobs.finishing import Finisher
from flux_mcp.jobs.poller import Pollers, PollSchedule, running_pollers
from flux_mcp.jobs.runner import Jobs, may_read_unrecorded
from flux_mcp.jobs.schedule import Schedules
from flux_mcp.media.images import ImageKeeper
from flux_mcp.media.uploads import ImageSources
from flux_mcp.media.videos import VideoKeeper
from flux_mcp.net.clients import build_download_client, build_http_client
from flux_mcp.net.downloads import Downloader
from flux_mcp.server import prompts
from flux_mcp.server.gallery import gallery_app, gallery_tools, hide_ui_from_plain_clients
from flux_mcp.server.observing import observing
from flux_mcp.server.resources import add_resources
from flux_mcp.server.state import AppState
from flux_mcp.server.tasks.core import TaskBoard
from flux_mcp.server.tasks.extension import TasksExtension
from flux_mcp.server.tasks.legacy import legacy_tasks
from flux_mcp.server.toolkit import TIMEOUT_ADVICE
from flux_mcp.server.tools import (
    job_tools,
    publish_portable_schemas,
    refuse_non_object_arguments,
    task_tools,
)
from flux_mcp.upstream.flux import FluxClient
from flux_mcp.upstream.platform import PlatformClient

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
Generate and edit images with Flux models. generate_image and edit_image wait on the server for \
the result and return the finished images (with small previews and saved files). A job takes 10 s \
to 2 minutes: if it is not done within the wait limit the result has status "pending" and a \
task_id; call get_task with that task_id to keep waiting (a pending result is not an error: do not \
submit the prompt again). list_tasks finds earlier generations. edit_image also takes a \
local file path (e.g. ~/Pictures/cat.jpg) or a data: URL; generate_variations makes more of an \
earlier result; get_credits shows the balance left. generate_video makes a short MP4 (flux-3) from a \
prompt, from keyframe images (e.g. flux://images/{task_id}/0 of an earlier result: "animate it") or \
from a video; it waits and resumes the same way."""
INSTRUCTIONS += " " + TIMEOUT_ADVICE


@dataclass
class HistoryProbe:
    """The running server's history, for health checks outside MCP (`/healthz`)."""

    history: History | None = None

    async def report(self) -> dict[str, Any]:
        """`{"backend", "ok", "reason"?}`: ok when the history answers right now."""
        history = self.history
        if history is None:
            return {"backend": None, "ok": False, "reason": "the server is starting or stopping"}
        try:
            await history.probe()
        except HistoryUnavailableError as exc:
            return {"backend": history.kind, "ok": False, "reason": f"{history.where}: {exc.reason}"}
        return {"backend": history.kind, "ok": True}


def build_server(
    settings: Settings,
    *,
    callbacks: CallbackHub | None = None,
    stop: anyio.Event | None = None,
    probe: HistoryProbe | None = None,
    observer: Observer = NO_OBSERVER,
) -> MCPServer[AppState]:
    """A complete flux-mcp server for these settings.

    With `callbacks`, tasks finish on the upstream's callback; when `stop` is set (shutdown), every
    waiting call returns its task as pending at once. `probe` is given the history while it is open.
    `observer` is told what happens (requests, upstream calls, jobs: `domain.telemetry`).
    """

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with open_history(settings, callbacks) as history:
            if probe is not None:
                probe.history = history
            try:
                async with (
                    build_http_client(settings) as http,
                    build_download_client(settings) as downloads,
                    running_pollers(observer) as pollers,
                    anyio.create_task_group() as background,  # MCP tasks' jobs, past their calls
                ):
                    try:
                        yield _app_state(
                            settings,
                            http,
                            history,
                            callbacks,
                            stop,
                            pollers,
                            downloads=downloads,
                            observer=observer,
                            group=background,
                        )
                    finally:
                        background.cancel_scope.cancel()
            finally:
                if probe is not None:
                    probe.history = None

    # In the order hosts list them: the gallery's own tools (only Apps hosts see them), then ours.
    tools = [*gallery_tools(), *job_tools(), *task_tools()]
    # Only a server that counts pays for the counting.
    counting = [observing(observer, (tool.name for tool in tools))] if observer is not NO_OBSERVER else []
    server: MCPServer[AppState] = MCPServer(
        "flux-mcp",
        title="Flux images",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        log_level=settings.log_level,
        middleware=[
            *counting,
            legacy_tasks,  # first: whatever refuses a task-augmented call, the refusal is its protocol error
            refuse_non_object_arguments,
            check_prompt_arguments,
            hide_ui_from_plain_clients,
            publish_portable_schemas,
        ],
        tools=tools,
        extensions=[gallery_app(), *([TasksExtension()] if settings.tasks else [])],
    )
    add_resources(server)
    _add_prompts(server)
    return server


@asynccontextmanager
async def open_history(settings: Settings, callbacks: CallbackHub | None = None) -> AsyncIterator[History]:
    """The history the settings name: the SQLite file, or the PostgreSQL database shared by replicas.

    On PostgreSQL, callbacks for slots another replica holds are relayed through it (NOTIFY), and the
    ones other replicas relay wake this replica's slots.
    """
    problem = settings.history_problem()
    if problem is not None:
        raise StartupError(problem)
    url = settings.history_url()
    if url is None:
        history = _open_history(settings)
        try:
            yield history
        finally:
            history.close()
        return
    try:
        connect = History.connect(url, on_notify=callbacks.relayed if callbacks is not None else None)
        async with connect as shared:
            if callbacks is not None:
                callbacks.relay = shared
            try:
                yield shared
            finally:
                if callbacks is not None:
                    callbacks.relay = None
    except ModuleNotFoundError as exc:
        if exc.name not in ("psycopg", "psycopg_pool"):
            raise
        raise StartupError(
            "FLUX_MCP_DATABASE_URL needs the PostgreSQL driver: pip install 'flux-mcp[postgres]'"
        ) from exc


def _open_history(settings: Settings) -> History:
    """The history file, or StartupError: the server does not start without it.

    It used to fall back to a history in memory, silently: every task submitted then was lost at the
    next restart, which breaks the first promise (a submitted task can always be found again, and an
    identical retry never pays twice across processes). Serving on and saying so in every result would
    not keep that promise either: a result's warning is read by a model, not by whoever can fix the
    setting, and the tasks would still be lost. A server that does not start is what hosts show their
    users, with its one line of stderr; `flux-mcp doctor` reports the same. A file another process is
    opening is waited for (`history.sqlite`), not refused. The sandbox, which bills nothing, decides
    otherwise for its own history (`cli.sandbox`).
    """
    path = settings.history_path()
    try:
        return History(path)
    except (OSError, sqlite3.Error) as exc:
        raise StartupError(
            f"cannot open the task history at {path} ({exc}). Every submission is written there before it "
            f"is sent, so that no task is lost; flux-mcp does not start without it: {UNOPENABLE_FIX}."
        ) from exc


def _app_state(
    settings: Settings,
    http: httpx2.AsyncClient,
    history: History,
    callbacks: CallbackHub | None,
    stop: anyio.Event | None,
    pollers: Pollers,
    *,
    downloads: httpx2.AsyncClient,
    observer: Observer = NO_OBSERVER,
    group: anyio.abc.TaskGroup,
) -> AppState:
    gate = anyio.CapacityLimiter(settings.max_concurrency)
    schedule = PollSchedule(first=settings.poll_min_seconds, cap=settings.poll_max_seconds)
    schedules = Schedules(schedule, history)  # learned per kind of job, shared by every caller

    budgets = Budgets(settings.person_budget(), settings.total_budget())

    def jobs_for(token: str | None, owner: str = "", person: str = LOCAL_PERSON) -> Jobs:
        client = FluxClient.from_settings(http, settings, gate=gate, token=token, observer=observer)
        return Jobs(
            client,
            max_wait=settings.wait_seconds,
            schedule=schedule,
            pollers=pollers,
            history=history,
            finisher=finisher,
            owner=owner,
            person=person,
            budgets=budgets,
            callbacks=callbacks,
            stop=stop,
            submit_bound=_longest_submission(settings),
            reads_unrecorded=may_read_unrecorded(token, owner),
            schedules=schedules,
        )

    downloader = Downloader(
        downloads,
        gate,
        max_bytes=int(settings.max_download_mb * 1_000_000),
        timeout=settings.download_timeout_seconds,
        observer=observer,
    )
    folder = settings.image_folder() if settings.saves_images() else None
    keeper = ImageKeeper(downloader, folder=folder, preview_size=settings.preview_size)

    def platform_for(token: str | None) -> PlatformClient:
        return PlatformClient.from_settings(http, settings, gate=gate, token=token, observer=observer)

    videos = VideoKeeper(
        downloader,
        folder=folder,
        preview_size=settings.preview_size,
        max_bytes=int(settings.max_video_download_mb * 1_000_000),
    )
    finisher = Finisher(history, keeper, videos, preview=settings.preview, observer=observer)
    return AppState(
        settings,
        history,
        keeper,
        jobs=jobs_for(None),
        jobs_for=jobs_for,
        sources=ImageSources(history, keeper),
        platform_for=platform_for,
        videos=videos,
        observer=observer,
        tasks=TaskBoard(history, group, schedules) if settings.tasks else None,
    )


def _longest_submission(settings: Settings) -> float:
    """How long one submission can take: every attempt's timeout, every pause between, and a queue."""
    attempts = settings.max_retries + 1
    return attempts * settings.http_timeout_seconds + settings.max_retries * settings.retry_max_seconds + 60


# --- prompts ----------------------------------------------------------------------------------


def _add_prompts(server: MCPServer[AppState]) -> None:
    for name, fn in prompts.PROMPTS.items():
        description = " ".join((fn.__doc__ or "").split())
        server.prompt(name=name, title=prompts.TITLES[name], description=description)(fn)


async def check_prompt_arguments(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Bad prompt arguments are an invalid-params error naming each problem, not an internal error."""
    params = ctx.params if ctx.method == "prompts/get" else None
    if isinstance(params, dict) and isinstance(params.get("name"), str):
        arguments = params.get("arguments")
        problem = prompts.argument_problem(params["name"], arguments if isinstance(arguments, dict) else None)
        if problem is not None:
            raise MCPError(INVALID_PARAMS, f"Cannot get prompt {params['name']!r}: {problem}")
    return await call_next(ctx)
