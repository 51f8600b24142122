"""OAuth on replicas: two `flux-mcp serve` processes on one PostgreSQL history share each person.

A person is the token's issuer and `sub`, never the token: what Alice makes through replica A, a fresh
token of hers lists and reads through replica B, and Bob sees none of it on either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flux_mcp.emulator import RunningEmulator
from testkit.replicas import run_replicas
from tests.support import mcp_client, structured, text
from tests.support.oauth import AUDIENCE, Issuer, running_issuer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    async with running_issuer() as running:
        yield running


async def test_a_person_is_the_same_person_on_every_replica(
    emulator: RunningEmulator, issuer: Issuer, postgres_url: str, tmp_path: Path
) -> None:
    oauth = {
        "FLUX_MCP_AUTH": "oauth",
        "FLUX_MCP_OAUTH_ISSUER": issuer.url,
        "FLUX_MCP_OAUTH_AUDIENCE": AUDIENCE,
        "FLUX_MCP_STATELESS": "false",
    }
    async with run_replicas(2, emulator, tmp_path, postgres_url, None, **oauth) as (a, b):
        async with mcp_client(a.url, issuer.mint("alice")) as client:
            made = await client.call_tool("generate_image", {"prompt": "alice's fox on replica A"})
        assert structured(made)["status"] == "succeeded", text(made)
        task_id = structured(made)["task_id"]

        async with mcp_client(b.url, issuer.mint("alice", jti="second sign-in")) as client:
            listed = structured(await client.call_tool("list_tasks", {}))["tasks"]
            record = await client.read_resource(f"flux://tasks/{task_id}")
        async with mcp_client(b.url, issuer.mint("bob")) as client:
            bobs = structured(await client.call_tool("list_tasks", {}))["tasks"]
            with pytest.raises(Exception, match="No task"):
                await client.read_resource(f"flux://tasks/{task_id}")
        async with mcp_client(a.url, issuer.mint("bob")) as client:
            bobs_on_a = structured(await client.call_tool("list_tasks", {}))["tasks"]

    assert [(task["task_id"], task["status"]) for task in listed] == [(task_id, "succeeded")]
    assert task_id in record.contents[0].model_dump_json()
    assert bobs == [] and bobs_on_a == []
