"""What the image of an edit may be, told apart without touching the disk or the network.

`edit_image.image_url` accepts five forms: a public http(s) URL (the Flux API fetches it itself),
`flux://images/{task_id}/{index}` (an image this server made), a local path (POSIX, `~/…`, or Windows
`C:\\…` and `\\\\server\\share\\…`), a `file://` URI, and a `data:image/…;base64,` URL. This module
only says which form a string is, and refuses a malformed one with the reason; `uploads.py` turns
the accepted forms into a URL the Flux API can fetch. It is pure and never raises anything but
`ImageInputError`, whatever the string: the tool schema validates with it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from urllib.parse import unquote, urlsplit

from pydantic import HttpUrl, TypeAdapter, ValidationError

from flux_mcp.domain.errors import ImageInputError

MAX_INPUT_BYTES = 20_000_000  # an image file to edit, local or inline
MAX_PATH_CHARS = 4096
# Base64 takes 4 characters per 3 bytes; the slack covers the header and line breaks.
MAX_IMAGE_URL_CHARS = 4 * (MAX_INPUT_BYTES // 3 + 1) + 64 * 1024
ACCEPTED_FORMATS = "PNG, JPEG or WebP"
FORMS = (
    "a public http(s) URL, flux://images/{task_id}/{index}, a local file path or file:// URI "
    "(stdio only), or a data:image/...;base64,... URL"
)

FLUX_IMAGE_URI = re.compile(r"^flux://images/([A-Za-z0-9_-]{1,128})/([0-9]{1,2})$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_WINDOWS_UNC = re.compile(r"^\\\\[^\\/]+[\\/][^\\/]+")
_DRIVE_IN_URI = re.compile(r"^/?([A-Za-z])[:|](/.*)?$")
_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),", re.IGNORECASE)
_BASE64_JUNK = re.compile(r"\s+")
_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


@dataclass(frozen=True)
class RemoteImage:
    """An http(s) URL, passed to the Flux API as it is."""

    url: str


@dataclass(frozen=True)
class FluxImage:
    """flux://images/{task_id}/{index}: an image from this server's history."""

    uri: str
    task_id: str
    index: int


@dataclass(frozen=True)
class LocalImage:
    """A path on the machine that runs the server; not yet looked at."""

    given: str
    path: PurePath  # PurePosixPath or PureWindowsPath, as written
    home_relative: bool = False  # ~/… : expanded where the server runs

    @property
    def windows(self) -> bool:
        return isinstance(self.path, PureWindowsPath)


@dataclass(frozen=True)
class InlineImage:
    """The bytes of a data: URL, decoded but not yet checked to be an image."""

    data: bytes
    declared_type: str


ImageInput = RemoteImage | FluxImage | LocalImage | InlineImage


def parse_image_input(value: str) -> ImageInput:
    """Which accepted form `value` is, or ImageInputError saying why it is none of them."""
    value = value.strip()
    if not value:
        raise ImageInputError(f"image_url is empty; give {FORMS}")
    if "\x00" in value:
        raise ImageInputError("image_url contains a NUL character")
    if _WINDOWS_DRIVE.match(value) or _WINDOWS_UNC.match(value):
        return _local(value, PureWindowsPath(value))
    scheme_match = _SCHEME.match(value)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme in ("http", "https"):
        return RemoteImage(_http_url(value))
    if scheme == "flux":
        return _flux_image(value)
    if scheme == "data":
        return _data_url(value)
    if scheme == "file":
        return _file_uri(value)
    if scheme:
        raise ImageInputError(f"image_url has the unsupported scheme {scheme!r}; give {FORMS}")
    return _posix_path(value)


def file_uri_path(uri: str) -> LocalImage:
    """The local path a file:// URI names (also used for the client's MCP roots)."""
    return _file_uri(uri.strip())


def _http_url(value: str) -> str:
    try:
        return str(_HTTP_URL.validate_python(value))
    except ValidationError:
        raise ImageInputError(f"{_shown(value)} is not a valid http(s) URL") from None


def _flux_image(value: str) -> FluxImage:
    match = FLUX_IMAGE_URI.match(value)
    if match is None:
        raise ImageInputError(
            f"{_shown(value)} is not an image of this server: use flux://images/{{task_id}}/{{index}}, "
            "e.g. flux://images/226eb763-9eab/0 (list_tasks shows them)"
        )
    return FluxImage(uri=value, task_id=match.group(1), index=int(match.group(2)))


