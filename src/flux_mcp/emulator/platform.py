"""The emulated AceDataCloud platform beside the Flux API: file uploads, the balance, prices.

    POST /api/v1/files/                 multipart field `file` -> {"file_url", ...}; bearer, size cap
    GET  /files/uploads/{id}/{name}     serves an uploaded file back (what the Flux API fetches)
    GET  /api/v1/applications/          {"count", "items": [...]} with remaining_amount / used_amount

Generation is charged here too: each image costs `image_price` credits, a submission the balance
cannot pay is answered 403 `used_up`, and results carry `cost` and `usage`. Every upload is recorded,
so tests count uploads from the upstream's side, not from the server's word.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .faults import DroppedConnection

if TYPE_CHECKING:
    from .app import EmulatorRuntime

FLUX_SERVICE = {"id": "b1f0a3c2-flux-service", "alias": "flux", "title": "Flux", "unit": "credit"}
OTHER_SERVICE = {"id": "c2e1b4d3-mj-service", "alias": "midjourney", "title": "Midjourney", "unit": "credit"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Upload:
    """One file the platform took."""

    id: str
    filename: str
    content_type: str
    data: bytes
    token: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class PlatformState:
    """The account behind the token: its balance, prices, and the files it uploaded."""

    balance: float = 1_000_000.0
    image_price: float = 0.5
    list_price: float = 0.6
    report_cost: bool = True
    max_upload_bytes: int = 25_000_000
    used: float = 0.0
    uploads: dict[str, Upload] = field(default_factory=dict)
    upload_requests: int = 0  # every POST to the upload endpoint, accepted or not
    upload_downloads: int = 0
    application_lookups: int = 0

    def charge(self, images: int) -> dict[str, Any] | None:
        """Take the price of `images` from the balance: the result's `cost`, or None if it cannot pay."""
        amount = round(self.image_price * images, 6)
        if amount > self.balance + 1e-9:
            return None
        self.balance = round(self.balance - amount, 6)
        self.used = round(self.used + amount, 6)
        return {"amount": amount, "currency": "credit", "list_amount": round(self.list_price * images, 6)}

    def reset_counters(self) -> None:
        self.upload_requests = self.upload_downloads = self.application_lookups = 0


def platform_routes(runtime: EmulatorRuntime) -> list[Route]:
    endpoints = PlatformEndpoints(runtime)
    return [
        Route("/api/v1/files/", endpoints.upload, methods=["POST"]),
        Route("/files/uploads/{upload_id}/{name}", endpoints.uploaded_file, methods=["GET"]),
        Route("/api/v1/applications/", endpoints.applications, methods=["GET"]),
    ]


class PlatformEndpoints:
    def __init__(self, runtime: EmulatorRuntime) -> None:
        self.runtime = runtime

    @property
    def platform(self) -> PlatformState:
        return self.runtime.state.platform

    async def upload(self, request: Request) -> Response:
        runtime, platform = self.runtime, self.platform
        platform.upload_requests += 1
        token = runtime._note_token(request)
        fault = await runtime._take_fault("uploads")
        if fault is not None and fault.kind != "drop_after":
            return runtime._fault_response(fault)
        if (denied := runtime._check_auth(token)) is not None:
            return denied
        assert token is not None
        body = await _read_capped(request, platform.max_upload_bytes)
        if body is None:
            limit = platform.max_upload_bytes // 1_000_000
            return runtime._error(413, "file_too_large", f"the file is larger than {limit} MB")
        file = await _form_file(request, body)
        if file is None:
            return runtime._error(400, "bad_request", "a multipart field 'file' is required")
        data = await file.read()
        if not data:
            return runtime._error(400, "bad_request", "the file is empty")
        if len(data) > platform.max_upload_bytes:
            limit = platform.max_upload_bytes // 1_000_000
            return runtime._error(413, "file_too_large", f"the file is larger than {limit} MB")
        upload = Upload(
            id=uuid.uuid4().hex,
            filename=_SAFE_NAME.sub("_", file.filename or "upload")[:80] or "upload",
            content_type=file.content_type or "application/octet-stream",
            data=data,
            token=token,
        )
        platform.uploads[upload.id] = upload
        base = str(request.base_url).rstrip("/")
        answer = JSONResponse(
            {
                "id": upload.id,
                "file_url": f"{base}/files/uploads/{upload.id}/{upload.filename}",
                "filename": upload.filename,
                "size": len(data),
                "content_type": upload.content_type,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        if fault is not None:  # drop_after: the file is taken, the answer lost
            return DroppedConnection(runtime, cut_body=bytes(answer.body))
        return answer

    async def uploaded_file(self, request: Request) -> Response:
        self.platform.upload_downloads += 1
        upload = self.platform.uploads.get(request.path_params["upload_id"])
        if upload is None or upload.filename != request.path_params["name"]:
            return self.runtime._error(404, "not_found", "file not found")
        return Response(upload.data, media_type=upload.content_type)

    async def applications(self, request: Request) -> Response:
        runtime, platform = self.runtime, self.platform
        platform.application_lookups += 1
        token = runtime._note_token(request)
        fault = await runtime._take_fault("applications")
        if fault is not None:
            return runtime._fault_response(fault)
        if (denied := runtime._check_auth(token)) is not None:
            return denied
        flux = _application(FLUX_SERVICE, platform.balance, platform.used)
        other = _application(OTHER_SERVICE, 12.5, 0.0)
        return JSONResponse({"count": 2, "items": [flux, other]})


def render_edit_png(source: bytes, width: int, height: int, prompt: str) -> bytes:
    """The "edited" image: the input scaled to the output size with the prompt's first words on it."""
    from .images import caption

    with Image.open(io.BytesIO(source)) as original:
        image = original.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    caption(image, prompt)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def input_dimensions(source: bytes, long_side: int) -> tuple[int, int]:
    """The input's aspect ratio at `long_side` pixels on its longer side."""
    with Image.open(io.BytesIO(source)) as image:
        width, height = image.size
    scale = long_side / max(width, height, 1)
    return max(8, round(width * scale)), max(8, round(height * scale))


def _application(service: dict[str, str], remaining: float, used: float) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, service["alias"])),
        "type": "Usage",
        "scope": "Individual",
        "service_id": service["id"],
        "service": dict(service),
        "remaining_amount": remaining,
        "used_amount": used,
        "created_at": "2026-01-01T00:00:00Z",
    }


async def _read_capped(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + 64 * 1024:  # the multipart framing around the file
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _form_file(request: Request, body: bytes) -> UploadFile | None:
    """The `file` field of a multipart body already read (and size-checked)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
    except Exception:  # a malformed multipart body
        return None
    file = form.get("file")
    return file if isinstance(file, UploadFile) else None


class EditInputError(Exception):
    """The edit's image_url could not be fetched or is not an image."""


def is_loopback_url(url: str) -> bool:
    """Only loopback URLs are fetched: the emulator is a test upstream and never reaches the internet."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def fetch_edit_input(http: httpx2.AsyncClient, url: str, limit: int) -> bytes:
    """The image at a loopback `url`, as the real API downloads an edit's input."""
    try:
        async with http.stream("GET", url) as response:
            if not response.is_success:
                raise EditInputError(f"image_url answered HTTP {response.status_code}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise EditInputError("image_url is too large")
                chunks.append(chunk)
    except httpx2.HTTPError as exc:
        raise EditInputError(f"image_url could not be fetched ({type(exc).__name__})") from None
    data = b"".join(chunks)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:
        raise EditInputError("image_url is not an image") from None
    return data
