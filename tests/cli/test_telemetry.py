"""Tracing from OTEL_* variables (the command sets it up): off unless asked; spans reach an OTLP collector."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from flux_mcp.cli.telemetry import tracer_provider


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "flux"},  # naming the service asks for no export
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"},
    ],
)
def test_no_tracing_unless_the_variables_ask_for_it(environ: dict[str, str]) -> None:
    assert tracer_provider(environ) is None


def test_the_service_is_named_flux_mcp_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = tracer_provider({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None and provider.resource.attributes["service.name"] == "flux-mcp"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "images-team")
    provider = tracer_provider({**os.environ, "OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None and provider.resource.attributes["service.name"] == "images-team"
    provider.shutdown()


@contextmanager
def otlp_collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """A stand-in OpenTelemetry collector: its OTLP/HTTP endpoint and the export requests it received."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            if self.path == "/v1/traces":
                received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_spans_reach_an_otlp_http_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    with otlp_collector() as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        provider = tracer_provider({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        assert provider is not None
        with provider.get_tracer("flux_mcp").start_as_current_span(
            "flux.submit", attributes={"flux.model": "x"}
        ):
            pass
        assert provider.force_flush()
        provider.shutdown()
    (request,) = received
    (resource_spans,) = request.resource_spans
    names = [span.name for scope in resource_spans.scope_spans for span in scope.spans]
    service = {item.key: item.value.string_value for item in resource_spans.resource.attributes}
    assert names == ["flux.submit"] and service["service.name"] == "flux-mcp"


def test_console_spans_go_to_stderr_never_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """In stdio mode stdout is the protocol: a span printed there would break the client's stream."""
    provider = tracer_provider({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    with provider.get_tracer("flux_mcp").start_as_current_span("flux.save"):
        pass
    provider.shutdown()
    captured = capsys.readouterr()
    assert captured.out == "" and '"name": "flux.save"' in captured.err
