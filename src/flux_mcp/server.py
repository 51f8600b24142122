"""The MCP surface: tools, resources, their schemas and annotations, and how results are shown.

`build_server(settings)` makes a fresh `MCPServer`; nothing here is global, so tests build as many
servers as they like. The tools are thin: arguments are validated by the models (before any
upstream call), the waiting is done by `tasks.ImageJobs`, files, previews and the history record by
`finishing.Finisher` (so `present` only renders), and every failure becomes a tool error an
assistant can act on.

A retry never pays twice (tasks.py continues an identical submission whose outcome no caller has
received). Here is where an outcome counts as delivered: a finished task (succeeded or failed), or the
news that a submission may have been billed, is marked delivered by the tool that returns it, as the
last thing it awaits (`History.deliver`); a call cancelled by then takes its mark back, and nothing
after that yields before the SDK writes the answer. What the server can know about a caller that
gave up: the mcp 2.x client sends `notifications/cancelled` when its read timeout expires (the timeout
openai-agents sets with `client_session_timeout_seconds` and google-adk with `timeout`, 5 s by
default) and when its caller cancels; the SDK then cancels the tool call, so the result is neither
marked nor written. A stdio client that exits closes stdin and ends the server; a 2026-07-28 HTTP
client that disconnects cancels the call. What it cannot know: a client that stops waiting without
saying so (mcp 1.x clients time out silently; stdio has no acknowledgement), whose answer goes into
a pipe nobody reads. Such a result counts as delivered: an identical retry that arrives while the
first call still waits is attached, one that arrives after it submits anew. Returning before the
client's timeout avoids that: with FLUX_MCP_WAIT_SECONDS below it the call returns `pending`, and a
pending result is never a delivered one (get_task, or the same call again, picks the task up).
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
import sqlite3
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import httpx2
from mcp.server.apps import Apps, ResourceCsp, ResourcePermissions, client_supports_apps
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.resolve import Resolve
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    INVALID_PARAMS,
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    ListResourcesResult,
    ListRootsResult,
    ListToolsResult,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request

from flux_mcp import __version__, prompts
from flux_mcp.client import (
    FluxClient,
    FluxError,
    PlatformClient,
    build_download_client,
    build_http_client,
    may_have_been_accepted,
)
from flux_mcp.credits import credits_text, summarize_credits
from flux_mcp.finishing import FinishedJob, Finisher
from flux_mcp.images import Downloader, ImageError, ImageKeeper, to_png
from flux_mcp.inputs import ImageInputError
from flux_mcp.models import (
    MAX_COUNT,
    MODELS,
    PROMPT_MAX_CHARS,
    TOOL_ARGUMENTS,
    Cost,
    CountArg,
    CreditsResult,
    EditImageArgs,
    EditModelArg,
    GenerateImageArgs,
    GenerateModelArg,
    ImageInfo,
    ImageUrlArg,
    LimitArg,
    PreviewArg,
    Prompt,
    PromptSuffixArg,
    QueryArg,
    SizeArg,
    StatusFilterArg,
    TaskBatchResult,
    TaskIdArg,
    TaskIdsArg,
    TaskResult,
    TaskStatus,
    VariationArgs,
    VariationCountArg,
    VariationSourceArg,
    VideoInfo,
    WaitSecondsArg,
    default_size,
    explain_validation_error,
)
from flux_mcp.poller import Pollers, PollSchedule, running_pollers
from flux_mcp.roots import client_roots, keyframe_roots, root_folders
from flux_mcp.schemas import portable_schema
from flux_mcp.settings import Settings
from flux_mcp.store import History, HistoryEntry, HistoryUnavailableError, person_owner
from flux_mcp.tasks import CallbackHub, ImageJobs, JobTicket, ago
from flux_mcp.ui import GALLERY_URI, gallery_html
from flux_mcp.uploads import ImageSources, InputPolicy, UploadFailedError
from flux_mcp.video_files import NO_POSTER, VideoKeeper, poster_available
from flux_mcp.videos import (
    FLUX_VIDEO_URI,
    VIDEO_GUIDE,
    AudioArg,
    DraftArg,
    DraftTaskIdArg,
    DurationArg,
    GenerateVideoArgs,
    KeyframesArg,
    ModeArg,
    ResolutionArg,
    StartVideoArg,
    VideoAspectArg,
    VideoRequest,
    is_video_request,
    video_uri,
)

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
# In each job tool's description too: several frameworks pass the tools to their model, not the instructions.
TIMEOUT_ADVICE = (
    "If a call times out on your side, the job may still be running: call it again with the same "
    "arguments (that continues the same task, it is not billed twice) or use list_tasks; never change "
    "the prompt just to retry."
)
INSTRUCTIONS += " " + TIMEOUT_ADVICE

AnyContext = Context[Any, Any]
R = TypeVar("R")  # what a tool's work returns, for its render
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppState:
    """What every call of one server shares: built once in the lifespan."""

    settings: Settings
    history: History
    keeper: ImageKeeper
    jobs: ImageJobs  # with the server's own token
    jobs_for: Callable[[str | None, str], ImageJobs]  # (a caller's token or None, its owner) -> jobs
    sources: ImageSources  # edit inputs: checked, uploaded once
    platform_for: Callable[[str | None], PlatformClient]  # uploads and balance, with a caller's token
    videos: VideoKeeper


@dataclass
class Caller:
    """Who a call is for: which token pays upstream, and whose history it sees."""

    state: AppState
    jobs: ImageJobs
    owner: str = ""
    token: str | None = None  # a pass-through caller's own token; None: the server's

    def platform(self) -> PlatformClient:
        return self.state.platform_for(self.token)


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
) -> MCPServer[AppState]:
    """A complete flux-mcp server for these settings.

    With `callbacks`, tasks finish on the upstream's callback; when `stop` is set (shutdown), every
    waiting call returns its task as pending at once. `probe` is given the history while it is open.
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
                    running_pollers() as pollers,
                ):
                    yield _app_state(settings, http, history, callbacks, stop, pollers, downloads=downloads)
            finally:
                if probe is not None:
                    probe.history = None

    server: MCPServer[AppState] = MCPServer(
        "flux-mcp",
        title="Flux images",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        log_level=settings.log_level,
        middleware=[
            check_tool_arguments,
            check_prompt_arguments,
            hide_ui_from_plain_clients,
            publish_portable_schemas,
        ],
        extensions=[_gallery_app()],
    )
    _add_job_tools(server)
    _add_task_tools(server)
    _add_resources(server)
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
        raise RuntimeError(problem)
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
                callbacks.relay = shared.notify
            try:
                yield shared
            finally:
                if callbacks is not None:
                    callbacks.relay = None
    except ModuleNotFoundError as exc:
        if exc.name not in ("psycopg", "psycopg_pool"):
            raise
        raise RuntimeError(
            "FLUX_MCP_DATABASE_URL needs the PostgreSQL driver: pip install 'flux-mcp[postgres]'"
        ) from exc


