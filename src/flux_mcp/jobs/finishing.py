"""Finishing a job: each state a call sees becomes one result, its files kept, recorded once.

Every call that looks at a task (generate_image, edit_image, generate_variations, generate_video,
get_task) ends in `Finisher.finish`. The upstream's snapshot has already become a `TaskResult`
(`task_result`, which keeps no more images than the request asked for). A succeeded result gets its files
kept: each image or video downloaded once, checked, previewed and saved with a sidecar
(`images.ImageKeeper`, `videos.VideoKeeper` in media/), reusing the files an earlier record of the task
names. Then the result is written to the history, once: this is the only place a job's state is recorded.
What comes back, a `FinishedJob`, is the result as this call shows it with its inline previews, which
`server.render.present` turns into MCP content without any I/O of its own.

The history never forgets a saved file: when this call could not keep a file again (its download
failed, or saving is off here and no preview was wanted), the recorded result still names the file
and size an earlier record had (`remembered`); the answer says what this call did.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from flux_mcp.domain.errors import HistoryUnavailableError
from flux_mcp.domain.tasks import (
    ImageInfo,
    PreviewChoice,
    TaskResult,
    TaskSnapshot,
    TaskStatus,
    VideoInfo,
    images_asked,
)
from flux_mcp.domain.telemetry import NO_OBSERVER, Observer, task_span
from flux_mcp.domain.videos import MAX_VIDEOS, is_video_request, video_uri
from flux_mcp.history.rows import HistoryEntry
from flux_mcp.history.store import History
from flux_mcp.media.images import ImageKeeper, KeptImage
from flux_mcp.media.pictures import Preview
from flux_mcp.media.videos import KeptVideo, VideoKeeper

logger = logging.getLogger(__name__)

# What a record keeps of an earlier one's files, when this call has no value of its own for it.
FILE_FACTS = ("path", "resource_uri", "width", "height", "size_bytes")
FileInfo = TypeVar("FileInfo", ImageInfo, VideoInfo)


@dataclass(frozen=True)
class FinishedJob:
    """A job's state as this call shows it: the result, and the inline preview of each file it kept.

    `previews` has one entry per image (per video: its poster) of a succeeded result, None where there is
    nothing to show; it is empty for any other state.
    """

    result: TaskResult
    previews: tuple[Preview | None, ...] = ()


class Finisher:
    """Keeps a succeeded result's files and records every state: the one writer of a job's outcome."""

    def __init__(
        self,
        history: History | None,
        images: ImageKeeper | None = None,
        videos: VideoKeeper | None = None,
        *,
        preview: PreviewChoice = "default",
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._history = history
        self._images = images
        self._videos = videos
        self._preview = preview  # FLUX_MCP_PREVIEW: the choice when a call makes none
        self._observer = observer

    async def finish(
        self, result: TaskResult, owner: str = "", preview: PreviewChoice | None = None
    ) -> FinishedJob:
        """Keep the files of a succeeded result (previews as `preview` chooses), then record it once."""
        if result.status is not TaskStatus.SUCCEEDED:
            known = await self._known(result.task_id, owner) if result.status is TaskStatus.FAILED else None
            await self._record(result, owner, known)
            return FinishedJob(result)
        known = await self._known(result.task_id, owner)
        earlier = known.result if known is not None else None
        keep = self._keep_videos if result.kind == "video" else self._keep_images
        try:
            finished = await keep(result, earlier, preview or self._preview)
        except BaseException:
            # The state is news even when its files could not be kept (a fault, or the caller went away).
            with anyio.CancelScope(shield=True):
                await self._record(with_earlier_files(result, earlier), owner, known)
            raise
        await self._record(with_earlier_files(finished.result, earlier), owner, known)
        return finished

    async def _keep_images(
        self, result: TaskResult, earlier: TaskResult | None, preview: PreviewChoice
    ) -> FinishedJob:
        saved = _saved_files(earlier.images if earlier is not None else [])
        if self._images is not None:
            kept = await self._images.keep(result, saved, preview)
        else:
            kept = [KeptImage(image, None) for image in result.images]
        images = [
            kept_image.info.model_copy(
                update={"resource_uri": image_uri(result.task_id, kept_image.info.index)}
            )
            for kept_image in kept
        ]
        previews = tuple(kept_image.preview for kept_image in kept)
        return FinishedJob(result.model_copy(update={"images": images}), previews)

    async def _keep_videos(
        self, result: TaskResult, earlier: TaskResult | None, preview: PreviewChoice
    ) -> FinishedJob:
        saved = _saved_files(earlier.videos if earlier is not None else [])
        if self._videos is not None:
            kept = await self._videos.keep(result, saved)
        else:
            kept = [KeptVideo(video, None) for video in result.videos]
        videos = [
            video.info.model_copy(update={"resource_uri": video_uri(result.task_id, video.info.index)})
            for video in kept
        ]
        # The poster is the video's preview: a call that wants none is shown none.
        posters = tuple(video.poster if preview != "none" else None for video in kept)
        return FinishedJob(result.model_copy(update={"videos": videos}), posters)

    async def _known(self, task_id: str, owner: str) -> HistoryEntry | None:
        """What the history holds of the task; None when nothing, or it cannot be reached (the files are
        kept all the same, and the record waits for the history)."""
        if self._history is None:
            return None
        try:
            return await self._history.find_task(task_id, owner)
        except HistoryUnavailableError:
            return None

    async def _record(self, result: TaskResult, owner: str, known: HistoryEntry | None) -> None:
        with task_span("flux.save", result.task_id, result.model, status=result.status.value):
            if self._history is not None:
                await self._history.record_state(result, owner)
        if result.status is not TaskStatus.PENDING and _first_end(known):
            seconds = time.time() - known.created_at if known is not None else None
            credits = result.cost.amount if result.cost is not None else None
            self._observer.task_ended(result.model or "", result.status.value, seconds, credits)


def _first_end(known: HistoryEntry | None) -> bool:
    """Whether recording an ended state is this task's first: its cost and time are counted once."""
    return known is None or known.result is None or known.result.status is TaskStatus.PENDING


