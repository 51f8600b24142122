"""Turning the image of an edit into a URL the Flux API can fetch: check it, then upload it once.

The Flux API fetches `image_url` itself, so a local file, a data: URL or a saved image whose upstream
URL expired must first be uploaded to the AceDataCloud platform. Everything is checked before any
byte leaves the machine: a local path must lie, symlinks resolved, inside an allowed folder (the
client's MCP roots plus FLUX_MCP_INPUT_DIRS; proven on the open file, `confined`) and be a regular
file with one name (no hard links unless FLUX_MCP_ALLOW_HARD_LINKS); any file must be a PNG, JPEG or
WebP within the size and pixel caps that decodes. Over HTTP local paths are refused outright (the
server's disk is not the caller's). Each distinct content is uploaded once: the history remembers
`sha256 -> file_url` and reuses it for a day.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePath

import anyio

from flux_mcp.domain.errors import (
    FluxError,
    ImageError,
    ImageInputError,
    UploadFailedError,
    may_have_been_accepted,
)
from flux_mcp.domain.inputs import (
    ACCEPTED_FORMATS,
    MAX_INPUT_BYTES,
    FluxImage,
    LocalImage,
    RemoteImage,
    parse_image_input,
)
from flux_mcp.domain.tasks import ImageInfo
from flux_mcp.history.store import History
from flux_mcp.media.bounded import KeyedLocks
from flux_mcp.media.confined import Outside, dir_fd_supported, folder_identities, open_inside
from flux_mcp.media.images import ImageKeeper, slug
from flux_mcp.media.pictures import MAX_PIXELS, Picture, decode
from flux_mcp.upstream.platform import PlatformClient

logger = logging.getLogger(__name__)

UPLOAD_REUSE_SECONDS = 24 * 3600.0  # platform file URLs may expire: upload again after this
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer
_O_BINARY = getattr(os, "O_BINARY", 0)


@dataclass(frozen=True)
class InputPolicy:
    """Where a call may read local files from."""

    over_http: bool
    folders: Sequence[Path]  # the client's roots and FLUX_MCP_INPUT_DIRS, as given
    allow_hard_links: bool = False  # FLUX_MCP_ALLOW_HARD_LINKS


@dataclass(frozen=True)
class LocalFile:
    data: bytes
    name: str


@dataclass
class ImageSources:
    """Resolves edit inputs for one server; shared by every call so one content uploads once."""

    history: History
    keeper: ImageKeeper
    max_bytes: int = MAX_INPUT_BYTES
    _locks: KeyedLocks[tuple[str, str]] = field(default_factory=KeyedLocks)  # by (owner, content digest)

    async def url_for(
        self,
        value: str,
        policy: InputPolicy,
        *,
        platform: PlatformClient,
        find_image: Callable[[str, int], Awaitable[ImageInfo]],
        owner: str = "",
    ) -> str:
        """A URL the Flux API can fetch for `value`; ImageInputError (nothing uploaded) if refused."""
        parsed = parse_image_input(value)
        if isinstance(parsed, RemoteImage):
            return parsed.url
        if isinstance(parsed, FluxImage):
            image = await find_image(parsed.task_id, parsed.index)
            if await self.keeper.is_reachable(image.url):
                return image.url
            saved = await self._saved_file(parsed, image)
            return await self._upload(saved, platform, owner)
        if isinstance(parsed, LocalImage):
            if policy.over_http:
                raise ImageInputError(
                    "local file paths are not read over HTTP: the server's disk is not yours. Send the "
                    "image itself as a data:image/...;base64,... URL, or a public http(s) URL"
                )
            local = await anyio.to_thread.run_sync(
                partial(read_local_image, allow_hard_links=policy.allow_hard_links),
                parsed,
                list(policy.folders),
                self.max_bytes,
            )
            return await self._upload(local, platform, owner)
        return await self._upload(LocalFile(parsed.data, "image"), platform, owner)

    async def _saved_file(self, parsed: FluxImage, image: ImageInfo) -> LocalFile:
        if not image.path or not await anyio.Path(image.path).is_file():
            raise ImageInputError(
                f"{parsed.uri}: its upstream URL has expired and the image was not saved on this server "
                "(FLUX_MCP_SAVE); generate it again, or pass the image itself"
            )
        data = await anyio.Path(image.path).read_bytes()
        return LocalFile(data, Path(image.path).name)

    async def _upload(self, file: LocalFile, platform: PlatformClient, owner: str) -> str:
        picture = await anyio.to_thread.run_sync(check_image_bytes, file.data, file.name, self.max_bytes)
        digest = hashlib.sha256(file.data).hexdigest()
        async with self._locks.hold((owner, digest)):
            known = await self.history.find_upload(digest, owner, max_age=UPLOAD_REUSE_SECONDS)
            if known is not None:
                logger.info("reusing the upload of %s (sha256 %s)", file.name, digest[:12])
                return known
            filename = f"{slug(PurePath(file.name).stem)}.{picture.extension}"
            try:
                url = await platform.upload(file.data, filename, picture.mime_type)
            except FluxError as exc:
                raise UploadFailedError(upload_failure(exc, file.name)) from None
            await self.history.record_upload(digest, url, owner)
        logger.info("uploaded %s (%d bytes, sha256 %s)", file.name, len(file.data), digest[:12])
        return url


def upload_failure(exc: FluxError, name: str) -> str:
    """What happened to a failed upload, and that nothing was submitted or billed."""
    if may_have_been_accepted(exc):
        happened = f"the upload of {name} may have reached the AceDataCloud platform, but its answer was lost"
    else:
        happened = f"the upload of {name} to the AceDataCloud platform failed"
    return (
        f"{happened} ({exc.message}). Nothing was submitted to Flux and nothing was billed; uploads are "
        "free, so try the edit again."
    )


def read_local_image(
    local: LocalImage, folders: list[Path], max_bytes: int, *, allow_hard_links: bool = False
) -> LocalFile:
    """The bytes of a local file, if it is a regular file inside an allowed folder (blocking).

    The file is opened first, by a walk that proves where it is (`confined`), and read from the
    descriptor that was checked: a folder renamed or swapped for a link meanwhile cannot bring in a
    file from outside. A file with more than one name (hard links) is refused unless allowed, since
    its other name may lie anywhere on the same disk.
    """
    path = native_path(local)
    if not dir_fd_supported():
        return _read_by_path(local, path, folders, max_bytes, allow_hard_links)
    try:
        opened = open_inside(Path(path), folder_identities(folders), local.given)
    except Outside as outside:
        raise ImageInputError(_outside(local, path, folders, through_link=outside.through_link)) from None
    except OSError as exc:
        raise ImageInputError(f"cannot read {local.given}: {_reason(exc)}") from None
    try:
        _require_regular(local.given, opened.info, max_bytes)
        _require_one_name(local.given, opened.info, allow_hard_links)
        with os.fdopen(opened.fd, "rb", closefd=False) as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise ImageInputError(f"cannot read {local.given}: {_reason(exc)}") from None
    finally:
        if opened.fd >= 0:
            os.close(opened.fd)
    if len(data) > max_bytes:
        raise ImageInputError(f"{local.given} is larger than {max_bytes / 1_000_000:g} MB")
    return LocalFile(data, opened.name)


def _read_by_path(
    local: LocalImage, path: Path, folders: list[Path], max_bytes: int, allow_hard_links: bool
) -> LocalFile:
    """Where files cannot be opened relative to a folder (Windows): resolve, check, then open by name."""
    try:
        real = Path(os.path.realpath(path))
        allowed = [Path(os.path.realpath(folder.expanduser())) for folder in folders]
        if not any(real == folder or real.is_relative_to(folder) for folder in allowed):
            through_link = real != Path(os.path.normpath(path))
            raise ImageInputError(_outside(local, path, folders, through_link=through_link))
        info = os.stat(real)
    except FileNotFoundError:
        raise ImageInputError(f"there is no file at {local.given}") from None
    except OSError as exc:
        raise ImageInputError(f"cannot read {local.given}: {_reason(exc)}") from None
    _require_regular(local.given, info, max_bytes)
    _require_one_name(local.given, info, allow_hard_links)
    return LocalFile(_read_capped(real, local.given, info, max_bytes), real.name)


def native_path(local: LocalImage) -> Path:
    """The path on this machine; a Windows path on another system (or the reverse) is refused."""
    on_windows = sys.platform == "win32"
    if local.windows and not on_windows:
        raise ImageInputError(
            f"{local.given} is a Windows path, but this server runs on {sys.platform}: give the path of "
            "the file on this machine"
        )
    path = Path(str(local.path))
    return path.expanduser() if local.home_relative else path


def check_image_bytes(data: bytes, name: str, max_bytes: int = MAX_INPUT_BYTES) -> Picture:
    """A PNG, JPEG or WebP within the caps that decodes; the reason otherwise (blocking)."""
    if len(data) > max_bytes:
        raise ImageInputError(f"{name} is larger than {max_bytes / 1_000_000:g} MB")
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        raise ImageInputError(
            f"{name} is a HEIC/HEIF/AVIF photo, which flux-mcp cannot convert: export it as JPEG or PNG "
            f"first (the Flux API takes {ACCEPTED_FORMATS})"
        )
    _check_pixels(data, name)
    try:
        return decode(data, name)
    except ImageError as exc:
        raise ImageInputError(f"{exc} (the Flux API takes {ACCEPTED_FORMATS})") from None


def _check_pixels(data: bytes, name: str) -> None:
    """Refuse by the size the file declares, before any pixel is decoded, saying how to fix it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):  # see pictures.opened
        raise ImageInputError(
            f"{name} has too many pixels (at most {MAX_PIXELS / 1e6:g} megapixels)"
        ) from None
    except Exception:  # Pillow reports unreadable data in many ways
        raise ImageInputError(
            f"{name} is not an image flux-mcp can read (it takes {ACCEPTED_FORMATS})"
        ) from None
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            f"{name} is {width}x{height} ({width * height / 1e6:.0f} megapixels); at most "
            f"{MAX_PIXELS / 1e6:g} megapixels are accepted: scale it down first"
        )


