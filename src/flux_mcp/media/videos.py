"""Videos the user keeps: downloaded once through the guarded downloader, checked, saved, and a poster.

A finished video is fetched through the same `downloads.Downloader` as images (public addresses only,
redirects checked hop by hop) with its own size cap (FLUX_MCP_MAX_VIDEO_DOWNLOAD_MB), checked to be an
MP4 (an `ftyp` box, then a `moov` with an `mvhd` duration, read here without any library), saved with
a JSON sidecar beside the images, and shown to the model as a poster: its first frame as a small JPEG.
The poster needs PyAV (`pip install 'flux-mcp[video]'`, which bundles ffmpeg); without it the result
says that no poster is shown, and everything else works the same. What ffmpeg may decode for a poster
is bounded first, from the boxes (`poster_track`, `mp4.only_track`): one video track, of a bounded size.
"""

from __future__ import annotations

import logging
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
from flux_mcp.media.mp4 import Track, mp4_info, only_track, tracks
from flux_mcp.media.pictures import MAX_PIXELS, PREVIEW_MAX_BYTES, Picture, Preview, preview_of
from flux_mcp.net.downloads import Downloader

logger = logging.getLogger(__name__)

NO_POSTER = "no poster frame is shown (install flux-mcp[video] for one)"
# A poster is read from a file only within these bounds (checked from its boxes, before decoding):
# a video with its audio, maybe a timecode or caption track, is far below 8 tracks; 100,000 frames
# is almost an hour at 30 fps (ffmpeg indexes every declared frame: about 30 bytes each).
MAX_POSTER_TRACKS = 8
MAX_POSTER_SAMPLES = 100_000
POSTER_CODECS = frozenset({"avc1", "avc3", "hvc1", "hev1", "av01", "vp09"})  # H.264, H.265, AV1, VP9


@dataclass(frozen=True)
class KeptVideo:
    """One video as kept: its info with the saved file, size or warning filled in, and its poster."""

    info: VideoInfo
    poster: Preview | None


def poster_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def poster_frame(data: bytes, side: int, max_bytes: int = PREVIEW_MAX_BYTES) -> Preview | None:
    """The first frame as a small JPEG; None without PyAV. Raises VideoError when it cannot be decoded.

    The file's boxes are read first (`poster_track`): ffmpeg is given a view holding that one track
    only, so no other stream is probed or decoded, and its decoder refuses any frame over MAX_PIXELS
    (`max_pixels`), whatever the track's header declared. One thread: one frame buffer at a time.
    """
    try:
        import av
    except ImportError:
        return None
    only = only_track(data, poster_track(data))
    limits = {"max_pixels": str(MAX_PIXELS), "threads": "1"}
    try:
        options: Any = [limits]  # PyAV 18 types it list[str]; it takes a dict per stream
        with av.open(only, mode="r", stream_options=options) as container:
            if len(container.streams) != 1 or not container.streams.video:
                raise VideoError("the video's track could not be read alone")
            stream = container.streams.video[0]
            _check_pixels(stream.width, stream.height)  # what the codec's own header says
            stream.codec_context.options = limits
            stream.codec_context.thread_count = 1
            frame = next(container.decode(stream))
            _check_pixels(frame.width, frame.height)
            scale = min(1.0, side / max(frame.width, frame.height, 1))
            small = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
            image = frame.to_image(width=small[0], height=small[1])  # type: ignore[no-untyped-call]
    except VideoError:
        raise
    except Exception:  # PyAV signals damage in many ways (av.FFmpegError, StopIteration, IndexError…)
        raise VideoError("the video's first frame could not be decoded") from None
    return preview_of(image, side, max_bytes)


def poster_track(data: bytes) -> Track:
    """The one track a poster is decoded from, checked from its declared boxes before any decoding."""
    declared = tracks(data)
    if len(declared) > MAX_POSTER_TRACKS:
        raise VideoError(f"the video declares {len(declared)} tracks (at most {MAX_POSTER_TRACKS} are read)")
    track = next((track for track in declared if track.handler == "vide"), None)
    if track is None:
        raise VideoError("the video has no video track")
    if track.sample_entry not in POSTER_CODECS:
        codec = track.sample_entry or "none"
        raise VideoError(f"the video's codec ({codec}) is not one a poster is made from")
    _check_pixels(track.width, track.height)
    if track.samples > MAX_POSTER_SAMPLES:
        limit = MAX_POSTER_SAMPLES
        raise VideoError(f"the video declares {track.samples} frames (at most {limit} are indexed)")
    return track


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise VideoError(f"the video declares {width}x{height}, too large to decode")


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
