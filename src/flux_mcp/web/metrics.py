"""GET /metrics: what the service counts, in the Prometheus text format (FLUX_MCP_METRICS=true).

`PrometheusObserver` is the `domain.telemetry.Observer` the HTTP app hands to every layer; each app has its
own registry (two apps in one process never share a counter, and nothing is registered process-wide).
Names follow OpenTelemetry's semantic conventions for MCP where they exist (mcp.server.operation.duration,
in Prometheus spelling) and flux-mcp's own are under `flux_mcp_`. No label carries a prompt, a token, a task
id or a person (server/observing.py bounds the MCP ones).

Who may read it: with FLUX_MCP_METRICS_TOKEN, whoever presents that bearer token; without it, loopback
clients only, and only when the request did not come through a proxy (a proxy on the same host makes every
client look local). The Host/Origin rules of every route apply (web/gate.py).
"""

from __future__ import annotations

import hmac

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.domain.settings import Settings
from flux_mcp.domain.telemetry import Observer
from flux_mcp.server.caller import bearer_token
from flux_mcp.server.observing import known_model
from flux_mcp.web.gate import is_loopback

METRICS_PATH = "/metrics"
# OpenTelemetry's advice for mcp.server.operation.duration.
OPERATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
GENERATION_BUCKETS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


class PrometheusObserver(Observer):
    """The counters of one HTTP app, in its own registry."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._operations = Histogram(
            "mcp_server_operation_duration_seconds",
            "MCP requests handled, by method and tool (OpenTelemetry mcp.server.operation.duration).",
            ["mcp_method_name", "gen_ai_tool_name", "error_type"],
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )
        self._jobs = Counter(
            "flux_mcp_jobs_total",
            "Job tool calls answered, by tool, model and outcome (succeeded, failed, pending, error).",
            ["tool", "model", "outcome"],
            registry=registry,
        )
        self._generation = Histogram(
            "flux_mcp_generation_seconds",
            "From submission to the task first recorded as ended, by model.",
            ["model", "status"],
            buckets=GENERATION_BUCKETS,
            registry=registry,
        )
        self._credits = Counter(
            "flux_mcp_credits_spent",
            "Credits the upstream reported for ended tasks, by model.",
            ["model"],
            registry=registry,
        )
        self._upstream = Counter(
            "flux_mcp_upstream_requests",
            'HTTP exchanges with AceDataCloud, by endpoint and status ("no_answer": none came).',
            ["endpoint", "status"],
            registry=registry,
        )
        self._waiting = Gauge(
            "flux_mcp_tasks_waiting", "Tasks that tool calls are waiting on right now.", registry=registry
        )
        self._reads = Counter("flux_mcp_poller_reads", "Upstream reads by the pollers.", registry=registry)
        self._read_tasks = Counter(
            "flux_mcp_poller_tasks_read",
            "Task looks in those reads (a batch counts each task).",
            registry=registry,
        )
        self._callbacks = Counter("flux_mcp_callbacks_received", "POSTs to callback URLs.", registry=registry)
        self._callbacks_refused = Counter(
            "flux_mcp_callbacks_refused",
            "Callbacks refused: unknown or forged URL, another task, too large, not JSON.",
            registry=registry,
        )
        self._downloads_refused = Counter(
            "flux_mcp_downloads_refused",
            "Downloads refused by the address guard (not a public internet address).",
            registry=registry,
        )
        self._budget_refusals = Counter(
            "flux_mcp_budget_refusals",
            "Job calls refused by a budget (nothing submitted).",
            registry=registry,
        )

    def upstream_request(self, endpoint: str, status: str) -> None:
        self._upstream.labels(endpoint, status).inc()

    def poller_read(self, tasks: int) -> None:
        self._reads.inc()
        self._read_tasks.inc(tasks)

    def tasks_waiting(self, change: int) -> None:
        self._waiting.inc(change)

    def callback_received(self) -> None:
        self._callbacks.inc()

    def callback_refused(self) -> None:
        self._callbacks_refused.inc()

    def download_refused(self) -> None:
        self._downloads_refused.inc()

    def task_ended(self, model: str, status: str, seconds: float | None, credits: float | None) -> None:
        model = known_model(model)
        if seconds is not None:
            self._generation.labels(model, status).observe(seconds)
        if credits is not None and credits > 0:
            self._credits.labels(model).inc(credits)

    def job_call(self, tool: str, model: str, outcome: str) -> None:
        self._jobs.labels(tool, model, outcome).inc()

    def operation(self, method: str, tool: str | None, error_type: str | None, seconds: float) -> None:
        self._operations.labels(method, tool or "", error_type or "").observe(seconds)

    def budget_refused(self) -> None:
        self._budget_refusals.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_route(settings: Settings, observer: PrometheusObserver) -> Route:
    """GET /metrics, for whoever may read it (see the module's docstring)."""
    token = settings.metrics_token.get_secret_value().encode() if settings.metrics_token else None

    async def metrics(request: Request) -> Response:
        if token is not None:
            presented = bearer_token(request.headers.get("authorization"))
            if presented is None or not hmac.compare_digest(presented.encode(), token):
                return JSONResponse(
                    {
                        "error": "unauthorized",
                        "message": "/metrics needs the bearer token FLUX_MCP_METRICS_TOKEN.",
                    },
                    status_code=401,
                    headers={"www-authenticate": 'Bearer realm="metrics"'},
                )
        elif not _local(request):
            return JSONResponse(
                {
                    "error": "forbidden",
                    "message": "/metrics answers loopback clients only; set FLUX_MCP_METRICS_TOKEN to read "
                    "it from elsewhere (or through a proxy).",
                },
                status_code=403,
            )
        return Response(observer.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Route(METRICS_PATH, metrics, methods=["GET"])


def _local(request: Request) -> bool:
    client = request.client
    if client is None or not is_loopback(client.host):
        return False
    return not any(name in request.headers for name in PROXY_HEADERS)
