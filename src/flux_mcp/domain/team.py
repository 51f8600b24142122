"""Running for a team, as data: who a server token is (its name), and what a budget is (credits per period).

Server tokens (`FLUX_MCP_AUTH_TOKENS`) are comma-separated entries, each `name:token` or a bare `token`.
An entry is split on its first `:` only when the part before it is a simple name (NAME_PATTERN: a letter,
then letters, digits, `_`, `.` or `-`, at most 64 in all) and something follows it; otherwise the whole
entry is the token. A bare token is named "token-" and the first TOKEN_NAME_HEX hex digits of its
sha256: stable across restarts and replicas, and the token cannot be recovered from it. So a bare token
whose own text has a `:` after a simple prefix (`sk:abc`) must be given a name (`ci:sk:abc`). Two tokens
may share a name: they are one person (a token being rotated).

A budget is `AMOUNT/day` or `AMOUNT/month` in the upstream's credits; its periods are UTC days and calendar
months (UTC), and it resets at the start of the next one.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import SecretStr

LOCAL_PERSON = "local"  # stdio, or HTTP without auth: the one user of this server
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
TOKEN_NAME_HEX = 12
Period = Literal["day", "month"]
PERSON_SETTING = "FLUX_MCP_BUDGET_PER_PERSON"
BUDGET_FORM = "AMOUNT/day or AMOUNT/month in credits, for example 50/day or 2000/month"


@dataclass(frozen=True)
class ServerToken:
    """One of FLUX_MCP_AUTH_TOKENS: the name its holder is known by, and the secret they present."""

    name: str
    secret: SecretStr


def server_tokens(configured: str) -> list[ServerToken]:
    """The entries of FLUX_MCP_AUTH_TOKENS, named (see the module's rule); blank entries are skipped."""
    tokens = []
    for entry in configured.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, colon, secret = entry.partition(":")
        if colon and secret.strip() and NAME_PATTERN.fullmatch(name.strip()):
            tokens.append(ServerToken(name.strip(), SecretStr(secret.strip())))
        else:
            tokens.append(ServerToken(bare_token_name(entry), SecretStr(entry)))
    return tokens


def bare_token_name(token: str) -> str:
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:TOKEN_NAME_HEX]


@dataclass(frozen=True)
class Budget:
    """At most `amount` credits in each `period` (UTC)."""

    amount: float
    period: Period

    def starts(self, now: float) -> float:
        """When the period holding `now` (a Unix time) began."""
        moment = datetime.fromtimestamp(now, UTC)
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "month":
            start = start.replace(day=1)
        return start.timestamp()

    def resets(self, now: float) -> float:
        """When the period holding `now` ends and the next begins."""
        start = datetime.fromtimestamp(self.starts(now), UTC)
        if self.period == "day":
            return start.timestamp() + 86_400
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return start.replace(year=year, month=month).timestamp()

    def describe(self) -> str:
        return f"{credits(self.amount)}/{self.period}"


def parse_budget(text: str) -> Budget:
    """`50/day`, `2000/month` (spaces and case ignored); a ValueError naming the form otherwise."""
    amount, slash, period = text.strip().lower().partition("/")
    period = period.strip()
    try:
        value = float(amount.strip())
    except ValueError:
        value = math.nan
    if not slash or period not in ("day", "month") or not math.isfinite(value) or value < 0:
        raise ValueError(f"a budget is {BUDGET_FORM}; {text.strip()!r} is not")
    return Budget(value, "day" if period == "day" else "month")


def credits(amount: float) -> str:
    """An amount of credits as people read it: 12, 0.5, 1.25."""
    return f"{amount:.4f}".rstrip("0").rstrip(".") if amount != int(amount) else str(int(amount))


def token_named(tokens: list[ServerToken], presented: str) -> str | None:
    """The name of the server token `presented` is, comparing with every one in constant time; else None."""
    candidate, name = presented.encode(), None
    for token in tokens:
        if hmac.compare_digest(candidate, token.secret.get_secret_value().encode()) and name is None:
            name = token.name
    return name


@dataclass(frozen=True)
class Spend:
    """A submission about to be made: who pays, what it is reckoned to cost, and the budgets it must fit."""

    person: str
    estimate: float
    person_budget: Budget | None = None
    total_budget: Budget | None = None

    def limits(self) -> list[tuple[Budget, str | None]]:
        """Each budget with the person it counts (None: everyone)."""
        limits: list[tuple[Budget, str | None]] = []
        if self.person_budget is not None:
            limits.append((self.person_budget, self.person))
        if self.total_budget is not None:
            limits.append((self.total_budget, None))
        return limits


def over_budget(spent: float, budget: Budget, estimate: float) -> bool:
    """Whether a call reckoned at `estimate` may not start: the budget is spent, or it would pass it."""
    return spent >= budget.amount or spent + estimate > budget.amount


def refusal(spent: float, budget: Budget, estimate: float, now: float, *, total: bool) -> str:
    """What a refused call is told: spent, limit, when it resets, what this call would cost."""
    whose, setting = ("This server's", "FLUX_MCP_BUDGET_TOTAL") if total else ("Your", PERSON_SETTING)
    resets = datetime.fromtimestamp(budget.resets(now), UTC).strftime("%Y-%m-%d %H:%M UTC")
    cost = f"about {credits(estimate)} credits" if estimate > 0 else "an amount not known yet"
    this = "today" if budget.period == "day" else "this month"
    return (
        f"Not submitted: {whose} budget is {credits(budget.amount)} credits a {budget.period} ({setting}), "
        f"and {credits(spent)} are spent {this}; this call would cost {cost}. It resets at "
        f"{resets}. Nothing was sent to the Flux API. Earlier tasks can still be listed, read and finished "
        "(get_task is free)."
    )


@dataclass(frozen=True)
class Budgets:
    """The budgets a server runs with (FLUX_MCP_BUDGET_PER_PERSON, FLUX_MCP_BUDGET_TOTAL); none by default."""

    person: Budget | None = None
    total: Budget | None = None

    def spend(self, person: str, estimate: float) -> Spend | None:
        """What a submission by `person` reckoned at `estimate` must fit; None without budgets."""
        if self.person is None and self.total is None:
            return None
        return Spend(person, estimate, self.person, self.total)
