"""FLUX_MCP_AUTH=oauth (issue 18): flux-mcp as an OAuth 2.1 resource server, against an authorization
server written here (an RSA key, JWKS, OpenID and RFC 8414 metadata, an authorization-code endpoint with
PKCE, a token endpoint and RFC 7662 introspection), all on loopback, with the emulator as the upstream.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import AnyUrl

from flux_mcp.domain.errors import StartupError
from flux_mcp.domain.settings import Settings
from flux_mcp.emulator import RunningEmulator, serve_asgi
from flux_mcp.web.app import build_http_app
from flux_mcp.web.challenges import protected_resources
from testkit.tasks import call_as_task, task_request, tasks_http_client
from tests.support import TOKEN, http_service, make_settings, mcp_client, port_of, structured, text
from tests.support.oauth import AUDIENCE, Issuer, b64, new_key, running_issuer
from tests.support.web import INITIALIZE, json_lines, json_rpc_answers, mcp_remote, post

pytestmark = pytest.mark.anyio

METADATA_URL = f"{AUDIENCE}/.well-known/oauth-protected-resource"


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with running_issuer() as running:
        yield running


def oauth_settings(emulator: RunningEmulator, issuer: Issuer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"auth": "oauth", "oauth_issuer": issuer.url, "oauth_audience": AUDIENCE}
    return make_settings(emulator, **(values | overrides))


def challenge_of(response: httpx2.Response) -> str:
    return response.headers.get("www-authenticate", "")


# --- per person ----------------------------------------------------------------------------------


async def test_each_person_sees_only_their_own_history_resources_and_gallery_items(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    alice, bob = issuer.mint("alice"), issuer.mint("bob")
    made: dict[str, list[str]] = {"alice": [], "bob": []}
    async with http_service(oauth_settings(emulator, issuer)) as base_url:
        for person, token in (("alice", alice), ("bob", bob)):
            async with mcp_client(base_url, token) as client:
                for index in range(2):
                    result = await client.call_tool("generate_image", {"prompt": f"{person} picture {index}"})
                    assert structured(result)["status"] == "succeeded", text(result)
                    made[person].append(structured(result)["task_id"])
        # Alice signs in again with a fresh token: same person, same history.
        async with mcp_client(base_url, issuer.mint("alice", jti="second")) as client:
            listed = {
                task["task_id"] for task in structured(await client.call_tool("list_tasks", {}))["tasks"]
            }
            own = await client.read_resource(f"flux://tasks/{made['alice'][0]}")
            with pytest.raises(Exception, match="No task"):
                await client.read_resource(f"flux://tasks/{made['bob'][0]}")
            others = await client.call_tool("preview_image", {"task_id": made["bob"][0]})
            mine = await client.call_tool("preview_image", {"task_id": made["alice"][0]})
        async with mcp_client(base_url, bob) as client:
            bobs = {task["task_id"] for task in structured(await client.call_tool("list_tasks", {}))["tasks"]}
    assert listed == set(made["alice"]) and bobs == set(made["bob"])
    assert made["bob"][0] not in own.contents[0].model_dump_json()
    assert others.is_error and not mine.is_error
    assert set(emulator.state.tokens_seen) == {TOKEN}  # the server's own token pays for everyone


async def test_another_persons_task_id_is_not_found_and_never_becomes_yours(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    """Issue 24 item 3: Bob holding Alice's task id gets exactly what a made-up id gets, read nowhere."""
    async with http_service(oauth_settings(emulator, issuer)) as base_url:
        async with mcp_client(base_url, issuer.mint("alice")) as client:
            made = await client.call_tool("generate_image", {"prompt": "alice's secret garden"})
        alices = structured(made)["task_id"]
        reads_before = reads_of(emulator, alices, "made-up-task-id")
        async with mcp_client(base_url, issuer.mint("bob")) as client:
            answers = {}
            for task_id in (alices, "made-up-task-id"):
                got = await client.call_tool("get_task", {"task_id": task_id, "wait_seconds": 0})
                batch = structured(await client.call_tool("get_tasks", {"task_ids": [task_id]}))
                gallery = await client.call_tool("preview_image", {"task_id": task_id})
                with pytest.raises(Exception, match="No task") as resource:
                    await client.read_resource(f"flux://tasks/{task_id}")
                with pytest.raises(Exception, match="No image") as image:
                    await client.read_resource(f"flux://images/{task_id}/0")
                assert got.is_error and gallery.is_error and batch == {"tasks": [], "missing": [task_id]}
                shown = [text(got), text(gallery), str(resource.value), str(image.value)]
                answers[task_id] = [line.replace(task_id, "ID") for line in shown]
            listed = structured(await client.call_tool("list_tasks", {}))["tasks"]
    assert answers[alices] == answers["made-up-task-id"]  # nothing tells an existing id from a made-up one
    assert "garden" not in str(answers) and listed == []
    assert reads_of(emulator, alices, "made-up-task-id") == reads_before  # Bob's calls read nothing upstream


