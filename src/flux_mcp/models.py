"""The schemas: what a caller may ask for, what the upstream answers, what a tool returns.

One set of pydantic definitions serves three purposes: the tool input schemas (each tool's
parameters are the fields of its arguments model in `TOOL_ARGUMENTS`; see `toolkit.model_tool`),
the one validation of each call, before any upstream call, and the JSON body sent to
`POST /flux/images`. Upstream answers are parsed leniently here (the API adds fields and varies
shapes); everything a tool returns is a strict result model, so the published output schemas are
true.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from flux_mcp.inputs import (
    ACCEPTED_FORMATS,
    MAX_IMAGE_URL_CHARS,
    MAX_INPUT_BYTES,
    RemoteImage,
    parse_image_input,
)
from flux_mcp.inputs import FLUX_IMAGE_URI as FLUX_IMAGE_URI  # its home moved to inputs

# --- The model catalogue -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What one Flux model is for and what it accepts."""

    guide: str
    can_edit: bool
    pixel_sizes: bool  # False: only aspect ratios are accepted


MODELS: dict[str, ModelInfo] = {
    "flux-dev": ModelInfo("fast and inexpensive, good for drafts and iteration", True, True),
    "flux-pro": ModelInfo("higher fidelity and prompt adherence than flux-dev", True, True),
    "flux-2-flex": ModelInfo("FLUX.2 tuned for typography and fine control", True, False),
    "flux-2-pro": ModelInfo("FLUX.2 production quality, balanced speed", True, False),
    "flux-2-max": ModelInfo("FLUX.2 best quality, slowest and most expensive", True, False),
    "flux-2-klein": ModelInfo("FLUX.2 small and fast; generation only", False, False),
    "flux-kontext-pro": ModelInfo("context-aware; the default choice for editing an image", True, False),
    "flux-kontext-max": ModelInfo("strongest kontext model: edits with fine detail and text", True, False),
}

FluxModel = Literal[
    "flux-dev",
    "flux-pro",
    "flux-2-flex",
    "flux-2-pro",
    "flux-2-max",
    "flux-2-klein",
    "flux-kontext-pro",
    "flux-kontext-max",
]
EditModel = Literal[
    "flux-dev",
    "flux-pro",
    "flux-2-flex",
    "flux-2-pro",
    "flux-2-max",
    "flux-kontext-pro",
    "flux-kontext-max",
]

ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21", "4:5", "5:4")
NAMED_PIXEL_SIZES = ("1024x1024", "1024x1792", "1792x1024")
PIXEL_MIN, PIXEL_MAX, PIXEL_STEP = 256, 1440, 32
PROMPT_MAX_CHARS = 4000
MAX_COUNT = 4
MAX_BATCH = 50

# [0-9], not \d: \d also matches Arabic-Indic, fullwidth and other Unicode digits.
_PIXEL_SIZE = re.compile(r"^([0-9]{2,5})x([0-9]{2,5})$")
_RATIO = re.compile(r"^[0-9]{1,2}:[0-9]{1,2}$")


def model_guide() -> str:
    """One line per model, for tool descriptions and error messages."""
    lines = []
    for name, info in MODELS.items():
        sizes = "pixel sizes or ratios" if info.pixel_sizes else "aspect ratios only"
        edits = "" if info.can_edit else "; cannot edit"
        lines.append(f"- {name}: {info.guide} ({sizes}{edits})")
    return "\n".join(lines)


def default_size(model: str) -> str:
    """The size sent when the caller gives none (the API requires one for some models)."""
    return "1024x1024" if MODELS[model].pixel_sizes else "1:1"


def check_size(model: str, size: str) -> str:
    """Return the normalised size, or raise ValueError saying what this model accepts."""
    normalised = size.strip().lower().replace("*", "x").replace("×", "x").replace(" ", "")
    ratios = ", ".join(ASPECT_RATIOS)
    if _RATIO.match(normalised):
        if normalised not in ASPECT_RATIOS:
            raise ValueError(f"unknown aspect ratio {size!r}; use one of {ratios}")
        return normalised
    pixels = _PIXEL_SIZE.match(normalised)
    if pixels is None:
        raise ValueError(f"size {size!r} is neither an aspect ratio ({ratios}) nor WIDTHxHEIGHT")
    if not MODELS[model].pixel_sizes:
        raise ValueError(
            f"{model} takes only an aspect ratio, not a pixel size like {size!r}; use one of {ratios}"
        )
    width, height = (int(side) for side in pixels.groups())
    canonical = f"{width}x{height}"
    if canonical in NAMED_PIXEL_SIZES:
        return canonical
    if all(PIXEL_MIN <= side <= PIXEL_MAX and side % PIXEL_STEP == 0 for side in (width, height)):
        return canonical
    raise ValueError(
        f"pixel size {size!r} is out of range for {model}: use {', '.join(NAMED_PIXEL_SIZES)}, "
        f"or sides from {PIXEL_MIN} to {PIXEL_MAX} in multiples of {PIXEL_STEP}, or an aspect ratio"
    )


