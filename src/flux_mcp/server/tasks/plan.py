"""Whether the tools/call being handled may be answered with an MCP task: a plan the protocol layer sets.

The protocol layer (the 2026-07-28 extension, the 2025-11-25 middleware) decides that a call may become a
task (the client declared Tasks, FLUX_MCP_TASKS is on, the tool is a job tool) and sets a `TaskPlan` for the
duration of the call; the tool runs as always (arguments validated, inputs checked and uploaded), and
where it would run its job, `job_calls` starts a task instead when a plan is set (`TaskBoard.start`), which
fills in `plan.started`. A call that ends before a task exists (a refusal, a bad input) leaves it empty
and answers as it always did.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flux_mcp.server.tasks.core import TaskState

# The tools that submit (billed, long) jobs: the ones that become tasks.
TASK_TOOLS = frozenset({"generate_image", "edit_image", "generate_variations", "generate_video"})


@dataclass
class TaskPlan:
    """A tools/call that may become a task; `started` is the task once it exists."""

    tool: str
    ttl_seconds: float | None = None  # what the client asked for (2025-11-25 `task.ttl`); None: ours
    started: TaskState | None = None


_PLAN: ContextVar[TaskPlan | None] = ContextVar("flux_mcp_task_plan", default=None)


@contextmanager
def planning_task(plan: TaskPlan) -> Iterator[TaskPlan]:
    """While the block runs, the job tool it calls starts a task instead of waiting for its job."""
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)


def task_plan() -> TaskPlan | None:
    """The plan of the tools/call being handled, unless it already started its task."""
    plan = _PLAN.get()
    return plan if plan is not None and plan.started is None else None
