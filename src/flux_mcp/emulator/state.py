"""Configuration, scripted faults and the records tests assert on."""

from __future__ import annotations

import copy
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .journal import TaskJournal

from .platform import PlatformState

FaultKind = Literal[
    "429",
    "500",
    "503",
    "400",
    "401",
    "403",
    "502_html",
    "empty",
    "truncated_json",
    "not_json_200",
    "success_false_200",
    "drop_before",
    "drop_after",
    "fail_task",
    "slow",
]
Endpoint = Literal["images", "videos", "tasks", "files", "uploads", "applications"]
TaskState = Literal["running", "succeeded", "failed"]

RANDOM_FAULT_KINDS: tuple[FaultKind, ...] = ("429", "500", "503", "drop_before", "drop_after")
TASK_READS_KEPT = 10_000  # the most recent POST /flux/tasks requests kept in `task_reads`
FAILURE_MESSAGE = "content generation failed (emulated)"
EMULATED_API_ID = "c5f6d0a2-3d0f-4b7e-9a51-0e1f1a3f7c11"
EMULATED_APPLICATION_ID = "5b2f8a4e-8c1d-4e36-b0a4-6f0c9a1d2e33"
EMULATED_CREDENTIAL_ID = "9e7d6c5b-4a39-4b28-8c17-0f6e5d4c3b22"
EMULATED_USER_ID = "2d4c6e8a-1b3d-4f5a-9c7e-8a6b4c2d0e44"


@dataclass
class EmulatorConfig:
    """How the emulated upstream behaves; tests may change fields while it runs."""

    latency: float = 0.0
    latency_range: tuple[float, float] | None = None
    tokens: frozenset[str] | None = None
    image_long_side: int = 512
    fail_rate: float = 0.0
    error_rates: dict[str, float] = field(default_factory=dict)
    retry_after: float = 1.0
    seed: int | None = None


@dataclass
class Fault:
    """One scripted misbehaviour, consumed by the next request to `endpoint`."""

    kind: FaultKind
    endpoint: Endpoint = "images"
    delay: float = 0.0


@dataclass(frozen=True)
class VideoShape:
    """What an emulated video task makes: an MP4 of this length and size."""

    seconds: int
    width: int
    height: int
    fps: int
    draft: bool = False


@dataclass(frozen=True)
class TaskRead:
    """One POST /flux/tasks as it arrived (answered or not): when (monotonic), token, action, ids."""

    at: float
    token: str | None
    action: str | None
    ids: tuple[str, ...]

    @classmethod
    def of(cls, at: float, token: str | None, body: Any) -> TaskRead:
        body = body if isinstance(body, dict) else {}
        action = body.get("action") if isinstance(body.get("action"), str) else None
        named = body.get("ids") if isinstance(body.get("ids"), list) else [body.get("id")]
        return cls(at, token, action, tuple(item for item in named if isinstance(item, str)))


@dataclass
class TaskRecord:
    """A task the emulator accepted. Its state is derived from the clock, never advanced by a loop."""

    id: str
    trace_id: str
    request: dict[str, Any]
    action: str
    prompt: str
    model: str
    size: str
    width: int
    height: int
    count: int
    base_url: str
    created_at: datetime
    created_monotonic: float
    finish_monotonic: float
    failed: bool
    seeds: list[int]
    callback_url: str | None = None
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    cost: dict[str, Any] | None = None  # what the platform charged, as results report it
    source_image: bytes | None = None  # an edit's input, as fetched from its image_url
    video: VideoShape | None = None  # a /flux/videos task: the MP4 it makes

    @property
    def duration(self) -> float:
        return self.finish_monotonic - self.created_monotonic

    @property
    def status(self) -> TaskState:
        return self.status_at(time.monotonic())

    def status_at(self, now: float) -> TaskState:
        if now < self.finish_monotonic:
            return "running"
        return "failed" if self.failed else "succeeded"

    def image_url(self, index: int) -> str:
        return f"{self.base_url}/files/{self.id}/{index}.png"

    def video_url(self, index: int) -> str:
        return f"{self.base_url}/files/videos/{self.id}/{index}.mp4"

    def result(self) -> dict[str, Any]:
        """The finished task's response: the blocking call's body, the callback payload, `response`."""
        if self.failed:
            return {
                "success": False,
                "task_id": self.id,
                "trace_id": self.trace_id,
                "error": {"code": "api_error", "message": FAILURE_MESSAGE},
            }
        if self.video is not None:
            return self._video_result(self.video)
        inference = round(self.duration / max(self.count, 1), 3)
        charged = {"cost": self.cost, "usage": {"images": self.count}} if self.cost is not None else {}
        return {
            **charged,
            "success": True,
            "task_id": self.id,
            "trace_id": self.trace_id,
            "data": [
                {
                    "prompt": self.prompt,
                    "image_url": self.image_url(index),
                    "seed": self.seeds[index],
                    "timings": {"inference": inference},
                }
                for index in range(self.count)
            ],
        }

    def _video_result(self, video: VideoShape) -> dict[str, Any]:
        charged = {"cost": self.cost, "usage": {"seconds": video.seconds}} if self.cost is not None else {}
        item = {
            "video_url": self.video_url(0),
            "seconds": video.seconds,
            "width": video.width,
            "height": video.height,
            "fps": video.fps,
            **({"draft_task_id": self.id} if video.draft else {}),
        }
        return {**charged, "success": True, "task_id": self.id, "trace_id": self.trace_id, "data": [item]}

    def record(self, now: float | None = None) -> dict[str, Any]:
        """The task as POST /flux/tasks returns it."""
        created = self.created_at.isoformat(timespec="milliseconds")
        out: dict[str, Any] = {
            "_id": self.record_id,
            "id": self.id,
            "api_id": EMULATED_API_ID,
            "application_id": EMULATED_APPLICATION_ID,
            "credential_id": EMULATED_CREDENTIAL_ID,
            "user_id": EMULATED_USER_ID,
            "created_at": created,
            "started_at": created,
            "request": dict(self.request),
            "trace_id": self.trace_id,
            "type": "videos" if self.video is not None else "images",
        }
        state = self.status_at(time.monotonic() if now is None else now)
        if state == "running":
            return out
        finished_at = self.created_at + timedelta(seconds=self.duration)
        out["finished_at"] = finished_at.isoformat(timespec="milliseconds")
        out["elapsed"] = round(self.duration, 3)
        out["response"] = self.result()
        if state == "failed":
            out["state"] = "failed"
        return out


