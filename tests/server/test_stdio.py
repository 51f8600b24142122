"""The stdio transport's own streams (`server.stdio`): lines in, messages out, no thread round trip each.

The SDK's transport waited for a worker thread on every line read and on every write and flush of
every message; `serve_stdio` gives it streams that do not. These tests hold the streams to what the
SDK's transport needs (whole lines, bytes out in order, a stop when the reader stops reading, a broken
pipe reported) and the server, run as hosts run it, to answering a burst of requests without a worker
thread per message.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_mcp.server.stdio import FeedLines, QueuedOutput
from tests.support import child_env, initialize_request, stdio_exchange

pytestmark = pytest.mark.anyio

EXIT_BOUND_SECONDS = 30.0  # only there so a broken build fails instead of hanging the suite


class ScriptedFeed:
    """A StdinFeed stand-in: these chunks, then the end."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def next_chunk(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(points) if end > start]


async def lines_of(chunks: list[bytes]) -> list[str]:
    return [line async for line in FeedLines(ScriptedFeed(chunks))]  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=40
        ),
        max_size=8,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    unterminated=st.booleans(),
)
def test_lines_arrive_whole_however_the_bytes_were_chunked(
    messages: list[str], cuts: list[int], unterminated: bool
) -> None:
    wire = "".join(message + "\n" for message in messages)
    if unterminated:
        wire += "{last"
    expected = [message + "\n" for message in messages] + (["{last"] if unterminated else [])
    # Multi-byte characters are cut anywhere too: a line is decoded only once it is complete.
    assert anyio.run(lines_of, split_at(wire.encode(), cuts)) == expected


async def test_invalid_utf8_is_replaced_as_the_sdks_reader_does() -> None:
    assert await lines_of([b'{"a": "\xff"}\n']) == ['{"a": "\ufffd"}\n']


def read_all(fd: int, into: bytearray, done: threading.Event) -> None:
    while chunk := os.read(fd, 65536):
        into.extend(chunk)
    done.set()


async def test_output_keeps_every_message_whole_and_in_order() -> None:
    read_end, write_end = os.pipe()
    received, done = bytearray(), threading.Event()
    reader = threading.Thread(target=read_all, args=(read_end, received, done), daemon=True)
    reader.start()
    output = QueuedOutput(write_end)
    messages = [json.dumps({"id": index, "text": "é" * (index % 50)}) + "\n" for index in range(2000)]
    for message in messages:
        await output.write(message)
        await output.flush()
    await output.drain()
    os.close(write_end)
    await anyio.to_thread.run_sync(done.wait, EXIT_BOUND_SECONDS)
    os.close(read_end)
    assert received.decode() == "".join(messages)


async def test_output_stops_the_writer_while_the_reader_falls_behind() -> None:
    read_end, write_end = os.pipe()
    high, low = 256 * 1024, 64 * 1024
    output = QueuedOutput(write_end, high_water=high, low_water=low)
    message = "x" * 1023 + "\n"
    total = 0
    while total <= high:  # nobody reads: the pipe fills, the rest stays queued
        await output.write(message)
        total += len(message)
    received, done = bytearray(), threading.Event()
    flushed_after = -1

    async def flush() -> None:
        nonlocal flushed_after
        await output.flush()
        flushed_after = len(received)

    async with anyio.create_task_group() as group:
        group.start_soon(flush)
        await anyio.wait_all_tasks_blocked()
        assert flushed_after == -1  # still waiting: more than `high` bytes are unread
        reader = threading.Thread(target=read_all, args=(read_end, received, done), daemon=True)
        reader.start()
    # It went on only once the reader had taken all but `low` bytes (plus what a pipe holds).
    pipe_capacity = 1024 * 1024
    assert flushed_after >= total - low - pipe_capacity
    await output.drain()
    os.close(write_end)
    await anyio.to_thread.run_sync(done.wait, EXIT_BOUND_SECONDS)
    os.close(read_end)
    assert len(received) == total


async def test_a_broken_pipe_is_raised_by_the_next_write() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    output = QueuedOutput(write_end)
    await output.write("lost\n")
    await output.drain()  # returns once the writing thread has met the error
    with pytest.raises(BrokenPipeError):
        await output.write("next\n")
    os.close(write_end)


# --- the server as hosts run it ---------------------------------------------------------------

COUNTING_SERVER = """
import atexit, sys
import anyio.to_thread
hops = 0
original = anyio.to_thread.run_sync
async def counted(*args, **kwargs):
    global hops
    hops += 1
    return await original(*args, **kwargs)
anyio.to_thread.run_sync = counted
atexit.register(lambda: print(f"worker-thread round trips: {hops}", file=sys.stderr))
from flux_mcp.cli.main import main
sys.exit(main([]))
"""


@pytest.mark.subprocess
def test_a_burst_of_requests_over_stdio_needs_no_worker_thread_per_message(tmp_path: Path) -> None:
    requests = 40
    env = child_env(
        tmp_path, ACEDATACLOUD_API_TOKEN="sk-test", ACEDATACLOUD_API_BASE_URL="http://127.0.0.1:9"
    )
    burst = [initialize_request(0), {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    burst += [{"jsonrpc": "2.0", "id": index, "method": "tools/list"} for index in range(1, requests + 1)]
    argv = [sys.executable, "-c", COUNTING_SERVER]
    answers, log = stdio_exchange(
        argv, env, burst, requests + 1, tmp_path=tmp_path, exit_within=EXIT_BOUND_SECONDS
    )
    listed = [answer for answer in answers if "tools" in answer.get("result", {})]
    assert len(listed) == requests, log[-2000:]
    hops = int(log.rsplit("worker-thread round trips: ", 1)[1].split()[0])
    # The SDK's own transport took 3 per request here (its line read, its write, its flush): 120.
    assert hops <= 5, hops
