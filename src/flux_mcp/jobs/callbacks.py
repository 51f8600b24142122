"""Callback slots: the signed URLs the upstream calls back when a task finishes, and the calls they wake.

A callback is a wake-up, never a result: whoever learns a callback URL (in pass-through mode, any user
who reads their own task record upstream) can POST anything to it. So a URL names a slot and carries an
HMAC of it under the hub's key (FLUX_MCP_CALLBACK_KEY, or a random key per process); a POST whose
signature does not verify, or naming a task other than the one the slot was bound to, is refused and
changes nothing, and an accepted one only wakes the waiting calls, which re-read the task upstream with
their own token (`flux_mcp.jobs.runner`). Replicas sharing a key and a PostgreSQL history verify each other's
URLs: a callback for a slot another replica holds is handed to `relay` (NOTIFY), and every replica's
`relayed` (LISTEN) wakes the slot if it holds it. The relayed message names the slot and the task the
body named, never the signature.

A slot lives CALLBACK_TTL_SECONDS at most, whether or not anything else happens: every use of the hub
first forgets the slots past their time, so an old URL is refused however quiet the server has been.
A replica that does not hold the slot cannot see that: so the URL signs when it was issued (wall-clock
seconds, which every replica shares), and such a replica relays a callback only while the slot is within
its time, only for a task the shared history still shows pending (the one the body names: the upstream's
callback carries its task id), and at most RELAYS_PER_SLOT times per slot; otherwise the callback is
refused like an unknown URL. A URL without the time (issued before it was signed) still wakes the slot's
holder, and is not relayed.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

CALLBACK_TTL_SECONDS = 6 * 3600.0
# However many callbacks arrive for one task, the calls waiting on it re-read it at most this often.
WAKEUP_MIN_INTERVAL = 2.0
CALLBACK_MAC_HEX = 32  # 128 bits of HMAC-SHA256 in each callback URL
SAFE_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A replica that does not hold a slot relays at most this many of its callbacks (the upstream sends one).
RELAYS_PER_SLOT = 5


class Relay(Protocol):
    """How callbacks reach the other replicas: the shared history (`history.store.History`)."""

    async def notify(self, payload: str) -> None: ...

    async def task_pending(self, task_id: str) -> bool: ...


@dataclass
class CallbackSlot:
    """Where the upstream's callback for one submission lands: it wakes the calls waiting on the task."""

    secret: str
    url: str
    created: float
    task_id: str | None = None
    wakeups: int = 0  # callbacks accepted so far, before or after the submission was answered
    last_reread: float = -math.inf  # when a wake-up last made a waiting call re-read the task
    _changed: anyio.Event = field(default_factory=anyio.Event, repr=False)

    def wake(self) -> None:
        self.wakeups += 1
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def next_wakeup(self) -> anyio.Event:
        """An event the next `wake` sets (a fresh one after every wake-up)."""
        return self._changed

    def next_reread(self) -> float:
        """The earliest moment a wake-up may make a waiting call re-read the task again."""
        return self.last_reread + WAKEUP_MIN_INTERVAL

    def wakeup_due(self, wakeups_seen: int, now: float) -> bool:
        """Whether a wake-up the waiting call has not answered yet may be acted on at `now`."""
        return self.wakeups > wakeups_seen and now >= self.next_reread()


