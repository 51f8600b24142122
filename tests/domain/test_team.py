"""Named server tokens and budgets as data (issue 26): how FLUX_MCP_AUTH_TOKENS entries are read, and what a
budget's period is."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import anyio
import pytest
from pydantic import ValidationError

from flux_mcp.domain.settings import Settings
from flux_mcp.domain.team import Budget, parse_budget, server_tokens, token_named
from flux_mcp.web.credentials import Credentials, Verdict


def names_and_secrets(configured: str) -> list[tuple[str, str]]:
    return [(token.name, token.secret.get_secret_value()) for token in server_tokens(configured)]


def short_hash(token: str) -> str:
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def test_named_and_bare_tokens() -> None:
    assert names_and_secrets("alice:tok-1, bob:tok-2,,bare-token") == [
        ("alice", "tok-1"),
        ("bob", "tok-2"),
        (short_hash("bare-token"), "bare-token"),
    ]


@pytest.mark.parametrize(
    ("entry", "name", "secret"),
    [
        ("ci:sk:abc", "ci", "sk:abc"),  # split on the first colon only
        ("https://x", "https", "//x"),  # documented: a bare token with a colon needs a name
        ("9lives:tok", short_hash("9lives:tok"), "9lives:tok"),  # a name starts with a letter
        ("al ice:tok", short_hash("al ice:tok"), "al ice:tok"),  # no spaces in a name
        ("alice:", short_hash("alice:"), "alice:"),  # nothing after the colon: a bare token
        (":tok", short_hash(":tok"), ":tok"),
    ],
)
def test_a_colon_splits_only_after_a_simple_name(entry: str, name: str, secret: str) -> None:
    assert names_and_secrets(entry) == [(name, secret)]


def test_a_bare_token_is_named_by_a_short_hash_never_by_itself() -> None:
    [token] = server_tokens("sk-live-0123456789")
    assert token.name.startswith("token-") and "0123456789" not in token.name
    assert "sk-live" not in repr(token)  # the secret stays a SecretStr


def test_named_tokens_are_admitted_by_their_secret_only() -> None:
    credentials = Credentials(Settings(auth_tokens="alice:tok-1,bob:tok-2"))
    assert anyio.run(credentials.admit, "tok-1").verdict is Verdict.ACCEPTED
    assert anyio.run(credentials.admit, "alice:tok-1").verdict is Verdict.REFUSED
    assert anyio.run(credentials.admit, "alice").verdict is Verdict.REFUSED
    tokens = Settings(auth_tokens="alice:tok-1,bob:tok-2").server_tokens()
    assert token_named(tokens, "tok-2") == "bob"
    assert token_named(tokens, "tok-3") is None


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("50/day", Budget(50, "day")),
        (" 2000 / Month ", Budget(2000, "month")),
        ("0.5/day", Budget(0.5, "day")),
    ],
)
def test_budgets_read(text: str, budget: Budget) -> None:
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["50", "50/week", "-1/day", "nan/day", "lots/day", "/day"])
def test_a_malformed_budget_is_refused_at_startup_with_its_form(text: str) -> None:
    with pytest.raises(ValidationError, match="AMOUNT/day or AMOUNT/month"):
        Settings(budget_per_person=text)
    with pytest.raises(ValidationError, match="AMOUNT/day or AMOUNT/month"):
        Settings(budget_total=text)


def test_periods_are_utc_days_and_calendar_months() -> None:
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    day, month = Budget(1, "day"), Budget(1, "month")
    assert day.starts(now) == datetime(2026, 12, 31, tzinfo=UTC).timestamp()
    assert day.resets(now) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert month.starts(now) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert month.resets(now) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    february = datetime(2027, 2, 14, 12, tzinfo=UTC).timestamp()
    assert month.resets(february) == datetime(2027, 3, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", [",,,", " , ", ","])
def test_tokens_set_to_no_token_are_refused_not_read_as_no_auth(text: str) -> None:
    with pytest.raises(ValidationError, match="names no token"):
        Settings(auth_tokens=text)


def test_blank_tokens_are_unset() -> None:
    assert Settings(auth_tokens="  ").auth_mode() == "none"
