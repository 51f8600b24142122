"""The stdio transport: Ctrl-C and SIGTERM end it at once, and no message costs a worker-thread round trip.

The SDK reads stdin in a worker thread that cannot be interrupted: after Ctrl-C a server waited for
one more line (or EOF) before it could finish, and SIGTERM (how Claude Code and Gemini CLI end their
health checks) killed it with no cleanup at all. Here a daemon thread, which nobody waits for, reads
the real stdin; SIGINT and SIGTERM end that input as EOF would, so the server takes its ordinary way
out: calls in flight are cancelled (their tasks go on upstream and stay in the history), the lifespans
close the history and stop the sandbox's emulator.

The SDK's own transport also hands every line read, and every write and every flush of every message
(progress and log notifications included), to a worker thread and waits for it: 200 calls at once made
~1,400 such round trips (docs/benchmarks.md, measurement 9). `serve_stdio` gives the SDK's transport
streams that do not: lines are split from the chunks the stdin thread has already read (a worker thread
waits only when none is queued), and messages are queued for one daemon thread that writes whatever
has accumulated at once, in order; the event loop waits only when the reader falls far behind.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread

from flux_mcp.server.sdk import sdk_internal

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from mcp.server.lowlevel import Server as LowLevelServer
    from mcp.server.mcpserver import MCPServer

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CHUNK_BYTES = 64 * 1024
QUEUED_CHUNKS = 64  # at most 4 MiB read ahead of the server
# Queued output the event loop goes on producing before it waits for the reader (and resumes below LOW).
OUTPUT_HIGH_WATER = 4 * 1024 * 1024
OUTPUT_LOW_WATER = 1024 * 1024
DRAIN_SECONDS = 10.0  # at the end, how long the last answers may take to reach a slow reader
_EOF = b""
SignalHandler = Callable[[int, FrameType | None], Any]


async def serve_stdio(server: MCPServer[Any], stop: StopSignals) -> None:
    """`server.run_stdio_async()` over `stop`'s stdin feed and a queued stdout (POSIX; elsewhere the SDK's).

    The messages are parsed and serialised by the SDK's own `stdio_server`; only the two streams under
    it differ. fd 1 points at stderr while serving, as with the SDK, so stray prints miss the wire.
    """
    wire = _private_stdout()
    if wire is None:
        await server.run_stdio_async()
        return
    from mcp.server.stdio import stdio_server

    # The SDK has no public way to serve an MCPServer on given streams (server/sdk.py).
    lowlevel: LowLevelServer[Any] = sdk_internal(server, "_lowlevel_server")
    with _stdout_diverted(wire):
        output = QueuedOutput(wire)
        # Both streams are used the way stdio_server uses them: stdin iterated, stdout written and flushed.
        stdin = cast("anyio.AsyncFile[str]", FeedLines(stop.feed))
        stdout = cast("anyio.AsyncFile[str]", output)
        try:
            async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):
                await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(DRAIN_SECONDS):
                await output.drain()


class FeedLines:
    """The lines of a `StdinFeed`, for the SDK's stdio transport (`async for line in ...`)."""

    def __init__(self, feed: StdinFeed) -> None:
        self._feed = feed
        self._lines: list[str] = []
        self._partial = b""

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        while not self._lines:
            chunk = await self._feed.next_chunk()
            if not chunk:
                if not self._partial:
                    raise StopAsyncIteration
                chunk, self._partial = self._partial, b""
                self._lines.append(chunk.decode("utf-8", errors="replace"))
                break
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            self._lines = [line.decode("utf-8", errors="replace") + "\n" for line in reversed(complete)]
        return self._lines.pop()


class QueuedOutput:
    """Text written by the event loop without waiting, put on `fd` by one daemon thread, in order.

    The thread writes everything queued since its last write in one go. `flush` waits (in a worker
    thread) only while more than `high_water` bytes are queued, so a reader that stops reading
    still stops the server's output, as a full pipe does; a write error is raised by the next call.
    """

    def __init__(
        self, fd: int, *, high_water: int = OUTPUT_HIGH_WATER, low_water: int = OUTPUT_LOW_WATER
    ) -> None:
        self._fd = fd
        self._high_water, self._low_water = high_water, low_water
        self._queued: list[bytes] = []
        self._unwritten = 0  # bytes queued or being written
        self._changed = threading.Condition()
        self._error: OSError | None = None
        threading.Thread(target=self._write_forever, name="stdout", daemon=True).start()

    async def write(self, text: str) -> int:
        self._raise_if_broken()
        data = text.encode("utf-8")
        with self._changed:
            self._queued.append(data)
            self._unwritten += len(data)
            self._changed.notify_all()
        return len(text)

    async def flush(self) -> None:
        self._raise_if_broken()
        if self._unwritten > self._high_water:
            await anyio.to_thread.run_sync(self._wait_until_below, self._low_water)
            self._raise_if_broken()

    async def drain(self) -> None:
        """Wait until everything queued is written (or writing failed)."""
        if self._unwritten and self._error is None:
            await anyio.to_thread.run_sync(self._wait_until_below, 1)

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

    def _wait_until_below(self, limit: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._unwritten < limit or self._error is not None)

    def _write_forever(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queued))
                batch, self._queued = b"".join(self._queued), []
            try:
                _write_all(self._fd, batch)
            except OSError as exc:
                with self._changed:
                    self._error = exc
                    self._changed.notify_all()
                return
            with self._changed:
                self._unwritten -= len(batch)
                self._changed.notify_all()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _private_stdout() -> int | None:
    """A descriptor of the real stdout above the standard three (POSIX), or None to use the SDK's transport.

    It is never closed: the writing thread may still hold it when serving ends.
    """
    if os.name != "posix":
        return None  # Windows also needs its standard handles rebound: the SDK's transport does that
    import fcntl

    try:
        return fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        return None


@contextmanager
def _stdout_diverted(wire: int) -> Iterator[None]:
    """fd 1 pointed at stderr for the block, then back at the wire (as the SDK's transport does)."""
    diverted = False
    with suppress(OSError):
        os.dup2(2, 1)
        diverted = True
    try:
        yield
    finally:
        if diverted:
            with suppress(OSError):
                os.dup2(wire, 1)


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

    async def next_chunk(self) -> bytes:
        """The next chunk read (b"" at the end); waits in a worker thread only when none is queued yet."""
        if self._rest:
            chunk, self._rest = self._rest, b""
            return chunk
        if self._ended.is_set():
            return _EOF
        try:
            chunk = self._chunks.get_nowait()
        except queue.Empty:
            chunk = await anyio.to_thread.run_sync(self._chunks.get)
        if not chunk:
            self._ended.set()
        return chunk

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
        self.feed = feed

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        self.feed.end()


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
