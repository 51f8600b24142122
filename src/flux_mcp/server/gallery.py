"""The gallery, an MCP App: its ui:// page, the two tools only the page calls, and who sees either.

Hosts that negotiate MCP Apps render results of the tools carrying `UI_META` in the gallery; the page
calls `preview_image` and `play_video` for larger views. Every other client sees the tools and
resources as they were before the gallery (`hide_ui_from_plain_clients`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.apps import Apps, ResourceCsp, ResourcePermissions, client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.tools import Tool
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ListResourcesResult,
    ListToolsResult,
)
from pydantic import Field

from flux_mcp.domain.arguments import TaskIdArg
from flux_mcp.domain.catalogue import MAX_COUNT
from flux_mcp.domain.errors import ImageError
from flux_mcp.domain.videos import video_uri
from flux_mcp.server.caller import CallContext, caller_of
from flux_mcp.server.render import error_result
from flux_mcp.server.resources import known_image, known_video
from flux_mcp.server.toolkit import LOOKUP, described, function_tool
from flux_mcp.server.ui import GALLERY_URI, gallery_html

UI_META = {"ui": {"resourceUri": GALLERY_URI}}  # on the tools whose results the gallery shows
APP_ONLY_META = {"ui": {"resourceUri": GALLERY_URI, "visibility": ["app"]}}  # as `Apps.tool` stamps it
APP_ONLY_TOOLS = {"preview_image", "play_video"}
# The gallery plays a video from its bytes (its CSP fetches nothing); a tool result must stay under the
# 1 MiB an SSE event may carry (SDK-NOTES), so larger videos are opened as files instead.
PLAYABLE_MAX_BYTES = 700_000


def gallery_app() -> Apps:
    """The gallery page for hosts that render MCP Apps; everyone else never sees it."""
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
    return apps


def gallery_tools() -> list[Tool]:
    """The tools only the gallery page calls (`visibility: app`), bound to its ui:// resource."""
    return [
        _app_only(preview_image, "preview_image", "Image for the gallery"),
        _app_only(play_video, "play_video", "Video for the gallery"),
    ]


def _app_only(fn: Callable[..., Any], name: str, title: str) -> Tool:
    annotations = LOOKUP.model_copy(update={"title": title, "open_world_hint": False})
    return function_tool(fn, name=name, title=title, annotations=annotations, meta=APP_ONLY_META)


@described
async def preview_image(
    task_id: TaskIdArg,
    ctx: CallContext,
    index: Annotated[int, Field(ge=0, le=MAX_COUNT - 1, description="Image index in the task.")] = 0,
    size: Annotated[int, Field(ge=64, le=2048, description="Longest side in pixels.")] = 1024,
) -> CallToolResult:
    """A larger view of one image of an earlier result, for the gallery's full-size view."""
    caller = caller_of(ctx)
    try:
        image = await known_image(caller, task_id, str(index))
        picture = await caller.state.keeper.full_image(task_id, image, preview_side=size)
    except (ResourceError, ImageError) as exc:
        return error_result(str(exc))
    preview = picture.preview
    if preview is None:  # full_image always makes one; a keeper that did not is answered, not crashed on
        return error_result(f"image {index} of task {task_id} has no preview to show")
    return CallToolResult(
        content=[ImageContent(type="image", data=preview.base64(), mime_type=preview.mime_type)],
        structured_content={
            "task_id": task_id,
            "index": index,
            "width": preview.width,
            "height": preview.height,
        },
    )


@described
async def play_video(
    task_id: TaskIdArg,
    ctx: CallContext,
    index: Annotated[int, Field(ge=0, le=9, description="Video index in the task.")] = 0,
) -> CallToolResult:
    """The MP4 of an earlier video result, for the gallery's player (small videos only)."""
    caller = caller_of(ctx)
    try:
        video = await known_video(caller, task_id, str(index))
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