def _open_history(settings: Settings) -> History:
    """The history file; if it cannot be opened the server still serves, with a history in memory."""
    path = settings.history_path()
    try:
        return History(path)
    except (OSError, sqlite3.Error) as exc:
        logger.warning("cannot open the history at %s (%s); keeping it in memory: set FLUX_MCP_DB", path, exc)
        return History(Path(":memory:"))


def _app_state(
    settings: Settings,
    http: httpx2.AsyncClient,
    history: History,
    callbacks: CallbackHub | None,
    stop: anyio.Event | None,
    pollers: Pollers,
    *,
    downloads: httpx2.AsyncClient,
) -> AppState:
    gate = anyio.CapacityLimiter(settings.max_concurrency)
    schedule = PollSchedule(first=settings.poll_min_seconds, cap=settings.poll_max_seconds)

    def jobs_for(token: str | None, owner: str = "") -> ImageJobs:
        client = FluxClient.from_settings(http, settings, gate=gate, token=token)
        return ImageJobs(
            client,
            max_wait=settings.wait_seconds,
            schedule=schedule,
            pollers=pollers,
            history=history,
            finisher=finisher,
            owner=owner,
            callbacks=callbacks,
            stop=stop,
            submit_bound=_longest_submission(settings),
        )

    downloader = Downloader(
        downloads,
        gate,
        max_bytes=int(settings.max_download_mb * 1_000_000),
        timeout=settings.download_timeout_seconds,
    )
    folder = settings.image_folder() if settings.saves_images() else None
    keeper = ImageKeeper(downloader, folder=folder, preview_size=settings.preview_size)

    def platform_for(token: str | None) -> PlatformClient:
        return PlatformClient.from_settings(http, settings, gate=gate, token=token)

    videos = VideoKeeper(
        downloader,
        folder=folder,
        preview_size=settings.preview_size,
        max_bytes=int(settings.max_video_download_mb * 1_000_000),
    )
    finisher = Finisher(history, keeper, videos, preview=settings.preview)
    return AppState(
        settings,
        history,
        keeper,
        jobs=jobs_for(None),
        jobs_for=jobs_for,
        sources=ImageSources(history, keeper),
        platform_for=platform_for,
        videos=videos,
    )


def _longest_submission(settings: Settings) -> float:
    """How long one submission can take: every attempt's timeout, every pause between, and a queue."""
    attempts = settings.max_retries + 1
    return attempts * settings.http_timeout_seconds + settings.max_retries * settings.retry_max_seconds + 60


# --- tools --------------------------------------------------------------------------------------

BILLED = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)
LOOKUP = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


def _clean_doc(fn: F) -> F:
    """Tool descriptions come from docstrings: without their source indentation."""
    fn.__doc__ = inspect.cleandoc(fn.__doc__ or "")
    return fn


def _clean_doc_with_timeout_advice(fn: F) -> F:
    fn.__doc__ = inspect.cleandoc(fn.__doc__ or "") + "\n\n" + TIMEOUT_ADVICE
    return fn


