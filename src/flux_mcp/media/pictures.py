"""Image bytes checked and decoded, and their previews: Pillow, imported at the first image, not at start.

Every decode starts from `opened`: the size an image declares is checked against MAX_PIXELS before a
single pixel is decoded. That check is the guard against decompression bombs; it changes no process-wide
state (no warning filter, no Pillow limit), so it holds whatever the embedding application has set.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flux_mcp.domain.errors import ImageError

if TYPE_CHECKING:
    from PIL import Image

PREVIEW_MAX_BYTES = 150_000  # each preview, base64-encoded as it travels
# Flux's largest outputs are about 4 megapixels; 40 keeps room for any model to come while refusing
# decompression bombs long before Pillow's own limit (89 Mpx only warns, 179 Mpx refuses), which lets
# a 94 KB PNG decode to almost 1 GB. Any image Pillow would warn about is refused here before load().
MAX_PIXELS = 40_000_000
REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA"}
FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp")}


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


def to_png(picture: Picture) -> bytes:
    """PNG bytes of a picture (the bytes themselves when it already is one)."""
    if picture.mime_type == "image/png":
        return picture.data
    with opened(picture.data, "the image") as image:
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
    with opened(data, source) as image:
        fmt, (width, height) = image.format or "", image.size
        if preview_side > 0:
            image.draft(None, (preview_side, preview_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
        image.load()
        preview = preview_of(image, preview_side, preview_bytes) if preview_side > 0 else None
    extension, mime_type = FORMATS[fmt]
    return Picture(data, mime_type, extension, width, height, preview)


@contextmanager
def opened(data: bytes, source: str) -> Iterator[Image.Image]:
    """The image, opened with its declared format and size checked and no pixel decoded yet.

    Whatever goes wrong inside, up to the last pixel decoded, is an ImageError saying why.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_declared(image.format or "", *image.size, source)
            yield image
    except ImageError:
        raise
    # Pillow's own bomb check: an error past its upper limit, and past its lower one a warning, raised
    # only where the embedding application made warnings errors (a server's tests often do).
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(_too_many_pixels(source)) from None
    except Exception:  # Pillow signals damage in many ways (OSError, SyntaxError, ValueError, …)
        raise ImageError(f"{source} is not a readable image") from None


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


def preview_of(source: Image.Image, max_side: int, max_bytes: int) -> Preview:
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


def _base64_size(raw: int) -> int:
    return 4 * ((raw + 2) // 3)
