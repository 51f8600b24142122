"""The MCP SDK internals flux-mcp reaches (server/sdk.py): there in the versions pyproject.toml allows,
and named with that same range when they are not."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from flux_mcp.cli.doctor import DoctorContext, Status, check_packages
from flux_mcp.domain.errors import UnsupportedSdkError
from flux_mcp.server.build import build_server
from flux_mcp.server.sdk import MCP_REQUIREMENT, MCP_VERSIONS, sdk_internal
from flux_mcp.web.gate import open_session_ids, session_ender
from tests.support import make_settings

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def mcp_dependency() -> str:
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    [mcp] = [entry for entry in dependencies if entry.split(">")[0].split("<")[0].strip() == "mcp"]
    return str(mcp)


def test_the_range_in_the_messages_is_the_one_pyproject_allows() -> None:
    assert mcp_dependency() == MCP_REQUIREMENT
    lowest, beyond = MCP_VERSIONS
    installed = tuple(int(part) for part in version("mcp").split(".")[:2])
    assert lowest <= installed < beyond, "the tests run on an mcp outside the range they vouch for"


def test_the_internals_are_there_in_the_installed_sdk() -> None:
    server = build_server(make_settings("http://127.0.0.1:9"))
    assert sdk_internal(server, "_lowlevel_server").name == server.name
    server.streamable_http_app()
    assert isinstance(server.session_manager, StreamableHTTPSessionManager)
    assert list(open_session_ids(server.session_manager)) == []  # a dict, not yet holding a session
    assert callable(sdk_internal(server.session_manager, "_discard_session"))
    session_ender(server.session_manager)  # what ends a credential's least recently used session


def test_a_missing_internal_names_the_supported_range() -> None:
    class NewerSessionManager:
        pass

    with pytest.raises(UnsupportedSdkError) as refused:
        open_session_ids(NewerSessionManager())  # type: ignore[arg-type]
    assert "NewerSessionManager._server_instances" in str(refused.value)
    assert f'pip install "{MCP_REQUIREMENT}"' in str(refused.value)

    class WithoutDiscard:
        def __init__(self) -> None:
            self._server_instances: dict[str, object] = {}

    with pytest.raises(UnsupportedSdkError, match=r"WithoutDiscard\._discard_session"):
        session_ender(WithoutDiscard())  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_doctor_refuses_an_mcp_outside_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    import flux_mcp.cli.doctor

    assert (await check_packages(DoctorContext(None))).status is Status.OK
    monkeypatch.setattr(flux_mcp.cli.doctor, "version", lambda name: "2.4.0" if name == "mcp" else "1.0")
    checked = await check_packages(DoctorContext(None))
    assert checked.status is Status.FAIL and MCP_REQUIREMENT in (checked.fix or "")