def task_result(snapshot: TaskSnapshot, request: dict[str, Any] | None, waited: float | None) -> TaskResult:
    """The structured result of one task, with the one next step an assistant should take.

    This is where every snapshot becomes a result: it keeps no more images than `request` asked for.
    """
    asked = images_asked(request)
    if len(snapshot.images) > asked:
        logger.warning(
            "task %s: keeping the %d images its request asked for, of %d listed",
            snapshot.task_id,
            asked,
            len(snapshot.images),
        )
    request = request or {}
    elapsed = waited if waited is not None else (snapshot.elapsed_seconds or 0.0)
    result = TaskResult(
        task_id=snapshot.task_id,
        status=snapshot.status,
        model=_str(request.get("model")),
        prompt=_str(request.get("prompt")),
        size=_str(request.get("size")),
        images=list(snapshot.images[:asked]),
        elapsed_seconds=round(elapsed, 2),
        trace_id=snapshot.trace_id,
        error=snapshot.error,
        cost=snapshot.cost,
        usage=snapshot.usage,
        variation_of=_str(request.get("variation_of")),
    )
    if is_video_request(request) or snapshot.videos:
        result.kind, result.videos, result.images = "video", list(snapshot.videos[:MAX_VIDEOS]), []
    if snapshot.status is TaskStatus.PENDING:
        result.next_step = (
            f"The {result.kind} is still being generated. Call get_task with task_id "
            f'"{snapshot.task_id}" to wait for it.'
        )
    return result


def with_earlier_files(result: TaskResult, earlier: TaskResult | None) -> TaskResult:
    """`result` as the history keeps it: still naming the files (and sizes) an earlier record kept."""
    if earlier is None:
        return result
    return result.model_copy(
        update={
            "images": _with_known_files(result.images, earlier.images),
            "videos": _with_known_files(result.videos, earlier.videos),
        }
    )


def image_uri(task_id: str, index: int) -> str:
    return f"flux://images/{task_id}/{index}"


def _with_known_files(files: list[FileInfo], known: list[FileInfo]) -> list[FileInfo]:
    by_index = {file.index: file for file in known}
    return [_with_known_facts(file, by_index.get(file.index)) for file in files]


def _with_known_facts(file: FileInfo, known: FileInfo | None) -> FileInfo:
    if known is None:
        return file
    facts = {
        fact: getattr(known, fact)
        for fact in FILE_FACTS
        if fact in type(file).model_fields
        and getattr(file, fact) is None
        and getattr(known, fact) is not None
    }
    return file.model_copy(update=facts) if facts else file


def _saved_files(files: list[ImageInfo] | list[VideoInfo]) -> dict[int, str]:
    return {file.index: file.path for file in files if file.path}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