def _outside(local: LocalImage, path: Path, folders: list[Path], *, through_link: bool) -> str:
    """Why the path is refused; where a link leads is not said (it may name what is outside)."""
    shown = [Path(os.path.normpath(folder.expanduser())) for folder in folders]
    where = ", ".join(str(folder) for folder in shown) or "none"
    lexical = Path(os.path.normpath(path))
    if through_link and any(lexical.is_relative_to(folder) for folder in shown):
        return (
            f"{local.given} is or goes through a link that leads outside the folders local files may come "
            f"from ({where}); nothing was uploaded"
        )
    return (
        f"{local.given} is outside the folders local files may come from ({where}). Move the file "
        "there, add its folder to FLUX_MCP_INPUT_DIRS or your client's roots, or pass a data: URL"
    )


def _reason(exc: OSError) -> str:
    """What went wrong, without the names the OS error may carry."""
    return exc.strerror or type(exc).__name__


def _require_one_name(given: str, info: os.stat_result, allow_hard_links: bool) -> None:
    if info.st_nlink > 1 and not allow_hard_links:
        raise ImageInputError(
            f"{given} has {info.st_nlink} names (hard links), and its other names may lie outside the "
            "folders local files may come from, so it is not read. Copy the file (a copy has one name), "
            "pass a data: URL, or set FLUX_MCP_ALLOW_HARD_LINKS=true"
        )


def _require_regular(given: str, info: os.stat_result, max_bytes: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise ImageInputError(f"{given} is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageInputError(f"{given} is not a regular file (a device, pipe or socket), so it is not read")
    if info.st_size > max_bytes:
        raise ImageInputError(
            f"{given} is {info.st_size / 1_000_000:.1f} MB; at most {max_bytes / 1_000_000:g} MB is accepted"
        )
    if info.st_size == 0:
        raise ImageInputError(f"{given} is empty")


def _read_capped(real: Path, given: str, checked: os.stat_result, max_bytes: int) -> bytes:
    """Read the file checked above, and only it: no link swapped in since, no growth past the cap."""
    try:
        fd = os.open(real, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
    except OSError as exc:
        raise ImageInputError(f"cannot read {given}: {_reason(exc)}") from None
    with os.fdopen(fd, "rb") as file:
        now = os.fstat(file.fileno())
        if (now.st_dev, now.st_ino) != (checked.st_dev, checked.st_ino) or not stat.S_ISREG(now.st_mode):
            raise ImageInputError(f"{given} changed while it was being read; try again")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageInputError(f"{given} is larger than {max_bytes / 1_000_000:g} MB")
    return data