@dataclass
class EmulatorState:
    """Everything one emulator instance knows: config, fault script, tasks and counters."""

    config: EmulatorConfig = field(default_factory=EmulatorConfig)
    faults: deque[Fault] = field(default_factory=deque)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    submissions: int = 0  # POSTs to /flux/images and /flux/videos
    video_submissions: int = 0
    accepted: int = 0
    polls: int = 0
    batch_polls: int = 0
    file_downloads: int = 0
    tokens_seen: list[str] = field(default_factory=list)
    task_reads: deque[TaskRead] = field(default_factory=lambda: deque(maxlen=TASK_READS_KEPT))
    callbacks_sent: int = 0
    callback_failures: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    faults_applied: dict[str, int] = field(default_factory=dict)
    journal: TaskJournal | None = None  # shared with other emulators (the sandbox); None: memory only
    platform: PlatformState = field(default_factory=PlatformState)
    rng: random.Random = field(init=False, repr=False, compare=False)
    _started_as: tuple[EmulatorConfig, PlatformState] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self._started_as = (copy.deepcopy(self.config), copy.deepcopy(self.platform))

    def reset(self) -> None:
        """Become the emulator that was started: no tasks (in the journal neither), no scripted faults,
        zero counters, the account and config it began with, its random draws from the start again.

        Config and platform are restored in place: whoever holds them sees the restored values.
        """
        config, platform = copy.deepcopy(self._started_as)
        _restore(self.config, config)
        _restore(self.platform, platform)
        self.faults.clear()
        self.tasks.clear()
        if self.journal is not None:
            self.journal.clear()
        self.reset_counters()
        self.rng = random.Random(self.config.seed)

    def add_task(self, task: TaskRecord) -> None:
        self.tasks[task.id] = task
        if self.journal is not None:
            self.journal.add(task)

    def find_task(self, task_id: str, base_url: str) -> TaskRecord | None:
        """A task of this emulator, or of another one sharing its journal (served from `base_url`)."""
        task = self.tasks.get(task_id)
        if task is None and self.journal is not None:
            task = self.journal.load(task_id, base_url)
            if task is not None:
                self.tasks[task_id] = task
        return task

    def reset_counters(self) -> None:
        """Zero the counters; tasks and the fault script are kept."""
        self.submissions = self.accepted = self.polls = self.batch_polls = self.video_submissions = 0
        self.file_downloads = self.callbacks_sent = self.callback_failures = 0
        self.tokens_seen.clear()
        self.task_reads.clear()
        self.rejected.clear()
        self.faults_applied.clear()
        self.platform.reset_counters()

    def next_fault(self, endpoint: Endpoint) -> Fault | None:
        """Pop the first scripted fault for `endpoint`, else maybe draw one from `error_rates`."""
        fault = self._pop_scripted(endpoint)
        if fault is None and endpoint in ("images", "videos"):
            fault = self._draw_random()
        if fault is not None:
            self.faults_applied[fault.kind] = self.faults_applied.get(fault.kind, 0) + 1
        return fault

    def note_rejection(self, code: str) -> None:
        self.rejected[code] = self.rejected.get(code, 0) + 1

    def plan_latency(self) -> float:
        if self.config.latency_range is not None:
            low, high = self.config.latency_range
            return self.rng.uniform(low, high)
        return max(0.0, self.config.latency)

    def decide_failure(self) -> bool:
        return self.config.fail_rate > 0 and self.rng.random() < self.config.fail_rate

    def new_seed(self) -> int:
        return self.rng.randrange(1, 2**31)

    def now_utc(self) -> datetime:
        return datetime.now(UTC)

    def _pop_scripted(self, endpoint: Endpoint) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.endpoint == endpoint:
                del self.faults[index]
                return fault
        return None

    def _draw_random(self) -> Fault | None:
        rates = self.config.error_rates
        if not rates:
            return None
        roll = self.rng.random()
        cumulative = 0.0
        for kind in RANDOM_FAULT_KINDS:
            cumulative += rates.get(kind, 0.0)
            if roll < cumulative:
                return Fault(kind)
        return None


def _restore(target: Any, source: Any) -> None:
    for item in fields(target):
        setattr(target, item.name, getattr(source, item.name))
