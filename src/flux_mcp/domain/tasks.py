"""What a task is made of: the body sent upstream, the upstream's answers parsed leniently, and the
`TaskResult` a job ends with.

Upstream answers are parsed leniently here (the API adds fields and varies shapes); a `TaskResult` is
strict, so the published output schemas are true. What a caller may ask for is in `arguments`; the
results of the tools that are not one task (list_tasks, get_credits) are in `results`; the Flux models
themselves in `catalogue`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from flux_mcp.domain.catalogue import MAX_COUNT

logger = logging.getLogger(__name__)

# --- The upstream request ---------------------------------------------------------------


class UpstreamRequest(BaseModel):
    """A validated request body for the upstream: how it is sent, and what makes two of them the same job."""

    endpoint: ClassVar[str]
    not_sent: ClassVar[frozenset[str]] = frozenset()  # our own fields, kept in the history only

    def fingerprint(self) -> str:
        """What makes two submissions the same job: a hash of this validated request, nothing else.

        Built after normalisation (default size filled in, flux:// references resolved), so calls that
        would send the same body to the upstream have the same fingerprint; how long a call waits, or how
        it is shown, is not part of it.
        """
        canonical = json.dumps(self.model_dump(exclude_none=True), sort_keys=True, separators=(",", ":"))
        return "v1:" + hashlib.sha256(canonical.encode()).hexdigest()

    def body(self, *, callback_url: str | None = None) -> dict[str, Any]:
        payload = self.model_dump(exclude_none=True, exclude=set(self.not_sent))
        if callback_url is not None:
            payload["callback_url"] = callback_url
        else:
            payload["async"] = True
        return payload


class ImageRequest(UpstreamRequest):
    """The JSON body of `POST /flux/images`, already validated."""

    endpoint: ClassVar[str] = "/flux/images"
    not_sent: ClassVar[frozenset[str]] = frozenset({"variation_of"})
    action: Literal["generate", "edit"]
    prompt: str
    model: str
    size: str | None = None
    count: int | None = None
    image_url: str | None = None
    # Ours, not the API's: the task this one varies. Kept in the history's request, never sent.
    variation_of: str | None = None


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
    elapsed_seconds = finite_number(record.get("elapsed"))
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
            images.append(ImageInfo(index=len(images), url=url, seed=_int64(_get(item, "seed"))))
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
    if number is None or number < 1 or not number.is_integer():
        return None
    return _int64(int(number))


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


# --- Upstream numbers: one rule for every figure an answer carries (task records, balances) ---------

# Below 640, the lowest limit `sys.set_int_max_str_digits` accepts (4300 by default): `int()` of a
# longer run of digits raises ValueError, and json.loads with it, failing the whole answer.
MAX_EXACT_DIGITS = 600


def json_integer(text: str) -> int | float:
    """How a JSON integer in an upstream answer is read (`json.loads(parse_int=...)`): exactly up to
    MAX_EXACT_DIGITS, else as a float (infinite: then ignored by `finite_number`), so no run of digits
    makes an answer unreadable."""
    return int(text) if len(text.lstrip("-")) <= MAX_EXACT_DIGITS else float(text)


def finite_number(value: Any) -> float | None:
    """A finite number from an upstream field that may be a number, a numeric string, or anything else.

    A number no float holds finitely (a 400-digit integer, 1e400, NaN, Infinity) is ignored with a
    note in the log: the field reads as unknown, and nothing else of the answer is lost.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    except OverflowError:
        number = math.inf
    if math.isfinite(number):
        return number
    if not isinstance(value, str) or _looks_numeric(value):
        logger.warning("an upstream figure was ignored: %s is not a finite number", _shown_number(value))
    return None


def _int64(value: Any) -> int | None:
    """An integer in 64 bits, signed or not (a seed, a size: what any upstream means), else unknown."""
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64:
        return value
    return None


def _looks_numeric(text: str) -> bool:
    return text.strip().lstrip("+-").lower() in {"nan", "inf", "infinity"} or text.strip()[:1].isdigit()


def _shown_number(value: int | float | str) -> str:
    if isinstance(value, int):  # not str(value): Python refuses it past 4300 digits
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    shown = str(value)
    return shown if len(shown) <= 24 else f"{shown[:12]}… ({len(shown)} characters)"


def _plain_object(value: Any) -> dict[str, Any] | None:
    """An upstream `usage` object as it is, if it is a small object of plain values."""
    if not isinstance(value, dict) or not value or len(value) > 20:
        return None
    kept = {str(key)[:60]: item for key, item in value.items() if _plain(item)}
    return kept or None


def _plain(value: Any) -> bool:
    """A string, a boolean, null, or a number within the rule of `finite_number`."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return _int64(value) is not None
    return isinstance(value, float) and math.isfinite(value)


def _looks_like_result(record: dict[str, Any]) -> dict[str, Any] | None:
    return record if "success" in record or "data" in record else None


def _get(container: Any, key: str) -> Any:
    return container.get(key) if isinstance(container, dict) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- Tool results -------------------------------------------------------------------------

# The inline previews a result carries: FLUX_MCP_PREVIEW, or a call's `preview` argument.
PreviewChoice = Literal["none", "small", "default"]


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
