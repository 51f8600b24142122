"""A stand-in for the shared history callbacks are relayed through (`jobs.callbacks.Relay`), in memory."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SharedHistory:
    """The tasks the history shows pending, and every NOTIFY a hub sent through it."""

    pending: set[str]
    notified: list[str] = field(default_factory=list)

    async def notify(self, payload: str) -> None:
        self.notified.append(payload)

    async def task_pending(self, task_id: str) -> bool:
        return task_id in self.pending