class CallbackHub:
    """Per-task callback URLs, signed, and the waiting calls they wake (see the module's docstring).

    `clock` is the hub's time, wall-clock seconds (replicas compare the times their URLs were issued);
    slots expire by it.
    """

    def __init__(
        self,
        public_url: str,
        key: bytes | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = public_url.rstrip("/") + "/callbacks/flux/"
        self._key = key if key is not None else secrets.token_bytes(32)
        self._clock = clock
        self._slots: dict[str, CallbackSlot] = {}  # by slot id, oldest first
        self._by_task: dict[str, CallbackSlot] = {}
        self._relays: dict[str, tuple[float, int]] = {}  # slot id -> (issued, relays tried), others' slots
        self.relay: Relay | None = None

    def open(self) -> CallbackSlot:
        self._expire()
        slot_id, issued = secrets.token_urlsafe(18), int(self._clock())
        signed = f"{slot_id}.{issued}"
        secret = f"{signed}.{self._sign(signed)}"
        slot = CallbackSlot(secret=secret, url=self._base + secret, created=self._clock())
        self._slots[slot_id] = slot
        return slot

    def bind(self, slot: CallbackSlot, task_id: str) -> None:
        slot.task_id = task_id
        self._by_task[task_id] = slot

    def knows(self, secret: str) -> bool:
        """Whether a callback to this secret may be accepted here (held here, or relayed to who holds it)."""
        self._expire()
        verified = self._verified(secret)
        if verified is None:
            return False
        slot_id, issued = verified
        return slot_id in self._slots or self._may_relay(slot_id, issued)

    def for_task(self, task_id: str) -> CallbackSlot | None:
        self._expire()
        return self._by_task.get(task_id)

    def close(self, slot: CallbackSlot) -> None:
        self._slots.pop(_slot_id(slot.secret), None)
        if slot.task_id is not None:
            self._by_task.pop(slot.task_id, None)

    def deliver(self, secret: str, payload: dict[str, Any]) -> CallbackSlot | None:
        """Wake the calls waiting on this secret's task here; None when the callback must be refused.

        The body is looked at only to refuse one that names another task (as `task_id` or `id`).
        """
        self._expire()
        verified = self._verified(secret)
        slot = self._slots.get(verified[0]) if verified is not None else None
        if slot is None or _names_another_task(payload, slot.task_id):
            return None
        slot.wake()
        return slot

    async def receive(self, secret: str, payload: dict[str, Any]) -> bool:
        """Deliver here, or relay to the replica holding the slot; False when the callback is refused.

        A relay is tried only within the slot's time and RELAYS_PER_SLOT, and made only for a task the
        shared history shows pending.
        """
        self._expire()
        verified = self._verified(secret)
        if verified is None:
            return False
        slot_id, issued = verified
        if slot_id in self._slots:
            return self.deliver(secret, payload) is not None
        if self.relay is None or issued is None or not self._may_relay(slot_id, issued):
            return False
        self._relays[slot_id] = (issued, self._relays.get(slot_id, (issued, 0))[1] + 1)
        named = _named_task(payload)
        if named in ("", "?") or not await self.relay.task_pending(named):
            return False
        await self.relay.notify(f"{slot_id} {named}")
        return True

    def relayed(self, message: str) -> None:
        """A callback another replica accepted: wake the slot if this replica holds it."""
        self._expire()
        slot_id, _, named = message.partition(" ")
        slot = self._slots.get(slot_id)
        if slot is None or (named and slot.task_id is not None and named != slot.task_id):
            return
        slot.wake()

    def _may_relay(self, slot_id: str, issued: float | None) -> bool:
        """Whether another replica's slot is within its time and its relays here are not used up."""
        if self.relay is None or issued is None or issued < self._clock() - CALLBACK_TTL_SECONDS:
            return False
        return self._relays.get(slot_id, (issued, 0))[1] < RELAYS_PER_SLOT

    def _sign(self, signed: str) -> str:
        return hmac.new(self._key, signed.encode(), hashlib.sha256).hexdigest()[:CALLBACK_MAC_HEX]

    def _verified(self, secret: str) -> tuple[str, float | None] | None:
        """(slot id, when it was issued) of a correctly signed secret; issued None for one without it."""
        signed, dot, mac = secret.rpartition(".")
        slot_id, _, stamp = signed.partition(".")
        if not dot or not slot_id or not hmac.compare_digest(mac.encode(), self._sign(signed).encode()):
            return None
        if not stamp:
            return slot_id, None
        return (slot_id, float(stamp)) if stamp.isascii() and stamp.isdecimal() else None

    def _expire(self) -> None:
        """Forget the slots (and others' relay counts) past CALLBACK_TTL_SECONDS, oldest first: each use
        costs only what expired."""
        oldest = self._clock() - CALLBACK_TTL_SECONDS
        while self._relays and next(iter(self._relays.values()))[0] < oldest:
            del self._relays[next(iter(self._relays))]
        while self._slots:
            slot = next(iter(self._slots.values()))
            if slot.created >= oldest:
                return
            self.close(slot)


def _slot_id(secret: str) -> str:
    return secret.partition(".")[0]


def _named_task(payload: dict[str, Any]) -> str:
    """The one task a callback body names, for the relay; `?` (matches no task) if it names odd ones."""
    named = {value for key in ("task_id", "id") if isinstance(value := payload.get(key), str) and value}
    if not named:
        return ""
    (only,) = named if len(named) == 1 else ("?",)
    return only if SAFE_TASK_ID.fullmatch(only) else "?"


def _names_another_task(payload: dict[str, Any], task_id: str | None) -> bool:
    """Whether a callback body names a task other than `task_id` (unknown until the submit answers)."""
    named = {value for key in ("task_id", "id") if isinstance(value := payload.get(key), str) and value}
    return task_id is not None and bool(named - {task_id})