# --- Tool arguments (the single source of the input schemas) ---------------------------------


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt must describe the image; it is empty or only whitespace")
    return value


# The length limits come before the blank check: checked first, they are plain string limits ("at
# most 4000 characters"), and a 1 MB prompt is refused without being scanned.
Prompt = Annotated[
    str,
    Field(
        min_length=1,
        max_length=PROMPT_MAX_CHARS,
        description=(
            "What to draw (or, for edits, what to change), in plain English. Be concrete about subject, "
            "style, lighting and composition."
        ),
    ),
    AfterValidator(_not_blank),
]
GenerateModelArg = Annotated[
    FluxModel,
    Field(description="Flux model to use. flux-dev is the fast default.\n" + model_guide()),
]
EditModelArg = Annotated[
    EditModel,
    Field(
        description=(
            "Flux model for the edit. flux-kontext-pro is the default and usually best; "
            "flux-kontext-max for fine detail and text. flux-2-klein cannot edit."
        )
    ),
]
SizeArg = Annotated[
    str | None,
    Field(
        max_length=20,
        description=(
            "Output size. flux-dev and flux-pro: 1024x1024, 1024x1792, 1792x1024 (or WIDTHxHEIGHT with sides "
            f"{PIXEL_MIN}-{PIXEL_MAX} in multiples of {PIXEL_STEP}) or an aspect ratio. All other models: an "
            f"aspect ratio only, one of {', '.join(ASPECT_RATIOS)}. Omit (or null) for "
            "the default (1024x1024 or 1:1)."
        ),
    ),
]


def _no_bool_count(value: Any) -> Any:
    """true is not 1 image: pydantic's lax int would take it."""
    if isinstance(value, bool):
        raise ValueError(f"count must be a whole number from 1 to {MAX_COUNT}")
    return value


# The check goes after the Field: before it, the bounds could no longer be published as minimum/maximum.
NoBoolCount = BeforeValidator(_no_bool_count)
CountArg = Annotated[
    int,
    Field(ge=1, le=MAX_COUNT, description=f"How many images to generate (1-{MAX_COUNT})."),
    NoBoolCount,
]
ImageUrlArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_IMAGE_URL_CHARS,
        description=(
            "The image to edit, in any of these forms:\n"
            "- a public http(s) URL: https://cdn.example.com/photo.png\n"
            "- an image from an earlier result of this server: flux://images/{task_id}/{index}, "
            "e.g. flux://images/226eb763-9eab/0\n"
            "- a local file (stdio only, inside the allowed folders): /home/you/Pictures/cat.jpg, "
            "~/Pictures/cat.jpg, C:\\Users\\you\\Pictures\\cat.jpg, file:///home/you/cat.jpg or "
            "file:///C:/Users/you/cat.jpg\n"
            "- the image itself: data:image/png;base64,iVBORw0KGgo...\n"
            f"Files and data: URLs must be {ACCEPTED_FORMATS}, at most {MAX_INPUT_BYTES // 1_000_000} MB; "
            "they are uploaded to AceDataCloud once so the Flux API can fetch them."
        ),
    ),
]


def check_image_url(value: str) -> str:
    """One of the accepted image forms (see `inputs`); anything else is refused with the reason."""
    parsed = parse_image_input(value)
    return parsed.url if isinstance(parsed, RemoteImage) else value.strip()


WaitSecondsArg = Annotated[
    float | None,
    Field(
        ge=0,
        le=3600,
        description=(
            "How long to wait for the result in this call, in seconds; capped by the server's limit "
            "(FLUX_MCP_WAIT_SECONDS). 0 returns the task id at once. Omit (or null) to use the server's "
            "limit."
        ),
    ),
]
PreviewChoice = Literal["none", "small", "default"]
PreviewArg = Annotated[
    PreviewChoice | None,
    Field(
        description=(
            "Inline preview images in the result. default: the server's preview size (512 px unless "
            "FLUX_MCP_PREVIEW_SIZE says otherwise); small: 256 px and a few KB each, for frameworks that "
            "paste tool results into the model's text; none: no image at all (the text, structured content "
            "and links stay). Omit (or null) for the server's choice (FLUX_MCP_PREVIEW)."
        )
    ),
]
TaskIdArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="A task_id returned by generate_image or edit_image.",
    ),
]
TaskIdsArg = Annotated[
    list[TaskIdArg],
    Field(min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} task ids to look up at once."),
]


