"""The emulated Flux REST API as a Starlette app: /flux/images, /flux/tasks, /files and /healthz."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import anyio
import anyio.to_thread
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .answers import base_url, http_error, json_body, json_bytes, new_id, seconds
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
from .webhooks import CallbackSender

logger = logging.getLogger(__name__)

RESET_GRACE = 2.0
FETCH_TIMEOUT = 10.0  # an edit's input image, fetched as the real API would


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
        exception_handlers={404: http_error, 405: http_error},
    )
    app.state.emulator = runtime.state
    app.state.runtime = runtime
    return app


class EmulatorRuntime:
    """Request handlers plus what lives beside the state at run time: PNG cache, callback sender."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.png_cache = PngCache()
        self.server_state: Any = None
        self.callbacks = CallbackSender(state)
        self._http: httpx2.AsyncClient | None = None  # fetches edit inputs
        self._closing = asyncio.Event()

    def attach(self, server_state: Any) -> None:
        """Called by the runner: uvicorn's connection table lets a deliberate drop reach the socket."""
        self.server_state = server_state
        self._closing.clear()

    @property
    def pending_callbacks(self) -> int:
        """Callbacks scheduled and not yet sent (each is sent when its task finishes)."""
        return self.callbacks.pending

    def begin_shutdown(self) -> None:
        """Make requests that are still waiting (blocking calls, `slow` faults) give up at once."""
        self._closing.set()

    async def aclose(self) -> None:
        """Cancel pending callback timers and close the HTTP clients."""
        await self.callbacks.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def reset(self) -> None:
        """Forget everything (`EmulatorState.reset`) once nothing begun before can still change it.

        Waiting requests give up as at shutdown (their connections drop), the rest are let finish,
        those still running after `RESET_GRACE` are cancelled, callback timers are cancelled. Idle
        keep-alive connections and the port stay open.
        """
        await self.callbacks.cancel()
        self._closing.set()
        try:
            await self._drain_requests()
        finally:
            self._closing.clear()
        self.png_cache = PngCache()
        self.state.reset()

    async def _drain_requests(self) -> None:
        served = self.server_state
        if served is None:
            return
        # uvicorn offers no event for "no request in flight", hence the poll.
        with anyio.move_on_after(RESET_GRACE):
            while served.tasks:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        stuck = list(served.tasks)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        if stuck:
            logger.warning("emulator: reset cancelled %d request(s) still being served", len(stuck))
            for connection in list(served.connections):
                cycle = getattr(connection, "cycle", None)
                if cycle is not None and not cycle.response_complete:
                    connection.transport.close()

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
        body = await json_body(request)
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
            return DroppedConnection(self, cut_body=json_bytes({"task_id": task.id}))
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
        body = await json_body(request)
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
            return DroppedConnection(self, cut_body=json_bytes({"task_id": task.id}))
        if job.is_async or job.callback_url:
            return JSONResponse({"task_id": task.id})
        if not await self._wait_until(task.finish_monotonic):
            return DroppedConnection(self, cut_body=None)
        return JSONResponse(task.result(), status_code=500 if task.failed else 200)

    async def tasks(self, request: Request) -> Response:
        state = self.state
        state.polls += 1
        token = self._note_token(request)
        body = await json_body(request)
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
            task = state.find_task(task_id, base_url(request))
            if task is None:
                return self._error(404, "not_found", "task not found")
            response = JSONResponse(task.record())
        elif action == "retrieve_batch":
            state.batch_polls += 1
            ids = body.get("ids")
            if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
                return self._error(400, "bad_request", "ids must be a list of task id strings")
            now = time.monotonic()
            found = [state.find_task(item, base_url(request)) for item in ids]
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
        task = self.state.find_task(task_id, base_url(request))
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
        task = self.state.find_task(task_id, base_url(request))
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
            base_url=base_url(request),
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
            self.callbacks.schedule(task)
        return task

    async def _edit_input(self, parsed: ImageRequest) -> bytes | None:
        """An edit's image, downloaded like the real API does (loopback URLs only: a test upstream)."""
        if parsed.image_url is None or not is_loopback_url(parsed.image_url):
            return None
        if self._http is None:
            self._http = httpx2.AsyncClient(timeout=FETCH_TIMEOUT, trust_env=False)
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
            base_url=base_url(request),
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
            self.callbacks.schedule(task)
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
            retry = {"retry-after": seconds(self.state.config.retry_after)}
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
        body = {"success": False, "error": error, "trace_id": trace_id or new_id()}
        return JSONResponse(body, status_code=status, headers=headers)
