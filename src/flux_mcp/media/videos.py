"""Videos the user keeps: downloaded once through the guarded downloader, checked, saved, and a poster.

A finished video is fetched through the same `downloads.Downloader` as images (public addresses only,
redirects checked hop by hop) with its own size cap (FLUX_MCP_MAX_VIDEO_DOWNLOAD_MB), checked to be an
MP4 (an `ftyp` box, then a `moov` with an `mvhd` duration, read here without any library), saved with
a JSON sidecar beside the images, and shown to the model as a poster: its first frame as a small JPEG.
The poster needs PyAV (`pip install 'flux-mcp[video]'`, which bundles ffmpeg); without it the result
says that no poster is shown, and everything else works the same.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from flux_mcp.domain.errors import ImageError, VideoError
from flux_mcp.domain.tasks import ImageInfo, TaskResult, TaskStatus, VideoInfo
from flux_mcp.domain.telemetry import task_span
from flux_mcp.media.bounded import KeyedLocks, Recent
from flux_mcp.media.images import SAVED_PATHS_REMEMBERED, save, sidecar_metadata
from flux_mcp.media.pictures import MAX_PIXELS, PREVIEW_MAX_BYTES, Picture, Preview, preview_of
from flux_mcp.net.downloads import Downloader

logger = logging.getLogger(__name__)

NO_POSTER = "no poster frame is shown (install flux-mcp[video] for one)"


@dataclass(frozen=True)
class Mp4Info:
    """What the container says: its brand and its duration (from `mvhd`)."""

    brand: str
    seconds: float


@dataclass(frozen=True)
class KeptVideo:
    """One video as kept: its info with the saved file, size or warning filled in, and its poster."""

    info: VideoInfo
    poster: Preview | None


def mp4_info(data: bytes, source: str = "the video") -> Mp4Info:
    """Read the MP4's top-level boxes: `ftyp` first, then `moov`/`mvhd` for the duration."""
    boxes = dict(_boxes(data, 0, len(data)))
    if not data[4:8] == b"ftyp" or "ftyp" not in boxes:
        raise VideoError(f"{source} is not an MP4 file (no ftyp box)")
    start, end = boxes["ftyp"]
    brand = data[start : start + 4].decode("ascii", "replace")
    if "moov" not in boxes:
        raise VideoError(f"{source} is an incomplete MP4 (no moov box)")
    inner = dict(_boxes(data, *boxes["moov"]))
    if "mvhd" not in inner:
        raise VideoError(f"{source} is an MP4 without a movie header (mvhd)")
    start, end = inner["mvhd"]
    version = data[start]
    if version == 1 and end - start >= 32:
        timescale, duration = struct.unpack(">IQ", data[start + 20 : start + 32])
    elif end - start >= 20:
        timescale, duration = struct.unpack(">II", data[start + 12 : start + 20])
    else:
        raise VideoError(f"{source} has a damaged movie header")
    if timescale == 0:
        raise VideoError(f"{source} has a movie header without a time scale")
    return Mp4Info(brand=brand, seconds=duration / timescale)


def _boxes(data: bytes, start: int, end: int) -> list[tuple[str, tuple[int, int]]]:
    """(type, (payload start, payload end)) of each box between `start` and `end`."""
    found = []
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1 and offset + 16 <= end:
            size, header = struct.unpack(">Q", data[offset + 8 : offset + 16])[0], 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            break
        found.append((kind.decode("latin-1"), (offset + header, offset + size)))
        offset += size
    return found


