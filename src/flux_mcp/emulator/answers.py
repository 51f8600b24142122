"""How the emulated API words its answers: JSON bodies, the error envelope, ids and header values."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = "not_found" if status == 404 else "method_not_allowed" if status == 405 else "api_error"
    body = {"success": False, "error": {"code": code, "message": f"HTTP {status}"}, "trace_id": new_id()}
    return JSONResponse(body, status_code=status)


def json_bytes(content: Any) -> bytes:
    return json.dumps(content, separators=(",", ":")).encode()


def seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def new_id() -> str:
    return str(uuid.uuid4())
