"""An MCP task's row (`protocol_tasks`): the id a client polls, whose it is, and which job it stands for.

The job itself is the history's row in `tasks` (and the upstream task): this row only maps the protocol's
handle onto it, with what rebuilds the tool's result (`tool`, `arguments`), so a task survives a restart
and is seen by every replica sharing a PostgreSQL history. The rules are `server.tasks.core`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WORKING, COMPLETED, FAILED, CANCELLED = "working", "completed", "failed", "cancelled"
TERMINAL = (COMPLETED, FAILED, CANCELLED)

COLUMNS = (
    "id, owner, person, row_id, task_id, tool, arguments, status, status_message, error, driver, "
    "created_at, updated_at, expires_at"
)


@dataclass(frozen=True)
class ProtocolTask:
    id: str
    owner: str  # the history owner whose rows the job is in
    person: str  # who the credential is (`server.caller.Caller.person`)
    row_id: int | None
    task_id: str | None
    tool: str
    arguments: dict[str, Any]
    status: str
    status_message: str | None
    error: str | None
    driver: str | None
    created_at: float
    updated_at: float
    expires_at: float

    def params(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.owner,
            self.person,
            self.row_id,
            self.task_id,
            self.tool,
            json.dumps(self.arguments),
            self.status,
            self.status_message,
            self.error,
            self.driver,
            self.created_at,
            self.updated_at,
            self.expires_at,
        )


def protocol_task_from_row(row: Mapping[str, Any]) -> ProtocolTask:
    return ProtocolTask(
        id=row["id"],
        owner=row["owner"],
        person=row["person"],
        row_id=row["row_id"],
        task_id=row["task_id"],
        tool=row["tool"],
        arguments=json.loads(row["arguments"] or "{}"),
        status=row["status"],
        status_message=row["status_message"],
        error=row["error"],
        driver=row["driver"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
    )
