"""The gallery (an MCP App): the ui:// resource, who sees the UI link, and the view in a real browser.

Clients that negotiate MCP Apps get `_meta.ui.resourceUri` on the tools and the app-only
`preview_image` tool; everyone else sees the tool list and the results exactly as before. The browser
test serves a minimal host page (the official ext-apps `AppBridge` plus the MCP TypeScript SDK client)
next to the server on loopback and drives it with headless Chromium through playwright-core.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.client
import pytest
from mcp import Client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp_types import CallToolResult
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import Fault, RunningEmulator, serve_asgi
from flux_mcp.media.videos import poster_available
from flux_mcp.server.build import build_server
from flux_mcp.server.ui import GALLERY_URI, gallery_html
from tests.support import apps_client, make_settings
from tests.support.prerequisites import require

pytestmark = pytest.mark.anyio

UI_TOOLS = {"generate_image", "edit_image", "get_task", "list_tasks"}
SIZE_BUDGET = 25_000
BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
BROWSER_TIMEOUT = 180.0
SHOTS = ("", "-dark", "-narrow", "-pending", "-history", "-video", "-credits")
SCREENSHOTS = [f"gallery{suffix}.png" for suffix in SHOTS]


# --- the resource ---------------------------------------------------------------------------


async def test_resource_is_an_mcp_app_with_a_closed_csp(settings: Settings) -> None:
    async with apps_client(build_server(settings)) as client:
        listed = {resource.uri: resource for resource in (await client.list_resources()).resources}
        contents = (await client.read_resource(GALLERY_URI)).contents
    assert listed[GALLERY_URI].mime_type == APP_MIME_TYPE
    [page] = contents
    assert page.mime_type == APP_MIME_TYPE
    assert page.text == gallery_html()
    csp = (page.meta or {})["ui"]["csp"]
    assert csp == {"connectDomains": [], "resourceDomains": [], "frameDomains": [], "baseUriDomains": []}


def test_html_is_self_contained_and_small() -> None:
    html = gallery_html()
    assert len(html.encode()) < SIZE_BUDGET
    # Nothing from the network: the CSP allows inline code and data:/blob: images only.
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<script[^>]*\ssrc\s*=", html, re.I)
    assert not re.search(r"<link\b", html, re.I)
    styles = "".join(re.findall(r"<style[^>]*>(.*?)</style>", html, re.S | re.I))
    assert "@import" not in styles and "url(" not in styles
    assert not re.search(r"\b(src|href)\s*=\s*['\"]?(?!data:|blob:|#)[a-z/]", html, re.I)
    # the protocol it speaks
    for method in ("ui/initialize", "ui/notifications/initialized", "tools/call", "ui/open-link"):
        assert f'"{method}"' in html
    assert "ui/notifications/size-changed" in html and "2026-01-26" in html


# --- who sees the UI ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_apps_client_gets_the_ui_link(settings: Settings, mode: str) -> None:
    advertised = mcp.client.advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
    async with Client(build_server(settings), mode=mode, extensions=[advertised]) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for name in UI_TOOLS:
        assert (tools[name].meta or {}).get("ui", {}).get("resourceUri") == GALLERY_URI, name
    assert "ui" not in (tools["get_tasks"].meta or {})
    preview = tools["preview_image"].meta or {}
    assert preview["ui"] == {"resourceUri": GALLERY_URI, "visibility": ["app"]}


async def test_plain_client_sees_no_ui(client: Client) -> None:
    tools = (await client.list_tools()).tools
    assert "preview_image" not in {tool.name for tool in tools}
    assert {tool.name for tool in tools} >= UI_TOOLS
    for tool in tools:
        assert "ui" not in (tool.meta or {}), tool.name


def shape(value: Any) -> Any:
    """The structure of a JSON value: key sets and types, not the values (ids, seeds, times differ)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def result_shape(result: CallToolResult) -> Any:
    dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return shape(dumped)


async def test_results_are_the_same_for_both_kinds_of_client(emulator: RunningEmulator) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("generate_image", {"prompt": "a lighthouse", "count": 2}),
        ("generate_image", {"prompt": "pending", "wait_seconds": 0}),
        ("list_tasks", {"limit": 1}),
    ]
    shapes: dict[str, list[Any]] = {}
    types: dict[str, list[str]] = {}
    for kind, connect in (("plain", Client), ("apps", apps_client)):
        # Each its own history: in a shared one the second pending call would continue the first's task.
        async with connect(build_server(make_settings(emulator))) as client:
            results = [await client.call_tool(name, args) for name, args in calls]
            shapes[kind] = [result_shape(result) for result in results]
            types[kind] = [block.type for block in results[0].content]
    assert shapes["plain"] == shapes["apps"]
    # text summary, then per image its preview and its resource link
    assert types["plain"] == types["apps"] == ["text", "image", "resource_link", "image", "resource_link"]


# --- in a real browser ----------------------------------------------------------------------


