"""The HTTP front door, attacked as a stranger would: made-up tokens, someone else's session id, a foreign
Host header, an OAuth client probing for metadata, and the DEBUG log of a real `flux-mcp serve` process.

Issue 12 items 3, 6, 8 and 12, and the mcp-remote bullet of issue 13 §5. Everything runs on loopback:
the app under uvicorn, the emulator as the upstream, small hostile upstreams written here.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from mcp import Client
from mcp.client.client import ConnectMode
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ImageContent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flux_mcp.domain.errors import StartupError
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import Fault, RunningEmulator, serve_asgi
from flux_mcp.web.app import build_http_app
from tests.support import (
    TOKEN,
    child_env,
    flux_command,
    free_port,
    history_rows,
    http_service,
    make_settings,
    mcp_client,
    stderr_file,
    structured,
    text,
    wait_until_listening,
)
from tests.support.web import INITIALIZE, headers_for, json_lines, json_rpc_answers, mcp_remote, post

pytestmark = pytest.mark.anyio

ALICE, BOB = "sk-alice-0123456789abcdef", "sk-bob-fedcba9876543210"
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
GENERATE = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "tools/call",
    "params": {"name": "generate_image", "arguments": {"prompt": "a stranger's cat"}},
}
DISCOVERY_PATHS = [
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/register",
    "/authorize",
    "/token",
]
BRIDGES = Path(__file__).resolve().parents[1] / "bridges"


def pass_through(emulator: RunningEmulator, **overrides: Any) -> Settings:
    emulator.state.config.tokens = frozenset({ALICE, BOB, TOKEN})
    return make_settings(emulator, auth="passthrough", api_token=None, **overrides)


def two_tokens(emulator: RunningEmulator, **overrides: Any) -> Settings:
    return make_settings(emulator, auth_tokens=f"{ALICE},{BOB}", **overrides)


async def open_session(http: httpx2.AsyncClient, base_url: str, token: str) -> str:
    """initialize + initialized, as a client opens a session; returns the session id."""
    response = await post(http, base_url, INITIALIZE, token)
    assert response.status_code == 200, response.text
    session: str = response.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await post(http, base_url, note, token, session=session)).status_code == 202
    return session


def history_count(settings: Settings) -> int:
    return len(history_rows(settings.history_path()))


# --- 12.3 pass-through accepts only tokens the upstream accepts ------------------------------------


async def test_made_up_pass_through_tokens_get_401_before_any_mcp_processing(
    emulator: RunningEmulator,
) -> None:
    settings = pass_through(emulator)
    made_up = [f"sk-made-up-{index}-{uuid.uuid4().hex}" for index in range(10)]
    async with http_service(settings) as base_url, httpx2.AsyncClient(timeout=30) as http:
        for token in made_up:
            for body in (INITIALIZE, GENERATE, TOOLS_LIST):
                response = await post(http, base_url, body, token)
                assert response.status_code == 401, (body["method"], response.text)
                challenge = response.headers["www-authenticate"]
                assert 'error="invalid_token"' in challenge and "error_description=" in challenge
                assert "does not accept this token" in response.json()["message"]
                assert "mcp-session-id" not in response.headers
    assert emulator.state.submissions == 0  # nothing was generated or billed upstream
    assert history_count(settings) == 0  # nothing written for owners nobody verified
    for token in made_up:  # each asked the upstream exactly once; the refusal was remembered
        assert emulator.state.tokens_seen.count(token) == 1


async def test_a_real_pass_through_token_is_verified_once_and_then_works(emulator: RunningEmulator) -> None:
    settings = pass_through(emulator)
    async with http_service(settings) as base_url:
        for _ in range(3):
            async with mcp_client(base_url, ALICE) as client:
                listed = await client.call_tool("list_tasks", {})
                assert not listed.is_error, text(listed)
        assert emulator.state.polls == 1  # one lookup of a task that cannot exist, for three sessions
        async with mcp_client(base_url, ALICE) as client:
            result = await client.call_tool("generate_image", {"prompt": "a verified cat"})
    assert structured(result)["status"] == "succeeded", text(result)
    assert set(emulator.state.tokens_seen) == {ALICE}
    assert history_count(settings) == 1


async def test_requests_that_arrive_together_with_a_new_token_share_one_lookup(
    emulator: RunningEmulator,
) -> None:
    emulator.state.faults.append(Fault("slow", "tasks", delay=0.5))  # the lookup is still running
    async with http_service(pass_through(emulator)) as base_url, httpx2.AsyncClient(timeout=30) as http:
        responses: list[Any] = []

        async def initialize() -> None:
            responses.append(await post(http, base_url, INITIALIZE, ALICE))

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(initialize)
    assert [response.status_code for response in responses] == [200] * 20
    assert emulator.state.polls == 1


@pytest.mark.parametrize("fault", ["503", "502_html", "429", "drop_before"])
async def test_an_upstream_outage_answers_503_and_keeps_no_verdict(
    emulator: RunningEmulator, fault: str
) -> None:
    emulator.state.faults.append(Fault(fault, "tasks"))  # type: ignore[arg-type]
    async with http_service(pass_through(emulator)) as base_url, httpx2.AsyncClient(timeout=30) as http:
        refused = await post(http, base_url, INITIALIZE, ALICE)
        assert refused.status_code == 503, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "cannot check your AceDataCloud token" in refused.json()["message"]
        assert ALICE not in refused.text
        later = await post(http, base_url, INITIALIZE, ALICE)  # the outage is over: asked again, admitted
    assert later.status_code == 200, later.text
    assert emulator.state.polls == 2


async def test_non_loopback_pass_through_bind_is_refused_like_none(emulator: RunningEmulator) -> None:
    settings = pass_through(emulator, host="0.0.0.0")
    with pytest.raises(StartupError, match="FLUX_MCP_AUTH=passthrough") as refused:
        build_http_app(settings)
    assert "--allow-unauthenticated" in str(refused.value)
    build_http_app(settings, allow_unauthenticated=True)  # a proxy in front authenticates
    build_http_app(pass_through(emulator, host="127.0.0.1"))
    build_http_app(make_settings(emulator, host="0.0.0.0", auth_tokens="t1"))


@pytest.mark.parametrize("mode", ["tokens", "passthrough"])
async def test_each_credential_holds_a_bounded_number_of_sessions(
    emulator: RunningEmulator, mode: str
) -> None:
    make = two_tokens if mode == "tokens" else pass_through
    settings = make(emulator, max_sessions_per_client=3, max_sessions_per_team_token=3)
    async with http_service(settings) as base_url, httpx2.AsyncClient(timeout=30) as http:
        bobs = await open_session(http, base_url, BOB)
        alices = [await open_session(http, base_url, ALICE) for _ in range(3)]
        await open_session(http, base_url, ALICE)  # her fourth ends her oldest, never someone else's
        gone = await post(http, base_url, TOOLS_LIST, ALICE, session=alices[0])
        assert gone.status_code == 404, gone.text
        assert (await post(http, base_url, TOOLS_LIST, BOB, session=bobs)).status_code == 200
        for session in alices[1:]:
            assert (await post(http, base_url, TOOLS_LIST, ALICE, session=session)).status_code == 200
        ended = await http.delete(f"{base_url}/mcp", headers=headers_for(ALICE, alices[1]))
        assert ended.status_code == 200
        await open_session(http, base_url, ALICE)  # the place she gave back: nothing else ends
        assert (await post(http, base_url, TOOLS_LIST, ALICE, session=alices[2])).status_code == 200


async def test_verdicts_expire_and_a_flood_of_refusals_keeps_the_accepted_ones(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flux_mcp.web import credentials as auth

    monkeypatch.setattr(auth, "MAX_VERDICTS", 3)
    now = [0.0]
    settings = pass_through(emulator)
    credentials = auth.Credentials(settings)
    verifier = auth.PassThroughVerifier(settings, credentials.identity, clock=lambda: now[0])
    async with verifier.running():
        assert (await verifier.admit(ALICE)).verdict is auth.Verdict.ACCEPTED
        for index in range(5):  # made-up tokens: more refusals than are kept
            assert (await verifier.admit(f"made-up-{index}")).verdict is auth.Verdict.REFUSED
        assert (await verifier.admit(ALICE)).verdict is auth.Verdict.ACCEPTED
        assert emulator.state.tokens_seen.count(ALICE) == 1  # still known: no second lookup
        await verifier.admit("made-up-4")
        assert emulator.state.tokens_seen.count("made-up-4") == 1
        await verifier.admit("made-up-0")  # pushed out by the later ones: asked again
        assert emulator.state.tokens_seen.count("made-up-0") == 2
        now[0] += auth.REFUSED_SECONDS + 1
        await verifier.admit("made-up-4")
        assert emulator.state.tokens_seen.count("made-up-4") == 2
        await verifier.admit(ALICE)
        assert emulator.state.tokens_seen.count(ALICE) == 1
        now[0] += auth.ACCEPTED_SECONDS
        emulator.state.config.tokens = frozenset({BOB})  # Alice's token was revoked meanwhile
        assert (await verifier.admit(ALICE)).verdict is auth.Verdict.REFUSED
    assert all(token not in repr(vars(verifier)) for token in (ALICE, "made-up-4"))  # kept only as hashes


NEAR_MISSES = st.sampled_from(
    [ALICE[:-1], ALICE + "x", ALICE.upper(), f"{ALICE},{BOB}", f"{ALICE}\x00", ALICE[1:], "", "other"]
)


@given(presented=st.one_of(st.text(max_size=64), NEAR_MISSES))
@examples(max_examples=200, deadline=None)
def test_only_a_configured_server_token_is_admitted(presented: str) -> None:
    from flux_mcp.web import credentials as auth

    credentials = auth.Credentials(Settings(auth_tokens=f"{ALICE},{BOB}"))
    admission = anyio.run(credentials.admit, presented)
    assert (admission.verdict is auth.Verdict.ACCEPTED) == (presented in {ALICE, BOB})
    if admission.verdict is auth.Verdict.ACCEPTED:
        other = BOB if presented == ALICE else ALICE
        assert admission.identity == credentials.identity(presented) != credentials.identity(other)
        assert presented not in admission.identity


@asynccontextmanager
async def hostile_upstream(status: int, body: Any) -> AsyncIterator[str]:
    """An upstream that answers every /flux/tasks lookup with `status` and `body`."""

    async def tasks(request: Request) -> Response:
        return JSONResponse(body, status_code=status)

    app = Starlette(routes=[Route("/flux/tasks", tasks, methods=["POST"])])
    async with serve_asgi(app) as base_url:
        yield base_url


@pytest.mark.parametrize(
    ("status", "body", "accepted"),
    [
        (200, {}, True),  # an unknown id answered with an empty record
        (404, {"success": False, "error": {"code": "not_found", "message": "task not found"}}, True),
        (403, {"success": False, "error": {"code": "used_up", "message": "balance used up"}}, True),
        (401, {"success": False, "error": {"code": "invalid_token", "message": "invalid"}}, False),
        (400, {"success": False, "error": {"code": "token_mismatched", "message": "mismatch"}}, False),
        (200, {"success": False, "error": {"code": "token_expired", "message": "expired"}}, False),
        (403, {"success": False, "error": {"code": "disabled", "message": "disabled"}}, False),
    ],
)
async def test_the_token_lookup_reads_the_upstreams_answers(status: int, body: Any, accepted: bool) -> None:
    from flux_mcp.web import credentials as auth

    async with hostile_upstream(status, body) as base_url:
        settings = Settings(auth="passthrough", api_base_url=base_url)
        verifier = auth.PassThroughVerifier(settings, auth.Credentials(settings).identity)
        async with verifier.running():
            admission = await verifier.admit("sk-whatever")
    assert admission.verdict is (auth.Verdict.ACCEPTED if accepted else auth.Verdict.REFUSED)


# --- 12.6 a session belongs to the credential that opened it ---------------------------------------


@pytest.mark.parametrize("mode", ["tokens", "passthrough"])
async def test_nobody_else_can_use_or_end_a_session(emulator: RunningEmulator, mode: str) -> None:
    make = two_tokens if mode == "tokens" else pass_through
    async with http_service(make(emulator)) as base_url, httpx2.AsyncClient(timeout=30) as http:
        alices = await open_session(http, base_url, ALICE)
        ended = await http.delete(f"{base_url}/mcp", headers=headers_for(BOB, alices))
        assert ended.status_code == 404, ended.text
        used = await post(http, base_url, TOOLS_LIST, BOB, session=alices)
        assert used.status_code == 404, used.text
        hers = await post(http, base_url, TOOLS_LIST, ALICE, session=alices)
        assert hers.status_code == 200 and "generate_image" in hers.text
        assert (await http.delete(f"{base_url}/mcp", headers=headers_for(ALICE, alices))).status_code == 200


# --- 12.8 the DEBUG log of a real HTTP service holds no payloads -----------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_debug_log_of_the_http_service_holds_no_tokens_prompts_or_previews(
    emulator: RunningEmulator, tmp_path: Path, mode: ConnectMode
) -> None:
    secret = f"sk-LOG-{uuid.uuid4()}"
    marker = f"private-{uuid.uuid4().hex}"
    emulator.state.config.tokens = frozenset({secret})
    port = free_port()
    env = child_env(
        tmp_path,
        ACEDATACLOUD_API_BASE_URL=emulator.base_url,
        FLUX_MCP_AUTH="passthrough",
        FLUX_MCP_LOG_LEVEL="DEBUG",
        FLUX_MCP_POLL_MIN_SECONDS="0.05",
        FLUX_MCP_POLL_MAX_SECONDS="0.2",
    )
    if "PYTHONPATH" in os.environ:  # the tree under test, not whatever is installed
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    command = [*flux_command(), "serve", "--transport", "http", "--port", str(port)]
    with stderr_file(tmp_path) as errlog:
        process = await anyio.open_process(
            command, env=env, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog
        )
        try:
            await wait_until_listening(port, process)
            url = f"http://127.0.0.1:{port}/mcp"
            async with (
                httpx2.AsyncClient(headers={"authorization": f"Bearer {secret}"}, timeout=30) as http,
                Client(streamable_http_client(url, http_client=http), mode=mode) as client,
            ):
                result = await client.call_tool("generate_image", {"prompt": f"a cat called {marker}"})
                listed = await client.call_tool("list_tasks", {})
        finally:
            process.terminate()
            with anyio.fail_after(10):
                await process.wait()
        errlog.seek(0)
        log = errlog.read()
    assert structured(result)["status"] == "succeeded", text(result)
    assert marker in listed.model_dump_json()  # the marker was there to be logged
    previews = [block.data for block in result.content if isinstance(block, ImageContent)]
    assert previews and base64.b64decode(previews[0])
    assert "DEBUG" in log  # the log really was at DEBUG
    assert secret not in log
    assert marker not in log
    assert previews[0][100:160] not in log


# --- 12.12 the Host/Origin rules hold on every route ------------------------------------------------

ROUTES = ["/healthz", "/callbacks/flux/some-secret", "/.well-known/oauth-authorization-server", "/mcp"]


async def get(base_url: str, path: str, headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.get(base_url + path, headers={"authorization": f"Bearer {ALICE}", **headers})


@pytest.mark.parametrize("path", ROUTES)
async def test_a_foreign_host_or_origin_is_refused_on_every_route(
    emulator: RunningEmulator, path: str
) -> None:
    async with http_service(two_tokens(emulator)) as base_url:
        foreign_host = await get(base_url, path, {"host": "evil.example.com"})
        foreign_origin = await get(base_url, path, {"origin": "http://evil.example.com"})
        own = await get(base_url, "/healthz", {})
    assert foreign_host.status_code == 421, foreign_host.text
    assert foreign_origin.status_code == 403, foreign_origin.text
    assert own.status_code == 200


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
async def test_with_a_public_url_its_host_and_loopback_are_the_only_names(
    emulator: RunningEmulator, bind: str
) -> None:
    settings = two_tokens(emulator, host=bind, public_url="https://flux.example.com")
    async with http_service(settings) as base_url:
        public = await get(base_url, "/healthz", {"host": "flux.example.com"})
        local = await get(base_url, "/healthz", {})  # a container's health check on 127.0.0.1
        foreign = await get(base_url, "/healthz", {"host": "evil.example.com"})
        origin = await get(
            base_url, "/healthz", {"host": "flux.example.com", "origin": "https://flux.example.com"}
        )
    assert (public.status_code, local.status_code, foreign.status_code) == (200, 200, 421)
    assert origin.status_code == 200


# --- 13 §5 a 401 an OAuth-probing client understands -----------------------------------------------


@pytest.mark.parametrize("mode", ["tokens", "passthrough"])
async def test_a_401_says_this_server_wants_a_static_bearer(emulator: RunningEmulator, mode: str) -> None:
    make = two_tokens if mode == "tokens" else pass_through
    async with http_service(make(emulator)) as base_url, httpx2.AsyncClient(timeout=30) as http:
        wrong = await post(http, base_url, INITIALIZE, "sk-wrong-token")
        missing = await post(http, base_url, INITIALIZE, None)
    assert wrong.status_code == missing.status_code == 401
    challenge = wrong.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="flux-mcp", error="invalid_token", error_description="')
    description = challenge.split('error_description="', 1)[1].rstrip('"')
    assert "static bearer token, not OAuth" in description and "Authorization: Bearer <token>" in description
    assert all(" " <= char <= "~" and char not in '"\\' for char in description)
    # Without any token there is no error code (RFC 6750 §3.1); the body says what to send.
    assert missing.headers["www-authenticate"] == 'Bearer realm="flux-mcp"'
    assert "No bearer token was sent" in missing.json()["message"]
    if mode == "passthrough":
        assert "AceDataCloud API token" in description


@pytest.mark.parametrize("path", DISCOVERY_PATHS)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_oauth_discovery_paths_answer_a_404_that_says_what_to_send(
    emulator: RunningEmulator, path: str, method: str
) -> None:
    async with http_service(pass_through(emulator)) as base_url, httpx2.AsyncClient(timeout=30) as http:
        sent = await http.request(method, base_url + path, headers={"authorization": "Bearer sk-wrong"})
        unsent = await http.request(method, base_url + path)
    assert sent.status_code == unsent.status_code == 404
    for response in (sent, unsent):
        description = response.json()["error_description"]
        assert "static bearer token, not OAuth" in description
        assert f'npx mcp-remote {base_url}/mcp --header "Authorization: Bearer ${{TOKEN}}"' in description
        assert "AceDataCloud API token" in description
    assert "not accepted" in sent.json()["error_description"]
    assert "No bearer token was sent" in unsent.json()["error_description"]
    assert emulator.state.polls == 0  # answering a probe asks the upstream nothing


async def test_mcp_remote_prints_flux_mcps_reason_for_a_wrong_token(
    emulator: RunningEmulator, tmp_path: Path, mcp_remote_proxy: list[str]
) -> None:
    async with http_service(two_tokens(emulator)) as base_url:
        command, env = mcp_remote(mcp_remote_proxy, base_url, "sk-wrong-token", tmp_path / "home")
        with anyio.fail_after(90):
            done = await anyio.run_process(command, input=json_lines(INITIALIZE), env=env, check=False)
    err = done.stderr.decode()
    print(f"\nmcp-remote with a wrong token (exit {done.returncode}):\n{err[-1500:]}")
    assert done.returncode != 0
    assert "flux-mcp takes a static bearer token, not OAuth" in err
    assert "The bearer token that was sent is not accepted" in err


async def test_mcp_remote_bridges_a_good_token(
    emulator: RunningEmulator, tmp_path: Path, mcp_remote_proxy: list[str]
) -> None:
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    async with http_service(two_tokens(emulator)) as base_url:
        command, env = mcp_remote(mcp_remote_proxy, base_url, ALICE, tmp_path / "home")
        async with await anyio.open_process(command, env=env) as process:
            assert process.stdin is not None and process.stdout is not None
            answers = json_rpc_answers(process.stdout)
            with anyio.fail_after(60):
                await process.stdin.send(json_lines(INITIALIZE))
                assert (await answers.__anext__())["id"] == 1
                await process.stdin.send(json_lines(initialized, TOOLS_LIST))
                listing = await answers.__anext__()
            process.terminate()
    assert "generate_image" in {tool["name"] for tool in listing["result"]["tools"]}
