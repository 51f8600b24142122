"""The emulated Flux REST API as a Starlette app: /flux/images, /flux/tasks, /files and /healthz."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import anyio
import anyio.to_thread
import httpx2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .faults import ERROR_FAULTS, DroppedConnection, broken_answer
from .images import PngCache, render_png
from .platform import (
    EditInputError,
    fetch_edit_input,
    input_dimensions,
    is_loopback_url,
    platform_routes,
    render_edit_png,
)
from .state import EmulatorState, Endpoint, Fault, TaskRead, TaskRecord
from .validation import BadRequest, ImageRequest, pixel_dimensions, validate_image_request
from .videos import ACTIONS_UNAVAILABLE, VideoJob, render_mp4, validate_video_request, video_shape

logger = logging.getLogger(__name__)

CALLBACK_TIMEOUT = 10.0


def create_app(state: EmulatorState | None = None) -> Starlette:
    """Build the emulator app around `state` (a fresh one if omitted); `app.state.emulator` is the state."""
    runtime = EmulatorRuntime(state if state is not None else EmulatorState())
    app = Starlette(
        routes=[
            Route("/healthz", runtime.healthz, methods=["GET"]),
            Route("/flux/images", runtime.images, methods=["POST"]),
            Route("/flux/videos", runtime.videos, methods=["POST"]),
            Route("/flux/tasks", runtime.tasks, methods=["POST"]),
            Route("/files/{task_id}/{index:int}.png", runtime.file, methods=["GET"]),
            Route("/files/videos/{task_id}/{index:int}.mp4", runtime.video_file, methods=["GET"]),
            *platform_routes(runtime),
        ],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.emulator = runtime.state
    app.state.runtime = runtime
    return app


class EmulatorRuntime:
    """Request handlers plus what lives beside the state at run time: PNG cache, callback timers."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.png_cache = PngCache()
        self.server_state: Any = None
        self._background: set[asyncio.Task[None]] = set()
        self._http: httpx2.AsyncClient | None = None
        self._closing = asyncio.Event()

    def attach(self, server_state: Any) -> None:
        """Called by the runner: uvicorn's connection table lets a deliberate drop reach the socket."""
        self.server_state = server_state
        self._closing.clear()

    def begin_shutdown(self) -> None:
        """Make requests that are still waiting (blocking calls, `slow` faults) give up at once."""
        self._closing.set()

    async def aclose(self) -> None:
        """Cancel pending callback timers and close the callback client."""
        pending = list(self._background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- endpoints ---------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def images(self, request: Request) -> Response:
        state = self.state
        state.submissions += 1
        token = self._note_token(request)
        fault = await self._take_fault("images")
        if fault is not None and fault.kind not in ("500", "drop_after", "fail_task"):
            return self._fault_response(fault)
        if (denied := self._check_auth(token)) is not None:
            return denied
        body = await _json_body(request)
        try:
            parsed = validate_image_request(body)
        except BadRequest as exc:
            return self._error(400, "bad_request", str(exc))
        assert isinstance(body, dict)
        try:
            source = await self._edit_input(parsed)
        except EditInputError as exc:
            return self._error(400, "bad_request", str(exc))
        if (cost := state.platform.charge(parsed.count)) is None:
            return self._error(403, "used_up", "the balance of this application is used up")
        force_failure = fault is not None and fault.kind == "fail_task"
        task = self._accept(request, body, parsed, force_failure=force_failure)
        task.source_image = source
        if source is not None and body.get("size") is None:  # an edit without a size keeps the input's shape
            task.width, task.height = input_dimensions(source, state.config.image_long_side)
        task.cost = cost if state.platform.report_cost else None

        if fault is not None and fault.kind == "500":
            return self._error(500, "api_error", "fetch failed", trace_id=task.trace_id)
        if fault is not None and fault.kind == "drop_after":
            return DroppedConnection(self, cut_body=_json_bytes({"task_id": task.id}))
        if parsed.is_async or parsed.callback_url:
            return JSONResponse({"task_id": task.id})
        if not await self._wait_until(task.finish_monotonic):
            return DroppedConnection(self, cut_body=None)
        return JSONResponse(task.result(), status_code=500 if task.failed else 200)

    async def videos(self, request: Request) -> Response:
        """POST /flux/videos: the same faults, auth, charging and async/callback rules as images."""
        state = self.state
        state.submissions += 1
        state.video_submissions += 1
        token = self._note_token(request)
        fault = await self._take_fault("videos")
        if fault is not None and fault.kind not in ("500", "drop_after", "fail_task"):
            return self._fault_response(fault)
        if (denied := self._check_auth(token)) is not None:
            return denied
        body = await _json_body(request)
        if isinstance(body, dict) and body.get("action") in ACTIONS_UNAVAILABLE:  # as upstream: no charge
            return self._error(503, "service_unavailable", f"video {body['action']} is not available yet")
        try:
            job = validate_video_request(body, known_draft=self._is_finished_draft)
        except BadRequest as exc:
            return self._error(400, "bad_request", str(exc))
        assert isinstance(body, dict)
        if (cost := state.platform.charge(1)) is None:
            return self._error(403, "used_up", "the balance of this application is used up")
        force_failure = fault is not None and fault.kind == "fail_task"
        task = self._accept_video(request, body, job, force_failure=force_failure)
        task.cost = cost if state.platform.report_cost else None
        if fault is not None and fault.kind == "500":
            return self._error(500, "api_error", "fetch failed", trace_id=task.trace_id)
        if fault is not None and fault.kind == "drop_after":
            return DroppedConnection(self, cut_body=_json_bytes({"task_id": task.id}))
        if job.is_async or job.callback_url:
            return JSONResponse({"task_id": task.id})
        if not await self._wait_until(task.finish_monotonic):
            return DroppedConnection(self, cut_body=None)
        return JSONResponse(task.result(), status_code=500 if task.failed else 200)

    async def tasks(self, request: Request) -> Response:
        state = self.state
        state.polls += 1
        token = self._note_token(request)
        body = await _json_body(request)
        state.task_reads.append(TaskRead.of(time.monotonic(), token, body))  # faulted ones too
        fault = await self._take_fault("tasks")
        if fault is not None and fault.kind not in ("drop_after", "fail_task"):
            return self._fault_response(fault)
        if (denied := self._check_auth(token)) is not None:
            return denied
        if not isinstance(body, dict):
            return self._error(400, "bad_request", "request body must be a JSON object")
        action = body.get("action")
        response: Response
        if action == "retrieve":
            task_id = body.get("id")
            if not isinstance(task_id, str) or not task_id:
                return self._error(400, "bad_request", "id must be a non-empty string")
            task = state.find_task(task_id, _base_url(request))
            if task is None:
                return self._error(404, "not_found", "task not found")
            response = JSONResponse(task.record())
        elif action == "retrieve_batch":
            state.batch_polls += 1
            ids = body.get("ids")
            if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
                return self._error(400, "bad_request", "ids must be a list of task id strings")
            now = time.monotonic()
            found = [state.find_task(item, _base_url(request)) for item in ids]
            items = [task.record(now) for task in found if task is not None]
            response = JSONResponse({"items": items, "count": len(items)})
        else:
            return self._error(400, "bad_request", "action must be 'retrieve' or 'retrieve_batch'")
        if fault is not None and fault.kind == "drop_after":
            return DroppedConnection(self, cut_body=bytes(response.body))
        return response

    async def file(self, request: Request) -> Response:
        self.state.file_downloads += 1
        fault = await self._take_fault("files")
        if fault is not None and fault.kind not in ("drop_after", "fail_task"):
            return self._fault_response(fault)
        task_id: str = request.path_params["task_id"]
        index: int = request.path_params["index"]
        task = self.state.find_task(task_id, _base_url(request))
        if task is None or index >= task.count or task.status != "succeeded":
            return self._error(404, "not_found", "file not found")
        key = (task_id, index)
        data = self.png_cache.get(key)
        if data is None:
            if task.source_image is not None:
                data = await anyio.to_thread.run_sync(
                    render_edit_png, task.source_image, task.width, task.height, task.prompt
                )
            else:
                data = await anyio.to_thread.run_sync(
                    render_png, task.width, task.height, task.seeds[index], task.prompt
                )
            self.png_cache.put(key, data)
        if fault is not None and fault.kind == "drop_after":
            return DroppedConnection(self, cut_body=data, media_type="image/png")
        return Response(data, media_type="image/png", headers={"cache-control": "public, max-age=86400"})

    async def video_file(self, request: Request) -> Response:
        self.state.file_downloads += 1
        fault = await self._take_fault("files")
        if fault is not None and fault.kind not in ("drop_after", "fail_task"):
            return self._fault_response(fault)
        task_id: str = request.path_params["task_id"]
        task = self.state.find_task(task_id, _base_url(request))
        video = task.video if task is not None else None
        if task is None or video is None or request.path_params["index"] != 0 or task.status != "succeeded":
            return self._error(404, "not_found", "file not found")
        key = (f"video:{task_id}", 0)
        data = self.png_cache.get(key)
        if data is None:
            data = await anyio.to_thread.run_sync(
                render_mp4, video.seconds, video.width, video.height, task.seeds[0], task.prompt
            )
            self.png_cache.put(key, data)
        if fault is not None and fault.kind == "drop_after":
            return DroppedConnection(self, cut_body=data, media_type="video/mp4")
        return Response(data, media_type="video/mp4", headers={"cache-control": "public, max-age=86400"})

    # -- helpers -----------------------------------------------------------------------------------

    def _is_finished_draft(self, task_id: Any) -> bool:
        task = self.state.tasks.get(task_id) if isinstance(task_id, str) else None
        video = task.video if task is not None else None
        return video is not None and video.draft and task is not None and task.status == "succeeded"

    def _accept_video(
        self, request: Request, body: dict[str, Any], job: VideoJob, *, force_failure: bool
    ) -> TaskRecord:
        state = self.state
        now = time.monotonic()
        shape = video_shape(job)
        task = TaskRecord(
            id=str(uuid.uuid4()),
            trace_id=str(uuid.uuid4()),
            request=dict(body),
            action="generate",
            prompt=job.prompt,
            model="flux-3",
            size=f"{shape.width}x{shape.height}",
            width=shape.width,
            height=shape.height,
            count=1,
            base_url=_base_url(request),
            created_at=state.now_utc(),
            created_monotonic=now,
            finish_monotonic=now + state.plan_latency(),
            failed=force_failure or state.decide_failure(),
            seeds=[state.new_seed()],
            callback_url=job.callback_url,
            video=shape,
        )
        state.add_task(task)
        state.accepted += 1
        if task.callback_url:
            self._schedule_callback(task)
        return task

    async def _edit_input(self, parsed: ImageRequest) -> bytes | None:
        """An edit's image, downloaded like the real API does (loopback URLs only: a test upstream)."""
        if parsed.image_url is None or not is_loopback_url(parsed.image_url):
            return None
        if self._http is None:
            self._http = httpx2.AsyncClient(timeout=CALLBACK_TIMEOUT, trust_env=False)
        return await fetch_edit_input(self._http, parsed.image_url, self.state.platform.max_upload_bytes)

    def _accept(
        self, request: Request, body: dict[str, Any], parsed: ImageRequest, *, force_failure: bool
    ) -> TaskRecord:
        state = self.state
        now = time.monotonic()
        width, height = pixel_dimensions(parsed.size, state.config.image_long_side)
        task = TaskRecord(
            id=str(uuid.uuid4()),
            trace_id=str(uuid.uuid4()),
            request=dict(body),
            action=parsed.action,
            prompt=parsed.prompt,
            model=parsed.model,
            size=parsed.size,
            width=width,
            height=height,
            count=parsed.count,
            base_url=_base_url(request),
            created_at=state.now_utc(),
            created_monotonic=now,
            finish_monotonic=now + state.plan_latency(),
            failed=force_failure or state.decide_failure(),
            seeds=[state.new_seed() for _ in range(parsed.count)],
            callback_url=parsed.callback_url,
        )
        state.add_task(task)
        state.accepted += 1
        if task.callback_url:
            self._schedule_callback(task)
        return task

    async def _take_fault(self, endpoint: Endpoint) -> Fault | None:
        fault = self.state.next_fault(endpoint)
        if fault is None:
            return None
        logger.debug("emulator: applying fault %s to %s", fault.kind, endpoint)
        if fault.kind == "slow":
            if not await self._wait_until(time.monotonic() + fault.delay):
                return Fault("drop_before", endpoint)
            return None
        return fault

    async def _wait_until(self, deadline: float) -> bool:
        """Sleep until the monotonic `deadline`; False if the emulator began shutting down first."""
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            await self._closing.wait()
            return False
        return True

    def _fault_response(self, fault: Fault) -> Response:
        kind = fault.kind
        if kind in ERROR_FAULTS:
            status, code, message = ERROR_FAULTS[kind]
            retry = {"retry-after": _seconds(self.state.config.retry_after)}
            return self._error(status, code, message, headers=retry if status in (429, 503) else None)
        if kind == "drop_before":
            return DroppedConnection(self, cut_body=None)
        broken = broken_answer(kind)
        if broken is None:
            raise AssertionError(f"fault {kind} is not answered in place of the request")
        return broken

    def _note_token(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        self.state.tokens_seen.append(token)
        return token

    def _check_auth(self, token: str | None) -> Response | None:
        if token is None:
            return self._error(401, "invalid_token", "missing authorization; expected 'Bearer <token>'")
        allowed = self.state.config.tokens
        if allowed is not None and token not in allowed:
            return self._error(401, "invalid_token", "the token is invalid")
        return None

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        trace_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        self.state.note_rejection(code)
        error = {"code": code, "message": message}
        body = {"success": False, "error": error, "trace_id": trace_id or _new_id()}
        return JSONResponse(body, status_code=status, headers=headers)

    def _schedule_callback(self, task: TaskRecord) -> None:
        timer = asyncio.get_running_loop().create_task(self._deliver_callback(task))
        self._background.add(timer)
        timer.add_done_callback(self._background.discard)

    async def _deliver_callback(self, task: TaskRecord) -> None:
        await asyncio.sleep(max(0.0, task.finish_monotonic - time.monotonic()))
        assert task.callback_url is not None
        if self._http is None:
            self._http = httpx2.AsyncClient(timeout=CALLBACK_TIMEOUT, trust_env=False)
        try:
            response = await self._http.post(task.callback_url, json=task.result())
        except Exception as exc:  # a webhook failure must never take the emulator down
            self.state.callback_failures += 1
            logger.warning("emulator: callback for task %s failed: %r", task.id, exc)
            return
        if response.is_success:
            self.state.callbacks_sent += 1
        else:
            self.state.callback_failures += 1
            logger.warning("emulator: callback for task %s got HTTP %d", task.id, response.status_code)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = "not_found" if status == 404 else "method_not_allowed" if status == 405 else "api_error"
    body = {"success": False, "error": {"code": code, "message": f"HTTP {status}"}, "trace_id": _new_id()}
    return JSONResponse(body, status_code=status)


def _json_bytes(content: Any) -> bytes:
    return json.dumps(content, separators=(",", ":")).encode()


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _new_id() -> str:
    return str(uuid.uuid4())