LimitArg = Annotated[int, Field(ge=1, le=100, description="How many, newest first.")]
HistoryStatus = Literal["succeeded", "pending", "failed", "submitting", "unknown", "rejected"]
StatusFilterArg = Annotated[
    HistoryStatus | None,
    Field(
        description=(
            "Only tasks in this state (unknown: the submission may have been billed, no task id). "
            "Omit (or null) for every state."
        )
    ),
]
QueryArg = Annotated[
    str | None,
    Field(max_length=200, description="Only tasks whose prompt contains this text. Omit (or null) for all."),
]


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateImageArgs(_Arguments):
    prompt: Prompt
    model: GenerateModelArg = "flux-dev"
    size: SizeArg = None
    count: CountArg = 1
    wait_seconds: WaitSecondsArg = None
    preview: PreviewArg = None

    @model_validator(mode="after")
    def _check_size(self) -> GenerateImageArgs:
        self.size = check_size(self.model, self.size) if self.size is not None else default_size(self.model)
        return self

    def to_request(self) -> ImageRequest:
        return ImageRequest(
            action="generate", prompt=self.prompt, model=self.model, size=self.size, count=self.count
        )


class VariationArgs(GenerateImageArgs):
    """generate_image's arguments for more images like an earlier task (built from the history)."""

    variation_of: str

    def to_request(self) -> ImageRequest:
        return super().to_request().model_copy(update={"variation_of": self.variation_of})


class EditImageArgs(_Arguments):
    prompt: Prompt
    image_url: ImageUrlArg
    model: EditModelArg = "flux-kontext-pro"
    size: SizeArg = None
    wait_seconds: WaitSecondsArg = None
    preview: PreviewArg = None

    @field_validator("image_url")
    @classmethod
    def _check_image_url(cls, value: str) -> str:
        return check_image_url(value)

    @model_validator(mode="before")
    @classmethod
    def _explain_non_editing_model(cls, data: Any) -> Any:
        if isinstance(data, dict):
            model = data.get("model")
            if isinstance(model, str) and model in MODELS and not MODELS[model].can_edit:
                editors = ", ".join(name for name, info in MODELS.items() if info.can_edit)
                raise ValueError(f"{model} cannot edit images; use one of {editors}")
        return data

    @model_validator(mode="after")
    def _check_size(self) -> EditImageArgs:
        if self.size is not None:
            self.size = check_size(self.model, self.size)
        elif self.model.startswith("flux-2-"):
            self.size = default_size(self.model)  # the API requires a size for flux-2 models, edits included
        return self

    def to_request(self) -> ImageRequest:
        return ImageRequest(
            action="edit", prompt=self.prompt, model=self.model, size=self.size, image_url=self.image_url
        )


class GetTaskArgs(_Arguments):
    task_id: TaskIdArg
    wait_seconds: WaitSecondsArg = None
    preview: PreviewArg = None


class GetTasksArgs(_Arguments):
    task_ids: TaskIdsArg


class ListTasksArgs(_Arguments):
    limit: LimitArg = 20
    status: StatusFilterArg = None
    query: QueryArg = None


PROMPT_SUFFIX_MAX_CHARS = 500
VariationSourceArg = Annotated[
    TaskIdArg, Field(description="The earlier task to vary (its task_id, from a result or list_tasks).")
]
VariationCountArg = Annotated[
    int,
    Field(ge=1, le=MAX_COUNT, description=f"How many new images to make (1-{MAX_COUNT})."),
    NoBoolCount,
]
PromptSuffixArg = Annotated[
    str | None,
    Field(
        max_length=PROMPT_SUFFIX_MAX_CHARS,
        description='Words added to the earlier prompt to steer the variations, e.g. "at sunset".',
    ),
]


class GenerateVariationsArgs(_Arguments):
    task_id: VariationSourceArg
    count: VariationCountArg = 2
    prompt_suffix: PromptSuffixArg = None
    wait_seconds: WaitSecondsArg = None
    preview: PreviewArg = None


