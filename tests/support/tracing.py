"""Spans recorded by the real OpenTelemetry SDK, for the tests that check them.

OpenTelemetry's tracer provider is set once per process, and the tracers made before (flux-mcp's and the
MCP SDK's, both proxies) follow it from then on. So the first test that records installs one provider for
its worker process, whose processor hands finished spans to whichever `recording_spans()` block is open
and drops them otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _Recorder(SpanProcessor):
    def __init__(self) -> None:
        self.exporter: InMemorySpanExporter | None = None

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self.exporter is not None:
            self.exporter.export([span])


_recorder: _Recorder | None = None


def _installed() -> _Recorder:
    global _recorder
    if _recorder is None:
        provider = TracerProvider()
        _recorder = _Recorder()
        provider.add_span_processor(_recorder)
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            raise RuntimeError("another tracer provider was set in this process before the tests'")
    return _recorder


@contextmanager
def recording_spans() -> Iterator[InMemorySpanExporter]:
    """The spans that end while the block runs, as the SDK's in-memory exporter holds them."""
    recorder = _installed()
    exporter = InMemorySpanExporter()
    recorder.exporter = exporter
    try:
        yield exporter
    finally:
        recorder.exporter = None
