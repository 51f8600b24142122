"""What a test needs beyond the Python packages of the `test` extra, and what happens when it is missing.

Locally a missing prerequisite skips the test, with the reason and how to install it. Where
FLUX_MCP_REQUIRE names it (CI: `postgres,browser,frameworks,node,video`) the same test fails instead,
so that a failed install can never turn into a green run of skipped tests.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

REQUIRE_VARIABLE = "FLUX_MCP_REQUIRE"
PREREQUISITES = frozenset({"postgres", "browser", "frameworks", "node", "video"})


def required() -> frozenset[str]:
    """The prerequisites FLUX_MCP_REQUIRE names; an unknown name is an error, not a silent no-op."""
    named = {name.strip() for name in os.environ.get(REQUIRE_VARIABLE, "").split(",") if name.strip()}
    unknown = named - PREREQUISITES
    if unknown:
        known = ", ".join(sorted(PREREQUISITES))
        raise pytest.UsageError(f"{REQUIRE_VARIABLE} names {', '.join(sorted(unknown))}; known: {known}")
    return frozenset(named)


def require(name: str, reason: str) -> NoReturn:
    """The prerequisite `name` is missing (`reason` says what and how to install it): skip, or fail in CI."""
    if name not in PREREQUISITES:
        raise ValueError(f"unknown prerequisite {name!r}")
    if name in required():
        pytest.fail(f"{name} is required here ({REQUIRE_VARIABLE}) but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, module: str, reason: str) -> ModuleType:
    """`module` imported, or `require(name, reason)`: pytest.importorskip that fails where required."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        require(name, f"{reason} ({exc})")
