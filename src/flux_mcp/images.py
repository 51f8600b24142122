"""Images the assistant can see and the user keeps: bounded downloads, previews, saved files.

Upstream image URLs are third-party and expire, and a full image pasted as base64 blows a host's
tool-result limit. So each finished image is downloaded once (http(s) only, size-capped, checked
to be an image that decodes), saved with a JSON sidecar, and shown to the model as a small
preview that fits a byte budget. Pillow work runs in a worker thread, never on the event loop, and
Pillow itself is imported at the first image, not when the server starts.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import logging
import os
import re
import threading
import unicodedata
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx2

from flux_mcp.addresses import ForbiddenAddress
from flux_mcp.models import ImageInfo, PreviewChoice, TaskResult, TaskStatus

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

PREVIEW_MAX_BYTES = 150_000  # each preview, base64-encoded as it travels
RESULT_PREVIEW_BUDGET = 600_000  # all previews of one result together
LARGE_PREVIEW_MAX_BYTES = 1_500_000  # the gallery's full-size view (an app-only tool, not for the model)
# preview="small": for frameworks that paste a tool result, base64 and all, into the model's text.
SMALL_PREVIEW_SIDE = 256
SMALL_PREVIEW_MAX_BYTES = 16_000
SMALL_RESULT_PREVIEW_BUDGET = 40_000
MAX_REDIRECTS = 5
# Flux's largest outputs are about 4 megapixels; 40 keeps room for any model to come while refusing
# decompression bombs long before Pillow's own limit (89 Mpx warns, 179 Mpx refuses), which lets a
# 94 KB PNG decode to almost 1 GB. Any image Pillow would warn about is refused here before load().
MAX_PIXELS = 40_000_000
REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA"}
CACHE_ENTRIES = 16
# Decoded checks and previews kept by content (PreviewCache): all previews together at most this large.
PREVIEW_CACHE_BYTES = 32 * 1024 * 1024
MAX_PIXELS = 40_000_000  # the largest image decoded (a decompression-bomb bound)
FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp")}


class ImageError(Exception):
    """A download or decode was refused; the message says why, for the user."""


@dataclass(frozen=True)
class Picture:
    """Downloaded image bytes, verified to decode."""

    data: bytes
    mime_type: str
    extension: str
    width: int
    height: int
    preview: Preview | None = None


@dataclass(frozen=True)
class Preview:
    data: bytes
    mime_type: str
    width: int
    height: int

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


class Downloader:
    """Fetches images: never sends credentials, never trusts the host.

    `http` is the client from `client.build_download_client`, whose connections reach only public
    addresses; redirects are followed here, one checked hop at a time.
    """

    def __init__(
        self, http: httpx2.AsyncClient, gate: anyio.CapacityLimiter, *, max_bytes: int, timeout: float
    ) -> None:
        self._http = http
        self._gate = gate
        self._max_bytes = max_bytes
        self._timeout = timeout

    async def fetch(self, url: str) -> Picture:
        return await anyio.to_thread.run_sync(decode, await self.fetch_bytes(url), url)

    async def fetch_bytes(self, url: str, *, media: str = "image", max_bytes: int | None = None) -> bytes:
        """The bytes at `url`, checked for scheme, size and content type but not yet decoded.

        `media` is the content type's first part the answer must have ("image", or "video" with its own
        `max_bytes`); every download goes through the same address policy and redirect checks.
        """
        limit = max_bytes if max_bytes is not None else self._max_bytes
        try:
            with anyio.fail_after(self._timeout):
                async with self._gate:
                    data, content_type = await self._follow(url, media, limit)
        except TimeoutError:
            raise ImageError(f"downloading {url} took longer than {self._timeout:.0f} s") from None
        except ForbiddenAddress:
            raise ImageError(refused(url)) from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise ImageError(f"could not download {url}: {type(exc).__name__}") from None
        if not (content_type.startswith(f"{media}/") or content_type in {"application/octet-stream", ""}):
            article = "an" if media[0] in "aeiou" else "a"
            raise ImageError(f"{url} is not {article} {media} (content type {content_type!r})")
        return data

    async def reachable(self, url: str) -> bool:
        """Whether the URL still serves something (expired upstream URLs answer 403/404)."""
        try:
            with anyio.fail_after(min(self._timeout, 15.0)):
                async with self._gate, self._open(url) as response:
                    return response.is_success
        except (TimeoutError, httpx2.HTTPError, httpx2.InvalidURL, ImageError, ForbiddenAddress):
            return False

    async def _follow(self, url: str, media: str = "image", limit: int = 0) -> tuple[bytes, str]:
        limit = limit or self._max_bytes
        async with self._open(url, media) as response:
            if response.status_code in (403, 404, 410):
                status = response.status_code
                raise ImageError(f"the {media} at {url} is gone (HTTP {status}); it has expired")
            if not response.is_success:
                raise ImageError(f"downloading {url} failed with HTTP {response.status_code}")
            declared = int(response.headers.get("content-length") or 0)
            if declared > limit:
                raise ImageError(f"the {media} at {url} is larger than the {limit / 1_000_000:g} MB limit")
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            return await self._read_capped(response, url, media, limit), content_type

    @asynccontextmanager
    async def _open(self, url: str, media: str = "image") -> AsyncIterator[httpx2.Response]:
        """GET with redirects followed by hand, so every hop is checked to be http(s)."""
        for _ in range(MAX_REDIRECTS + 1):
            _require_http(url)
            async with self._http.stream("GET", url, headers={"accept": f"{media}/*"}) as response:
                if not response.is_redirect:
                    yield response
                    return
                url = str(response.url.join(response.headers.get("location", "")))
        raise ImageError(f"too many redirects while downloading {url}")

    async def _read_capped(self, response: httpx2.Response, url: str, media: str, limit: int) -> bytes:
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise ImageError(f"the {media} at {url} is larger than the {limit / 1_000_000:g} MB limit")
            chunks.append(chunk)
        return b"".join(chunks)


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
    info: ImageInfo
    preview: Preview | None


class ImageKeeper:
    """Turns a finished result into saved files and previews, downloading each image at most once."""

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
        self._cache: dict[tuple[str, int], Picture] = {}
        self._cache_entries = cache_entries
        self._locks: dict[tuple[str, int], anyio.Lock] = {}
        self._saved: dict[tuple[str, int], str] = {}  # files saved by this process
        self._previews = PreviewCache()
        # Previews decode full images: a few at a time, not one per worker thread (40), bounds memory.
        self._cpu = anyio.CapacityLimiter(os.cpu_count() or 2)

    async def is_reachable(self, url: str) -> bool:
        return await self._downloader.reachable(url)

    async def keep(
        self, result: TaskResult, saved: dict[int, str], preview: PreviewChoice = "default"
    ) -> list[KeptImage]:
        """Save (or reuse the saved file of) every image of `result`, then preview them as chosen."""
        size = PreviewSize.chosen(preview, self._preview_size)
        if result.status is not TaskStatus.SUCCEEDED or (self._folder is None and size.side == 0):
            return [KeptImage(image, None) for image in result.images]
        pictures: dict[int, Picture | ImageError] = {}
        each = (size.side, size.per_image(len(result.images)))

        async def one(image: ImageInfo) -> None:
            pictures[image.index] = await self._picture(result, image, saved.get(image.index), each)

        async with anyio.create_task_group() as group:
            for image in result.images:
                group.start_soon(one, image)
        kept = []
        for image in result.images:
            outcome = pictures[image.index]
            if isinstance(outcome, ImageError):
                kept.append(KeptImage(image.model_copy(update={"warning": str(outcome)}), None))
            else:
                kept.append(KeptImage(image, outcome.preview))
        return kept

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
            self._remember(task_id, image.index, picture)
        return picture

    async def _picture(
        self, result: TaskResult, image: ImageInfo, saved_path: str | None, preview: tuple[int, int]
    ) -> Picture | ImageError:
        key = (result.task_id, image.index)
        # One image is fetched and saved by one call at a time: two get_task calls for the same task
        # (an assistant and the gallery, say) must not download it twice or save two copies.
        async with self._locks.setdefault(key, anyio.Lock()):
            try:
                picture = await self._saved_picture(saved_path or self._saved.get(key), preview)
                if picture is None:
                    picture = await self._download_and_save(result, image, preview)
                else:
                    image.path = saved_path or self._saved.get(key)
            except ImageError as exc:
                return exc
            except OSError as exc:
                return ImageError(f"could not save the image: {exc.strerror or exc}")
            if image.path:
                self._saved[key] = image.path
        image.width, image.height = picture.width, picture.height
        return picture

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
    ) -> Picture:
        cached = self._cache.get((result.task_id, image.index))
        data = cached.data if cached is not None else await self._downloader.fetch_bytes(image.url)
        picture = await self._decode(data, image.url, preview)
        if self._folder is None:
            self._remember(result.task_id, image.index, picture)
            return picture
        metadata = sidecar_metadata(result, image)
        stored = await anyio.to_thread.run_sync(
            partial(save, self._folder, picture, metadata, index=image.index)
        )
        image.path = str(stored.path)
        return picture

    async def _decode(self, data: bytes, source: str, preview: tuple[int, int]) -> Picture:
        """One decode checks the image and makes its preview; a few at a time bounds CPU and memory."""
        side, max_bytes = preview  # side 0: checked, not previewed
        decoded = partial(self._previews.decode, data, source, side, max_bytes)
        return await anyio.to_thread.run_sync(decoded, limiter=self._cpu)

    def _remember(self, task_id: str, index: int, picture: Picture) -> None:
        self._cache[(task_id, index)] = picture
        while len(self._cache) > self._cache_entries:
            del self._cache[next(iter(self._cache))]


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


@functools.cache
def pillow() -> None:
    """Import Pillow (at the first image, not at start) and make its decompression-bomb warning an error.

    Pillow only warns (and decodes anyway) between its two limits: a warning in a log protects nothing.
    Warning filters are process-wide in Python 3.11, so this one is set once, before the first decode.
    """
    from PIL import Image

    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def to_png(picture: Picture) -> bytes:
    """PNG bytes of a picture (the bytes themselves when it already is one)."""
    if picture.mime_type == "image/png":
        return picture.data
    pillow()
    from PIL import Image

    with Image.open(io.BytesIO(picture.data)) as image:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()


def decode(
    data: bytes, source: str, preview_side: int = 0, preview_bytes: int = PREVIEW_MAX_BYTES
) -> Picture:
    """Check that the bytes are an image Pillow can decode, in a format we save as-is.

    The declared size is checked before any pixel is decoded: a small file can declare a huge image.
    With `preview_side`, the preview is made from the same decode (decoding is most of the cost).
    """
    pillow()
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format or "", image.size
            _check_declared(fmt, width, height, source)
            if preview_side > 0:
                image.draft(None, (preview_side, preview_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            image.load()
            preview = _preview_of(image, preview_side, preview_bytes) if preview_side > 0 else None
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(_too_many_pixels(source)) from None
    except Exception:  # Pillow signals damage in many ways (OSError, SyntaxError, ValueError, …)
        raise ImageError(f"{source} is not a readable image") from None
    extension, mime_type = FORMATS[fmt]
    return Picture(data, mime_type, extension, width, height, preview)


def _check_declared(fmt: str, width: int, height: int, source: str) -> None:
    """Refuse by what the header declares, before a single pixel is decoded."""
    if fmt not in FORMATS:
        raise ImageError(f"{source} is a {fmt or 'unknown'} image; expected PNG, JPEG or WebP")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{_too_many_pixels(source)} (it declares {width}x{height})")


def _too_many_pixels(source: str) -> str:
    return (
        f"{source} is over the {MAX_PIXELS // 1_000_000}-megapixel limit (Flux images are far smaller); "
        "it was not decoded"
    )


def preview_budget(
    count: int, max_bytes: int = PREVIEW_MAX_BYTES, result_budget: int = RESULT_PREVIEW_BUDGET
) -> int:
    """Bytes (base64) one preview may take when a result has `count` images."""
    return min(max_bytes, result_budget // max(count, 1))


def _preview_of(source: Image.Image, max_side: int, max_bytes: int) -> Preview:
    """A JPEG no larger than `max_side` px whose base64 fits in `max_bytes`; shrinks until it does."""
    from PIL import Image

    image = _downscaled(source, max_side)
    side, quality = max_side, 85
    while True:
        thumbnail = image.copy()
        thumbnail.thumbnail((side, side), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        thumbnail.save(buffer, format="JPEG", quality=quality)
        encoded = buffer.getvalue()
        if _base64_size(len(encoded)) <= max_bytes or side <= 64:
            return Preview(encoded, "image/jpeg", thumbnail.width, thumbnail.height)
        if quality > 60:
            quality -= 15
        else:
            side = int(side * 0.75)


def _downscaled(image: Image.Image, side: int) -> Image.Image:
    """An RGB copy no larger than `side`: the full-size pixels are read once, by a box reduce."""
    from PIL import Image

    factor = max(image.size) // side
    if image.mode not in REDUCIBLE_MODES:
        image = image.convert("RGB")
    small = image.reduce(factor) if factor > 1 else image
    rgb = small.convert("RGB")
    rgb.thumbnail((side, side), Image.Resampling.BICUBIC)
    return rgb


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


def refused(url: str) -> str:
    """Why a download was refused, saying nothing about the network beyond the URL itself."""
    return (
        f"refusing to download {url}: its host does not resolve to a public internet address "
        "(loopback, private and link-local addresses are never fetched)"
    )


def _require_http(url: str) -> None:
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ImageError(f"refusing to download {url!r}: only http(s) URLs are fetched")


def _base64_size(raw: int) -> int:
    return 4 * ((raw + 2) // 3)
