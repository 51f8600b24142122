"""Issue 12, items 2 and 4: image downloads reach public addresses only; image bombs are not decoded.

The "internal" service is a raw TCP listener on another loopback port that counts the connections it
accepts and would happily serve a PNG: any download that reaches it shows up in its count. The
upstream is a small hostile Flux API on loopback whose results point at that service.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any, Literal

import anyio
import httpcore2
import httpx2
import pytest
from anyio.abc import SocketAttribute, SocketStream
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from flux_mcp.domain.errors import ImageError
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import serve_asgi
from flux_mcp.media.pictures import MAX_PIXELS, Picture, decode, to_png
from flux_mcp.net.clients import build_download_client
from flux_mcp.net.downloads import Downloader
from flux_mcp.net.guard import ForbiddenAddress, GuardedBackend, refusal
from flux_mcp.server.build import build_server
from tests.support import fetch_picture, png_bytes, settings_for, structured

pytestmark = pytest.mark.anyio


@dataclass
class InternalService:
    """A service on the server's own machine that no download may reach."""

    port: int
    connections: int = 0


@pytest.fixture
async def internal() -> AsyncIterator[InternalService]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    service = InternalService(port=listener.extra(SocketAttribute.local_port))
    image = png_bytes()
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\nconnection: close\r\n"
        + f"content-length: {len(image)}\r\n\r\n".encode()
        + image
    )

    async def handle(stream: SocketStream) -> None:
        service.connections += 1
        async with stream:
            with suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()
                await stream.send(answer)

    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        yield service
        group.cancel_scope.cancel()


@pytest.fixture
async def upstream(internal: InternalService) -> AsyncIterator[str]:
    """A Flux API on loopback whose finished task points at the internal service in many spellings."""
    port = internal.port
    internal_urls = [
        f"http://127.1:{port}/a.png",
        f"http://0x7f.1:{port}/b.png",
        f"http://[::ffff:127.0.0.1]:{port}/c.png",
    ]

    async def task(request: Request) -> JSONResponse:
        own = str(request.base_url).rstrip("/") + "/real.png"
        data = [{"image_url": url, "seed": 1} for url in [*internal_urls, own]]
        record = {
            "id": "t-internal",
            "finished_at": "2026-01-01T00:00:10Z",
            "request": {"prompt": "x", "model": "flux-dev", "count": 4},
            "response": {"success": True, "task_id": "t-internal", "data": data},
        }
        return JSONResponse(record)

    routes = [
        Route("/flux/images", lambda request: JSONResponse({"task_id": "t-internal"}), methods=["POST"]),
        Route("/flux/tasks", task, methods=["POST"]),
        Route("/real.png", lambda request: Response(png_bytes(), media_type="image/png")),
        Route("/hop", lambda request: RedirectResponse(f"http://127.0.0.1:{port}/x.png", status_code=302)),
    ]
    async with serve_asgi(Starlette(routes=routes)) as base_url:
        yield base_url


async def with_downloader(settings: Settings, use: Callable[[Downloader], Awaitable[Any]]) -> Any:
    async with build_download_client(settings) as http:
        return await use(Downloader(http, anyio.CapacityLimiter(4), max_bytes=1_000_000, timeout=10))


# --- item 2: downloads go only where they may --------------------------------------------------------


INTERNAL_SPELLINGS = [
    "http://127.0.0.1:{port}/x.png",
    "http://127.1:{port}/x.png",
    "http://0x7f.1:{port}/x.png",
    "http://0x7f000001:{port}/x.png",
    "http://2130706433:{port}/x.png",
    "http://[::ffff:127.0.0.1]:{port}/x.png",
    "http://[::ffff:7f00:1]:{port}/x.png",
    "http://[::1]:{port}/x.png",
    "http://localhost:{port}/x.png",
    "http://LOCALHOST.:{port}/x.png",
    "http://0.0.0.0:{port}/x.png",
    "http://0:{port}/x.png",
]


@pytest.mark.parametrize("spelling", INTERNAL_SPELLINGS)
async def test_no_spelling_of_a_loopback_address_is_fetched(
    upstream: str, internal: InternalService, spelling: str
) -> None:
    url = spelling.format(port=internal.port)

    async def attempt(downloader: Downloader) -> bool:
        with pytest.raises(ImageError, match="refusing to download") as refused:
            await fetch_picture(downloader, url)
        assert str(refused.value).startswith(f"refusing to download {url}: ")
        return await downloader.reachable(url)

    assert await with_downloader(settings_for(upstream), attempt) is False
    assert internal.connections == 0


async def test_a_redirect_from_the_upstream_to_an_internal_port_is_refused(
    upstream: str, internal: InternalService
) -> None:
    async def attempt(downloader: Downloader) -> None:
        with pytest.raises(ImageError, match=r"refusing to download http://127\.0\.0\.1"):
            await fetch_picture(downloader, upstream + "/hop")

    await with_downloader(settings_for(upstream), attempt)
    assert internal.connections == 0