def _data_url(value: str) -> InlineImage:
    match = _DATA_URL.match(value)
    if match is None:
        raise ImageInputError("a data: URL must look like data:image/png;base64,iVBORw0...")
    declared = match.group(1).strip().lower()
    parameters = [part.strip().lower() for part in match.group(2).split(";") if part.strip()]
    if not declared.startswith("image/"):
        raise ImageInputError(
            f"a data: URL must carry an image (data:image/png;base64,...), not {declared or 'text'!r}"
        )
    if "base64" not in parameters:
        raise ImageInputError("a data: URL must be base64-encoded: data:image/png;base64,...")
    payload = value[match.end() :]
    if "%" in payload:
        payload = unquote(payload)
    payload = _BASE64_JUNK.sub("", payload).replace("-", "+").replace("_", "/")
    if len(payload) > 4 * (MAX_INPUT_BYTES // 3 + 1):
        raise ImageInputError(f"the data: URL holds more than {MAX_INPUT_BYTES // 1_000_000} MB")
    payload += "=" * (-len(payload) % 4)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError("the data: URL is not valid base64") from None
    if not data:
        raise ImageInputError("the data: URL is empty")
    if len(data) > MAX_INPUT_BYTES:
        raise ImageInputError(f"the data: URL holds more than {MAX_INPUT_BYTES // 1_000_000} MB")
    return InlineImage(data=data, declared_type=declared)


def _file_uri(value: str) -> LocalImage:
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ImageInputError(f"{_shown(value)} is not a valid file:// URI") from None
    if parts.query or parts.fragment:
        raise ImageInputError("a file:// URI must not carry ?query or #fragment parts")
    host = parts.netloc.lower()
    path = unquote(parts.path)
    if "\x00" in path:
        raise ImageInputError("the file:// URI contains a NUL character")
    drive = _DRIVE_IN_URI.match(path)
    if host not in ("", "localhost"):
        # file://server/share/x.png is the Windows share \\server\share\x.png
        share = "\\\\" + parts.netloc + path.replace("/", "\\")
        if not _WINDOWS_UNC.match(share):
            raise ImageInputError(f"{_shown(value)} names a network host but no shared folder")
        return _local(value, PureWindowsPath(share))
    if drive is not None:
        return _local(value, PureWindowsPath(f"{drive.group(1)}:{drive.group(2) or '/'}"))
    if not path.startswith("/"):
        raise ImageInputError(f"{_shown(value)} is not an absolute file:// URI (file:///home/you/cat.jpg)")
    return _local(value, PurePosixPath(path))


def _posix_path(value: str) -> LocalImage:
    if value == "~" or value.startswith(("~/", "~\\")):
        return _local(value, PurePosixPath(value.replace("\\", "/")), home_relative=True)
    if value.startswith("~"):
        raise ImageInputError(
            f"{_shown(value)}: only your own home folder can be written as ~ (e.g. ~/Pictures/cat.jpg)"
        )
    if value.startswith("/"):
        return _local(value, PurePosixPath(value))
    if value.startswith(("./", "../", ".\\", "..\\")) or "/" in value or "\\" in value:
        raise ImageInputError(
            f"{_shown(value)} is a relative path, and the server's working folder is not yours: give the "
            "full path, e.g. /home/you/Pictures/cat.jpg, ~/Pictures/cat.jpg or C:\\Users\\you\\cat.jpg"
        )
    raise ImageInputError(f"{_shown(value)} is not an image reference; give {FORMS}")


def _local(given: str, path: PurePath, *, home_relative: bool = False) -> LocalImage:
    if len(str(path)) > MAX_PATH_CHARS:
        raise ImageInputError(f"the path is longer than {MAX_PATH_CHARS} characters")
    if not home_relative and not path.is_absolute():
        raise ImageInputError(f"{_shown(given)} is not an absolute path")
    return LocalImage(given=given, path=path, home_relative=home_relative)


def _shown(value: str, limit: int = 120) -> str:
    """The input as quoted in a message: never a whole data: URL."""
    return repr(value[:limit] + ("…" if len(value) > limit else ""))
