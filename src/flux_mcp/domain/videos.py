"""Video (FLUX 3, beta upstream): generate_video's arguments, their rules, and the `/flux/videos` body.

As for images, one pydantic model is the tool's input schema, the validation that runs before any
upstream call, and the source of the request body. Every combination the API refuses is refused here
with what would be accepted: each mode takes exactly its own input (i2v keyframes, v2v a start video,
draft_enhance the draft's task id), durations are 5-20 s (5-15 for v2v) or "auto", and a keyframe's
time must fall inside the video. Results come back as `tasks.VideoInfo` through the same task
records as images (`parse_task_record`); `kind: "video"` in a request is what marks a video task.

The upstream also documents the actions `edit` and `upscale`; they answer `service_unavailable` for
now, so they are not offered (VIDEO_GUIDE says so).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, StrictBool, WithJsonSchema, field_validator, model_validator

from flux_mcp.domain.arguments import (
    TOOL_ARGUMENTS,
    Prompt,
    TaskIdArg,
    ToolArguments,
    WaitSecondsArg,
    check_image_url,
)
from flux_mcp.domain.inputs import MAX_IMAGE_URL_CHARS
from flux_mcp.domain.tasks import UpstreamRequest

VIDEO_MODEL = "flux-3"
VideoMode = Literal["t2v", "i2v", "v2v", "draft_enhance"]
Resolution = Literal["hd", "fhd", "qhd", "uhd"]
VideoAspectRatio = Literal["21:9", "2:1", "16:9", "4:3", "1:1", "3:4", "9:16", "9:21", "auto"]
MIN_SECONDS, MAX_SECONDS, MAX_V2V_SECONDS = 5, 20, 15
MAX_KEYFRAMES = 10
MAX_VIDEOS = 1  # a video task makes one video: more listed in an answer are not downloaded
FLUX_VIDEO_URI = re.compile(r"^flux://videos/([A-Za-z0-9_-]{1,128})/([0-9]{1,2})$")

VIDEO_GUIDE = (
    "flux-3 (beta upstream): video from a prompt (t2v), from keyframe images (i2v), from a start video "
    "(v2v), or a full-quality version of an earlier draft (draft_enhance). 5-20 s (v2v 5-15) or auto; "
    "resolution hd, fhd, qhd or uhd. The API's video edit and upscale actions currently answer "
    "service_unavailable, so flux-mcp does not offer them."
)
MODE_INPUTS = {
    "t2v": "a prompt only",
    "i2v": f"keyframes: 1-{MAX_KEYFRAMES} images",
    "v2v": "start_video: the video to transform",
    "draft_enhance": "draft_task_id: the task id of an earlier draft=true video",
}
MODE_HELP = "; ".join(f"{mode} takes {needs}" for mode, needs in MODE_INPUTS.items())

# A timed keyframe validates as a (seconds, image) pair but is published as a two-item array:
# OpenAI strict mode and Gemini refuse the tuple schema (`prefixItems`) pydantic would write.
TimedKeyframe = Annotated[
    tuple[float, str],
    WithJsonSchema(
        {
            "type": "array",
            "items": {"anyOf": [{"type": "number"}, {"type": "string"}]},
            "minItems": 2,
            "maxItems": 2,
            "description": "[seconds, image]: the image placed at that time.",
        }
    ),
]
Keyframe = str | TimedKeyframe
ModeArg = Annotated[
    VideoMode,
    Field(
        description=(
            "t2v: text to video; i2v: animate keyframe images; v2v: transform start_video; draft_enhance: "
            "the full version of an earlier draft (draft_task_id)."
        )
    ),
]
KeyframesArg = Annotated[
    list[Keyframe] | None,
    Field(
        min_length=1,
        max_length=MAX_KEYFRAMES,
        description=(
            f"i2v only: 1-{MAX_KEYFRAMES} images the video passes through, in order. Each is what edit_image "
            "accepts (an http(s) URL, flux://images/{task_id}/{index} from an earlier result, a local file "
            "on stdio, a data: URL), or a [seconds, image] pair placing it at that time, e.g. "
            '[0, "flux://images/226eb763/0"]. Say "animate the last picture" with its flux:// URI.'
        ),
    ),
]
StartVideoArg = Annotated[
    str | None,
    Field(
        max_length=MAX_IMAGE_URL_CHARS,
        description=(
            "v2v only: the video to transform: a public http(s) URL of an MP4, or "
            "flux://videos/{task_id}/{index} from an earlier generate_video result."
        ),
    ),
]
DraftTaskIdArg = Annotated[
    TaskIdArg | None,
    Field(description="draft_enhance only: the task_id (or draft_task_id) of an earlier draft video."),
]
# Published as one nullable string ("8" or "auto"): OpenAI strict, Gemini and smolagents each need a
# single `type`. Validated as whole seconds or "auto"; a number sent as a number is accepted too.
DurationArg = Annotated[
    int | Literal["auto"] | None,
    BeforeValidator(
        lambda value: int(value) if isinstance(value, str) and value.strip().isdecimal() else value
    ),
    WithJsonSchema({"type": ["string", "null"], "pattern": "^([0-9]{1,2}|auto)$"}),
    Field(
        description=(
            f"Length in seconds, {MIN_SECONDS}-{MAX_SECONDS} ({MIN_SECONDS}-{MAX_V2V_SECONDS} for v2v), or "
            '"auto" to let the model choose. Omit for the upstream default.'
        )
    ),
]
ResolutionArg = Annotated[
    Resolution | None, Field(description="hd (720p), fhd (1080p), qhd (1440p) or uhd (4K). Omit for default.")
]
VideoAspectArg = Annotated[
    VideoAspectRatio | None, Field(description="Frame shape, e.g. 16:9 or 9:16; auto follows the input.")
]
# Strict: the schema says boolean, so 0, 1 or "yes" are refused rather than guessed at.
DraftArg = Annotated[
    StrictBool, Field(description="A quick, cheaper draft; enhance it later with mode draft_enhance.")
]
AudioArg = Annotated[
    StrictBool | None, Field(description="Also generate a soundtrack. Omit for the default.")
]


class GenerateVideoArgs(ToolArguments):
    prompt: Prompt
    mode: ModeArg = "t2v"
    keyframes: KeyframesArg = None
    start_video: StartVideoArg = None
    draft_task_id: DraftTaskIdArg = None
    duration: DurationArg = None
    resolution: ResolutionArg = None
    aspect_ratio: VideoAspectArg = None
    draft: DraftArg = False
    generate_audio: AudioArg = None
    wait_seconds: WaitSecondsArg = None

    @field_validator("duration", mode="before")
    @classmethod
    def _whole_seconds(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f'duration must be whole seconds from {MIN_SECONDS} to {MAX_SECONDS}, or "auto"')
        return int(value) if isinstance(value, float) else value

    @field_validator("keyframes")
    @classmethod
    def _check_keyframes(cls, frames: list[Keyframe] | None) -> list[Keyframe] | None:
        if frames is None:
            return None
        return [
            (frame[0], check_image_url(frame[1])) if isinstance(frame, tuple) else check_image_url(frame)
            for frame in frames
        ]

    @field_validator("start_video")
    @classmethod
    def _check_start_video(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        parts = urlsplit(value)
        if FLUX_VIDEO_URI.match(value) or (parts.scheme in ("http", "https") and parts.netloc):
            return value
        raise ValueError(
            "start_video must be an http(s) URL of a video or flux://videos/{task_id}/{index} from an "
            "earlier generate_video result"
        )

    @model_validator(mode="after")
    def _check_mode(self) -> GenerateVideoArgs:
        given = {
            "keyframes": self.keyframes is not None,
            "start_video": self.start_video is not None,
            "draft_task_id": self.draft_task_id is not None,
        }
        needed = {"i2v": "keyframes", "v2v": "start_video", "draft_enhance": "draft_task_id"}.get(self.mode)
        if needed is not None and not given[needed]:
            raise ValueError(f"mode {self.mode} needs {MODE_INPUTS[self.mode]} ({MODE_HELP})")
        extra = [name for name, present in given.items() if present and name != needed]
        if extra:
            raise ValueError(
                f"mode {self.mode} takes no {' or '.join(extra)}: {MODE_HELP}. Choose the mode that matches "
                "the input"
            )
        if self.mode == "draft_enhance" and self.draft:
            raise ValueError("draft_enhance makes the full version of a draft; leave draft false")
        self._check_duration()
        self._check_keyframe_times()
        return self

    def _check_duration(self) -> None:
        longest = self.longest()
        if isinstance(self.duration, int) and not MIN_SECONDS <= self.duration <= longest:
            for_mode = " for v2v" if self.mode == "v2v" else ""
            raise ValueError(
                f'duration {self.duration} is out of range{for_mode}: use {MIN_SECONDS}-{longest} s or "auto"'
            )

    def _check_keyframe_times(self) -> None:
        limit = self.duration if isinstance(self.duration, int) else self.longest()
        times = [frame[0] for frame in self.keyframes or [] if isinstance(frame, tuple)]
        for seconds in times:
            if not 0 <= seconds <= limit:
                raise ValueError(f"keyframe time {seconds:g} s is outside the video: use 0-{limit} s")
        if len(set(times)) != len(times):
            raise ValueError("two keyframes are placed at the same time; give each its own time")

    def longest(self) -> int:
        return MAX_V2V_SECONDS if self.mode == "v2v" else MAX_SECONDS

    def to_request(self) -> VideoRequest:
        keyframes = [list(frame) if isinstance(frame, tuple) else frame for frame in self.keyframes or []]
        return VideoRequest(
            mode=self.mode,
            prompt=self.prompt,
            keyframes=keyframes or None,
            start_video=self.start_video,
            draft_task_id=self.draft_task_id,
            duration=self.duration,
            resolution=self.resolution,
            aspect_ratio=self.aspect_ratio,
            draft=True if self.draft else None,
            generate_audio=self.generate_audio,
        )


TOOL_ARGUMENTS["generate_video"] = GenerateVideoArgs


class VideoRequest(UpstreamRequest):
    """The JSON body of `POST /flux/videos`, already validated (inputs resolved to fetchable URLs)."""

    endpoint: ClassVar[str] = "/flux/videos"
    not_sent: ClassVar[frozenset[str]] = frozenset({"kind"})
    kind: Literal["video"] = "video"  # ours: marks a video task (history, fingerprint); never sent
    action: Literal["generate"] = "generate"
    model: str = VIDEO_MODEL
    mode: VideoMode
    prompt: str
    keyframes: list[str | list[float | str]] | None = None
    start_video: str | None = None
    draft_task_id: str | None = None
    duration: int | Literal["auto"] | None = None
    resolution: str | None = None
    aspect_ratio: str | None = None
    draft: bool | None = None
    generate_audio: bool | None = None

    def keyframe_urls(self) -> list[str]:
        return [frame if isinstance(frame, str) else str(frame[1]) for frame in self.keyframes or []]

    def with_keyframe_urls(self, urls: list[str]) -> VideoRequest:
        """The same request with each keyframe's image replaced by `urls` (in order), times kept."""
        frames: list[str | list[float | str]] = [
            url if isinstance(frame, str) else [frame[0], url]
            for frame, url in zip(self.keyframes or [], urls, strict=True)
        ]
        return self.model_copy(update={"keyframes": frames or None})


def is_video_request(request: dict[str, Any] | None) -> bool:
    """Whether a remembered or upstream request is a video one (ours say so; the upstream's have a mode)."""
    request = request or {}
    return request.get("kind") == "video" or request.get("mode") in MODE_INPUTS


def video_uri(task_id: str, index: int) -> str:
    return f"flux://videos/{task_id}/{index}"
