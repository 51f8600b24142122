"""/metrics (FLUX_MCP_METRICS=true): the counters add up to what the emulator saw; who may read them."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from prometheus_client.parser import text_string_to_metric_families

from flux_mcp.domain.errors import ImageError
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator
from flux_mcp.emulator.state import Fault
from flux_mcp.net.clients import build_download_client
from flux_mcp.net.downloads import Downloader
from flux_mcp.server.build import build_server
from flux_mcp.server.observing import KNOWN_METHODS
from flux_mcp.web.app import build_http_app
from flux_mcp.web.metrics import PrometheusObserver
from testkit.tasks import RawTasks, call_as_task, task_request
from tests.support import TOKEN, WAIT_BOUND, http_service, make_settings, mcp_client, port_of, structured
from tests.support.web import CLIENT_TOKEN, token_settings

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "metrics-reader-0123456789"
PROMPT = "a lighthouse counted by prometheus"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every sample whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in found.items() if sample == name and wanted <= have)


async def scrape(base_url: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        return await http.get(f"{base_url}/metrics", headers=headers or {})


async def test_the_counters_add_up_to_what_the_emulator_saw(emulator: RunningEmulator) -> None:
    state = emulator.state
    state.faults.extend([Fault("503", endpoint="tasks"), Fault("fail_task", endpoint="images")])
    async with (
        http_service(token_settings(emulator, metrics=True)) as base_url,
        mcp_client(base_url, CLIENT_TOKEN) as client,
    ):
        failed = await client.call_tool("generate_image", {"prompt": f"{PROMPT} 0"})
        done = await client.call_tool("generate_image", {"prompt": f"{PROMPT} 1", "count": 2})
        again = await client.call_tool("get_task", {"task_id": structured(done)["task_id"]})
        refused = await client.call_tool("generate_image", {"prompt": PROMPT, "model": "flux-nonesuch"})
        response = await scrape(base_url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert [structured(failed)["status"], structured(done)["status"], structured(again)["status"]] == [
        "failed",
        "succeeded",
        "succeeded",
    ]
    assert refused.is_error and state.submissions == 2
    found = samples(response.text)

    upstream = "flux_mcp_upstream_requests_total"
    assert total(found, upstream, endpoint="/flux/images") == state.submissions == 2
    assert total(found, upstream, endpoint="/flux/tasks") == state.polls
    assert total(found, upstream, endpoint="/flux/tasks", status="503") == state.faults_applied["503"] == 1
    assert total(found, upstream) == state.submissions + state.polls
    reads = total(found, "flux_mcp_poller_reads_total")
    # Every read is a poller's (get_task shows an ended task from the history); one was tried twice (503).
    assert reads == state.polls - 1
    assert total(found, "flux_mcp_tasks_waiting") == 0

    jobs = "flux_mcp_jobs_total"
    assert total(found, jobs, tool="generate_image", model="flux-dev", outcome="succeeded") == 1
    assert total(found, jobs, tool="generate_image", model="flux-dev", outcome="failed") == 1
    assert total(found, jobs, tool="generate_image", model="other", outcome="error") == 1
    assert total(found, jobs, tool="get_task", model="flux-dev", outcome="succeeded") == 1
    # Credits and generation time are counted once per task, when it is first recorded as ended.
    charged = sum(task.cost["amount"] for task in state.tasks.values() if task.cost and not task.failed)
    assert total(found, "flux_mcp_credits_spent_total", model="flux-dev") == charged == 1.0
    assert total(found, "flux_mcp_generation_seconds_count", model="flux-dev", status="succeeded") == 1
    assert total(found, "flux_mcp_generation_seconds_count", model="flux-dev", status="failed") == 1

    operation = "mcp_server_operation_duration_seconds_count"
    calls = total(found, operation, mcp_method_name="tools/call")
    assert calls == 4
    assert total(found, operation, gen_ai_tool_name="generate_image", error_type="tool_error") == 2
    methods = {dict(labels)["mcp_method_name"] for name, labels in found if name == operation}
    assert "tools/call" in methods and methods <= KNOWN_METHODS  # the handshake's too (server/discover)

    for secret in (PROMPT, TOKEN, CLIENT_TOKEN, "lighthouse"):
        assert secret not in response.text


async def test_metrics_are_off_by_default(emulator: RunningEmulator) -> None:
    async with http_service(token_settings(emulator)) as base_url:
        response = await scrape(base_url)
    assert response.status_code == 404


async def test_without_a_token_only_direct_loopback_clients_may_read(emulator: RunningEmulator) -> None:
    async with http_service(token_settings(emulator, metrics=True)) as base_url:
        direct = await scrape(base_url)
        proxied = await scrape(base_url, {"x-forwarded-for": "203.0.113.9"})
        forwarded = await scrape(base_url, {"forwarded": "for=203.0.113.9"})
    assert direct.status_code == 200
    assert proxied.status_code == forwarded.status_code == 403
    assert "FLUX_MCP_METRICS_TOKEN" in proxied.json()["message"]


async def test_a_remote_client_is_refused_without_a_token(emulator: RunningEmulator) -> None:
    """The loopback rule judges the connection's peer: here the app is called as if from 203.0.113.9."""
    gate = build_http_app(token_settings(emulator, metrics=True))
    inner: Any = gate.app  # type: ignore[attr-defined]
    transport = httpx2.ASGITransport(app=gate, client=("203.0.113.9", 40000))
    async with (
        inner.router.lifespan_context(inner),
        httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http,
    ):
        remote = await http.get("/metrics")
        healthz = await http.get("/healthz")
    assert healthz.status_code == 200  # the same request to another route goes through
    assert remote.status_code == 403


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": f"Bearer {CLIENT_TOKEN}"}, 401),  # an MCP token is not the metrics token
        ({"authorization": f"Basic {METRICS_TOKEN}"}, 401),
        ({"authorization": f"Bearer {METRICS_TOKEN}"}, 200),
        ({"authorization": f"bearer {METRICS_TOKEN}", "x-forwarded-for": "203.0.113.9"}, 200),
    ],
)
async def test_with_a_token_it_is_required_from_everyone(
    emulator: RunningEmulator, headers: dict[str, str], status: int
) -> None:
    settings = token_settings(emulator, metrics=True, metrics_token=METRICS_TOKEN)
    async with http_service(settings) as base_url:
        response = await scrape(base_url, headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert METRICS_TOKEN not in response.text
    else:
        assert "flux_mcp_jobs_total" in response.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000"])
async def test_the_host_rules_of_every_route_apply(emulator: RunningEmulator, host: str) -> None:
    settings = token_settings(emulator, metrics=True, metrics_token=METRICS_TOKEN)
    async with http_service(settings) as base_url:
        response = await scrape(base_url, {"host": host, "authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 421
    assert "flux_mcp" not in response.text


async def test_refused_callbacks_are_counted(
    emulator: RunningEmulator, loopback_socket: socket.socket
) -> None:
    port = port_of(loopback_socket)
    settings = make_settings(
        emulator, auth_tokens=CLIENT_TOKEN, public_url=f"http://127.0.0.1:{port}", metrics=True
    )
    async with http_service(settings, sock=loopback_socket) as base_url, httpx2.AsyncClient() as http:
        forged = await http.post(f"{base_url}/callbacks/flux/abc.0123", json={"task_id": "x"})
        response = await scrape(base_url)
    assert forged.status_code == 404
    found = samples(response.text)
    assert total(found, "flux_mcp_callbacks_received_total") == 1
    assert total(found, "flux_mcp_callbacks_refused_total") == 1


def test_two_apps_in_one_process_count_apart() -> None:
    """Each app has its own registry: nothing is registered process-wide, and names never collide."""
    first, second = PrometheusObserver(), PrometheusObserver()
    first.budget_refused()
    first.upstream_request("/flux/images", "200")
    assert "flux_mcp_budget_refusals_total 1.0" in first.exposition().decode()
    assert "flux_mcp_budget_refusals_total 0.0" in second.exposition().decode()
    assert "/flux/images" not in second.exposition().decode()


async def test_downloads_refused_by_the_address_guard_are_counted(emulator: RunningEmulator) -> None:
    counters = PrometheusObserver()
    async with build_download_client(make_settings(emulator)) as http:
        downloader = Downloader(http, anyio.CapacityLimiter(1), max_bytes=1000, timeout=5, observer=counters)
        with pytest.raises(ImageError, match="refusing to download"):
            await downloader.fetch_bytes("http://10.0.0.1/x.png")
        assert await downloader.reachable("http://127.0.0.1:1/x.png") is False
    assert total(samples(counters.exposition().decode()), "flux_mcp_downloads_refused_total") == 2


async def test_labels_come_from_bounded_sets_whatever_a_client_sends(settings: Settings) -> None:
    """A client cannot grow the label sets: unknown tools and models are `other`; no argument is a label."""
    counters = PrometheusObserver()
    async with Client(build_server(settings, observer=counters)) as client:
        unknown = await client.call_tool("tool_0f9e8d", {"prompt": PROMPT})
        bad_model = await client.call_tool("generate_image", {"prompt": PROMPT, "model": "model_7c6b5a"})
    assert unknown.is_error and bad_model.is_error
    exposition = counters.exposition().decode()
    for sent in ("tool_0f9e8d", "model_7c6b5a", "lighthouse"):
        assert sent not in exposition
    found = samples(exposition)
    operation = "mcp_server_operation_duration_seconds_count"
    assert total(found, operation, gen_ai_tool_name="other") == 1
    assert total(found, "flux_mcp_jobs_total", tool="generate_image", model="other", outcome="error") == 1


async def test_budget_refusals_are_counted(emulator: RunningEmulator) -> None:
    settings = token_settings(emulator, metrics=True, budget_total="0.5/month")
    async with (
        http_service(settings) as base_url,
        mcp_client(base_url, CLIENT_TOKEN) as client,
    ):
        spent = await client.call_tool("generate_image", {"prompt": f"{PROMPT} paid"})
        refused = await client.call_tool("generate_image", {"prompt": f"{PROMPT} refused"})
        found = samples((await scrape(base_url)).text)
    assert not spent.is_error and refused.is_error
    assert emulator.state.submissions == 1
    assert total(found, "flux_mcp_budget_refusals_total") == 1


async def test_task_augmented_calls_are_counted_as_their_jobs_end_with_bounded_labels(
    settings: Settings, emulator: RunningEmulator
) -> None:
    """A call answered with an MCP task (either protocol) is one job, counted by how it ended, never as an
    `error` (the label it had when the task's answer was read as a tool result)."""
    counters = PrometheusObserver()
    async with Client(build_server(settings, observer=counters), extensions=[RawTasks()]) as modern:
        created = await call_as_task(modern, "generate_image", {"prompt": f"{PROMPT} task"})
        with anyio.fail_after(WAIT_BOUND):
            while (await task_request(modern, "tasks/get", created["taskId"]))["status"] == "working":  # noqa: ASYNC110 - a client polls
                await anyio.sleep(0.01)
    async with Client(build_server(settings, observer=counters), mode="legacy") as legacy:
        call = {"name": "generate_image", "arguments": {"prompt": f"{PROMPT} legacy"}, "task": {}}
        task = await legacy.session._dispatcher.send_raw_request("tools/call", call, {})  # type: ignore[attr-defined]
        params = {"taskId": task["task"]["taskId"]}
        await legacy.session._dispatcher.send_raw_request("tasks/result", params, {})  # type: ignore[attr-defined]
    found = samples(counters.exposition().decode())
    jobs = "flux_mcp_jobs_total"
    assert total(found, jobs, tool="generate_image", model="flux-dev", outcome="succeeded") == 2
    assert total(found, jobs) == 2 and emulator.state.submissions == 2


async def test_a_budget_refusal_of_a_task_augmented_call_is_counted(emulator: RunningEmulator) -> None:
    counters = PrometheusObserver()
    settings = make_settings(emulator, budget_total="0.5/month")
    async with Client(build_server(settings, observer=counters)) as plain:
        assert not (await plain.call_tool("generate_image", {"prompt": f"{PROMPT} paid"})).is_error
    async with Client(build_server(settings, observer=counters), extensions=[RawTasks()]) as client:
        refused = await call_as_task(client, "generate_image", {"prompt": f"{PROMPT} refused"})
    assert refused["isError"] is True and "taskId" not in refused
    assert emulator.state.submissions == 1
    assert total(samples(counters.exposition().decode()), "flux_mcp_budget_refusals_total") == 1


@pytest.mark.parametrize("name", [["generate_image"], {"tool": "generate_image"}, 7])
async def test_a_tool_name_that_is_not_a_string_is_invalid_params(settings: Settings, name: Any) -> None:
    """Counted or not, such a call is the SDK's invalid request, never an internal error with its text."""
    for counters in (PrometheusObserver(), None):
        server = build_server(settings, observer=counters) if counters else build_server(settings)
        async with Client(server) as client:
            with pytest.raises(MCPError) as refused:
                await client.session._dispatcher.send_raw_request(  # type: ignore[attr-defined]
                    "tools/call", {"name": name, "arguments": {}}, {}
                )
        assert refused.value.error.code == INVALID_PARAMS
