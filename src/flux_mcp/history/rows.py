"""A history row: how one is written (the statements and their parameters) and read back (`HistoryEntry`).

The rules that decide when a row is written are `store.History`'s; this is only the row's shape, in the
columns `schema.TABLES` declares for both backends.
"""

from __future__ import annotations

import json
import logging
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from flux_mcp.domain.tasks import TaskResult, TaskStatus
from flux_mcp.history.backend import Statements

logger = logging.getLogger(__name__)

SUBMITTING = "submitting"
UNKNOWN = "unknown"  # submission failed in a way that leaves the upstream's state unknown

ROW_COLUMNS = (
    "owner, status, action, model, prompt, prompt_folded, size, request, fingerprint, created_at, "
    "updated_at, person, reserved"
)
TASK_COLUMNS = (
    "owner, task_id, status, model, prompt, prompt_folded, size, request, result, trace_id, error, "
    "created_at, updated_at, cost"
)
FINAL = tuple(status.value for status in TaskStatus if status is not TaskStatus.PENDING)  # a task's end
# One statement, atomic in SQLite (>= 3.24) and PostgreSQL alike: no lock, no read first. What the task
# was submitted with (model, prompt, size) stays as the submission wrote it; a stale pending state (a
# process that looked a moment before the task finished, writing last) leaves a final one in place.
RECORD = (
    f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join('?' * 14)}) "
    "ON CONFLICT (task_id, owner) DO UPDATE SET status=excluded.status, result=excluded.result, "
    "trace_id=COALESCE(excluded.trace_id, tasks.trace_id), error=excluded.error, "
    "model=COALESCE(tasks.model, excluded.model), prompt=COALESCE(tasks.prompt, excluded.prompt), "
    "prompt_folded=CASE WHEN tasks.prompt IS NULL THEN excluded.prompt_folded ELSE tasks.prompt_folded END, "
    "size=COALESCE(tasks.size, excluded.size), updated_at=excluded.updated_at, "
    "cost=COALESCE(excluded.cost, tasks.cost) "
    f"WHERE tasks.status NOT IN ({', '.join('?' * len(FINAL))}) "
    f"OR excluded.status IN ({', '.join('?' * len(FINAL))})"
)


@dataclass(frozen=True)
class HistoryEntry:
    row_id: int
    task_id: str | None
    status: str
    model: str | None
    prompt: str | None
    size: str | None
    request: dict[str, Any]
    result: TaskResult | None  # the latest state recorded; None before any was
    trace_id: str | None
    error: str | None
    created_at: float
    updated_at: float
    fingerprint: str | None = None
    delivered_at: float | None = None
    person: str | None = None
    reserved: float | None = None
    cost: float | None = None
    owner: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "status": self.status,
            "model": self.model,
            "prompt": self.prompt,
            "size": self.size,
            "request": self.request,
            "result": self.result.model_dump(mode="json") if self.result is not None else None,
            "trace_id": self.trace_id,
            "error": self.error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "delivered_at": iso(self.delivered_at) if self.delivered_at is not None else None,
        }


@dataclass(frozen=True)
class Claim:
    """The answer to "may this call submit?": a fresh row to submit with, or the earlier row it repeats."""

    row_id: int
    earlier: HistoryEntry | None  # None: the row is new (status submitting) and this call submits


# Rows whose folded copy of the prompt is missing: written by a release before it existed.
# In one order, so replicas folding them at once wait for each other and never deadlock.
UNFOLDED = "SELECT id, prompt FROM tasks WHERE prompt IS NOT NULL AND prompt_folded IS NULL ORDER BY id"
FOLD = "UPDATE tasks SET prompt_folded=? WHERE id=? AND prompt_folded IS NULL"


def folded(text: str) -> str:
    """A prompt as `list_tasks` searches it, the same on every backend: Unicode case folded (`ß` is `ss`,
    `É` is `é`) and composed (`e` + U+0301 is `é`), in Python rather than SQL, where SQLite folds ASCII
    only and PostgreSQL folds nothing in `LIKE`."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).casefold())


def folded_or_none(text: str | None) -> str | None:
    return folded(text) if text is not None else None


def fold_params(rows: list[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """The parameters of FOLD for the UNFOLDED rows."""
    return [(folded(str(row["prompt"])), int(row["id"])) for row in rows]


def contains(text: str) -> str:
    """A LIKE pattern (with ESCAPE '\\') matching folded prompts that contain `text`, its `%`, `_` and `\\`
    taken literally."""
    escaped = folded(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def insert_row(
    db: Statements,
    request: dict[str, Any],
    owner: str,
    fingerprint: str | None,
    person: str | None = None,
    reserved: float | None = None,
) -> int:
    now = time.time()
    rows = await db.fetch(
        f"INSERT INTO tasks ({ROW_COLUMNS}) VALUES ({', '.join('?' * 13)}) RETURNING id",
        (
            owner,
            SUBMITTING,
            request.get("action"),
            request.get("model"),
            request.get("prompt"),
            folded_or_none(request.get("prompt")),
            request.get("size"),
            json.dumps(request),
            fingerprint,
            now,
            now,
            person,
            reserved,
        ),
    )
    return int(rows[0]["id"])


def record_params(result: TaskResult, owner: str, now: float) -> tuple[Any, ...]:
    submitted = {"model": result.model, "prompt": result.prompt, "size": result.size}
    return (
        owner,
        result.task_id,
        result.status.value,
        result.model,
        result.prompt,
        folded_or_none(result.prompt),
        result.size,
        json.dumps(submitted),
        result.model_dump_json(),
        result.trace_id,
        result.error.message if result.error else None,
        now,
        now,
        result.cost.amount if result.cost is not None else None,
        *FINAL,
        *FINAL,
    )


def entry_from_row(row: Mapping[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        row_id=row["id"],
        task_id=row["task_id"],
        status=row["status"],
        model=row["model"],
        prompt=row["prompt"],
        size=row["size"],
        request=json.loads(row["request"]),
        result=stored_result(row),
        trace_id=row["trace_id"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        fingerprint=row["fingerprint"],
        delivered_at=row["delivered_at"],
        person=row["person"],
        reserved=row["reserved"],
        cost=row["cost"],
        owner=row["owner"],
    )


def stored_result(row: Mapping[str, Any]) -> TaskResult | None:
    """The one place a stored result is read: rows of every version of this server parse as a TaskResult."""
    if not row["result"]:
        return None
    try:
        return TaskResult.model_validate_json(row["result"])
    except ValidationError as exc:  # hand-edited or damaged: the row is still listed, without its result
        logger.warning(
            "task %s: its stored result is unreadable (%d errors)", row["task_id"], exc.error_count()
        )
        return None


def iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