async def test_another_persons_draft_video_cannot_be_enhanced(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    """Issue 24 item 3: draft_enhance names a task by id too: only the caller's own drafts are enhanced."""
    async with http_service(oauth_settings(emulator, issuer)) as base_url:
        async with mcp_client(base_url, issuer.mint("alice")) as client:
            draft = structured(
                await client.call_tool("generate_video", {"prompt": "alice's rain", "draft": True})
            )
        enhance = {"prompt": "rain, full quality", "mode": "draft_enhance", "draft_task_id": draft["task_id"]}
        submitted = emulator.state.submissions
        async with mcp_client(base_url, issuer.mint("bob")) as client:
            bobs = await client.call_tool("generate_video", enhance)
        assert bobs.is_error and "No draft video" in text(bobs), text(bobs)
        assert emulator.state.submissions == submitted  # nothing sent upstream, nothing billed
        async with mcp_client(base_url, issuer.mint("alice")) as client:
            alices = await client.call_tool("generate_video", enhance)
    assert not alices.is_error, text(alices)


def reads_of(emulator: RunningEmulator, *task_ids: str) -> int:
    """How many task reads the upstream has had that name any of `task_ids`."""
    return sum(1 for read in emulator.state.task_reads if set(read.ids) & set(task_ids))


async def test_a_session_belongs_to_the_person_who_opened_it(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    async with http_service(oauth_settings(emulator, issuer)) as base_url, httpx2.AsyncClient() as http:
        opened = await post(http, base_url, INITIALIZE, issuer.mint("alice"))
        session = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        refreshed = await post(http, base_url, listing, issuer.mint("alice", jti="refresh"), session=session)
        stolen = await post(http, base_url, listing, issuer.mint("mallory"), session=session)
    assert opened.status_code == 200 and refreshed.status_code == 200
    assert stolen.status_code in (403, 404)  # the SDK answers as if the session did not exist for her


# --- refusals ------------------------------------------------------------------------------------


def forged(issuer: Issuer, header: dict[str, Any], secret: bytes | None) -> str:
    """A JWT made by hand: `alg: none`, or HMAC with the given secret (the issuer's public key)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(issuer.claims('mallory')).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


REFUSED: dict[str, tuple[Any, str]] = {
    "wrong audience": (lambda i: i.mint("mallory", aud="https://other.example.com"), "wrong audience"),
    "wrong issuer": (lambda i: i.mint("mallory", iss="https://evil.example.com/realms/flux"), "another"),
    "expired": (lambda i: i.mint("mallory", exp=int(time.time()) - 600), "expired"),
    "not yet valid": (lambda i: i.mint("mallory", nbf=int(time.time()) + 600), "not valid yet"),
    "bad signature": (lambda i: i.mint("mallory", key=new_key()), "signature does not verify"),
    "alg none": (lambda i: forged(i, {"alg": "none", "kid": i.kid}, None), "'none' are not accepted"),
    "HS256 with the public key": (
        lambda i: forged(i, {"alg": "HS256", "kid": i.kid, "typ": "JWT"}, i.public_pem()),
        "'HS256' are not accepted",
    ),
    "unknown kid": (lambda i: i.mint("mallory", key=new_key(), kid="made-up"), "does not publish"),
    "no subject": (lambda i: i.mint("", sub=None), "sub"),
    "empty subject": (lambda i: i.mint(""), "names no subject"),
    "blank subject": (lambda i: i.mint("  "), "names no subject"),
    "garbage": (lambda i: "not-a-jwt", "well-formed"),
}


async def test_tokens_that_are_not_for_this_server_get_401_with_the_challenge(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    answers: dict[str, httpx2.Response] = {}
    async with http_service(oauth_settings(emulator, issuer)) as base_url, httpx2.AsyncClient() as http:
        assert (await post(http, base_url, INITIALIZE, issuer.mint("alice"))).status_code == 200
        for name, (make, _) in REFUSED.items():
            answers[name] = await post(http, base_url, INITIALIZE, make(issuer))
    for name, (_, why) in REFUSED.items():
        response = answers[name]
        assert response.status_code == 401, name
        challenge = challenge_of(response)
        assert challenge.startswith(f'Bearer realm="flux-mcp", resource_metadata="{METADATA_URL}", '), name
        assert 'error="invalid_token", error_description="' in challenge, name
        assert why in response.json()["error_description"], (name, response.json())
    assert emulator.state.submissions == 0


async def test_made_up_key_ids_cannot_make_the_server_hammer_the_issuer(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    stranger = new_key()
    async with http_service(oauth_settings(emulator, issuer)) as base_url, httpx2.AsyncClient() as http:
        assert (await post(http, base_url, INITIALIZE, issuer.mint("alice"))).status_code == 200
        refused = [
            await post(http, base_url, INITIALIZE, issuer.mint("mallory", key=stranger, kid=f"kid-{n}"))
            for n in range(25)
        ]
    assert {response.status_code for response in refused} == {401}
    assert issuer.jwks_fetches == 2  # the first load, and one refetch for all 25 unknown kids


async def test_key_rotation_is_followed_without_a_restart(emulator: RunningEmulator, issuer: Issuer) -> None:
    async with http_service(oauth_settings(emulator, issuer)) as base_url:
        async with mcp_client(base_url, issuer.mint("alice")) as client:
            assert structured(await client.call_tool("list_tasks", {}))["tasks"] == []
        issuer.rotate()
        async with mcp_client(base_url, issuer.mint("alice")) as client:
            result = await client.call_tool("generate_image", {"prompt": "after the rotation"})
    assert structured(result)["status"] == "succeeded"
    assert issuer.jwks_fetches == 2


async def test_an_unreachable_issuer_is_a_503_and_nothing_is_kept(emulator: RunningEmulator) -> None:
    async with running_issuer() as issuer:
        settings = oauth_settings(emulator, issuer)
        token = issuer.mint("alice")
    # The issuer has stopped: nobody can be checked now, and nobody is refused for good.
    async with http_service(settings) as base_url, httpx2.AsyncClient() as http:
        response = await post(http, base_url, INITIALIZE, token)
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "cannot check your access token right now" in response.json()["message"]


async def test_required_scopes_and_the_allowed_people(emulator: RunningEmulator, issuer: Issuer) -> None:
    settings = oauth_settings(emulator, issuer, oauth_scopes="flux", oauth_allowed="alice, Bob@Example.com")
    tokens = {
        "alice": issuer.mint("alice"),
        "bob by verified email": issuer.mint("b-42", email="bob@example.com", email_verified=True),
        "unverified email": issuer.mint("m-1", email="bob@example.com", email_verified=False),
        "carol": issuer.mint("carol", email="carol@example.com", email_verified=True),
        "alice without the scope": issuer.mint("alice", scope="openid", jti="narrow"),
        "alice with an scp list": issuer.mint("alice", scope=None, scp=["flux"], jti="scp"),
    }
    async with http_service(settings) as base_url, httpx2.AsyncClient() as http:
        answers = {name: await post(http, base_url, INITIALIZE, token) for name, token in tokens.items()}
        missing = await post(http, base_url, INITIALIZE, None)
    status = {name: response.status_code for name, response in answers.items()}
    assert status == {
        "alice": 200,
        "bob by verified email": 200,
        "unverified email": 403,
        "carol": 403,
        "alice without the scope": 403,
        "alice with an scp list": 200,
    }
    carol = answers["carol"].json()
    assert carol["error"] == "access_denied"
    assert (
        "signed in as carol@example.com" in carol["message"] and "FLUX_MCP_OAUTH_ALLOWED" in carol["message"]
    )
    narrow = challenge_of(answers["alice without the scope"])
    assert 'scope="flux"' in narrow and 'error="insufficient_scope"' in narrow
    assert (
        challenge_of(missing) == f'Bearer realm="flux-mcp", resource_metadata="{METADATA_URL}", scope="flux"'
    )


# --- discovery, as hosted clients do it ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/.well-known/oauth-protected-resource", AUDIENCE),
        # RFC 9728 §3.3: metadata at a path-suffixed URL names the resource with that path.
        ("/.well-known/oauth-protected-resource/mcp", f"{AUDIENCE}/mcp"),
    ],
)
async def test_discovery_names_the_authorization_server(
    emulator: RunningEmulator, issuer: Issuer, path: str, resource: str
) -> None:
    settings = oauth_settings(emulator, issuer, oauth_scopes="flux")
    async with http_service(settings) as base_url, httpx2.AsyncClient() as http:
        metadata = await http.get(base_url + path)
        unauthenticated = await post(http, base_url, INITIALIZE, None)
        elsewhere = await http.get(base_url + "/.well-known/oauth-authorization-server")
        # A client that followed this document asks for a token for its resource: it is let in.
        admitted = await post(http, base_url, INITIALIZE, issuer.mint("alice", aud=resource))
    assert admitted.status_code == 200, admitted.text
    assert metadata.status_code == 200
    assert metadata.json() == {
        "resource": resource,
        "authorization_servers": [issuer.url],
        "scopes_supported": ["flux"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Flux images (flux-mcp)",
    }
    assert unauthenticated.status_code == 401
    assert f'resource_metadata="{METADATA_URL}"' in challenge_of(unauthenticated)
    assert elsewhere.status_code == 404 and issuer.url in elsewhere.json()["error_description"]


# --- introspection ---------------------------------------------------------------------------------


async def test_introspection_mode_asks_the_authorization_server(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    active, foreign = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    issuer.opaque[active] = issuer.claims("alice")
    issuer.opaque[foreign] = issuer.claims("alice", aud="https://other.example.com")
    nobody = secrets.token_urlsafe(24)
    issuer.opaque[nobody] = issuer.claims("  ")
    endless = {stamp: secrets.token_urlsafe(24) for stamp in ("inf", "nan")}
    for stamp, token in endless.items():
        issuer.opaque[token] = {**issuer.claims("alice"), "exp": float(stamp)}
    settings = oauth_settings(
        emulator,
        issuer,
        oauth_introspection_url=f"{issuer.url}/protocol/openid-connect/token/introspect",
        oauth_client_id="flux-mcp",
        oauth_client_secret="introspection-secret",
    )
    async with http_service(settings) as base_url:
        async with mcp_client(base_url, active) as client:
            result = await client.call_tool("generate_image", {"prompt": "an introspected cat"})
        async with httpx2.AsyncClient() as http:
            unknown = await post(http, base_url, INITIALIZE, "never-issued")
            wrong_audience = await post(http, base_url, INITIALIZE, foreign)
            blank = await post(http, base_url, INITIALIZE, nobody)
            odd_expiry = [await post(http, base_url, INITIALIZE, token) for token in endless.values()]
    assert structured(result)["status"] == "succeeded"
    for answer in odd_expiry:  # Infinity or NaN: a clear 401, never a traceback or a token that never ends
        assert answer.status_code == 401 and "expiry" in answer.json()["error_description"]
    assert unknown.status_code == wrong_audience.status_code == blank.status_code == 401
    assert "names no subject" in blank.json()["error_description"]
    assert "not active" in unknown.json()["error_description"]
    assert "not issued for" in wrong_audience.json()["error_description"]
    expected = "Basic " + base64.b64encode(b"flux-mcp:introspection-secret").decode()
    assert set(issuer.introspected_as) == {expected}
    assert issuer.jwks_fetches == 0


# --- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"oauth_issuer": None}, "needs FLUX_MCP_OAUTH_ISSUER"),
        ({"oauth_audience": None, "public_url": None}, "FLUX_MCP_PUBLIC_URL"),
        ({"oauth_issuer": "http://sso.example.com/realms/flux"}, "must be an https:// URL"),
        ({"oauth_client_id": "flux-mcp"}, "FLUX_MCP_OAUTH_CLIENT_SECRET"),
    ],
)
async def test_inconsistent_oauth_settings_are_refused_at_start(
    emulator: RunningEmulator, issuer: Issuer, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(StartupError, match=message):
        build_http_app(oauth_settings(emulator, issuer, **overrides))


async def test_oauth_may_serve_beyond_loopback_and_defaults_its_audience(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    settings = oauth_settings(emulator, issuer, host="0.0.0.0", oauth_audience=None, public_url=AUDIENCE)
    build_http_app(settings)  # an authenticating mode needs no --allow-unauthenticated
    assert settings.oauth_audience_url() == AUDIENCE


# --- OAuth-aware clients -------------------------------------------------------------------------


async def test_the_sdk_client_with_a_bearer_header_completes_generate_image(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    async with (
        http_service(oauth_settings(emulator, issuer)) as base_url,
        httpx2.AsyncClient(headers={"authorization": f"Bearer {issuer.mint('alice')}"}, timeout=30) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool("generate_image", {"prompt": "a lighthouse, signed in"})
    assert structured(result)["status"] == "succeeded"


class MemoryStorage:
    """Token storage of the SDK's OAuth client: a client registered beforehand, as at Keycloak."""

    def __init__(self, redirect: str) -> None:
        self.tokens: OAuthToken | None = None
        self.client = OAuthClientInformationFull(
            client_id="flux-test", redirect_uris=[AnyUrl(redirect)], token_endpoint_auth_method="none"
        )

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def test_the_sdk_oauth_client_discovers_signs_in_and_calls_a_tool(
    emulator: RunningEmulator, issuer: Issuer, loopback_socket: socket.socket
) -> None:
    """The whole run a hosted connector makes: 401 → metadata → authorization server → code → token → call."""
    mcp_url = f"http://127.0.0.1:{port_of(loopback_socket)}/mcp"
    redirect = "http://127.0.0.1:1/callback"
    settings = oauth_settings(emulator, issuer, oauth_audience=mcp_url)
    transcript: list[str] = []
    redirected: list[str] = []

    async def log_request(request: httpx2.Request) -> None:
        transcript.append(f"> {request.method} {request.url.copy_with(query=None)}")

    async def log_response(response: httpx2.Response) -> None:
        challenge = response.headers.get("www-authenticate")
        transcript.append(
            f"< {response.status_code}" + (f" WWW-Authenticate: {challenge}" if challenge else "")
        )

    async def redirect_handler(url: str) -> None:
        async with httpx2.AsyncClient() as http:  # the browser: the person signs in, the server redirects
            answer = await http.get(url)
        transcript.append(f"> GET {url.split('?')[0]} (browser)\n< {answer.status_code} to the redirect URL")
        redirected.append(answer.headers["location"])

    async def callback_handler() -> AuthorizationCodeResult:
        query = parse_qs(urlsplit(redirected[-1]).query)
        return AuthorizationCodeResult(code=query["code"][0], state=query["state"][0])

    oauth = OAuthClientProvider(
        mcp_url,
        OAuthClientMetadata(redirect_uris=[AnyUrl(redirect)], token_endpoint_auth_method="none"),
        MemoryStorage(redirect),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    gate = build_http_app(settings)
    inner: Any = gate.app
    hooks = {"request": [log_request], "response": [log_response]}
    async with (
        inner.router.lifespan_context(inner),
        serve_asgi(gate, sock=loopback_socket),
        httpx2.AsyncClient(auth=oauth, event_hooks=hooks, timeout=30) as http,
        Client(streamable_http_client(mcp_url, http_client=http)) as client,
    ):
        result = await client.call_tool("generate_image", {"prompt": "a lighthouse, via OAuth"})
    print("\n" + "\n".join(transcript))
    assert structured(result)["status"] == "succeeded"
    assert any("resource_metadata=" in line for line in transcript)
    assert any("/.well-known/oauth-protected-resource" in line for line in transcript)
    assert any("/protocol/openid-connect/token" in line for line in transcript)


async def test_mcp_remote_with_a_header_bridges_a_signed_in_person(
    emulator: RunningEmulator, issuer: Issuer, tmp_path: Path, mcp_remote_proxy: list[str]
) -> None:
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "generate_image", "arguments": {"prompt": "a bridged lighthouse"}},
    }
    async with http_service(oauth_settings(emulator, issuer)) as base_url:
        command, env = mcp_remote(mcp_remote_proxy, base_url, issuer.mint("alice"), tmp_path / "home")
        async with await anyio.open_process(command, env=env) as process:
            assert process.stdin is not None and process.stdout is not None
            answers = json_rpc_answers(process.stdout)
            with anyio.fail_after(90):
                await process.stdin.send(json_lines(INITIALIZE))
                assert (await answers.__anext__())["id"] == 1
                await process.stdin.send(json_lines(initialized, call))
                called = await answers.__anext__()
            process.terminate()
    assert called["id"] == 2
    assert called["result"]["structuredContent"]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        (
            "https://gw.example.com/flux",
            {
                "/.well-known/oauth-protected-resource/flux": "https://gw.example.com/flux",
                "/.well-known/oauth-protected-resource/flux/mcp": "https://gw.example.com/flux/mcp",
            },
        ),
        (
            "https://flux.example.com/mcp",
            {"/.well-known/oauth-protected-resource/mcp": "https://flux.example.com/mcp"},
        ),
    ],
)
def test_each_metadata_path_names_the_resource_it_is_derived_from(
    audience: str, expected: dict[str, str]
) -> None:
    settings = Settings(
        auth="oauth", oauth_issuer="https://sso.example.com/realms/flux", oauth_audience=audience
    )
    assert protected_resources(settings) == expected