async def test_only_the_upstreams_exact_origin_is_trusted(upstream: str, internal: InternalService) -> None:
    port = httpx2.URL(upstream).port
    other_spellings = [f"http://localhost:{port}/real.png", f"https://127.0.0.1:{port}/real.png"]

    async def attempt(downloader: Downloader) -> None:
        picture = await fetch_picture(
            downloader, upstream + "/real.png"
        )  # the emulator and sandbox serve here
        assert (picture.width, picture.height) == (32, 32)
        for url in other_spellings:  # same service, but not the configured origin
            with pytest.raises(ImageError, match="refusing to download"):
                await fetch_picture(downloader, url)

    await with_downloader(settings_for(upstream), attempt)


async def test_private_downloads_can_be_allowed_explicitly(upstream: str, internal: InternalService) -> None:
    url = f"http://127.0.0.1:{internal.port}/x.png"

    async def attempt(downloader: Downloader) -> tuple[int, int]:
        picture = await fetch_picture(downloader, url)
        return picture.width, picture.height

    settings = settings_for(upstream, allow_private_downloads=True)
    assert await with_downloader(settings, attempt) == (32, 32)
    assert internal.connections == 1


async def test_a_result_pointing_inside_gets_a_warning_per_image(
    upstream: str, internal: InternalService
) -> None:
    async with Client(build_server(settings_for(upstream))) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "count": 4})
    images = structured(result)["images"]
    assert not result.is_error and len(images) == 4
    for image in images[:3]:
        assert image["path"] is None
        assert image["warning"].startswith(f"refusing to download {image['url']}: ")
        assert "does not resolve to a public internet address" in image["warning"]
    assert images[3]["warning"] is None and images[3]["path"]  # the upstream's own file is kept
    assert internal.connections == 0


