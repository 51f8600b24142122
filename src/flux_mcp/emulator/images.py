"""Real, cheap PNGs for emulated results: seed-coloured gradient blocks with the prompt written on them."""

from __future__ import annotations

import io
import random
from collections import OrderedDict

from PIL import Image, ImageDraw, ImageFont

PROMPT_CHARS = 40
_GRID = 4


def render_png(width: int, height: int, seed: int, prompt: str) -> bytes:
    """Draw a `width`x`height` PNG that depends only on its arguments (blocking; run it in a thread)."""
    rng = random.Random(seed)
    grid = Image.new("RGB", (_GRID, _GRID))
    grid.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(_GRID * _GRID)])
    # Bilinear upscaling of a tiny grid gives a smooth gradient for almost no CPU.
    image = grid.resize((width, height), Image.Resampling.BILINEAR)
    caption(image, prompt)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def caption(image: Image.Image, prompt: str) -> None:
    """Write the prompt's first words in a black box at the top left."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    font_size = max(10, min(width, height) // 24)
    font = ImageFont.load_default(size=font_size)
    text = prompt[:PROMPT_CHARS]
    margin = max(4, font_size // 2)
    left, top, right, bottom = draw.textbbox((margin, margin), text, font=font)
    pad = margin // 2
    draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill="black")
    draw.text((margin, margin), text, fill="white", font=font)


class PngCache:
    """A small LRU of rendered PNG bytes keyed by (task_id, index)."""

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def get(self, key: tuple[str, int]) -> bytes | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, key: tuple[str, int], data: bytes) -> None:
        self._entries[key] = data
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
