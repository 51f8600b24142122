"""The stdio server's input, so that Ctrl-C and SIGTERM end it at once, the way stdin EOF does.

The SDK reads stdin in a worker thread that cannot be interrupted: after Ctrl-C a server waited for
one more line (or EOF) before it could finish, and SIGTERM (how Claude Code and Gemini CLI end their
health checks) killed it with no cleanup at all. Here a daemon thread, which nobody waits for, reads
the real stdin and hands it on through `sys.stdin`; SIGINT and SIGTERM end that input as EOF would, so
the server takes its ordinary way out: calls in flight are cancelled (their tasks go on upstream and
stay in the history), the lifespans close the history and stop the sandbox's emulator.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CHUNK_BYTES = 64 * 1024
QUEUED_CHUNKS = 64  # at most 4 MiB read ahead of the server
_EOF = b""
SignalHandler = Callable[[int, FrameType | None], Any]


class StdinFeed(io.RawIOBase):
    """The bytes of the real stdin, read ahead by a daemon thread, until EOF or `end()`.

    The thread reads until the real stdin ends; a process that stops serving earlier (a signal) exits
    without waiting for it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._chunks: queue.Queue[bytes] = queue.Queue(QUEUED_CHUNKS)
        self._ended = threading.Event()
        self._rest = b""
        self._source = _divert_stdin()
        if self._source is None:
            self._ended.set()
            return
        threading.Thread(target=self._pump, args=(self._source,), name="stdin", daemon=True).start()

    def end(self) -> None:
        """End the input now, as EOF would. Safe in a signal handler: it never blocks."""
        self._ended.set()
        # Wakes a reader waiting for the next chunk; a full queue means no reader is waiting, and the
        # flag stops it at its next read.
        with suppress(queue.Full):
            self._chunks.put_nowait(_EOF)

    def restore(self) -> None:
        """Point fd 0 back at the real stdin (the reading thread keeps its own descriptor)."""
        if self._source is not None:
            with suppress(OSError):
                os.dup2(self._source, 0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Blocks until the next chunk (or the end) arrives; 0 bytes means EOF."""
        if not self._rest:
            if self._ended.is_set():
                return 0
            self._rest = self._chunks.get()
            if not self._rest:
                self._ended.set()
                return 0
        view = memoryview(buffer).cast("B")
        size = min(len(view), len(self._rest))
        view[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size

    def _pump(self, source: int) -> None:
        while True:
            try:
                chunk = os.read(source, CHUNK_BYTES)
            except OSError:
                chunk = _EOF
            self._chunks.put(chunk)
            if not chunk:
                return


class StopSignals:
    """SIGINT and SIGTERM, caught while serving: the first ends the input; `received` says which."""

    def __init__(self, feed: StdinFeed) -> None:
        self.received: int | None = None
        self._feed = feed

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        self._feed.end()


@contextmanager
def stdin_ended_by_signals() -> Iterator[StopSignals]:
    """For the block, the SDK's stdio transport reads a `StdinFeed` that SIGINT and SIGTERM end.

    Signal handlers can only be set in the main thread; elsewhere (an embedding program) the
    signals keep their owner's handlers and only the feed is used.
    """
    feed = StdinFeed()
    stop = StopSignals(feed)
    previous = _catch(STOP_SIGNALS, stop.on_signal)
    saved = sys.stdin
    # Not backed by fd 0, so the SDK serves it in place instead of claiming the descriptor.
    sys.stdin = io.TextIOWrapper(io.BufferedReader(feed), encoding="utf-8", errors="replace")
    try:
        yield stop
    finally:
        sys.stdin = saved
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        feed.restore()


def _catch(signals: tuple[signal.Signals, ...], handler: SignalHandler) -> dict[signal.Signals, Any]:
    """Install `handler`; the handlers it replaced, to put back (none outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in signals}


def _divert_stdin() -> int | None:
    """A private descriptor for the real stdin, with fd 0 pointed at the null device meanwhile.

    Anything else that reads fd 0 (a child process, a stray input()) then sees EOF instead of
    stealing protocol bytes, as with the SDK's own transport. None when there is no stdin at all.
    """
    try:
        source = os.dup(0)
    except OSError:
        return None
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, 0)
        finally:
            os.close(null)
    except OSError:
        pass  # fd 0 stays the wire; only the feed's thread reads it
    return source