async def test_downloads_ignore_proxies_from_the_environment(
    upstream: str, internal: InternalService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would make its own connection, where the address rule cannot follow.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{internal.port}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{internal.port}")

    async def attempt(downloader: Downloader) -> None:
        await fetch_picture(downloader, upstream + "/real.png")
        with pytest.raises(ImageError, match="refusing"):
            await fetch_picture(downloader, "http://10.0.0.1/x.png")

    await with_downloader(settings_for(upstream), attempt)
    assert internal.connections == 0


# --- the guarded connection: one lookup, the checked address, every answer public ----------------------


@dataclass
class RecordingBackend(httpcore2.AsyncNetworkBackend):
    """Records where it was asked to connect and connects nowhere (no test touches the internet)."""

    asked: list[str] = field(default_factory=list)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        self.asked.append(host)
        raise httpcore2.ConnectError("not connecting in a test")


def rebinding(*answers: list[str]) -> tuple[Callable[[str, int], Awaitable[list[str]]], list[str]]:
    """A resolver that answers differently each time it is asked (the DNS-rebinding attacker)."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    return resolve, asked


async def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    resolve, lookups = rebinding(["93.184.215.14"], ["127.0.0.1"])
    inner = RecordingBackend()
    with pytest.raises(httpcore2.ConnectError):
        await GuardedBackend(inner, resolver=resolve).connect_tcp("images.example", 443, timeout=5)
    assert lookups == ["images.example"] and inner.asked == ["93.184.215.14"]


@pytest.mark.parametrize(
    "answer",
    [
        ["93.184.215.14", "127.0.0.1"],
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["fd00::1"],
        ["::ffff:192.168.1.1"],
        [],
    ],
)
async def test_a_name_with_any_internal_answer_is_refused_before_connecting(answer: list[str]) -> None:
    resolve, _ = rebinding(answer)
    inner = RecordingBackend()
    with pytest.raises(ForbiddenAddress):
        await GuardedBackend(inner, resolver=resolve).connect_tcp("images.example", 443, timeout=5)
    assert inner.asked == []


# --- the address rule itself, against an independent table ------------------------------------------

MUST_REFUSE = [
    IPv4Network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/29",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
# Every special-purpose block (IANA registry), so that anything outside it must be allowed.
SPECIAL = [*MUST_REFUSE, IPv4Network("192.0.0.0/24"), IPv4Network("192.88.99.0/24")]


def ipv6_forms(address: IPv4Address) -> list[IPv6Address]:
    """Ways to write an IPv4 destination as IPv6: mapped, compatible, NAT64 and 6to4."""
    value = int(address)
    return [
        IPv6Address((0xFFFF << 32) | value),
        IPv6Address(value),
        IPv6Address((0x64FF9B << 96) | value),
        IPv6Address((0x2002 << 112) | (value << 80) | 1),
    ]


@given(st.sampled_from(MUST_REFUSE).flatmap(lambda net: st.integers(int(net[0]), int(net[-1]))))
@settings(max_examples=500, deadline=None)
def test_every_internal_ipv4_address_is_refused_in_every_form(value: int) -> None:
    address = IPv4Address(value)
    assert refusal(address) is not None
    for form in ipv6_forms(address):
        assert refusal(form) is not None, form


PUBLIC_V4 = (
    st.tuples(st.integers(1, 223), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
    .map(lambda octets: int(IPv4Address(".".join(map(str, octets)))))
    .filter(lambda value: not any(IPv4Address(value) in network for network in SPECIAL))
)


@given(PUBLIC_V4)
@settings(max_examples=500, deadline=None)
def test_every_public_ipv4_address_is_allowed_also_through_nat64(value: int) -> None:
    address = IPv4Address(value)
    assert refusal(address) is None
    assert refusal(IPv6Address((0x64FF9B << 96) | value)) is None  # how IPv6-only networks reach it


@pytest.mark.parametrize(
    "address", ["::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "2001:db8::1"]
)
def test_internal_ipv6_addresses_are_refused(address: str) -> None:
    assert refusal(IPv6Address(address)) is not None


@pytest.mark.parametrize("address", ["2606:4700:4700::1111", "2a00:1450:4001::200e", "2002:808:808::1"])
def test_public_ipv6_addresses_are_allowed(address: str) -> None:
    assert refusal(IPv6Address(address)) is None


@given(st.sampled_from(MUST_REFUSE).flatmap(lambda net: st.integers(int(net[0]), int(net[-1]))))
@settings(max_examples=50, deadline=None)
async def test_numeric_spellings_resolve_to_a_refusal(value: int) -> None:
    spellings = [str(IPv4Address(value)), str(value), hex(value), f"[::ffff:{IPv4Address(value)}]"]
    backend = GuardedBackend(RecordingBackend())
    for spelling in spellings:
        with pytest.raises(ForbiddenAddress):
            await backend.connect_tcp(spelling.strip("[]"), 80, timeout=5)


# --- item 4: decompression bombs ------------------------------------------------------------------


def declared_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with a few rows of pixel data: a bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 16, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.parametrize("application_filter", ["default", "error", "ignore"])  # of Pillow's bomb warning
@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (7_000, 7_000), (40_001, 1_000)])
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(
    decodes: list[tuple[int, int]],
    width: int,
    height: int,
    application_filter: Literal["default", "error", "ignore"],
) -> None:
    warnings.simplefilter(application_filter, Image.DecompressionBombWarning)  # pytest restores the filters
    bomb = declared_png(width, height)
    assert len(bomb) < 200_000 and width * height > MAX_PIXELS
    with pytest.raises(ImageError, match=r"over the 40-megapixel limit.*not decoded"):
        decode(bomb, "bomb.png", 512)
    assert decodes == []


def test_a_png_conversion_checks_the_declared_size_first(decodes: list[tuple[int, int]]) -> None:
    bomb = Picture(declared_png(10_000, 10_000), "image/webp", "webp", 64, 48)  # as if it were a saved WebP
    with pytest.raises(ImageError, match="40-megapixel limit"):
        to_png(bomb)
    assert decodes == []


@pytest.mark.subprocess
def test_decoding_changes_no_process_wide_setting(tmp_path: Path) -> None:
    # A fresh interpreter, as an application embedding flux-mcp runs it: its warning filters and
    # Pillow's limits are the same after images (a bomb among them) were checked as before.
    assert Image.MAX_IMAGE_PIXELS is not None and MAX_PIXELS < Image.MAX_IMAGE_PIXELS
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(declared_png(10_000, 10_000))
    (tmp_path / "ok.png").write_bytes(png_bytes(64, 48))
    script = (
        "import sys, pathlib, warnings\n"
        "from PIL import Image\n"
        "before = (list(warnings.filters), Image.MAX_IMAGE_PIXELS)\n"
        "from flux_mcp.domain.errors import ImageError\n"
        "from flux_mcp.media.pictures import decode\n"
        "decode(pathlib.Path(sys.argv[2]).read_bytes(), 'ok.png', 16)\n"
        "try:\n"
        "    decode(pathlib.Path(sys.argv[1]).read_bytes(), 'bomb.png', 16)\n"
        "except ImageError:\n"
        "    print('refused')\n"
        "print((list(warnings.filters), Image.MAX_IMAGE_PIXELS) == before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(bomb), str(tmp_path / "ok.png")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["refused", "True"], done.stderr


def test_an_image_within_the_limit_is_still_decoded(decodes: list[tuple[int, int]]) -> None:
    picture = decode(png_bytes(64, 48), "ok.png", 16)
    assert (picture.width, picture.height) == (64, 48) and decodes == [(64, 48)]
    assert picture.preview is not None and max(picture.preview.width, picture.preview.height) == 16


def test_a_jpeg_preview_is_decoded_at_reduced_scale(decodes: list[tuple[int, int]]) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4096, 2048), "navy").save(buffer, format="JPEG")
    picture = decode(buffer.getvalue(), "big.jpg", 512)
    assert (picture.width, picture.height) == (4096, 2048)  # the file's size, not the decoded one
    assert picture.preview is not None and (picture.preview.width, picture.preview.height) == (512, 256)
    assert decodes == [(1024, 512)]  # an eighth of the pixels of a full decode, never 4096 x 2048