def poster_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def poster_frame(data: bytes, side: int, max_bytes: int = PREVIEW_MAX_BYTES) -> Preview | None:
    """The first frame as a small JPEG; None without PyAV. Raises VideoError when it cannot be decoded."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            if stream.width * stream.height > MAX_PIXELS:  # checked before a frame is decoded
                raise VideoError(f"the video declares {stream.width}x{stream.height}, too large to decode")
            frame = next(container.decode(stream))
            image = frame.to_image()  # type: ignore[no-untyped-call]
    except VideoError:
        raise
    except Exception:  # PyAV signals damage in many ways (av.FFmpegError, StopIteration, IndexError…)
        raise VideoError("the video's first frame could not be decoded") from None
    return preview_of(image, side, max_bytes)


class VideoKeeper:
    """Turns a finished video result into saved MP4s (with sidecars) and posters, downloading once.

    It returns what it kept as new values (`KeptVideo`); the result it is given is left as it was.
    """

    def __init__(
        self, downloader: Downloader, *, folder: Path | None, preview_size: int, max_bytes: int
    ) -> None:
        self._downloader = downloader
        self._folder = folder  # None: saving is off
        self._preview_size = preview_size
        self._max_bytes = max_bytes
        self._locks: KeyedLocks[tuple[str, int]] = KeyedLocks()
        self._saved: Recent[tuple[str, int], str] = Recent(SAVED_PATHS_REMEMBERED)  # as ImageKeeper's
        self._cpu = anyio.CapacityLimiter(1)  # one decode at a time: a poster is rarely wanted twice at once

    async def keep(self, result: TaskResult, saved: dict[int, str]) -> list[KeptVideo]:
        """Save (or reuse the saved file of) each video, then make its poster."""
        if result.status is not TaskStatus.SUCCEEDED:
            return [KeptVideo(video, None) for video in result.videos]
        return [await self._one(result, video, saved.get(video.index)) for video in result.videos]

    async def full_video(self, video: VideoInfo) -> bytes:
        """The MP4: the saved file, or a fresh (checked) download."""
        if video.path and await anyio.Path(video.path).is_file():
            return await anyio.Path(video.path).read_bytes()
        return await self._download(video.url)

    async def _one(self, result: TaskResult, video: VideoInfo, saved_path: str | None) -> KeptVideo:
        key = (result.task_id, video.index)
        async with self._locks.hold(key):
            try:
                path = saved_path or self._saved.get(key)
                data = await self._saved_video(path)
                if data is None:
                    with task_span(
                        "flux.download", result.task_id, result.model, media="video", index=video.index
                    ):
                        data = await self._download(video.url)
                    path = video.path
                    if self._folder is not None:
                        path = await self._save(self._folder, result, video, data)
            except ImageError as exc:
                return KeptVideo(video.model_copy(update={"warning": str(exc)}), None)
            except OSError as exc:
                warning = f"could not save the video: {exc.strerror or exc}"
                return KeptVideo(video.model_copy(update={"warning": warning}), None)
            if path:
                self._saved.put(key, path)
        info = video.model_copy(update={"path": path, "size_bytes": len(data)})
        try:
            return KeptVideo(info, await self._poster(data))
        except VideoError as exc:
            return KeptVideo(info.model_copy(update={"warning": f"{exc}; no poster frame is shown"}), None)

    async def _saved_video(self, path: str | None) -> bytes | None:
        if not path or not await anyio.Path(path).is_file():
            return None
        data = await anyio.Path(path).read_bytes()
        try:
            mp4_info(data, path)
        except VideoError:
            logger.warning("saved video %s is no longer an MP4; fetching it again", path)
            return None
        return data

    async def _download(self, url: str) -> bytes:
        data = await self._downloader.fetch_bytes(url, media="video", max_bytes=self._max_bytes)
        mp4_info(data, url)
        return data

    async def _save(self, folder: Path, result: TaskResult, video: VideoInfo, data: bytes) -> str:
        info = mp4_info(data)
        extra = {
            "seconds": video.seconds if video.seconds is not None else round(info.seconds, 3),
            "fps": video.fps,
            "draft_task_id": video.draft_task_id,
            "bytes": len(data),
        }
        metadata = {
            **video_sidecar_metadata(result, video),
            **{k: v for k, v in extra.items() if v is not None},
        }
        picture = Picture(data, "video/mp4", "mp4", video.width or 0, video.height or 0)
        stored = await anyio.to_thread.run_sync(partial(save, folder, picture, metadata, index=video.index))
        return str(stored.path)

    async def _poster(self, data: bytes) -> Preview | None:
        """The first frame, small; None when previews are off. Raises VideoError when it cannot be read."""
        if self._preview_size <= 0:
            return None
        return await anyio.to_thread.run_sync(poster_frame, data, self._preview_size, limiter=self._cpu)


def video_sidecar_metadata(result: TaskResult, video: VideoInfo) -> dict[str, Any]:
    """The image sidecar's fields, for a video: no seed, the video's own URL."""
    metadata = sidecar_metadata(result, ImageInfo(index=video.index, url=video.url))
    metadata.pop("seed", None)
    metadata["kind"] = "video"
    return {key: value for key, value in metadata.items() if value is not None}
