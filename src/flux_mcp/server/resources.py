"""The `flux://` resources: a task of the history, its images and videos, and the model guide.

`known_image` and `known_video` find a file of an earlier result in the caller's history; the tools
and the gallery use them too, so every flux:// reference means the same thing wherever it is given.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from flux_mcp.domain.arguments import default_size
from flux_mcp.domain.catalogue import MODELS
from flux_mcp.domain.errors import ImageError
from flux_mcp.domain.tasks import ImageInfo, VideoInfo
from flux_mcp.domain.videos import VIDEO_GUIDE
from flux_mcp.media.pictures import to_png
from flux_mcp.server.caller import CallContext, Caller, caller_of
from flux_mcp.server.state import AppState


def add_resources(server: MCPServer[AppState]) -> None:
    @server.resource(
        "flux://tasks/{task_id}",
        name="task",
        title="A Flux task",
        description="A task from this server's history (request, status, result, files) as JSON.",
        mime_type="application/json",
    )
    async def task_resource(task_id: str, ctx: CallContext) -> str:
        caller = caller_of(ctx)
        entry = await caller.state.history.find_task(task_id, caller.owner)
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
    async def image_resource(task_id: str, index: str, ctx: CallContext) -> bytes:
        caller = caller_of(ctx)
        image = await known_image(caller, task_id, index)
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
    async def video_resource(task_id: str, index: str, ctx: CallContext) -> bytes:
        caller = caller_of(ctx)
        video = await known_video(caller, task_id, index)
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


async def known_image(caller: Caller, task_id: str, index: str) -> ImageInfo:
    entry = await caller.state.history.find_task(task_id, caller.owner)
    images = entry.result.images if entry is not None and entry.result is not None else []
    if not (index.isascii() and index.isdecimal()) or int(index) >= len(images):
        raise ResourceError(f"No image {index} of task {task_id!r} in this server's history.")
    return images[int(index)]


async def known_video(caller: Caller, task_id: str, index: str) -> VideoInfo:
    entry = await caller.state.history.find_task(task_id, caller.owner)
    videos = entry.result.videos if entry is not None and entry.result is not None else []
    if not (index.isascii() and index.isdecimal()) or int(index) >= len(videos):
        raise ResourceError(f"No video {index} of task {task_id!r} in this server's history.")
    return videos[int(index)]
