"""The package API: what `flux_mcp` exports, that each name resolves, and that importing it stays cheap."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import flux_mcp
from flux_mcp.domain import errors

INIT = Path(flux_mcp.__file__)


def test_the_package_api_imports_from_the_top() -> None:
    from flux_mcp import FluxClient, FluxError, Settings, build_http_app, build_server
    from flux_mcp.domain.settings import Settings as settings_class
    from flux_mcp.server.build import build_server as server_factory
    from flux_mcp.upstream.flux import FluxClient as client_class
    from flux_mcp.web.app import build_http_app as http_factory

    assert (build_server, build_http_app, Settings, FluxClient, FluxError) == (
        server_factory,
        http_factory,
        settings_class,
        client_class,
        errors.FluxError,
    )


def test_every_name_in_all_resolves_and_type_checkers_see_the_same_homes() -> None:
    homes = {name: getattr(flux_mcp, name).__module__ for name in flux_mcp.__all__ if name != "__version__"}
    for name, home in homes.items():
        assert getattr(importlib.import_module(home), name) is getattr(flux_mcp, name)
    assert isinstance(flux_mcp.__version__, str) and flux_mcp.__version__
    assert homes == _type_checking_imports()
    assert sorted(flux_mcp.__all__) == sorted(set(flux_mcp.__all__))


def test_every_error_of_the_tree_is_exported() -> None:
    tree = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.FluxMcpError)
    }
    assert {"FluxMcpError", "StartupError", "FluxError"} <= tree <= set(flux_mcp.__all__)
    assert all(issubclass(getattr(flux_mcp, name), flux_mcp.FluxMcpError) for name in tree)


def test_an_unknown_name_is_an_attribute_error_and_submodules_still_import() -> None:
    assert not hasattr(flux_mcp, "no_such_name")
    from flux_mcp.cli import hostconfig

    assert hostconfig.__name__ == "flux_mcp.cli.hostconfig"


@pytest.mark.subprocess
def test_importing_the_package_loads_neither_the_sdk_nor_the_server() -> None:
    probe = (
        "import json, sys, flux_mcp; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'mcp', 'httpx2', 'pydantic', 'starlette', 'uvicorn', 'flux_mcp'})))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True).stdout)
    assert loaded == ["flux_mcp"]


def _type_checking_imports() -> dict[str, str]:
    """The `if TYPE_CHECKING:` imports of flux_mcp/__init__.py, as {name: module}."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(INIT.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module is not None
                found.update({alias.name: statement.module for alias in statement.names})
    return found
