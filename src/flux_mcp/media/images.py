"""Images the assistant can see and the user keeps: bounded downloads, previews, saved files.

Upstream image URLs are third-party and expire, and a full image pasted as base64 blows a host's
tool-result limit. So each finished image is downloaded once (http(s) only, size-capped, checked
to be an image that decodes), saved with a JSON sidecar, and shown to the model as a small
preview that fits a byte budget. Pillow work runs in a worker thread, never on the event loop, and
Pillow itself is imported at the first image, not when the server starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from flux_mcp.domain.errors import ImageError
from flux_mcp.domain.tasks import ImageInfo, PreviewChoice, TaskResult, TaskStatus
from flux_mcp.domain.telemetry import task_span
from flux_mcp.media.bounded import KeyedLocks, Recent
from flux_mcp.media.pictures import PREVIEW_MAX_BYTES, Picture, Preview, decode
from flux_mcp.net.downloads import Downloader

logger = logging.getLogger(__name__)

RESULT_PREVIEW_BUDGET = 600_000  # all previews of one result together
LARGE_PREVIEW_MAX_BYTES = 1_500_000  # the gallery's full-size view (an app-only tool, not for the model)
# preview="small": for frameworks that paste a tool result, base64 and all, into the model's text.
SMALL_PREVIEW_SIDE = 256
SMALL_PREVIEW_MAX_BYTES = 16_000
SMALL_RESULT_PREVIEW_BUDGET = 40_000
CACHE_ENTRIES = 16
# Files this process saved, by (task, index): for a call that read the history before another call's
# save of the same image was recorded there. The history is the lasting record, so the most recent saves
# are enough: far more than the images a server finishes at once.
SAVED_PATHS_REMEMBERED = 1024
# Decoded checks and previews kept by content (PreviewCache): all previews together at most this large.
PREVIEW_CACHE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class PreviewSize:
    """How large the inline previews of one result may be."""

    side: int  # longest side in pixels; 0: no previews
    max_bytes: int = PREVIEW_MAX_BYTES  # each preview, base64-encoded
    result_budget: int = RESULT_PREVIEW_BUDGET  # all previews of one result together

    @classmethod
    def chosen(cls, choice: PreviewChoice, default_side: int) -> PreviewSize:
        if choice == "none":
            return cls(0)
        if choice == "small":
            side = min(SMALL_PREVIEW_SIDE, default_side)
            return cls(side, SMALL_PREVIEW_MAX_BYTES, SMALL_RESULT_PREVIEW_BUDGET)
        return cls(default_side)

    def per_image(self, count: int) -> int:
        return preview_budget(count, self.max_bytes, self.result_budget)


@dataclass(frozen=True)
class KeptImage:
    """One image as kept: its info with the saved file, size or warning filled in, and its preview."""

    info: ImageInfo
    preview: Preview | None


class ImageKeeper:
    """Turns a finished result into saved files and previews, downloading each image at most once.

    It returns what it kept as new values (`KeptImage`); the result it is given is left as it was.
    """

    def __init__(
        self,
        downloader: Downloader,
        *,
        folder: Path | None,
        preview_size: int,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self._downloader = downloader
        self._folder = folder  # None: saving is off
        self._preview_size = preview_size
        self._cache: Recent[tuple[str, int], Picture] = Recent(cache_entries)  # downloads not saved
        self._locks: KeyedLocks[tuple[str, int]] = KeyedLocks()
        self._saved: Recent[tuple[str, int], str] = Recent(SAVED_PATHS_REMEMBERED)
        self._previews = PreviewCache()
        # Previews decode full images: a few at a time, not one per worker thread (40), bounds memory.
        self._cpu = anyio.CapacityLimiter(os.cpu_count() or 2)

    async def is_reachable(self, url: str) -> bool:
        return await self._downloader.reachable(url)

    async def keep(
        self, result: TaskResult, saved: dict[int, str], preview: PreviewChoice = "default"
    ) -> list[KeptImage]:
        """Save (or reuse the saved file of) every image of `result`, then preview them as chosen.

        `saved`: the files an earlier record of the task names, by image index.
        """
        size = PreviewSize.chosen(preview, self._preview_size)
        if result.status is not TaskStatus.SUCCEEDED or (self._folder is None and size.side == 0):
            return [KeptImage(image, None) for image in result.images]
        kept: dict[int, KeptImage] = {}
        each = (size.side, size.per_image(len(result.images)))

        async def one(image: ImageInfo) -> None:
            kept[image.index] = await self._kept(result, image, saved.get(image.index), each)

        async with anyio.create_task_group() as group:
            for image in result.images:
                group.start_soon(one, image)
        return [kept[image.index] for image in result.images]

    async def full_image(self, task_id: str, image: ImageInfo, preview_side: int = 0) -> Picture:
        """The full image: the saved file, the cache, or a fresh download (remembered when not saved).

        With `preview_side`, the picture carries a preview of that size (one decode for both).
        """
        cached = self._cache.get((task_id, image.index))
        if image.path and await anyio.Path(image.path).is_file():
            data, source = await anyio.Path(image.path).read_bytes(), image.path
        elif cached is not None:
            data, source = cached.data, image.url
        else:
            data, source = await self._downloader.fetch_bytes(image.url), image.url
        side, budget = preview_side, LARGE_PREVIEW_MAX_BYTES
        picture = await anyio.to_thread.run_sync(decode, data, source, side, budget, limiter=self._cpu)
        if not image.path:
            self._cache.put((task_id, image.index), picture)
        return picture

    async def _kept(
        self, result: TaskResult, image: ImageInfo, saved_path: str | None, preview: tuple[int, int]
    ) -> KeptImage:
        key = (result.task_id, image.index)
        # One image is fetched and saved by one call at a time: two get_task calls for the same task
        # (an assistant and the gallery, say) must not download it twice or save two copies.
        async with self._locks.hold(key):
            try:
                path = saved_path or self._saved.get(key)
                picture = await self._saved_picture(path, preview)
                if picture is None:
                    picture, path = await self._download_and_save(result, image, preview)
            except ImageError as exc:
                return KeptImage(image.model_copy(update={"warning": str(exc)}), None)
            except OSError as exc:
                warning = f"could not save the image: {exc.strerror or exc}"
                return KeptImage(image.model_copy(update={"warning": warning}), None)
            if path:
                self._saved.put(key, path)
        info = image.model_copy(update={"path": path, "width": picture.width, "height": picture.height})
        return KeptImage(info, picture.preview)

    async def _saved_picture(self, path: str | None, preview: tuple[int, int]) -> Picture | None:
        """The saved file, if it is still there and still an image (else it is fetched again)."""
        if not path:
            return None
        side, max_bytes = preview
        try:  # looked at, read and decoded in one worker-thread call
            found = partial(self._previews.decode_file, Path(path), side, max_bytes)
            return await anyio.to_thread.run_sync(found, limiter=self._cpu)
        except ImageError:
            logger.warning("saved image %s no longer decodes; fetching it again", path)
            return None

    async def _download_and_save(
        self, result: TaskResult, image: ImageInfo, preview: tuple[int, int]
    ) -> tuple[Picture, str | None]:
        """The image, fetched (or from the cache), and where it was saved (None: saving is off)."""
        cached = self._cache.get((result.task_id, image.index))
        if cached is not None:
            data = cached.data
        else:
            with task_span("flux.download", result.task_id, result.model, media="image", index=image.index):
                data = await self._downloader.fetch_bytes(image.url)
        picture = await self._decode(data, image.url, preview)
        if self._folder is None:
            self._cache.put((result.task_id, image.index), picture)
            return picture, image.path
        metadata = sidecar_metadata(result, image)
        stored = await anyio.to_thread.run_sync(
            partial(save, self._folder, picture, metadata, index=image.index)
        )
        return picture, str(stored.path)

    async def _decode(self, data: bytes, source: str, preview: tuple[int, int]) -> Picture:
        """One decode checks the image and makes its preview; a few at a time bounds CPU and memory."""
        side, max_bytes = preview  # side 0: checked, not previewed
        decoded = partial(self._previews.decode, data, source, side, max_bytes)
        return await anyio.to_thread.run_sync(decoded, limiter=self._cpu)


class PreviewCache:
    """Recent decodes by content: the same bytes checked and previewed at the same size again cost a hash.

    A finished task shown again (get_task, the gallery, a retry that attaches) previews its saved file,
    whose bytes are the ones downloaded and previewed when it finished: a decode and a JPEG encode each
    time (~25 ms for 1024x1024), now a SHA-256 of the file (~0.2 ms). Keyed by the bytes' digest and
    the preview's size and byte budget, so a file changed on disk is decoded afresh. Least recently used
    first out, bounded by the previews' total bytes. Used from worker threads.
    """

    ENTRY_OVERHEAD = 512  # bytes counted per entry besides its preview (key, sizes, bookkeeping)

    def __init__(self, max_bytes: int = PREVIEW_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[bytes, int, int, int], Picture] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """What the remembered entries count for against the bound."""
        return self._bytes

    def holds(self, data: bytes, preview_side: int = 0, preview_bytes: int = PREVIEW_MAX_BYTES) -> bool:
        """Whether a decode of these bytes at this preview size is remembered."""
        with self._lock:
            return self._key(data, preview_side, preview_bytes) in self._entries

    def decode(
        self, data: bytes, source: str, preview_side: int = 0, preview_bytes: int = PREVIEW_MAX_BYTES
    ) -> Picture:
        """`decode(...)`, or its remembered outcome for the same bytes and preview size (blocking)."""
        key = self._key(data, preview_side, preview_bytes)
        with self._lock:
            known = self._entries.get(key)
            if known is not None:
                self._entries.move_to_end(key)
        if known is not None:
            return Picture(data, known.mime_type, known.extension, known.width, known.height, known.preview)
        picture = decode(data, source, preview_side, preview_bytes)  # an ImageError is not remembered
        self._remember(key, picture)
        return picture

    def decode_file(
        self, path: Path, preview_side: int = 0, preview_bytes: int = PREVIEW_MAX_BYTES
    ) -> Picture | None:
        """`decode` of the file at `path`; None when it is not (or no longer) a regular file (blocking)."""
        if not path.is_file():
            return None
        return self.decode(path.read_bytes(), str(path), preview_side, preview_bytes)

    def _remember(self, key: tuple[bytes, int, int, int], picture: Picture) -> None:
        # Kept without its bytes: whoever asks again holds them.
        kept = Picture(
            b"", picture.mime_type, picture.extension, picture.width, picture.height, picture.preview
        )
        size = self._size(kept)
        if size > self._max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = kept
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, oldest = self._entries.popitem(last=False)
                self._bytes -= self._size(oldest)

    @staticmethod
    def _key(data: bytes, preview_side: int, preview_bytes: int) -> tuple[bytes, int, int, int]:
        return hashlib.sha256(data).digest(), len(data), preview_side, preview_bytes

    def _size(self, picture: Picture) -> int:
        return self.ENTRY_OVERHEAD + (len(picture.preview.data) if picture.preview is not None else 0)


def sidecar_metadata(result: TaskResult, image: ImageInfo) -> dict[str, Any]:
    return {
        "prompt": result.prompt,
        "model": result.model,
        "size": result.size,
        "seed": image.seed,
        "task_id": result.task_id,
        "trace_id": result.trace_id,
        "url": image.url,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **({"cost": result.cost.model_dump(exclude_none=True)} if result.cost is not None else {}),
        **({"usage": result.usage} if result.usage is not None else {}),
        **({"variation_of": result.variation_of} if result.variation_of else {}),
    }


def preview_budget(
    count: int, max_bytes: int = PREVIEW_MAX_BYTES, result_budget: int = RESULT_PREVIEW_BUDGET
) -> int:
    """Bytes (base64) one preview may take when a result has `count` images."""
    return min(max_bytes, result_budget // max(count, 1))


@dataclass(frozen=True)
class SavedImage:
    path: Path
    sidecar: Path


def save(folder: Path, picture: Picture, metadata: dict[str, Any], *, index: int) -> SavedImage:
    """Write the image and its sidecar under `folder` with a unique, readable name."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = file_stem(str(metadata.get("task_id") or "task"), index, str(metadata.get("prompt") or ""))
    path = _write_new(folder, stem, picture.extension, picture.data)
    sidecar = path.with_suffix(".json")
    record = {
        **metadata,
        "index": index,
        "width": picture.width,
        "height": picture.height,
        "file": path.name,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    sidecar.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    return SavedImage(path=path.resolve(), sidecar=sidecar.resolve())


def file_stem(task_id: str, index: int, prompt: str) -> str:
    """`20261125-142501_226eb763_0_a-white-siamese-cat`: date, short task id, index, prompt slug."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    short_id = re.sub(r"[^A-Za-z0-9]", "", task_id)[:8] or "task"
    return f"{stamp}_{short_id}_{index}_{slug(prompt)}"


def slug(text: str, limit: int = 40) -> str:
    """ASCII letters, digits and dashes only: safe on every file system, never a path."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return cleaned[:limit].rstrip("-") or "image"


def _write_new(folder: Path, stem: str, extension: str, data: bytes) -> Path:
    """Write `data` under a name no other file has: created exclusively, so nothing is overwritten."""
    for counter in range(10_000):
        path = folder / (f"{stem}.{extension}" if counter == 0 else f"{stem}-{counter}.{extension}")
        if path.with_suffix(".json").exists():
            continue
        try:
            with path.open("xb") as file:
                file.write(data)
        except FileExistsError:
            continue
        except BaseException:
            path.unlink(missing_ok=True)  # never leave a half-written image behind
            raise
        return path
    raise OSError(f"no free file name for {stem} in {folder}")
