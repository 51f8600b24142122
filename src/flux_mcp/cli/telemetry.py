"""Exporting spans: the OpenTelemetry SDK set up from the standard OTEL_* variables, when the command serves.

A process-wide setting, so the command makes it (main), never the library: an application embedding
flux-mcp configures OpenTelemetry its own way and the spans follow it. Tracing is on when an exporter is
named (OTEL_TRACES_EXPORTER=otlp or console) or an OTLP endpoint is given (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and OTEL_SDK_DISABLED is not true. The exporter reads its own
variables (endpoint, headers, timeout, compression); OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name
the service (`flux-mcp` by default); OTEL_TRACES_SAMPLER chooses the sampling. It needs the `otel` extra.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from flux_mcp import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE_NAME = "flux-mcp"


def configure_tracing(environ: Mapping[str, str]) -> None:
    """Make the tracer provider the OTEL_* variables ask for the process's own (none when they ask none)."""
    provider = tracer_provider(environ)
    if provider is not None:
        from opentelemetry import trace

        trace.set_tracer_provider(provider)  # it flushes its spans at exit


def tracer_provider(environ: Mapping[str, str]) -> TracerProvider | None:
    """The provider for these variables, or None: tracing not asked for, or the SDK not installed."""
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    wanted = exporter_name not in ("", "none") or any(environ.get(name) for name in ENDPOINT_VARIABLES)
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or not wanted:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ModuleNotFoundError:
        logger.warning(
            "OTEL_* asks for traces, but the OpenTelemetry SDK is missing: pip install 'flux-mcp[otel]'"
        )
        return None
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter(out=sys.stderr)  # stdout is the protocol in stdio mode
    else:
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        if protocol not in (None, "http/protobuf"):
            logger.warning("OTLP over %s is not included; exporting over http/protobuf (port 4318)", protocol)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    named = "OTEL_SERVICE_NAME" in environ or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    attributes = {"service.version": __version__, **({} if named else {"service.name": SERVICE_NAME})}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
