"""The upstream the benchmarks run against: the project's emulator, a static image cache, a request log.

The emulator draws every result PNG on demand (~35 ms of CPU for 1024x1024). The real API serves
finished files from a CDN, so the fake upstream's drawing is not a cost a server meets in the field;
on a small machine it would compete with the server under test. `ImageCdn` answers `/files/...`
with one PNG per pixel size, drawn once by the emulator's own `render_png` (or, with `image_size`,
every result at that one size, e.g. 64x48 to take image work out of a measurement). `RequestLog`
records every request (method, path, status), so a server calling endpoints the emulator lacks is visible.

Run as `python -m benchmarks.upstream --latency 2 [--image-size 64x48]` it serves in its own process
and prints its URL.
"""

from __future__ import annotations

import argparse
import io
import re
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from PIL import Image

from flux_mcp.emulator import EmulatorConfig, EmulatorState, create_app, serve_asgi
from flux_mcp.emulator.images import render_png

FILE_PATH = re.compile(r"^/files/([^/]+)/(\d+)\.png$")
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RequestLog:
    """Requests seen by the upstream, as 'METHOD /path status', and when each arrived (monotonic)."""

    entries: Counter[str] = field(default_factory=Counter)
    arrivals: list[tuple[float, str]] = field(default_factory=list)

    def times(self, route: str) -> list[float]:
        return [at for at, seen in self.arrivals if seen == route]

    def summary(self) -> dict[str, int]:
        return dict(sorted(self.entries.items()))


class ImageCdn:
    """ASGI middleware: serve result images from memory, one render per pixel size; log every request."""

    def __init__(
        self,
        app: Any,
        state: EmulatorState,
        log: RequestLog,
        noise: bool = False,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        self.app = app
        self.state = state
        self.log = log
        self.draw = render_noise if noise else _render_plain
        self.image_size = image_size
        self.renders: dict[tuple[int, int], bytes] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []
        self.log.arrivals.append((time.monotonic(), f"{scope['method']} {_route(scope['path'])}"))

        async def logged_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        served = await self._from_cache(scope, logged_send)
        if not served:
            await self.app(scope, receive, logged_send)
        self.log.entries[
            f"{scope['method']} {_route(scope['path'])} {status[0] if status else 'dropped'}"
        ] += 1

    async def _from_cache(self, scope: Any, send: Any) -> bool:
        match = FILE_PATH.match(scope["path"]) if scope["method"] == "GET" else None
        task = self.state.tasks.get(match.group(1)) if match else None
        if task is None or task.status != "succeeded":
            return False
        self.state.file_downloads += 1
        key = self.image_size or (task.width, task.height)
        if key not in self.renders:
            self.renders[key] = await anyio.to_thread.run_sync(self.draw, *key)
        body = _tagged(self.renders[key], match.group(1).encode() + b"/" + match.group(2).encode())
        headers = [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True


def _tagged(png: bytes, tag: bytes) -> bytes:
    """The PNG with a text chunk naming its task before IEND: every result's bytes differ, as real ones do
    (a server may remember previews by content), at no drawing cost; the pixels are the same."""
    chunk = b"tEXt" + b"flux-task\x00" + tag
    return (
        png[:-12]
        + struct.pack(">I", len(chunk) - 4)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + png[-12:]
    )


def _render_plain(width: int, height: int) -> bytes:
    return render_png(width, height, 1, "bench")


def render_noise(width: int, height: int) -> bytes:
    """The worst case for a preview's size: a colour-noise PNG that no encoder can shrink much."""
    bands = [
        Image.effect_noise((width, height), 80).point(lambda v, s=shift: (v + s) % 256)
        for shift in (0, 85, 170)
    ]
    out = io.BytesIO()
    Image.merge("RGB", bands).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _route(path: str) -> str:
    return "/files/{task}/{i}.png" if FILE_PATH.match(path) else path


@dataclass
class Upstream:
    base_url: str
    state: EmulatorState
    log: RequestLog


@asynccontextmanager
async def serve_upstream(
    config: EmulatorConfig, *, noise: bool = False, image_size: tuple[int, int] | None = None
) -> AsyncIterator[Upstream]:
    """The emulator with the image cache, on this event loop and a free loopback port."""
    state = EmulatorState(config)
    log = RequestLog()
    app = create_app(state)
    app.add_middleware(ImageCdn, state=state, log=log, noise=noise, image_size=image_size)
    async with serve_asgi(app) as base_url:
        yield Upstream(base_url, state, log)


@asynccontextmanager
async def upstream_process(latency: float, image_size: tuple[int, int] | None = None) -> AsyncIterator[str]:
    """The same upstream in its own process, so its CPU is not the server's event loop."""
    args = [sys.executable, "-m", "benchmarks.upstream", "--latency", str(latency)]
    if image_size is not None:
        args += ["--image-size", "{}x{}".format(*image_size)]
    process = await anyio.open_process(args, cwd=REPO_ROOT, stdin=None, stderr=None)
    try:
        assert process.stdout is not None
        with anyio.fail_after(20):
            line = await _first_line(process.stdout)
        yield line
    finally:
        await _stop(process)


async def _first_line(stream: anyio.abc.ByteReceiveStream) -> str:
    seen = b""
    async for chunk in stream:
        seen += chunk
        if b"\n" in seen:
            return seen.split(b"\n", 1)[0].decode().strip()
    raise RuntimeError("the upstream process exited before printing its URL")


async def _stop(process: anyio.abc.Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(5):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()


async def _serve_forever(latency: float, image_size: tuple[int, int] | None) -> None:
    async with serve_upstream(EmulatorConfig(latency=latency), image_size=image_size) as upstream:
        print(upstream.base_url, flush=True)
        await anyio.sleep_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="The benchmarks' upstream in its own process.")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--image-size", type=_pixels, default=None, help="serve every result at WxH")
    args = parser.parse_args()
    anyio.run(_serve_forever, args.latency, args.image_size)


def _pixels(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


if __name__ == "__main__":
    main()
