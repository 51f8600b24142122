"""The emulator's callbacks: each finished task's record POSTed to its `callback_url` when it finishes."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx2

from .state import EmulatorState, TaskRecord

logger = logging.getLogger(__name__)

CALLBACK_TIMEOUT = 10.0


class CallbackSender:
    """One timer per task that asked for a callback; a failed delivery is counted, never raised."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state
        self._timers: set[asyncio.Task[None]] = set()
        self._http: httpx2.AsyncClient | None = None

    @property
    def pending(self) -> int:
        """Callbacks scheduled and not yet sent."""
        return len(self._timers)

    def schedule(self, task: TaskRecord) -> None:
        timer = asyncio.get_running_loop().create_task(self._deliver(task))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def cancel(self) -> None:
        """Cancel every timer not yet fired, and wait until they are gone."""
        pending = list(self._timers)
        for timer in pending:
            timer.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        await self.cancel()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _deliver(self, task: TaskRecord) -> None:
        await asyncio.sleep(max(0.0, task.finish_monotonic - time.monotonic()))
        assert task.callback_url is not None
        if self._http is None:
            self._http = httpx2.AsyncClient(timeout=CALLBACK_TIMEOUT, trust_env=False)
        try:
            response = await self._http.post(task.callback_url, json=task.result())
        except Exception as exc:  # a webhook failure must never take the emulator down
            self._state.callback_failures += 1
            logger.warning("emulator: callback for task %s failed: %r", task.id, exc)
            return
        if response.is_success:
            self._state.callbacks_sent += 1
        else:
            self._state.callback_failures += 1
            logger.warning("emulator: callback for task %s got HTTP %d", task.id, response.status_code)
