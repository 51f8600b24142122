"""The emulated `/flux/videos`: the upstream's request rules, and real, small, playable MP4s.

The rules are the upstream's as documented, kept apart from flux_mcp's own tables on purpose (a
mistake in one must not hide in both). Results are real H.264 MP4s made with PyAV (the `video` extra,
which bundles ffmpeg): a seed-coloured gradient with a boat crossing it and the prompt written on it,
at a small size, with the duration the request asked for. Without PyAV the emulator serves the
5-second clip shipped beside this module (made the same way), and reports 5 s, as that is what it is.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, ImageDraw

from .images import caption
from .state import VideoShape
from .validation import BadRequest

MODES = ("t2v", "i2v", "v2v", "draft_enhance")
ACTIONS_UNAVAILABLE = ("edit", "upscale")
RESOLUTIONS = ("hd", "fhd", "qhd", "uhd")
ASPECT_RATIOS = ("21:9", "2:1", "16:9", "4:3", "1:1", "3:4", "9:16", "9:21", "auto")
MIN_SECONDS, MAX_SECONDS, MAX_V2V_SECONDS = 5, 20, 15
AUTO_SECONDS, DEFAULT_SECONDS = 6, 5
MAX_KEYFRAMES = 10
FPS = 12
LONG_SIDE = 320
SHIPPED_CLIP = Path(__file__).with_name("clip.mp4")  # 5 s, 320x180, 12 fps, H.264
SHIPPED_SECONDS, SHIPPED_SIZE = 5, (320, 180)


@dataclass(frozen=True)
class VideoJob:
    """A validated `/flux/videos` body, and what the emulated video will be."""

    mode: str
    prompt: str
    seconds: int
    width: int
    height: int
    draft: bool
    draft_task_id: str | None
    callback_url: str | None
    is_async: bool


def validate_video_request(body: Any, *, known_draft: Any = None) -> VideoJob:
    """Check a POST /flux/videos body as the real API does; `known_draft(id)` says if a draft exists."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if body.get("action", "generate") != "generate":
        raise BadRequest("action must be 'generate', 'edit' or 'upscale'")
    if body.get("model", "flux-3") != "flux-3":
        raise BadRequest("model must be flux-3")
    mode = body.get("mode", "t2v")
    if mode not in MODES:
        raise BadRequest(f"mode must be one of: {', '.join(MODES)}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt is required and must be a non-empty string")
    longest = MAX_V2V_SECONDS if mode == "v2v" else MAX_SECONDS
    seconds = _duration(body.get("duration"), longest)
    # Keyframe times are checked against a duration the caller chose; with none (or "auto") the API's
    # own length is not known beforehand, so only the mode's longest video bounds them.
    _check_inputs(body, mode, seconds if isinstance(body.get("duration"), int) else longest)
    draft_task_id = body.get("draft_task_id")
    if mode == "draft_enhance" and known_draft is not None and not known_draft(draft_task_id):
        raise BadRequest("draft_task_id does not name a finished draft video of this account")
    for name, allowed in (("resolution", RESOLUTIONS), ("aspect_ratio", ASPECT_RATIOS)):
        if body.get(name) is not None and body[name] not in allowed:
            raise BadRequest(f"{name} must be one of: {' '.join(allowed)}")
    for name in ("draft", "generate_audio", "async"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise BadRequest(f"{name} must be a boolean")
    tolerance = body.get("safety_tolerance")
    if tolerance is not None and (isinstance(tolerance, bool) or tolerance not in range(5)):
        raise BadRequest("safety_tolerance must be an integer from 0 to 4")
    callback_url = body.get("callback_url")
    if callback_url is not None and not _is_http_url(callback_url):
        raise BadRequest("callback_url must be an http(s) URL")
    width, height = frame_size(body.get("aspect_ratio") or "16:9")
    return VideoJob(
        mode=mode,
        prompt=prompt,
        seconds=seconds,
        width=width,
        height=height,
        draft=bool(body.get("draft")),
        draft_task_id=draft_task_id if isinstance(draft_task_id, str) else None,
        callback_url=callback_url,
        is_async=bool(body.get("async", False)),
    )


def _duration(value: Any, longest: int) -> int:
    if value is None:
        return DEFAULT_SECONDS
    if value == "auto":
        return AUTO_SECONDS
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SECONDS <= value <= longest:
        raise BadRequest(f"duration must be an integer from {MIN_SECONDS} to {longest}, or 'auto'")
    return value


def _check_inputs(body: dict[str, Any], mode: str, seconds: int) -> None:
    keyframes, start_video, draft_task_id = (
        body.get("keyframes"),
        body.get("start_video"),
        body.get("draft_task_id"),
    )
    if mode == "i2v":
        if not isinstance(keyframes, list) or not 1 <= len(keyframes) <= MAX_KEYFRAMES:
            raise BadRequest(f"keyframes is required for i2v: 1 to {MAX_KEYFRAMES} image URLs")
        for frame in keyframes:
            _check_keyframe(frame, seconds)
    elif keyframes is not None:
        raise BadRequest("keyframes is only accepted with mode i2v")
    if mode == "v2v" and not _is_http_url(start_video):
        raise BadRequest("start_video is required for v2v and must be an http(s) URL")
    if mode != "v2v" and start_video is not None:
        raise BadRequest("start_video is only accepted with mode v2v")
    if mode == "draft_enhance" and not (isinstance(draft_task_id, str) and draft_task_id):
        raise BadRequest("draft_task_id is required for draft_enhance")
    if mode != "draft_enhance" and draft_task_id is not None:
        raise BadRequest("draft_task_id is only accepted with mode draft_enhance")


def _check_keyframe(frame: Any, seconds: int) -> None:
    if _is_http_url(frame):
        return
    if isinstance(frame, list) and len(frame) == 2 and _is_http_url(frame[1]):
        at = frame[0]
        if isinstance(at, int | float) and not isinstance(at, bool) and 0 <= at <= seconds:
            return
        raise BadRequest(f"a keyframe's time must be within the video: 0 to {seconds} seconds")
    raise BadRequest("each keyframe must be an image URL or a [seconds, image URL] pair")


def frame_size(aspect_ratio: str) -> tuple[int, int]:
    """The emulated video's size: the ratio at LONG_SIDE pixels, even sides (H.264 4:2:0 needs them)."""
    if aspect_ratio == "auto":
        aspect_ratio = "16:9"
    across, down = (int(part) for part in aspect_ratio.split(":"))
    short = max(16, round(LONG_SIDE * min(across, down) / max(across, down) / 2) * 2)
    return (LONG_SIDE, short) if across >= down else (short, LONG_SIDE)


def can_render() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def video_shape(job: VideoJob) -> VideoShape:
    """The video that will be served: as asked, or (without PyAV) the shipped clip, as it is."""
    if can_render():
        return VideoShape(job.seconds, job.width, job.height, FPS, draft=job.draft)
    return VideoShape(SHIPPED_SECONDS, *SHIPPED_SIZE, FPS, draft=job.draft)


def shape_of_request(request: dict[str, Any]) -> VideoShape | None:
    """A journaled task's video, rebuilt from its request (None: an image task)."""
    if "mode" not in request:
        return None
    try:
        return video_shape(validate_video_request(request))
    except BadRequest:
        return None


def render_mp4(seconds: int, width: int, height: int, seed: int, prompt: str) -> bytes:
    """A real H.264 MP4 of exactly `seconds` s (blocking: run it in a thread); else the shipped clip."""
    try:
        import av
    except ImportError:
        return SHIPPED_CLIP.read_bytes()
    backdrop = _backdrop(width, height, seed)
    # faststart (the index before the data, so players start at once) rewrites the file: a real file.
    with tempfile.TemporaryDirectory(prefix="flux-emulator-") as folder:
        path = Path(folder) / "video.mp4"
        _encode(av, path, seconds, backdrop, prompt)
        return path.read_bytes()


def _encode(av: Any, path: Path, seconds: int, backdrop: Image.Image, prompt: str) -> None:
    width, height = backdrop.size
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(
            "libx264", rate=FPS, options={"preset": "ultrafast", "tune": "stillimage"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        for index in range(seconds * FPS):
            frame = av.VideoFrame.from_image(_frame(backdrop, prompt, index / (seconds * FPS)))
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _backdrop(width: int, height: int, seed: int) -> Image.Image:
    rng = random.Random(seed)
    grid = Image.new("RGB", (3, 3))
    grid.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(9)])
    return grid.resize((width, height), Image.Resampling.BILINEAR)


def _frame(backdrop: Image.Image, prompt: str, progress: float) -> Image.Image:
    """The backdrop with a little boat sailing across it, `progress` of the way (0 to 1)."""
    image = backdrop.copy()
    width, height = image.size
    draw = ImageDraw.Draw(image)
    boat = max(12, height // 6)
    left = round(progress * (width - 2 * boat))
    base = height - boat
    draw.polygon(
        [
            (left, base),
            (left + 2 * boat, base),
            (left + 1.5 * boat, base + boat // 2),
            (left + boat // 2, base + boat // 2),
        ],
        fill="white",
    )
    draw.polygon([(left + boat, base - boat), (left + boat, base), (left + 1.6 * boat, base)], fill="white")
    caption(image, prompt)
    return image


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
