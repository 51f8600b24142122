"""What the service tells about itself: the `Observer` every layer reports to, and the spans of a job's steps.

`Observer` is the metrics interface the layers below the server call (upstream requests, poller reads,
callbacks, refused downloads, jobs ending); it does nothing by default, so a library use, stdio and the
tests pay one method call per event. The HTTP service with FLUX_MCP_METRICS=true passes its Prometheus
implementation (`web/metrics.py`), one per app: nothing here is process-wide.

Spans use the OpenTelemetry API only, which is a no-op until the process configures an SDK (the CLI does
with the `otel` extra and OTEL_* variables; an embedding app may configure its own). No span carries a
prompt, a token or a person: the task id, the model, the action, counts and statuses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link as Link  # re-exported: the layers import OpenTelemetry from here only
from opentelemetry.trace import Span as Span
from opentelemetry.trace import SpanKind

TRACER_NAME = "flux_mcp"
_tracer = trace.get_tracer(TRACER_NAME)  # a proxy: it follows whatever provider the process sets later

# Span attribute names (flux-mcp's own namespace; the SDK's tool-call span carries the MCP ones).
TASK_ID, MODEL, ACTION = "flux.task.id", "flux.model", "flux.action"

Context = otel_context.Context


class Observer:
    """Counts what happens; every method is a no-op here. `web.metrics.PrometheusObserver` counts for real.

    Labels are bounded sets (a catalogue model or "other", an endpoint path, a status): never a prompt, a
    token, a task id or a person.
    """

    def upstream_request(self, endpoint: str, status: str) -> None:
        """One HTTP exchange with an AceDataCloud service: `status` its HTTP status, or "no_answer"."""

    def poller_read(self, tasks: int) -> None:
        """One read by a poller (a batch of `tasks` ids, or one)."""

    def tasks_waiting(self, change: int) -> None:
        """Tasks that calls wait on went up or down by `change`."""

    def callback_received(self) -> None:
        """A POST to a callback URL, whatever becomes of it."""

    def callback_refused(self) -> None:
        """A callback refused (unknown or forged URL, another task, a body too large or not JSON)."""

    def download_refused(self) -> None:
        """A download refused by the address guard (not a public internet address)."""

    def task_ended(self, model: str, status: str, seconds: float | None, credits: float | None) -> None:
        """A task first recorded as ended: how long it took since its submission, and what it cost."""

    def job_call(self, tool: str, model: str, outcome: str) -> None:
        """A job tool call answered: `outcome` succeeded, failed, pending or error."""

    def operation(self, method: str, tool: str | None, error_type: str | None, seconds: float) -> None:
        """One MCP request handled (OpenTelemetry's mcp.server.operation.duration)."""

    def budget_refused(self) -> None:
        """A job call refused because it would pass a budget (nothing submitted)."""


NO_OBSERVER = Observer()


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, str | int | None],
    *,
    parent: Context | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Span]:
    """A span of one step (child of the current span, or of `parent`); a no-op without an SDK.

    Attributes whose value is None are left out.
    """
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):  # no SDK: nothing would record
        yield trace.INVALID_SPAN
        return
    shown = {key: value for key, value in attributes.items() if value is not None}
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.INTERNAL, attributes=shown, links=links
    ) as current:
        yield current


def task_span(
    name: str, task_id: str | None, model: str | None, **more: str | int | None
) -> AbstractContextManager[Span]:
    """The span of one step of a task (flux.submit, flux.download, flux.save); `more`: other flux.* values."""
    extra = {f"flux.{key}": value for key, value in more.items()}
    return span(name, {TASK_ID: task_id, MODEL: model, **extra})


def current_context() -> Context:
    """Where a span started now would hang: kept by work that continues in another task (the poller)."""
    return otel_context.get_current()


def link_to(context: Context) -> Link | None:
    """A link to the span current in `context`, when there is one (with an SDK)."""
    found = trace.get_current_span(context).get_span_context()
    return Link(found) if found.is_valid else None
