"""What a caller may ask for: each tool's arguments model, with the sizes each Flux model accepts.

An arguments model serves three purposes: the tool's input schema (its parameters are the fields of
its model in `TOOL_ARGUMENTS`; see `toolkit.model_tool`), the one validation of each call, before any
upstream call, and (`to_request`) the `tasks.ImageRequest` sent to `POST /flux/images`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

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

from flux_mcp.domain.catalogue import MAX_BATCH, MAX_COUNT, MODELS, model_guide
from flux_mcp.domain.inputs import (
    ACCEPTED_FORMATS,
    MAX_IMAGE_URL_CHARS,
    MAX_INPUT_BYTES,
    RemoteImage,
    parse_image_input,
)
from flux_mcp.domain.tasks import ImageRequest, PreviewChoice

# --- What each model accepts ------------------------------------------------------------------

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

# [0-9], not \d: \d also matches Arabic-Indic, fullwidth and other Unicode digits.
_PIXEL_SIZE = re.compile(r"^([0-9]{2,5})x([0-9]{2,5})$")
_RATIO = re.compile(r"^[0-9]{1,2}:[0-9]{1,2}$")


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


def _no_nul(value: str | None) -> str | None:
    """A caller's text is refused with a NUL in it: no model means one, and the history cannot keep it
    as given (PostgreSQL refuses it; upstream text with one is stored with U+FFFD instead)."""
    if value is not None and "\x00" in value:
        raise ValueError("it contains a NUL character (U+0000), which is not text; remove it")
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
    AfterValidator(_no_nul),
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
    AfterValidator(_no_nul),
]


class ToolArguments(BaseModel):
    """The base of every arguments model: an argument the tool does not take is refused."""

    model_config = ConfigDict(extra="forbid")


class GenerateImageArgs(ToolArguments):
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


class EditImageArgs(ToolArguments):
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


class GetTaskArgs(ToolArguments):
    task_id: TaskIdArg
    wait_seconds: WaitSecondsArg = None
    preview: PreviewArg = None


class GetTasksArgs(ToolArguments):
    task_ids: TaskIdsArg


class ListTasksArgs(ToolArguments):
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
    AfterValidator(_no_nul),
]


class GenerateVariationsArgs(ToolArguments):
    task_id: VariationSourceArg
    count: VariationCountArg = 2
    prompt_suffix: PromptSuffixArg = None
    wait_seconds: WaitSecondsArg = None
    preview: PreviewArg = None


class GetCreditsArgs(ToolArguments):
    pass


TOOL_ARGUMENTS: dict[str, type[ToolArguments]] = {
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
