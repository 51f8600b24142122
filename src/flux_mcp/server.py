"""The MCP surface: tools, resources, their schemas and annotations, and how results are shown.

`build_server(settings)` makes a fresh `MCPServer`; nothing here is global, so tests build as many
servers as they like. The tools are thin: arguments are validated by the models (before any
upstream call), the waiting is done by `tasks.ImageJobs`, files and previews by `images`, and
every failure becomes a tool error an assistant can act on.
"""

from __future__ import annotations

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
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import (
    CallToolResult,
    ContentBlock,
    ImageContent,
    ListToolsResult,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field, ValidationError

from flux_mcp import __version__
from flux_mcp.client import FluxClient, FluxError, build_http_client, may_have_been_accepted
from flux_mcp.images import Downloader, ImageError, ImageKeeper, KeptImage, to_png
from flux_mcp.models import (
    FLUX_IMAGE_URI,
    MAX_COUNT,
    MODELS,
    TOOL_ARGUMENTS,
    CountArg,
    EditImageArgs,
    EditModelArg,
    GenerateImageArgs,
    GenerateModelArg,
    ImageInfo,
    ImageUrlArg,
    LimitArg,
    Prompt,
    QueryArg,
    SizeArg,
    StatusFilterArg,
    TaskBatchResult,
    TaskIdArg,
    TaskIdsArg,
    TaskResult,
    TaskStatus,
    WaitSecondsArg,
    default_size,
    explain_validation_error,
)
from flux_mcp.poller import Pollers, PollSchedule, running_pollers
from flux_mcp.settings import Settings
from flux_mcp.store import History, HistoryEntry
from flux_mcp.tasks import CallbackHub, ImageJobs
from flux_mcp.ui import GALLERY_URI, gallery_html

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
Generate and edit images with Flux models. generate_image and edit_image wait on the server for \
the result and return the finished images (with small previews and saved files). A job takes 10 s \
to 2 minutes: if it is not done within the wait limit the result has status "pending" and a \
task_id; call get_task with that task_id to keep waiting. Never resubmit a prompt just because it \
is pending: that bills the user twice. list_tasks finds earlier generations."""

AnyContext = Context[Any, Any]
R = TypeVar("R", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppState:
    """What every call of one server shares: built once in the lifespan."""

    settings: Settings
    history: History
    keeper: ImageKeeper
    jobs: ImageJobs  # with the server's own token
    jobs_for: Callable[[str, str], ImageJobs]  # (a caller's token, its owner) -> jobs with that token


@dataclass
class Caller:
    """Who a call is for: which token pays upstream, and whose history it sees."""

    state: AppState
    jobs: ImageJobs
    owner: str = ""


def build_server(
    settings: Settings, *, callbacks: CallbackHub | None = None, stop: anyio.Event | None = None
) -> MCPServer[AppState]:
    """A complete flux-mcp server for these settings.

    With `callbacks`, tasks finish on the upstream's callback; when `stop` is set (shutdown), every
    waiting call returns its task as pending at once.
    """

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        history = _open_history(settings)
        try:
            async with build_http_client(settings) as http, running_pollers() as pollers:
                yield _app_state(settings, http, history, callbacks, stop, pollers)
        finally:
            history.close()

    server: MCPServer[AppState] = MCPServer(
        "flux-mcp",
        title="Flux images",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        log_level=settings.log_level,
        middleware=[check_tool_arguments, hide_ui_from_plain_clients],
        extensions=[_gallery_app()],
    )
    _add_job_tools(server)
    _add_task_tools(server)
    _add_resources(server)
    return server


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
            owner=owner,
            callbacks=callbacks,
            stop=stop,
        )

    downloader = Downloader(
        http,
        gate,
        max_bytes=int(settings.max_download_mb * 1_000_000),
        timeout=settings.download_timeout_seconds,
    )
    folder = settings.image_folder() if settings.saves_images() else None
    keeper = ImageKeeper(downloader, folder=folder, preview_size=settings.preview_size)
    return AppState(settings, history, keeper, jobs=jobs_for(None), jobs_for=jobs_for)


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


def _add_job_tools(server: MCPServer[AppState]) -> None:
    @server.tool(
        name="generate_image",
        meta=UI_META,
        title="Generate images",
        annotations=BILLED.model_copy(update={"title": "Generate images with Flux"}),
    )
    @_clean_doc
    async def generate_image(
        prompt: Prompt,
        ctx: AnyContext,
        model: GenerateModelArg = "flux-dev",
        size: SizeArg = None,
        count: CountArg = 1,
        wait_seconds: WaitSecondsArg = None,
    ) -> Annotated[CallToolResult, TaskResult]:
        """Generate images from a text prompt with a Flux model and return the finished images.

        Waits on the server (with progress) up to the wait limit and returns previews, saved file paths and
        URLs. If the job is not done by then, the result has status "pending" and a task_id: call get_task
        with it to keep waiting. Each call is billed.
        """
        args = {"prompt": prompt, "model": model, "size": size, "count": count, "wait_seconds": wait_seconds}
        return await _run_job(ctx, "generate_image", GenerateImageArgs, args)

    @server.tool(
        name="edit_image",
        meta=UI_META,
        title="Edit an image",
        annotations=BILLED.model_copy(update={"title": "Edit an image with Flux"}),
    )
    @_clean_doc
    async def edit_image(
        prompt: Prompt,
        image_url: ImageUrlArg,
        ctx: AnyContext,
        model: EditModelArg = "flux-kontext-pro",
        size: SizeArg = None,
        wait_seconds: WaitSecondsArg = None,
    ) -> Annotated[CallToolResult, TaskResult]:
        """Edit an existing image following a prompt, e.g. "make the sky stormy".

        image_url is a public http(s) URL or flux://images/{task_id}/{index} from an earlier result. Waits on
        the server like generate_image; a "pending" result means: call get_task with its task_id.
        """
        args = {"prompt": prompt, "image_url": image_url, "model": model, "size": size}
        return await _run_job(ctx, "edit_image", EditImageArgs, {**args, "wait_seconds": wait_seconds})


def _add_task_tools(server: MCPServer[AppState]) -> None:
    @server.tool(
        name="get_task",
        meta=UI_META,
        title="Get a task",
        annotations=LOOKUP.model_copy(update={"title": "Get (and wait for) a Flux task"}),
    )
    @_clean_doc
    async def get_task(
        task_id: TaskIdArg, ctx: AnyContext, wait_seconds: WaitSecondsArg = None
    ) -> Annotated[CallToolResult, TaskResult]:
        """Get a generation task by id, waiting (with progress) for it to finish up to the wait limit.

        Use it to resume a "pending" result from generate_image or edit_image. Looking costs nothing.
        """
        caller = _caller(ctx)
        progress = _progress_reporter(ctx)
        work = lambda: caller.jobs.resume(task_id, wait_seconds, progress)  # noqa: E731
        return await _guarded("get_task", work, lambda result: present(caller, result, ctx))

    @server.tool(
        name="get_tasks",
        title="Get several tasks",
        annotations=LOOKUP.model_copy(update={"title": "Look up several Flux tasks"}),
    )
    @_clean_doc
    async def get_tasks(task_ids: TaskIdsArg, ctx: AnyContext) -> Annotated[CallToolResult, TaskBatchResult]:
        """Look up the current state of up to 50 tasks at once, without waiting."""
        jobs = _caller(ctx).jobs
        return await _guarded("get_tasks", lambda: jobs.lookup(list(task_ids)), _batch_result)

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


class HistoryList(BaseModel):
    tasks: list[HistoryItem] = Field(description="Newest first.")


def history_item(entry: HistoryEntry) -> HistoryItem:
    images = [ImageInfo.model_validate(image) for image in (entry.result or {}).get("images", [])]
    return HistoryItem(
        task_id=entry.task_id,
        status=entry.status,
        prompt=entry.prompt,
        model=entry.model,
        size=entry.size,
        created_at=entry.as_dict()["created_at"],
        images=images,
        error=entry.error,
    )


def _history_line(item: HistoryItem) -> str:
    where = ", ".join(image.path or image.url for image in item.images)
    prompt = (item.prompt or "")[:80]
    return f"{item.created_at} {item.status:<10} {item.task_id or '(no task id)'} {prompt!r}" + (
        f" -> {where}" if where else ""
    )


# --- the gallery (MCP Apps) ----------------------------------------------------------------------

UI_META = {"ui": {"resourceUri": GALLERY_URI}}
APP_ONLY_TOOLS = {"preview_image"}


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

    return apps


async def hide_ui_from_plain_clients(
    ctx: ServerRequestContext[Any, Any], call_next: CallNext
) -> HandlerResult:
    """Clients that did not negotiate MCP Apps see the tool list exactly as it was before the gallery."""
    result = await call_next(ctx)
    if ctx.method != "tools/list" or client_supports_apps(ctx):
        return result
    if isinstance(result, ListToolsResult):
        result = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
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
        "flux://models",
        name="models",
        title="Flux model guide",
        description="Each model: what it is for, which sizes it takes, whether it can edit.",
        mime_type="application/json",
    )
    def models_resource() -> str:
        guide = {
            name: {
                "guide": info.guide,
                "can_edit": info.can_edit,
                "sizes": "pixel sizes or aspect ratios" if info.pixel_sizes else "aspect ratios only",
                "default_size": default_size(name),
            }
            for name, info in MODELS.items()
        }
        return json.dumps(guide, indent=2)


async def _known_image(caller: Caller, task_id: str, index: str) -> ImageInfo:
    entry = await caller.state.history.get(task_id, caller.owner)
    images = (entry.result or {}).get("images", []) if entry is not None else []
    if not (index.isascii() and index.isdecimal()) or int(index) >= len(images):
        raise ResourceError(f"No image {index} of task {task_id!r} in this server's history.")
    return ImageInfo.model_validate(images[int(index)])


# --- running jobs and showing results --------------------------------------------------------


async def _run_job(
    ctx: AnyContext, tool: str, schema: type[GenerateImageArgs | EditImageArgs], arguments: dict[str, Any]
) -> CallToolResult:
    try:
        args = schema.model_validate(arguments)
    except ValidationError as exc:
        return error_result(explain_validation_error(tool, exc))
    caller = _caller(ctx)
    request = args.to_request()
    if request.image_url is not None and FLUX_IMAGE_URI.match(request.image_url):
        try:
            request.image_url = await _resolve_flux_image(caller, request.image_url)
        except ImageError as exc:
            return error_result(f"Cannot edit {request.image_url}: {exc}")
    progress = _progress_reporter(ctx)
    work = lambda: caller.jobs.run(request, args.wait_seconds, progress)  # noqa: E731
    return await _guarded(tool, work, lambda result: present(caller, result, ctx))


async def _resolve_flux_image(caller: Caller, uri: str) -> str:
    """flux://images/{task}/{i} -> the upstream URL the API can fetch, if it has not expired."""
    match = FLUX_IMAGE_URI.match(uri)
    assert match is not None
    try:
        image = await _known_image(caller, match.group(1), match.group(2))
    except ResourceError as exc:
        raise ImageError(str(exc)) from None
    if not await caller.state.keeper.is_reachable(image.url):
        raise ImageError(
            "its upstream URL has expired, and the Flux API can only fetch public URLs. Upload the saved "
            f"file ({image.path or 'not saved'}) somewhere public and pass that URL, or generate the "
            "image again."
        )
    return image.url


async def _guarded(
    tool: str, work: Callable[[], Awaitable[R]], render: Callable[[R], Awaitable[CallToolResult]]
) -> CallToolResult:
    try:
        return await render(await work())
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


async def present(caller: Caller, result: TaskResult, ctx: AnyContext | None = None) -> CallToolResult:
    """Text summary, inline previews and resource links; files saved and history updated first."""
    kept: list[KeptImage] = []
    if result.status is TaskStatus.SUCCEEDED:
        history = caller.state.history
        kept = await caller.state.keeper.keep(result, await _saved_paths(caller, result.task_id))
        result.images = [_with_uri(result.task_id, image.info) for image in kept]
        await history.record(result, caller.owner)
    if ctx is not None:
        await _log_outcome(ctx, result)
    content: list[ContentBlock] = [TextContent(type="text", text=summarize(result))]
    for image, info in zip(kept, result.images, strict=True):
        if image.preview is not None:
            content.append(
                ImageContent(type="image", data=image.preview.base64(), mime_type=image.preview.mime_type)
            )
        content.append(
            ResourceLink(
                type="resource_link",
                uri=info.resource_uri or "",
                name=f"image {info.index + 1} of task {result.task_id}",
                mime_type="image/png",
                description=info.path or info.url,
            )
        )
    return CallToolResult(
        content=content,
        structured_content=result.model_dump(mode="json"),
        is_error=result.status is TaskStatus.FAILED,
    )


async def _saved_paths(caller: Caller, task_id: str) -> dict[int, str]:
    entry = await caller.state.history.get(task_id, caller.owner)
    images = (entry.result or {}).get("images", []) if entry is not None else []
    return {image["index"]: image["path"] for image in images if image.get("path")}


def _with_uri(task_id: str, image: ImageInfo) -> ImageInfo:
    return image.model_copy(update={"resource_uri": f"flux://images/{task_id}/{image.index}"})


async def _batch_result(batch: TaskBatchResult) -> CallToolResult:
    lines = [summarize(task) for task in batch.tasks]
    if batch.missing:
        lines.append("Unknown task ids: " + ", ".join(batch.missing))
    return CallToolResult(
        content=[TextContent(type="text", text="\n\n".join(lines) or "No tasks found.")],
        structured_content=batch.model_dump(mode="json"),
    )


def summarize(result: TaskResult) -> str:
    """A short text an assistant can read out: status, task id, image URLs and files, next step."""
    about = " ".join(part for part in (result.model, f"({result.size})" if result.size else "") if part)
    if result.status is TaskStatus.SUCCEEDED:
        count = len(result.images)
        plural = "s" if count != 1 else ""
        lines = [
            f"Generated {count} image{plural} with {about} in {result.elapsed_seconds:.1f} s. "
            f"task_id: {result.task_id}"
        ]
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


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _caller(ctx: AnyContext) -> Caller:
    """The server's own token, or with pass-through auth over HTTP the caller's bearer token."""
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    if state.settings.auth_mode() != "passthrough" or ctx.headers is None:
        return Caller(state, state.jobs)
    token = bearer_token(ctx.headers.get("authorization"))
    if token is None:  # the HTTP gate refuses such requests; this is the second line
        return Caller(state, state.jobs_for("", "anonymous"), "anonymous")
    owner = state.history.owner_of(token)
    return Caller(state, state.jobs_for(token, owner), owner)


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