def _add_job_tools(server: MCPServer[AppState]) -> None:
    @server.tool(
        name="generate_image",
        meta=UI_META,
        title="Generate images",
        annotations=BILLED.model_copy(update={"title": "Generate images with Flux"}),
    )
    @_clean_doc_with_timeout_advice
    async def generate_image(
        prompt: Prompt,
        ctx: AnyContext,
        model: GenerateModelArg = "flux-dev",
        size: SizeArg = None,
        count: CountArg = 1,
        wait_seconds: WaitSecondsArg = None,
        preview: PreviewArg = None,
    ) -> Annotated[CallToolResult, TaskResult]:
        """Generate images from a text prompt with a Flux model and return the finished images.

        Waits on the server (with progress) up to the wait limit and returns previews, saved file paths and
        URLs. If the job is not done by then, the result has status "pending" and a task_id: call get_task
        with it to keep waiting. Each call is billed, except that a call identical to an earlier one whose
        result was never received continues that task.
        """
        args = {"prompt": prompt, "model": model, "size": size, "count": count}
        waiting = {"wait_seconds": wait_seconds, "preview": preview}
        return await _run_job(ctx, "generate_image", GenerateImageArgs, {**args, **waiting})

    @server.tool(
        name="edit_image",
        meta=UI_META,
        title="Edit an image",
        annotations=BILLED.model_copy(update={"title": "Edit an image with Flux"}),
    )
    @_clean_doc_with_timeout_advice
    async def edit_image(
        prompt: Prompt,
        image_url: ImageUrlArg,
        ctx: AnyContext,
        roots: Annotated[ListRootsResult | None, Resolve(client_roots)],
        model: EditModelArg = "flux-kontext-pro",
        size: SizeArg = None,
        wait_seconds: WaitSecondsArg = None,
        preview: PreviewArg = None,
    ) -> Annotated[CallToolResult, TaskResult]:
        """Edit an existing image following a prompt, e.g. "make the sky stormy".

        image_url is a public http(s) URL, flux://images/{task_id}/{index} from an earlier result, a local
        file (e.g. ~/Pictures/cat.jpg or C:\\Users\\you\\cat.jpg; stdio only) or a data:image/...;base64 URL.
        Files are checked, then uploaded to AceDataCloud once. Waits on the server like generate_image; a
        "pending" result means: call get_task with its task_id.
        """
        args = {"prompt": prompt, "image_url": image_url, "model": model, "size": size}
        arguments = {**args, "wait_seconds": wait_seconds, "preview": preview}
        return await _run_job(ctx, "edit_image", EditImageArgs, arguments, root_folders(roots))

    @server.tool(
        name="generate_variations",
        meta=UI_META,
        title="Variations of a result",
        annotations=BILLED.model_copy(update={"title": "More images like an earlier Flux result"}),
    )
    @_clean_doc
    async def generate_variations(
        task_id: VariationSourceArg,
        ctx: AnyContext,
        count: VariationCountArg = 2,
        prompt_suffix: PromptSuffixArg = None,
        wait_seconds: WaitSecondsArg = None,
        preview: PreviewArg = None,
    ) -> Annotated[CallToolResult, TaskResult]:
        """New images from an earlier result's prompt, model and size (new seeds), e.g. "more like that one".

        prompt_suffix adds words to steer them ("at night"). Waits and returns like generate_image; the new
        task is linked to its source in the history. Each call is billed.
        """
        caller = _caller(ctx)
        try:
            arguments = await _variation_arguments(caller, task_id, count, prompt_suffix)
        except ValueError as exc:
            return error_result(str(exc))
        arguments.update(wait_seconds=wait_seconds, preview=preview)
        return await _run_job(ctx, "generate_variations", VariationArgs, arguments)

    @server.tool(
        name="generate_video",
        meta=UI_META,
        title="Generate a video",
        annotations=BILLED.model_copy(update={"title": "Generate a video with Flux (flux-3)"}),
    )
    @_clean_doc_with_timeout_advice
    async def generate_video(
        prompt: Prompt,
        ctx: AnyContext,
        roots: Annotated[ListRootsResult | None, Resolve(keyframe_roots)],
        mode: ModeArg = "t2v",
        keyframes: KeyframesArg = None,
        start_video: StartVideoArg = None,
        draft_task_id: DraftTaskIdArg = None,
        duration: DurationArg = None,
        resolution: ResolutionArg = None,
        aspect_ratio: VideoAspectArg = None,
        draft: DraftArg = False,
        generate_audio: AudioArg = None,
        wait_seconds: WaitSecondsArg = None,
    ) -> Annotated[CallToolResult, TaskResult]:
        """Make a short video (MP4, flux-3, beta upstream) and return it: URL, saved file, a poster frame.

        mode t2v: from the prompt; i2v: animate keyframes (e.g. ["flux://images/{task_id}/0"] to animate
        an earlier picture); v2v: transform start_video; draft_enhance: the full version of a draft=true
        result (its draft_task_id). Video jobs take minutes: the call waits with progress up to the wait
        limit; a "pending" result means: call get_task with its task_id. Each call is billed.
        """
        arguments = {
            "prompt": prompt,
            "mode": mode,
            "keyframes": keyframes,
            "start_video": start_video,
            "draft_task_id": draft_task_id,
            "duration": duration,
            "resolution": resolution,
            "aspect_ratio": aspect_ratio,
            "draft": draft,
            "generate_audio": generate_audio,
            "wait_seconds": wait_seconds,
        }
        return await _run_video_job(ctx, arguments, root_folders(roots))

    @server.tool(
        name="get_credits",
        title="Credits left",
        annotations=LOOKUP.model_copy(update={"title": "AceDataCloud credits left"}),
    )
    @_clean_doc
    async def get_credits(ctx: AnyContext) -> Annotated[CallToolResult, CreditsResult]:
        """The AceDataCloud balance: credits left and used on the Flux application (others briefly). Free."""
        try:
            applications = await _caller(ctx).platform().applications()
        except FluxError as exc:
            return error_result(f"Could not read the balance: {exc.message}")
        credits = summarize_credits(applications)
        return CallToolResult(
            content=[TextContent(type="text", text=credits_text(credits))],
            structured_content=credits.model_dump(mode="json"),
        )


