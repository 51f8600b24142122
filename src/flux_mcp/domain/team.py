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
