"""Spans as the OpenTelemetry SDK records them: a job's submit, polls, downloads and save under its call."""

from __future__ import annotations

from collections import Counter

import pytest
from mcp import Client
from opentelemetry.sdk.trace import ReadableSpan

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from flux_mcp.server.build import build_server
from tests.support import structured, text
from tests.support.tracing import recording_spans

pytestmark = pytest.mark.anyio

PROMPT = "a traced lighthouse at dusk"


def tool_call_span(spans: list[ReadableSpan], tool: str) -> ReadableSpan:
    (found,) = [span for span in spans if span.name == f"tools/call {tool}" and span.kind.name == "SERVER"]
    return found


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        span for span in spans if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


async def test_a_job_is_traced_as_submit_polls_downloads_and_save_under_its_tool_call(
    emulator: RunningEmulator, settings: Settings
) -> None:
    emulator.state.config.latency = 0.5  # a few polls
    with recording_spans() as exporter:
        async with Client(build_server(settings)) as client:
            result = await client.call_tool("generate_image", {"prompt": PROMPT, "count": 2})
    assert structured(result)["status"] == "succeeded", text(result)
    task_id = structured(result)["task_id"]
    spans = list(exporter.get_finished_spans())
    call = tool_call_span(spans, "generate_image")
    steps = children(spans, call)
    assert Counter(span.name for span in steps) == {
        "flux.submit": 1,
        "flux.poll": emulator.state.polls,
        "flux.download": 2,
        "flux.save": 1,
    }
    for step in steps:
        assert step.attributes is not None
        assert step.attributes["flux.task.id"] == task_id
        assert step.attributes["flux.model"] == "flux-dev"
        assert step.context is not None and call.context is not None
        assert step.context.trace_id == call.context.trace_id
    (submit,) = [span for span in steps if span.name == "flux.submit"]
    assert submit.attributes == {"flux.model": "flux-dev", "flux.action": "generate", "flux.task.id": task_id}
    assert sorted(span.attributes["flux.index"] for span in steps if span.name == "flux.download") == [0, 1]  # type: ignore[index]
    (save,) = [span for span in steps if span.name == "flux.save"]
    assert save.attributes is not None and save.attributes["flux.status"] == "succeeded"
    # The order a job runs in: submitted, looked at, downloaded, saved.
    by_start = [span.name for span in sorted(steps, key=lambda span: span.start_time or 0)]
    assert by_start[0] == "flux.submit" and by_start[-1] == "flux.save"
    # No prompt in any span, the SDK's included.
    for span in spans:
        assert PROMPT not in str(dict(span.attributes or {}))


async def test_a_resumed_task_is_traced_under_get_task(emulator: RunningEmulator, settings: Settings) -> None:
    emulator.state.config.latency = 0.5
    with recording_spans() as exporter:
        async with Client(build_server(settings)) as client:
            pending = await client.call_tool("generate_image", {"prompt": PROMPT, "wait_seconds": 0})
            assert structured(pending)["status"] == "pending", text(pending)
            done = await client.call_tool("get_task", {"task_id": structured(pending)["task_id"]})
    assert structured(done)["status"] == "succeeded", text(done)
    spans = list(exporter.get_finished_spans())
    submitted = Counter(span.name for span in children(spans, tool_call_span(spans, "generate_image")))
    assert submitted == {"flux.submit": 1, "flux.save": 1}  # no wait: no poll, nothing downloaded yet
    resumed = Counter(span.name for span in children(spans, tool_call_span(spans, "get_task")))
    assert resumed["flux.submit"] == 0 and resumed["flux.download"] == 1 and resumed["flux.save"] == 1
    assert resumed["flux.poll"] == emulator.state.polls  # get_task's own first look, then the poller's