def browser_tools() -> tuple[str, str]:
    """node and Chromium, or a visible skip saying what is missing (a failure where CI requires them)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        require("node", "browser test: node/npm not found; install Node.js to run it")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        require("browser", "browser test: chromium not found; `apt-get install chromium` (or set CHROMIUM)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        require("browser", "browser test: no tests/browser/node_modules; run `npm ci --prefix tests/browser`")
    return node, chromium


@asynccontextmanager
async def gallery_host(settings: Settings, emulator: RunningEmulator) -> AsyncIterator[str]:
    """The MCP server (streamable HTTP) and the host page with its node_modules, on one loopback origin.

    One origin, because the page's MCP client must pass the server's Origin/Host checks without CORS.
    POST /control lets the browser script slow the emulator down, make its next task fail or set its price.
    """

    async def control(request: Request) -> Response:
        body = json.loads(await request.body())
        if "latency" in body:
            emulator.state.config.latency = float(body["latency"])
        if "fault" in body:
            emulator.state.faults.append(Fault(body["fault"]))
        if "price" in body:
            emulator.state.platform.image_price = float(body["price"])
        return Response(status_code=204)

    server = build_server(settings)
    app = server.streamable_http_app()
    app.router.routes[:0] = [
        Route("/control", control, methods=["POST"]),
        Mount("/browser", app=StaticFiles(directory=BROWSER_DIR)),
    ]
    async with server.session_manager.run(), serve_asgi(app) as base_url:
        yield f"{base_url}/browser/host.html"


@pytest.mark.browser
async def test_gallery_in_a_browser(emulator: RunningEmulator, settings: Settings, tmp_path: Path) -> None:
    node, chromium = browser_tools()
    # A second server, with a per-person budget and its own history: the budget line (one browser for both).
    budgeted = make_settings(emulator, budget_per_person="2/day")
    async with gallery_host(settings, emulator) as url, gallery_host(budgeted, emulator) as budget_url:
        with anyio.fail_after(BROWSER_TIMEOUT):
            done = await anyio.run_process(
                [node, str(BROWSER_DIR / "run.mjs"), url, str(tmp_path), budget_url],
                check=False,
                env={**os.environ, "CHROMIUM": chromium},
            )
    output = done.stdout.decode(errors="replace")
    sys.stderr.write(done.stderr.decode(errors="replace")[-4000:])
    lines = output.strip().splitlines()
    assert lines, f"run.mjs printed nothing (exit {done.returncode})"
    report = json.loads(lines[-1])
    assert done.returncode == 0 and "error" not in report, json.dumps(report, indent=1)
    steps = {step["name"]: step for step in report["steps"]}

    # The host negotiated Apps, so it sees the app-only tool too.
    assert "preview_image" in report["tools"]
    # A real generate_image result renders: two previews with pixels.
    assert steps["generate"]["status"] == "succeeded"
    assert len(steps["generate"]["widths"]) == 2 and all(steps["generate"]["widths"])
    # Variations: more images, all decoded, under a "Variations of" section.
    assert len(steps["variations"]["widths"]) > 2 and all(steps["variations"]["widths"])
    assert any(origin.startswith("Variations of") for origin in steps["variations"]["origins"])
    assert all(steps["full size"]["widths"])
    [link] = steps["open file"]["links"]
    assert link.startswith("file:///") and link.endswith(".png")
    assert steps["copy url"]["label"] in {"Copied", "Select & copy"}
    assert len(steps["edit"]["widths"]) > len(steps["variations"]["widths"]) and all(steps["edit"]["widths"])
    assert any(origin.startswith("Edit of image") for origin in steps["edit"]["origins"])
    assert steps["dark"]["theme"] == "dark" and len(steps["dark"]["widths"]) == 3
    assert steps["dark"]["background"] != "rgb(255, 255, 255)"
    narrow = steps["pending then done"]
    assert narrow["status"] == "pending" and len(narrow["widths"]) == 2 and all(narrow["widths"])
    assert narrow["columns"] >= 1 and not narrow["overflow"]
    assert steps["failed"]["status"] == "failed" and "failed" in steps["failed"]["error"]
    history = steps["history"]
    assert history["tasks"] >= 6 and len(history["thumbs"]) >= 3 and all(history["thumbs"])
    assert all(history["opened"])
    # The video plays: metadata loaded, frames decoded, its clock moving; the poster was shown first.
    video = steps["video"]
    assert video["status"] == "succeeded" and video["kind"] == "video" and video["src"] == "blob:"
    assert video["readyState"] >= 2 and video["currentTime"] > 0 and video["width"] > 0
    assert abs(video["duration"] - 5) < 0.2 and video["poster"] == poster_available()
    assert "play_video" in report["tools"]
    # get_credits: the balance; without a budget, no budget line.
    credits = steps["credits"]
    assert credits["budget_field"] is None
    assert any(row.startswith("Flux: ") for row in credits["shown"]["rows"]), credits
    assert credits["shown"]["budget"] == [] and credits["shown"]["meters"] == []
    # With FLUX_MCP_BUDGET_PER_PERSON=2/day, after one image at 0.123456 credits: the caller's own budget, and
    # only that, its figures as the text result gives them (4 decimals at most).
    budget = steps["budget"]
    assert budget["budget_field"]["yours"]["left"] == 1.876544, budget
    [line] = budget["shown"]["budget"]
    assert line.startswith("Your budget here: 1.8765 of 2 credits left today"), line
    assert "resets" in line and "UTC" in line
    assert budget["shown"]["meters"] == [{"value": 1.876544, "max": 2, "label": "Your budget here"}]
    assert not report.get("console"), report["console"]

    # Upstream submissions: generate, variations, edit, dark, pending, failed, video; the budgeted one.
    assert emulator.state.submissions == 8
    stable = BROWSER_DIR / "output"
    stable.mkdir(exist_ok=True)
    for name in SCREENSHOTS:
        shot = tmp_path / name
        assert shot.stat().st_size > 5_000, name
        shutil.copyfile(shot, stable / name)