def _add_task_tools(server: MCPServer[AppState]) -> None:
    @server.tool(
        name="get_task",
        meta=UI_META,
        title="Get a task",
        annotations=LOOKUP.model_copy(update={"title": "Get (and wait for) a Flux task"}),
    )
    @_clean_doc
    async def get_task(
        task_id: TaskIdArg, ctx: AnyContext, wait_seconds: WaitSecondsArg = None, preview: PreviewArg = None
    ) -> Annotated[CallToolResult, TaskResult]:
        """Get a generation task by id, waiting (with progress) for it to finish up to the wait limit.

        Use it to resume a "pending" result from generate_image or edit_image. Looking costs nothing.
        """
        caller = _caller(ctx)
        progress = _progress_reporter(ctx)
        work = lambda: caller.jobs.resume(task_id, wait_seconds, progress, preview)  # noqa: E731
        return await _guarded("get_task", work, lambda finished: _answer(caller, finished, ctx))

    @server.tool(
        name="get_tasks",
        title="Get several tasks",
        annotations=LOOKUP.model_copy(update={"title": "Look up several Flux tasks"}),
    )
    @_clean_doc
    async def get_tasks(task_ids: TaskIdsArg, ctx: AnyContext) -> Annotated[CallToolResult, TaskBatchResult]:
        """Look up the current state of up to 50 tasks at once, without waiting."""
        caller = _caller(ctx)
        work = lambda: caller.jobs.lookup(list(task_ids))  # noqa: E731

        async def answer(batch: TaskBatchResult) -> CallToolResult:
            shown = _batch_result(batch)
            await _delivered(caller, batch.tasks)
            return shown

        return await _guarded("get_tasks", work, answer)

    @server.tool(
        name="list_tasks",
        meta=UI_META,
        title="List recent generations",
        annotations=ToolAnnotations(
            title="List recent Flux generations",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
    @_clean_doc
    async def list_tasks(
        ctx: AnyContext,
        limit: LimitArg = 20,
        status: StatusFilterArg = None,
        query: QueryArg = None,
    ) -> Annotated[CallToolResult, HistoryList]:
        """List this server's recent generations from its local history: prompt, status, task id, files, URLs.

        Use it to find an earlier image again (its task_id works with get_task, its images with edit_image).
        """
        caller = _caller(ctx)
        entries = await caller.state.history.recent(limit, status, query, owner=caller.owner)
        listing = HistoryList(tasks=[history_item(entry) for entry in entries])
        lines = [_history_line(item) for item in listing.tasks] or ["No generations recorded yet."]
        finished = [entry.row_id for entry in entries if entry.status in FINISHED]
        await caller.state.history.deliver(caller.owner, row_ids=finished)
        return CallToolResult(
            content=[TextContent(type="text", text="\n".join(lines))],
            structured_content=listing.model_dump(mode="json"),
        )


class HistoryItem(BaseModel):
    task_id: str | None = Field(description="Upstream task id; null if the submission never got one.")
    status: str = Field(
        description="succeeded, pending, failed, submitting, unknown (may have been billed), rejected."
    )
    prompt: str | None
    model: str | None
    size: str | None
    created_at: str = Field(description="When it was submitted (UTC).")
    images: list[ImageInfo] = Field(default_factory=list)
    error: str | None = None
    cost: Cost | None = Field(None, description="What the upstream charged, when it said.")
    variation_of: str | None = Field(None, description="The task this one is a variation of, if any.")
    kind: Literal["image", "video"] = Field("image", description="What the task makes.")
    videos: list[VideoInfo] = Field(default_factory=list, description="With kind video: the videos.")


class HistoryList(BaseModel):
    tasks: list[HistoryItem] = Field(description="Newest first.")


def history_item(entry: HistoryEntry) -> HistoryItem:
    images = entry.result.images if entry.result is not None else []
    videos = entry.result.videos if entry.result is not None else []
    return HistoryItem(
        task_id=entry.task_id,
        status=entry.status,
        prompt=entry.prompt,
        model=entry.model,
        size=entry.size,
        created_at=entry.as_dict()["created_at"],
        images=images,
        error=entry.error,
        cost=entry.result.cost if entry.result is not None else None,
        variation_of=entry.request.get("variation_of"),
        kind="video" if is_video_request(entry.request) or videos else "image",
        videos=videos,
    )


def _history_line(item: HistoryItem) -> str:
    files: list[ImageInfo | VideoInfo] = [*item.images, *item.videos]
    where = ", ".join(file.path or file.url for file in files)
    prompt = (item.prompt or "")[:80]
    return f"{item.created_at} {item.status:<10} {item.task_id or '(no task id)'} {prompt!r}" + (
        f" -> {where}" if where else ""
    )


# --- the gallery (MCP Apps) ----------------------------------------------------------------------

UI_META = {"ui": {"resourceUri": GALLERY_URI}}
FINISHED = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)  # outcomes that count as delivered once returned
APP_ONLY_TOOLS = {"preview_image", "play_video"}
# The gallery plays a video from its bytes (its CSP fetches nothing); a tool result must stay under the
# 1 MiB an SSE event may carry (SDK-NOTES), so larger videos are opened as files instead.
PLAYABLE_MAX_BYTES = 700_000


def _gallery_app() -> Apps:
    """The gallery view for hosts that render MCP Apps; everyone else never sees it."""
    apps = Apps()
    apps.add_html_resource(
        GALLERY_URI,
        gallery_html(),
        name="gallery",
        title="Flux gallery",
        description="Results as a gallery: previews, prompt, seed; variations, edit, copy, open.",
        csp=ResourceCsp(connect_domains=[], resource_domains=[], frame_domains=[], base_uri_domains=[]),
        permissions=ResourcePermissions(clipboard_write={}),  # for the gallery's Copy URL
        prefers_border=False,
    )

    @apps.tool(
        resource_uri=GALLERY_URI,
        visibility=["app"],
        name="preview_image",
        title="Image for the gallery",
        annotations=LOOKUP.model_copy(update={"title": "Image for the gallery", "open_world_hint": False}),
    )
    @_clean_doc
    async def preview_image(
        task_id: TaskIdArg,
        ctx: AnyContext,
        index: Annotated[int, Field(ge=0, le=MAX_COUNT - 1, description="Image index in the task.")] = 0,
        size: Annotated[int, Field(ge=64, le=2048, description="Longest side in pixels.")] = 1024,
    ) -> CallToolResult:
        """A larger view of one image of an earlier result, for the gallery's full-size view."""
        caller = _caller(ctx)
        try:
            image = await _known_image(caller, task_id, str(index))
            picture = await caller.state.keeper.full_image(task_id, image, preview_side=size)
        except (ResourceError, ImageError) as exc:
            return error_result(str(exc))
        preview = picture.preview
        assert preview is not None
        return CallToolResult(
            content=[ImageContent(type="image", data=preview.base64(), mime_type=preview.mime_type)],
            structured_content={
                "task_id": task_id,
                "index": index,
                "width": preview.width,
                "height": preview.height,
            },
        )

    @apps.tool(
        resource_uri=GALLERY_URI,
        visibility=["app"],
        name="play_video",
        title="Video for the gallery",
        annotations=LOOKUP.model_copy(update={"title": "Video for the gallery", "open_world_hint": False}),
    )
    @_clean_doc
    async def play_video(
        task_id: TaskIdArg,
        ctx: AnyContext,
        index: Annotated[int, Field(ge=0, le=9, description="Video index in the task.")] = 0,
    ) -> CallToolResult:
        """The MP4 of an earlier video result, for the gallery's player (small videos only)."""
        caller = _caller(ctx)
        try:
            video = await _known_video(caller, task_id, str(index))
            data = await caller.state.videos.full_video(video)
        except (ResourceError, ImageError) as exc:
            return error_result(str(exc))
        if len(data) > PLAYABLE_MAX_BYTES:
            where = video.path or video.url
            size = f"{len(data) / 1e6:.1f} MB"
            return error_result(f"The video is too large to play here ({size}): open {where}")
        resource = BlobResourceContents(
            uri=video_uri(task_id, index), mime_type="video/mp4", blob=base64.b64encode(data).decode("ascii")
        )
        return CallToolResult(content=[EmbeddedResource(type="resource", resource=resource)])

    return apps


async def publish_portable_schemas(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Every tool's input schema as every framework and provider accepts it (see `schemas`)."""
    result = await call_next(ctx)
    if ctx.method != "tools/list":
        return result
    if isinstance(result, ListToolsResult):
        result = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return result
    tools = [
        {**tool, "inputSchema": portable_schema(tool["inputSchema"])}
        if isinstance(tool, dict) and isinstance(tool.get("inputSchema"), dict)
        else tool
        for tool in result["tools"]
    ]
    return {**result, "tools": tools}


async def hide_ui_from_plain_clients(
    ctx: ServerRequestContext[Any, Any], call_next: CallNext
) -> HandlerResult:
    """Clients that did not negotiate MCP Apps see the tools and resources as they were before the gallery.

    The gallery page stays readable by its URI: a host may fetch it on a connection other than the
    one that negotiated Apps, and to everyone else it is an inert page they were never told about.
    """
    result = await call_next(ctx)
    if ctx.method not in ("tools/list", "resources/list") or client_supports_apps(ctx):
        return result
    if isinstance(result, ListToolsResult | ListResourcesResult):
        result = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    if not isinstance(result, dict):
        return result
    if ctx.method == "resources/list" and isinstance(result.get("resources"), list):
        resources = [item for item in result["resources"] if not _is_ui_resource(item)]
        return {**result, "resources": resources}
    if not isinstance(result.get("tools"), list):
        return result
    tools = []
    for tool in result["tools"]:
        if not isinstance(tool, dict) or tool.get("name") in APP_ONLY_TOOLS:
            continue
        meta = {key: value for key, value in (tool.get("_meta") or {}).items() if key != "ui"}
        tools.append(
            {key: value for key, value in tool.items() if key != "_meta"} | ({"_meta": meta} if meta else {})
        )
    return {**result, "tools": tools}


def _is_ui_resource(resource: Any) -> bool:
    return isinstance(resource, dict) and str(resource.get("uri", "")).startswith("ui://")


# --- resources --------------------------------------------------------------------------------


def _add_resources(server: MCPServer[AppState]) -> None:
    @server.resource(
        "flux://tasks/{task_id}",
        name="task",
        title="A Flux task",
        description="A task from this server's history (request, status, result, files) as JSON.",
        mime_type="application/json",
    )
    async def task_resource(task_id: str, ctx: AnyContext) -> str:
        caller = _caller(ctx)
        entry = await caller.state.history.get(task_id, caller.owner)
        if entry is None:
            raise ResourceError(f"No task {task_id!r} in this server's history.")
        return json.dumps(entry.as_dict(), indent=2, ensure_ascii=False)

    @server.resource(
        "flux://images/{task_id}/{index}",
        name="image",
        title="A generated image",
        description="Full-size image of a finished task: the saved file, or fetched once when not saved.",
        mime_type="image/png",
    )
    async def image_resource(task_id: str, index: str, ctx: AnyContext) -> bytes:
        caller = _caller(ctx)
        image = await _known_image(caller, task_id, index)
        try:
            picture = await caller.state.keeper.full_image(task_id, image)
        except ImageError as exc:
            raise ResourceError(str(exc)) from None
        return await anyio.to_thread.run_sync(to_png, picture)

    @server.resource(
        "flux://videos/{task_id}/{index}",
        name="video",
        title="A generated video",
        description="The MP4 of a finished generate_video task: the saved file, or fetched when not saved.",
        mime_type="video/mp4",
    )
    async def video_resource(task_id: str, index: str, ctx: AnyContext) -> bytes:
        caller = _caller(ctx)
        video = await _known_video(caller, task_id, index)
        try:
            return await caller.state.videos.full_video(video)
        except ImageError as exc:
            raise ResourceError(str(exc)) from None

    @server.resource(
        "flux://models",
        name="models",
        title="Flux model guide",
        description="Each model: what it is for, which sizes it takes, whether it can edit.",
        mime_type="application/json",
    )
    def models_resource() -> str:
        guide: dict[str, dict[str, Any]] = {
            name: {
                "guide": info.guide,
                "can_edit": info.can_edit,
                "sizes": "pixel sizes or aspect ratios" if info.pixel_sizes else "aspect ratios only",
                "default_size": default_size(name),
            }
            for name, info in MODELS.items()
        }
        guide["flux-3"] = {
            "guide": VIDEO_GUIDE,
            "can_edit": False,
            "video": True,
            "tool": "generate_video",
            "modes": ["t2v", "i2v", "v2v", "draft_enhance"],
            "unavailable_upstream": ["edit", "upscale"],
        }
        return json.dumps(guide, indent=2)


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


async def _known_video(caller: Caller, task_id: str, index: str) -> VideoInfo:
    entry = await caller.state.history.get(task_id, caller.owner)
    videos = entry.result.videos if entry is not None and entry.result is not None else []
    if not (index.isascii() and index.isdecimal()) or int(index) >= len(videos):
        raise ResourceError(f"No video {index} of task {task_id!r} in this server's history.")
    return videos[int(index)]


async def _known_image(caller: Caller, task_id: str, index: str) -> ImageInfo:
    entry = await caller.state.history.get(task_id, caller.owner)
    images = entry.result.images if entry is not None and entry.result is not None else []
    if not (index.isascii() and index.isdecimal()) or int(index) >= len(images):
        raise ResourceError(f"No image {index} of task {task_id!r} in this server's history.")
    return images[int(index)]


# --- running jobs and showing results --------------------------------------------------------


async def _run_job(
    ctx: AnyContext,
    tool: str,
    schema: type[GenerateImageArgs | EditImageArgs],
    arguments: dict[str, Any],
    roots: list[Path] | None = None,
) -> CallToolResult:
    try:
        args = schema.model_validate(arguments)
    except ValidationError as exc:
        return error_result(explain_validation_error(tool, exc))
    caller = _caller(ctx)
    request = args.to_request()
    if request.image_url is not None:
        try:
            request.image_url = await _fetchable_image(ctx, caller, request.image_url, roots or [])
        except UploadFailedError as exc:
            return error_result(f"Cannot edit that image: {exc}")
        except ImageInputError as exc:
            return error_result(f"Cannot edit that image: {exc}. Nothing was uploaded or submitted.")
    progress = _progress_reporter(ctx)
    ticket = JobTicket()
    work = lambda: caller.jobs.run(request, args.wait_seconds, progress, ticket, args.preview)  # noqa: E731
    shown = await _guarded(tool, work, lambda finished: _answer(caller, finished, ctx))
    if ticket.undecided_row is not None:  # the caller is told its submission may have been billed
        await caller.state.history.deliver(caller.owner, row_ids=[ticket.undecided_row])
    return shown


async def _run_video_job(ctx: AnyContext, arguments: dict[str, Any], roots: list[Path]) -> CallToolResult:
    """generate_video: validate, turn every input into a URL the API can fetch, then wait like images."""
    try:
        args = GenerateVideoArgs.model_validate(arguments)
    except ValidationError as exc:
        return error_result(explain_validation_error("generate_video", exc))
    caller = _caller(ctx)
    request = args.to_request()
    try:
        request = await _fetchable_video_inputs(ctx, caller, request, roots)
    except UploadFailedError as exc:
        return error_result(f"Cannot use that input: {exc}")
    except ImageInputError as exc:
        return error_result(f"Cannot use that input: {exc}. Nothing was uploaded or submitted.")
    progress = _progress_reporter(ctx)
    ticket = JobTicket()
    work = lambda: caller.jobs.run(request, args.wait_seconds, progress, ticket)  # noqa: E731
    shown = await _guarded("generate_video", work, lambda finished: _answer(caller, finished, ctx))
    if ticket.undecided_row is not None:
        await caller.state.history.deliver(caller.owner, row_ids=[ticket.undecided_row])
    return shown


async def _fetchable_video_inputs(
    ctx: AnyContext, caller: Caller, request: VideoRequest, roots: list[Path]
) -> VideoRequest:
    """Keyframes as edit_image's images are (uploaded once if local), a flux://videos start as its URL."""
    urls = [await _fetchable_image(ctx, caller, url, roots) for url in request.keyframe_urls()]
    request = request.with_keyframe_urls(urls)
    start = FLUX_VIDEO_URI.match(request.start_video or "")
    if start is not None:
        try:
            video = await _known_video(caller, start.group(1), start.group(2))
        except ResourceError as exc:
            raise ImageInputError(str(exc)) from None
        request = request.model_copy(update={"start_video": video.url})
    return request


async def _fetchable_image(ctx: AnyContext, caller: Caller, image_url: str, roots: list[Path]) -> str:
    """Any accepted image_url -> a URL the Flux API can fetch (uploading a checked file once)."""

    async def find_image(task_id: str, index: int) -> ImageInfo:
        try:
            return await _known_image(caller, task_id, str(index))
        except ResourceError as exc:
            raise ImageInputError(str(exc)) from None

    policy = InputPolicy(
        over_http=ctx.headers is not None, folders=[*roots, *caller.state.settings.input_folders()]
    )
    sources = caller.state.sources
    return await sources.url_for(
        image_url, policy, platform=caller.platform(), find_image=find_image, owner=caller.owner
    )


async def _variation_arguments(
    caller: Caller, task_id: str, count: int, prompt_suffix: str | None
) -> dict[str, Any]:
    """generate_image arguments for more images like an earlier task of this server's history."""
    entry = await caller.state.history.get(task_id, caller.owner)
    if entry is None:
        raise ValueError(
            f"No task {task_id!r} in this server's history. generate_variations varies an earlier result of "
            "this server: list_tasks shows them (get_task brings in a task made elsewhere)."
        )
    if entry.request.get("action") == "edit" or entry.request.get("image_url"):
        raise ValueError(
            f"Task {task_id} is an edit of an image; variations re-run a text prompt. For another take on "
            "the edit, call edit_image again with the same image and prompt."
        )
    if not entry.prompt or not entry.model:
        raise ValueError(f"The prompt or model of task {task_id} is not known here, so it cannot be varied.")
    prompt = f"{entry.prompt.rstrip()} {prompt_suffix.strip()}" if prompt_suffix else entry.prompt
    if len(prompt) > PROMPT_MAX_CHARS:
        raise ValueError(f"prompt_suffix makes the prompt longer than {PROMPT_MAX_CHARS} characters.")
    return {
        "prompt": prompt,
        "model": entry.model,
        "size": entry.size,
        "count": count,
        "variation_of": task_id,
    }


async def _guarded(
    tool: str, work: Callable[[], Awaitable[R]], render: Callable[[R], Awaitable[CallToolResult]]
) -> CallToolResult:
    try:
        return await render(await work())
    except HistoryUnavailableError as exc:
        return error_result(exc.message)
    except FluxError as exc:
        billed = not tool.startswith("get_") and may_have_been_accepted(exc)
        return error_result(_maybe_billed(exc.message) if billed else exc.message)
    except Exception:
        # A bug or a local fault (disk full, database locked): logged in full, reported plainly.
        logger.exception("%s failed unexpectedly", tool)
        return error_result(
            f"{tool} failed inside flux-mcp (see its log for details). Any task already submitted is kept: "
            "list_tasks shows it and get_task can fetch it."
        )


def _maybe_billed(message: str) -> str:
    if "billed" in message:
        return message
    return (
        f"{message} The request may have reached the Flux API, so it was not resubmitted (that could "
        "bill twice). Wait a minute before trying again; list_tasks shows it as 'unknown', and if your "
        "AceDataCloud console shows the task, use get_task with its id."
    )


async def _answer(caller: Caller, finished: FinishedJob, ctx: AnyContext) -> CallToolResult:
    """A job tool's answer: the outcome logged to the client, shown, and (last) marked delivered."""
    await _log_outcome(ctx, finished.result)
    shown = present(finished, resource_links=caller.state.settings.resource_links)
    await _delivered(caller, [finished.result])
    return shown


async def _delivered(caller: Caller, results: list[TaskResult]) -> None:
    """Mark the finished ones among `results` delivered: the last thing a tool awaits before answering."""
    finished = [result.task_id for result in results if result.status in FINISHED]
    await caller.state.history.deliver(caller.owner, task_ids=finished)


def present(finished: FinishedJob, *, resource_links: bool = True) -> CallToolResult:
    """Text summary, inline previews and resource links of a finished job (kept and recorded already).

    The text alone always says what happened and what to do next: some frameworks show the model nothing
    else. `resource_links`: FLUX_MCP_RESOURCE_LINKS.
    """
    result = finished.result
    if result.kind == "video":
        return present_video(finished, resource_links=resource_links)
    content: list[ContentBlock] = [TextContent(type="text", text=summarize(result))]
    for info, preview in zip(result.images, finished.previews, strict=True):
        if preview is not None:
            content.append(ImageContent(type="image", data=preview.base64(), mime_type=preview.mime_type))
        if resource_links:
            content.append(image_link(result.task_id, info))
    return CallToolResult(
        content=content,
        structured_content=result.model_dump(mode="json"),
        is_error=result.status is TaskStatus.FAILED,
    )


def image_link(task_id: str, image: ImageInfo) -> ResourceLink:
    """A link to the full-size image, for hosts that read it (resources/read) or offer it to the user.

    langchain-mcp-adapters turns every resource link into an image or file block whose URL is this
    flux:// URI, which OpenAI and Anthropic cannot fetch: FLUX_MCP_RESOURCE_LINKS=false leaves links out.
    """
    return ResourceLink(
        type="resource_link",
        uri=image.resource_uri or f"flux://images/{task_id}/{image.index}",
        name=f"image {image.index + 1} of task {task_id}",
        mime_type="image/png",
        description=image.path or image.url,
    )


def present_video(finished: FinishedJob, *, resource_links: bool = True) -> CallToolResult:
    """A video result: summary, a poster frame (with PyAV), a video/mp4 resource link.

    The poster is the video's preview: a call that chose `none` (or FLUX_MCP_PREVIEW) was kept without.
    """
    result = finished.result
    kept = result.status is TaskStatus.SUCCEEDED and bool(result.videos)
    note = f"\nNote: {NO_POSTER}." if kept and not poster_available() else ""
    content: list[ContentBlock] = [TextContent(type="text", text=summarize(result) + note)]
    for info, poster in zip(result.videos, finished.previews, strict=True):
        if poster is not None:
            content.append(ImageContent(type="image", data=poster.base64(), mime_type=poster.mime_type))
        if not resource_links:
            continue
        content.append(
            ResourceLink(
                type="resource_link",
                uri=info.resource_uri or "",
                name=f"video {info.index + 1} of task {result.task_id}",
                mime_type="video/mp4",
                description=info.path or info.url,
            )
        )
    return CallToolResult(
        content=content,
        structured_content=result.model_dump(mode="json"),
        is_error=result.status is TaskStatus.FAILED,
    )


def _batch_result(batch: TaskBatchResult) -> CallToolResult:
    lines = [summarize(task) for task in batch.tasks]
    if batch.missing:
        lines.append("Unknown task ids: " + ", ".join(batch.missing))
    return CallToolResult(
        content=[TextContent(type="text", text="\n\n".join(lines) or "No tasks found.")],
        structured_content=batch.model_dump(mode="json"),
    )


def summarize(result: TaskResult) -> str:
    """A short text an assistant can read out: status, task id, image URLs and files, next step."""
    if result.attached:
        age = ago(result.submitted_seconds_ago or 0.0)
        return (
            f"Continuing task {result.task_id} submitted {age}: an identical call submitted it and its "
            "result had not been received, so nothing was submitted (or billed) again.\n" + _summary(result)
        )
    return _summary(result)


def _summary(result: TaskResult) -> str:
    about = " ".join(part for part in (result.model, f"({result.size})" if result.size else "") if part)
    if result.status is TaskStatus.SUCCEEDED and result.kind == "video":
        return _video_summary(result)
    if result.status is TaskStatus.SUCCEEDED:
        count = len(result.images)
        plural = "s" if count != 1 else ""
        lines = [
            f"Generated {count} image{plural} with {about} in {result.elapsed_seconds:.1f} s. "
            f"task_id: {result.task_id}"
        ]
        if result.cost is not None:
            lines.append(f"Cost: {describe_cost(result.cost)}")
        for image in result.images:
            seed = f" (seed {image.seed})" if image.seed is not None else ""
            lines.append(f"{image.index + 1}. {image.url}{seed}")
            if image.path:
                lines.append(f"   saved: {image.path}")
            if image.warning:
                lines.append(f"   note: {image.warning}")
        if not any(image.path for image in result.images):
            lines.append("Image URLs expire; download the ones you want to keep.")
        return "\n".join(lines)
    if result.status is TaskStatus.PENDING:
        return (
            f"Task {result.task_id} is still running after {result.elapsed_seconds:.0f} s. {result.next_step}"
        )
    error = result.error
    reason = f"{error.message} ({error.code})" if error else "no reason given"
    return f"Task {result.task_id} failed: {reason}. You may retry with a changed prompt or another model."


def _video_summary(result: TaskResult) -> str:
    lines = [
        f"Generated a video with {result.model or 'flux-3'} in {result.elapsed_seconds:.1f} s. "
        f"task_id: {result.task_id}"
    ]
    if result.cost is not None:
        lines.append(f"Cost: {describe_cost(result.cost)}")
    for video in result.videos:
        facts = [
            f"{video.seconds:g} s" if video.seconds else None,
            f"{video.width}x{video.height}" if video.width and video.height else None,
            f"{video.fps:g} fps" if video.fps else None,
            f"{video.size_bytes / 1_000_000:.1f} MB" if video.size_bytes else None,
        ]
        shown = ", ".join(fact for fact in facts if fact)
        lines.append(f"{video.index + 1}. {video.url}" + (f" ({shown})" if shown else ""))
        if video.path:
            lines.append(f"   saved: {video.path}")
        if video.draft_task_id:
            lines.append(
                f"   draft: for the full version call generate_video with mode draft_enhance and "
                f'draft_task_id "{video.draft_task_id}"'
            )
        if video.warning:
            lines.append(f"   note: {video.warning}")
    if not any(video.path for video in result.videos):
        lines.append("Video URLs expire; download the ones you want to keep.")
    return "\n".join(lines)


def describe_cost(cost: Cost) -> str:
    """`0.5 credit (list price 0.6)`"""
    unit = f" {cost.currency}" if cost.currency else ""
    listed = f" (list price {cost.list_amount:g})" if cost.list_amount not in (None, cost.amount) else ""
    return f"{cost.amount:g}{unit}{listed}"


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _caller(ctx: AnyContext) -> Caller:
    """The server's own token, or with pass-through auth over HTTP the caller's bearer token.

    With OAuth the server's token pays, and the history is the signed-in person's (the HTTP gate put
    their verified access token into the request as the SDK's `AuthenticatedUser`).
    """
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    mode = state.settings.auth_mode()
    if mode == "oauth" and ctx.headers is not None:
        return _signed_in_caller(state, ctx)
    if mode != "passthrough" or ctx.headers is None:
        return Caller(state, state.jobs)
    token = bearer_token(ctx.headers.get("authorization"))
    if token is None:  # the HTTP gate refuses such requests; this is the second line
        return Caller(state, state.jobs_for("", "anonymous"), "anonymous", token="")
    owner = state.history.owner_of(token)
    return Caller(state, state.jobs_for(token, owner), owner, token=token)


def _signed_in_caller(state: AppState, ctx: AnyContext) -> Caller:
    request = ctx.request_context.request
    user = request.scope.get("user") if isinstance(request, Request) else None
    access = user.access_token if isinstance(user, AuthenticatedUser) else None
    issuer = (access.claims or {}).get("iss") if access is not None else None
    if access is None or not access.subject or not isinstance(issuer, str):
        # The HTTP gate refuses such requests; this is the second line: no token, so nothing is billed.
        return Caller(state, state.jobs_for("", "anonymous"), "anonymous", token="")
    owner = person_owner(issuer, access.subject)
    return Caller(state, state.jobs_for(None, owner), owner)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it is."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _progress_reporter(ctx: AnyContext) -> Callable[[float, str], Awaitable[None]]:
    """Progress in seconds, strictly increasing as the spec asks, whatever phase reports it."""
    last = -1.0

    async def report(elapsed: float, message: str) -> None:
        nonlocal last
        last = max(round(elapsed, 1), round(last + 0.1, 1))
        if last <= 0.1:  # the milestones (queued, submitted) also go to the client's log
            await log_to_client(ctx, "info", message)
        try:
            await ctx.report_progress(last, None, message)
        except Exception as exc:  # a client that went away must not fail the job
            logger.debug("progress notification not delivered: %s", exc)

    return report


async def _log_outcome(ctx: AnyContext, result: TaskResult) -> None:
    if result.status is TaskStatus.FAILED:
        await log_to_client(ctx, "warning", summarize(result))
        return
    await log_to_client(ctx, "info", f"Task {result.task_id}: {result.status.value}")
    for image in result.images:
        if image.warning:
            await log_to_client(
                ctx, "warning", f"Image {image.index + 1} of task {result.task_id}: {image.warning}"
            )


async def log_to_client(ctx: AnyContext, level: Literal["info", "warning"], message: str) -> None:
    """An MCP log message, for clients that asked for them (many hosts show them in a log pane).

    The logging capability is deprecated as of protocol 2026-07-28, so the SDK warns on every call; the
    message still reaches clients that opted in, and nothing else changes. Never fails the call.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await ctx.log(level, message, logger_name="flux-mcp")
    except Exception as exc:
        logger.debug("log message not delivered: %s", exc)


async def check_tool_arguments(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Reject bad tool arguments with a message naming each problem, before the tool runs.

    The SDK would reject them too, but with pydantic's raw report; this gives the same verdict with
    what would be accepted, and it runs before anything can reach the upstream.
    """
    params = ctx.params if ctx.method == "tools/call" else None
    if isinstance(params, dict) and params.get("name") in TOOL_ARGUMENTS:
        tool = str(params["name"])
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return error_result(f"Invalid arguments for {tool}: arguments must be a JSON object")
        try:
            TOOL_ARGUMENTS[tool].model_validate(arguments)
        except ValidationError as exc:
            return error_result(explain_validation_error(tool, exc))
    return await call_next(ctx)
