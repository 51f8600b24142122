"""A missing prerequisite skips a test locally and fails it where FLUX_MCP_REQUIRE names it (CI)."""

from __future__ import annotations

import pytest

from tests.support.prerequisites import REQUIRE_VARIABLE, require, require_module, required


def test_a_missing_prerequisite_is_a_skip_with_its_reason_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_VARIABLE, "browser")
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        require("postgres", "no initdb (apt-get install postgresql)")


def test_a_required_prerequisite_that_is_missing_fails_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_VARIABLE, "postgres, node")
    with pytest.raises(pytest.fail.Exception, match=r"node is required here \(FLUX_MCP_REQUIRE\)"):
        require("node", "node not found")
    with pytest.raises(pytest.fail.Exception, match="frameworks is required here"):
        monkeypatch.setenv(REQUIRE_VARIABLE, "frameworks")
        require_module("frameworks", "a_module_nobody_installs", "not installed")


def test_a_present_module_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_VARIABLE, "frameworks")
    assert require_module("frameworks", "json", "always there").dumps([]) == "[]"


def test_an_unknown_name_is_an_error_not_a_silent_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_VARIABLE, "postgres,chrome")
    with pytest.raises(pytest.UsageError, match="names chrome"):
        required()
    with pytest.raises(ValueError, match="unknown prerequisite"):
        require("chrome", "typo")
