"""The upstream's request rules for POST /flux/images, kept apart from flux_mcp's own tables on purpose."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MODELS = (
    "flux-dev",
    "flux-pro",
    "flux-2-flex",
    "flux-2-pro",
    "flux-2-max",
    "flux-2-klein",
    "flux-kontext-pro",
    "flux-kontext-max",
)
EDIT_MODELS = frozenset(MODELS) - {"flux-2-klein"}
PIXEL_SIZE_MODELS = frozenset({"flux-dev", "flux-pro"})
NAMED_PIXEL_SIZES = frozenset({"1024x1024", "1024x1792", "1792x1024"})
ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21", "4:5", "5:4")
PIXEL_MIN, PIXEL_MAX, PIXEL_STEP = 256, 1440, 32
MAX_COUNT = 4

_PIXEL_SIZE = re.compile(r"^([0-9]{2,5})x([0-9]{2,5})$")


class BadRequest(ValueError):
    """The body breaks one of the upstream's rules; the message says which."""


@dataclass(frozen=True)
class ImageRequest:
    action: str
    prompt: str
    model: str
    size: str
    count: int
    image_url: str | None
    callback_url: str | None
    is_async: bool


def validate_image_request(body: Any) -> ImageRequest:
    """Check a POST /flux/images body as the real API does; unknown extra fields are tolerated."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    action = body.get("action")
    if action not in ("generate", "edit"):
        raise BadRequest("action must be 'generate' or 'edit'")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt is required and must be a non-empty string")
    model = body.get("model", "flux-dev")
    if model not in MODELS:
        raise BadRequest(f"model must be one of: {', '.join(MODELS)}")
    image_url: str | None = None
    if action == "edit":
        if model not in EDIT_MODELS:
            supported = ", ".join(sorted(EDIT_MODELS))
            raise BadRequest(f"model {model} does not support edit; use one of: {supported}")
        image_url = body.get("image_url")
        if not _is_http_url(image_url):
            raise BadRequest("image_url is required for edit and must be an http(s) URL")
    size = _check_size(model, body.get("size"))
    count = 1 if action == "edit" else _check_count(body.get("count"))
    callback_url = body.get("callback_url")
    if callback_url is not None and not _is_http_url(callback_url):
        raise BadRequest("callback_url must be an http(s) URL")
    is_async = body.get("async", False)
    if not isinstance(is_async, bool):
        raise BadRequest("async must be a boolean")
    return ImageRequest(
        action=action,
        prompt=prompt,
        model=model,
        size=size,
        count=count,
        image_url=image_url,
        callback_url=callback_url,
        is_async=is_async,
    )


def pixel_dimensions(size: str, long_side: int) -> tuple[int, int]:
    """The image size for a validated `size`: pixels as given, or a ratio scaled to `long_side`."""
    match = _PIXEL_SIZE.match(size)
    if match:
        return int(match.group(1)), int(match.group(2))
    across, down = (int(part) for part in size.split(":"))
    short = max(8, round(long_side * min(across, down) / max(across, down) / 8) * 8)
    return (long_side, short) if across >= down else (short, long_side)


def _check_size(model: str, size: Any) -> str:
    if size is None:
        if model.startswith("flux-2-"):
            raise BadRequest(f"size is required for {model}; use an aspect ratio such as 1:1")
        return "1024x1024" if model in PIXEL_SIZE_MODELS else "1:1"
    if not isinstance(size, str):
        raise BadRequest("size must be a string")
    if size in ASPECT_RATIOS:
        return size
    if model not in PIXEL_SIZE_MODELS:
        raise BadRequest(f"size for {model} must be an aspect ratio, one of: {' '.join(ASPECT_RATIOS)}")
    if size in NAMED_PIXEL_SIZES or _is_free_pixel_size(size):
        return size
    raise BadRequest(
        f"size must be 1024x1024, 1024x1792, 1792x1024, WxH with sides {PIXEL_MIN}-{PIXEL_MAX} "
        f"in multiples of {PIXEL_STEP}, or an aspect ratio: {' '.join(ASPECT_RATIOS)}"
    )


def _is_free_pixel_size(size: str) -> bool:
    match = _PIXEL_SIZE.match(size)
    if not match:
        return False
    return all(PIXEL_MIN <= side <= PIXEL_MAX and side % PIXEL_STEP == 0 for side in map(int, match.groups()))


def _check_count(count: Any) -> int:
    if count is None:
        return 1
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise BadRequest(f"count must be an integer from 1 to {MAX_COUNT}")
    return count


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