async def test_another_persons_mcp_task_is_unknown_and_its_result_unreadable_after_it_ends(
    emulator: RunningEmulator, issuer: Issuer
) -> None:
    """MCP Tasks (issue 25) x issue 24 item 3: Bob gets neither Alice's task handle nor, once it has
    completed, its upstream task through get_task or flux://tasks."""
    async with http_service(oauth_settings(emulator, issuer)) as base_url:
        async with tasks_http_client(base_url, issuer.mint("alice")) as alice:
            created = await call_as_task(alice, "generate_image", {"prompt": "alice's task garden"})
            task_id = created["taskId"]
            with anyio.fail_after(30):
                while (done := await task_request(alice, "tasks/get", task_id))["status"] == "working":  # noqa: ASYNC110
                    await anyio.sleep(0.05)  # a client polls
        upstream = done["result"]["structuredContent"]["task_id"]
        async with tasks_http_client(base_url, issuer.mint("bob")) as bob:
            for method in ("tasks/get", "tasks/cancel", "tasks/update"):
                with pytest.raises(MCPError) as unknown:
                    await task_request(bob, method, created["taskId"])
                assert unknown.value.code == INVALID_PARAMS
        async with mcp_client(base_url, issuer.mint("bob")) as bob:
            got = await bob.call_tool("get_task", {"task_id": upstream, "wait_seconds": 0})
            with pytest.raises(Exception, match="No task"):
                await bob.read_resource(f"flux://tasks/{upstream}")
    assert done["status"] == "completed" and got.is_error and "garden" not in text(got)