class GetCreditsArgs(_Arguments):
    pass


TOOL_ARGUMENTS: dict[str, type[_Arguments]] = {
    "list_tasks": ListTasksArgs,
    "generate_variations": GenerateVariationsArgs,
    "get_credits": GetCreditsArgs,
    "generate_image": GenerateImageArgs,
    "edit_image": EditImageArgs,
    "get_task": GetTaskArgs,
    "get_tasks": GetTasksArgs,
}


def explain_validation_error(tool: str, error: ValidationError) -> str:
    """A short message that names each bad argument and what would be accepted."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"]) or "arguments"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(TOOL_ARGUMENTS[tool].model_fields) if tool in TOOL_ARGUMENTS else ""
            message = f"unknown argument; {tool} accepts {allowed}"
        elif item["type"] == "literal_error" and field == "model":
            message = message.replace("Input should be", "model must be")
        problems.append(f"{field}: {message}" if field != "arguments" else message)
    return f"Invalid arguments for {tool}: " + "; ".join(problems)


# --- The upstream request ---------------------------------------------------------------


class ImageRequest(BaseModel):
    """The JSON body of `POST /flux/images`, already validated."""

    endpoint: ClassVar[str] = "/flux/images"
    action: Literal["generate", "edit"]
    prompt: str
    model: str
    size: str | None = None
    count: int | None = None
    image_url: str | None = None
    # Ours, not the API's: the task this one varies. Kept in the history's request, never sent.
    variation_of: str | None = None

    def fingerprint(self) -> str:
        """What makes two submissions the same job: a hash of this validated request, nothing else.

        Built after normalisation (default size filled in, flux:// references resolved), so calls that
        would send the same body to the upstream have the same fingerprint; how long a call waits, or how
        it is shown, is not part of it.
        """
        canonical = json.dumps(self.model_dump(exclude_none=True), sort_keys=True, separators=(",", ":"))
        return "v1:" + hashlib.sha256(canonical.encode()).hexdigest()

    def body(self, *, callback_url: str | None = None) -> dict[str, Any]:
        payload = self.model_dump(exclude_none=True, exclude={"variation_of"})
        if callback_url is not None:
            payload["callback_url"] = callback_url
        else:
            payload["async"] = True
        return payload


def images_asked(request: dict[str, Any] | None) -> int:
    """How many images a submitted request (`ImageRequest.body`, remembered or upstream) may produce.

    An edit makes one; a generation `count` (1 when absent); never more than MAX_COUNT, also when the
    request is unknown or only partly known.
    """
    request = request or {}
    action, count = request.get("action"), request.get("count")
    if action == "edit":
        return 1
    if isinstance(count, int) and not isinstance(count, bool):
        return min(max(count, 1), MAX_COUNT)
    return 1 if action == "generate" else MAX_COUNT


# --- Upstream answers, parsed leniently -----------------------------------------------------


class TaskStatus(StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    FAILED = "failed"


class TaskError(BaseModel):
    code: str = Field(description="Upstream error code, e.g. api_error, too_many_requests, timeout.")
    message: str = Field(description="What went wrong, as the upstream said it.")


class Cost(BaseModel):
    """What the upstream says a task cost, when it says so."""

    amount: float = Field(description="What was charged, in `currency`.")
    currency: str | None = Field(None, description='Unit of the amounts, e.g. "credit".')
    list_amount: float | None = Field(None, description="The list price before any discount.")


class ImageInfo(BaseModel):
    index: int = Field(description="Position of the image in the task's result, from 0.")
    url: str = Field(description="Full-size image URL on the upstream's host. Such URLs expire: save soon.")
    seed: int | None = Field(None, description="Seed the image was made with, when the upstream reports it.")
    path: str | None = Field(None, description="Absolute path of the saved full-size file, when saved.")
    resource_uri: str | None = Field(None, description="flux://images/... URI: read it for the full image.")
    width: int | None = Field(None, description="Width in pixels, once downloaded.")
    height: int | None = Field(None, description="Height in pixels, once downloaded.")
    warning: str | None = Field(None, description="Why the image could not be saved or previewed, if so.")


class VideoInfo(BaseModel):
    index: int = Field(description="Position of the video in the task's result, from 0.")
    url: str = Field(description="The MP4 on the upstream's host. Such URLs expire: save soon.")
    seconds: float | None = Field(None, description="Duration in seconds, as the upstream reports it.")
    width: int | None = Field(None, description="Width in pixels.")
    height: int | None = Field(None, description="Height in pixels.")
    fps: float | None = Field(None, description="Frames per second.")
    draft_task_id: str | None = Field(
        None, description="With a draft: pass it to generate_video(mode='draft_enhance') for the full video."
    )
    path: str | None = Field(None, description="Absolute path of the saved MP4, when saved.")
    resource_uri: str | None = Field(None, description="flux://videos/... URI: read it for the MP4.")
    size_bytes: int | None = Field(None, description="Size of the MP4 in bytes, once downloaded.")
    warning: str | None = Field(None, description="Why the video could not be saved or previewed, if so.")


@dataclass(frozen=True)
class TaskSnapshot:
    """What the upstream currently knows about one task."""

    task_id: str
    status: TaskStatus
    images: tuple[ImageInfo, ...] = ()
    error: TaskError | None = None
    trace_id: str | None = None
    request: dict[str, Any] | None = None
    elapsed_seconds: float | None = None
    cost: Cost | None = None
    usage: dict[str, Any] | None = None
    videos: tuple[VideoInfo, ...] = ()


def parse_task_record(record: dict[str, Any]) -> TaskSnapshot:
    """Turn a `/flux/tasks` record (or a blocking/callback result) into a snapshot."""
    response = record.get("response") if "response" in record else _looks_like_result(record)
    task_id = str(record.get("id") or record.get("task_id") or _get(response, "task_id") or "")
    trace_id = _str_or_none(record.get("trace_id")) or _str_or_none(_get(response, "trace_id"))
    request = record.get("request") if isinstance(record.get("request"), dict) else None
    elapsed = record.get("elapsed")
    elapsed_seconds = (
        float(elapsed) if isinstance(elapsed, int | float) and not isinstance(elapsed, bool) else None
    )
    common: dict[str, Any] = {
        "task_id": task_id,
        "trace_id": trace_id,
        "request": request,
        "elapsed_seconds": elapsed_seconds,
        "cost": parse_cost(_get(response, "cost") or record.get("cost")),
        "usage": _plain_object(_get(response, "usage") or record.get("usage")),
    }
    finished = record.get("finished_at") is not None
    state = str(record.get("state") or "").lower()
    success = _get(response, "success")
    if success is True:
        images = parse_images(_get(response, "data"))
        videos = parse_videos(_get(response, "data"))
        if images or videos:
            return TaskSnapshot(status=TaskStatus.SUCCEEDED, images=images, videos=videos, **common)
        if finished:
            error = TaskError(code="no_images", message="the task finished without any image")
            return TaskSnapshot(status=TaskStatus.FAILED, error=error, **common)
    failed_state = state in {"failed", "failure", "error", "cancelled", "canceled"}
    if failed_state or (success is False and (finished or _get(response, "error") is not None)):
        return TaskSnapshot(status=TaskStatus.FAILED, error=parse_error(_get(response, "error")), **common)
    return TaskSnapshot(status=TaskStatus.PENDING, **common)


def parse_images(data: Any) -> tuple[ImageInfo, ...]:
    if not isinstance(data, list):
        return ()
    images: list[ImageInfo] = []
    for item in data:
        url = _get(item, "image_url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            seed = _get(item, "seed")
            seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
            images.append(ImageInfo(index=len(images), url=url, seed=seed))
    return tuple(images)


def parse_videos(data: Any) -> tuple[VideoInfo, ...]:
    """`data[]` of a video task: `video_url`, `seconds`, `width`, `height`, `fps`, `draft_task_id`."""
    if not isinstance(data, list):
        return ()
    videos: list[VideoInfo] = []
    for item in data:
        url = _get(item, "video_url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            width, height = _positive_int(_get(item, "width")), _positive_int(_get(item, "height"))
            seconds, fps = finite_number(_get(item, "seconds")), finite_number(_get(item, "fps"))
            draft = _get(item, "draft_task_id")
            videos.append(
                VideoInfo(
                    index=len(videos),
                    url=url,
                    seconds=seconds if seconds is not None and seconds > 0 else None,
                    width=width,
                    height=height,
                    fps=fps if fps is not None and fps > 0 else None,
                    draft_task_id=draft[:128] if isinstance(draft, str) and draft else None,
                )
            )
    return tuple(videos)


def _positive_int(value: Any) -> int | None:
    number = finite_number(value)
    return int(number) if number is not None and number >= 1 and number.is_integer() else None


def parse_error(error: Any) -> TaskError:
    """The upstream's `error` may be an object, a string or null."""
    if isinstance(error, dict):
        code = _str_or_none(error.get("code")) or "api_error"
        message = _str_or_none(error.get("message")) or code
        return TaskError(code=code, message=message)
    if isinstance(error, str) and error.strip():
        return TaskError(code="api_error", message=error.strip())
    return TaskError(code="api_error", message="the upstream reported a failure without a reason")


def parse_cost(cost: Any) -> Cost | None:
    """`cost: {amount, currency, list_amount}` when it is there and numeric; never invented."""
    if not isinstance(cost, dict):
        return None
    amount, listed = finite_number(cost.get("amount")), finite_number(cost.get("list_amount"))
    if amount is None:
        return None
    currency = cost.get("currency")
    return Cost(
        amount=amount, currency=currency[:40] if isinstance(currency, str) else None, list_amount=listed
    )


def finite_number(value: Any) -> float | None:
    """A finite number from an upstream field that may be a number, a numeric string, or anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _plain_object(value: Any) -> dict[str, Any] | None:
    """An upstream `usage` object as it is, if it is a small object of plain values."""
    if not isinstance(value, dict) or not value or len(value) > 20:
        return None
    plain = (str, int, float, bool, type(None))
    kept = {str(key)[:60]: item for key, item in value.items() if isinstance(item, plain)}
    return kept or None


def _looks_like_result(record: dict[str, Any]) -> dict[str, Any] | None:
    return record if "success" in record or "data" in record else None


def _get(container: Any, key: str) -> Any:
    return container.get(key) if isinstance(container, dict) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- Tool results -------------------------------------------------------------------------


class TaskResult(BaseModel):
    """Structured content of generate_image, edit_image and get_task."""

    task_id: str = Field(description="Upstream task id; pass it to get_task to resume or re-read this task.")
    status: TaskStatus = Field(
        description="succeeded: images are ready; pending: call get_task; failed: see error."
    )
    model: str | None = Field(None, description="Model the task was submitted with.")
    prompt: str | None = Field(None, description="Prompt the task was submitted with.")
    size: str | None = Field(None, description="Size sent to the upstream (a default when none was given).")
    images: list[ImageInfo] = Field(
        default_factory=list, description="Finished images, empty unless succeeded."
    )
    elapsed_seconds: float = Field(description="Seconds this call spent waiting, or the upstream's run time.")
    trace_id: str | None = Field(None, description="Upstream trace id, for support requests.")
    error: TaskError | None = Field(None, description="Why the task failed, when status is failed.")
    next_step: str | None = Field(None, description="What to do next, when anything is left to do.")
    attached: bool = Field(
        False,
        description=(
            "True when this call submitted nothing: an identical earlier call (same arguments) had submitted "
            "this task and no caller had received its result yet, so this call continued it (no second bill)."
        ),
    )
    submitted_seconds_ago: float | None = Field(
        None, description="With attached: how long before this call the continued task was submitted."
    )
    cost: Cost | None = Field(None, description="What the upstream charged, when it says.")
    usage: dict[str, Any] | None = Field(
        None, description="The upstream's usage figures, when it gives them."
    )
    variation_of: str | None = Field(None, description="The task this one is a variation of, if it is one.")
    kind: Literal["image", "video"] = Field("image", description="What the task makes: images or a video.")
    videos: list[VideoInfo] = Field(
        default_factory=list, description="Finished videos (generate_video), empty unless succeeded."
    )


class TaskBatchResult(BaseModel):
    """Structured content of get_tasks."""

    tasks: list[TaskResult] = Field(description="One entry per task the upstream knows, in the order asked.")
    missing: list[str] = Field(default_factory=list, description="Requested ids the upstream does not know.")


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


class ApplicationCredits(BaseModel):
    """One application of the AceDataCloud account: a service and its balance."""

    service: str = Field(description="The service the application is for, e.g. Flux.")
    remaining_amount: float | None = Field(None, description="Balance left, in `unit`.")
    used_amount: float | None = Field(None, description="Spent so far, in `unit`.")
    unit: str | None = Field(None, description="Unit of the amounts, when the platform names it.")
    application_id: str | None = Field(None, description="The application's id in the AceDataCloud console.")


class CreditsResult(BaseModel):
    """Structured content of get_credits."""

    flux: list[ApplicationCredits] = Field(description="The account's Flux application(s).")
    others: list[ApplicationCredits] = Field(
        default_factory=list, description="The account's other applications, briefly."
    )
    top_up_url: str = Field(description="Where to add credits.")
