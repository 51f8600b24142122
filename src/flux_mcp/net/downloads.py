"""Downloads of result images: bounded in size and time, through the guarded client, each redirect checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2

from flux_mcp.domain.errors import ImageError
from flux_mcp.domain.telemetry import NO_OBSERVER, Observer
from flux_mcp.net.guard import ForbiddenAddress

MAX_REDIRECTS = 5


class Downloader:
    """Fetches images: never sends credentials, never trusts the host.

    `http` is the client from `clients.build_download_client`, whose connections reach only public
    addresses; redirects are followed here, one checked hop at a time.
    """

    def __init__(
        self,
        http: httpx2.AsyncClient,
        gate: anyio.CapacityLimiter,
        *,
        max_bytes: int,
        timeout: float,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._http = http
        self._observer = observer
        self._gate = gate
        self._max_bytes = max_bytes
        self._timeout = timeout

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
            self._observer.download_refused()
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
        except ForbiddenAddress:
            self._observer.download_refused()
            return False
        except (TimeoutError, httpx2.HTTPError, httpx2.InvalidURL, ImageError):
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
