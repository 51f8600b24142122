"""Emulated tasks kept in a file, so that every emulator sharing the file answers for all of them.

The offline sandbox runs one emulator per `flux-mcp --sandbox` process, and hosts and frameworks start
a process per session, some even per call: a task submitted through one process must be found,
finished and downloaded through the next, as it would be from the real API. The journal keeps what a
task is (its request, size, seeds, creation time and duration); its state still follows from the
clock. An emulator without a journal (the tests' witness) keeps its tasks in memory only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from .state import TaskRecord
from .videos import shape_of_request

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    record_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    request TEXT NOT NULL,
    action TEXT NOT NULL,
    prompt TEXT NOT NULL,
    model TEXT NOT NULL,
    size TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    seeds TEXT NOT NULL,
    created_at TEXT NOT NULL,
    duration REAL NOT NULL,
    failed INTEGER NOT NULL
)
"""
BUSY_TIMEOUT_SECONDS = 5.0


class TaskJournal:
    """The tasks of every emulator that shares one SQLite file (several processes may at once)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)

    def add(self, task: TaskRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task.id,
                task.record_id,
                task.trace_id,
                json.dumps(task.request),
                task.action,
                task.prompt,
                task.model,
                task.size,
                task.width,
                task.height,
                json.dumps(task.seeds),
                task.created_at.isoformat(),
                task.duration,
                int(task.failed),
            ),
        )

    def load(self, task_id: str, base_url: str) -> TaskRecord | None:
        """The task as this process sees it: its files served from `base_url`, its clock mapped onto ours."""
        row = self._db.execute(
            "SELECT record_id, trace_id, request, action, prompt, model, size, width, height, seeds, "
            "created_at, duration, failed FROM tasks WHERE id = ?",
            (task_id,),
        ).fetchone()
        if row is None:
            return None
        (
            record_id,
            trace_id,
            request,
            action,
            prompt,
            model,
            size,
            width,
            height,
            seeds,
            created,
            duration,
            failed,
        ) = row
        created_at = datetime.fromisoformat(created)
        age = (datetime.now(UTC) - created_at).total_seconds()
        created_monotonic = time.monotonic() - age
        seed_list = json.loads(seeds)
        return TaskRecord(
            id=task_id,
            trace_id=trace_id,
            request=json.loads(request),
            action=action,
            prompt=prompt,
            model=model,
            size=size,
            width=width,
            height=height,
            count=len(seed_list),
            base_url=base_url,
            created_at=created_at,
            created_monotonic=created_monotonic,
            finish_monotonic=created_monotonic + duration,
            failed=bool(failed),
            seeds=seed_list,
            record_id=record_id,
            video=shape_of_request(json.loads(request)),
        )

    def clear(self) -> None:
        """Forget every task, for every emulator sharing the file."""
        self._db.execute("DELETE FROM tasks")

    def close(self) -> None:
        self._db.close()
