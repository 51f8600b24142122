"""The client's MCP roots: folders the user shared with this server, where local edit inputs may lie.

Roots are asked for only when an edit names a local file over stdio and the client declared the
roots capability. On protocol 2026-07-28 the SDK carries the question in the tool call's
input-required round (a `ListRoots` resolver); on older protocols it is a request to the client in
the middle of the call, which is given a few seconds: a client that never answers only loses its
roots, never the call. Roots are an addition to FLUX_MCP_INPUT_DIRS, never a replacement.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import ListRoots
from mcp_types import ListRootsRequest, ListRootsResult
from mcp_types.version import is_version_at_least

from flux_mcp.domain.errors import ImageInputError
from flux_mcp.domain.inputs import LocalImage, file_uri_path, parse_image_input
from flux_mcp.media.uploads import native_path

logger = logging.getLogger(__name__)

ROOTS_TIMEOUT_SECONDS = 5.0
INPUT_REQUIRED_VERSION = "2026-07-28"  # the first protocol that asks the client inside the tool call


async def client_roots(image_url: str, ctx: Context) -> ListRootsResult | ListRoots | None:  # type: ignore[type-arg]
    """The client's roots when this call needs them (a resolver: the SDK runs it before the tool)."""
    if not _names_a_local_file(image_url) or ctx.headers is not None:
        return None
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.roots is None:
        return None
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, INPUT_REQUIRED_VERSION):
        return ListRoots()
    with anyio.move_on_after(ROOTS_TIMEOUT_SECONDS):
        try:
            # The request itself, not `session.list_roots()`: that helper warns that roots are deprecated
            # from 2026-07-28 on, and this path serves only the older protocols, where they are not.
            roots: ListRootsResult = await ctx.session.send_request(ListRootsRequest(), ListRootsResult)
            return roots
        except Exception as exc:  # a client that cannot list its roots has none for us
            logger.info("the client's roots are not available: %s", exc)
            return None
    logger.warning(
        "the client did not list its roots within %.0f s; using FLUX_MCP_INPUT_DIRS", ROOTS_TIMEOUT_SECONDS
    )
    return None


def root_folders(roots: ListRootsResult | None) -> list[Path]:
    """The local folders among the client's roots (file:// URIs on this machine)."""
    folders = []
    for root in roots.roots if roots is not None else []:
        try:
            folders.append(native_path(file_uri_path(str(root.uri))))
        except (ImageInputError, ValueError):
            logger.info("ignoring a root that is not a local folder here: %s", root.uri)
    return folders


def _names_a_local_file(image_url: str) -> bool:
    try:
        return isinstance(parse_image_input(image_url), LocalImage)
    except ImageInputError:
        return False


async def keyframe_roots(keyframes: Any, ctx: Context) -> ListRootsResult | ListRoots | None:  # type: ignore[type-arg]
    """client_roots for generate_video: asked for when a keyframe (or a [seconds, image] pair's) is a file."""
    for frame in keyframes if isinstance(keyframes, list | tuple) else []:
        image = frame[-1] if isinstance(frame, list | tuple) and frame else frame
        if isinstance(image, str) and _names_a_local_file(image):
            return await client_roots(image, ctx)
    return None
