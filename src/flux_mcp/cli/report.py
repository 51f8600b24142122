"""`flux-mcp report`: who spent what, from the history the server uses (SQLite or PostgreSQL).

Jobs, images, videos and credits per person and model (`--by person`), per model, or per UTC day, over
`--since` (7d by default), as a table, CSV or JSON. People are shown as they are configured (a server
token's name, an OAuth subject, `local`), never as a token: the history holds names and keyed hashes only.
Credits count as budgets count them (`history.store.SPENT`): the cost a result reported, else what was
set aside for the job.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from flux_mcp.domain.settings import Settings
from flux_mcp.domain.team import credits
from flux_mcp.history.rows import HistoryEntry, iso
from flux_mcp.history.store import History

Grouping = Literal["person", "model", "day"]
Format = Literal["table", "csv", "json"]
SINCE_FORM = re.compile(r"(\d+(?:\.\d+)?)\s*([hdw])")
SECONDS = {"h": 3600, "d": 86_400, "w": 7 * 86_400}
OWNER_HASH = re.compile(r"[0-9a-f]{32}")
HEADINGS: dict[Grouping, tuple[str, ...]] = {
    "person": ("person", "model"),
    "model": ("model",),
    "day": ("day",),
}
FIGURES = ("jobs", "images", "videos", "credits")


@dataclass
class Tally:
    """The figures of one group of rows."""

    jobs: int = 0
    images: int = 0
    videos: int = 0
    credits: float = 0.0

    def add(self, entry: HistoryEntry, spent: float) -> None:
        if entry.status != "rejected":  # never reached the upstream's books
            self.jobs += 1
        if entry.result is not None:
            self.images += len(entry.result.images)
            self.videos += len(entry.result.videos)
        self.credits += spent

    def cells(self) -> list[str]:
        return [str(self.jobs), str(self.images), str(self.videos), credits(round(self.credits, 6))]


@dataclass
class Report:
    by: Grouping
    since: float | None
    groups: dict[tuple[str, ...], Tally] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)


def add_report_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser("report", help="who spent what: jobs, images, videos, credits")
    report.add_argument(
        "--since", default="7d", type=_since_text, help="how far back: Nh, Nd, Nw or all (default 7d)"
    )
    report.add_argument("--by", choices=["person", "model", "day"], default="person", help="grouping")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output")


def since_of(text: str, now: float) -> float | None:
    """The Unix time `--since` names (None: all of it); ValueError for anything else."""
    if text.strip().lower() == "all":
        return None
    matched = SINCE_FORM.fullmatch(text.strip().lower())
    if matched is None:
        raise ValueError(f"--since takes Nh, Nd, Nw or all (for example 7d); {text!r} is not one")
    since = now - float(matched.group(1)) * SECONDS[matched.group(2)]
    return since if since > 0 else None  # before the history could begin: all of it


def _since_text(text: str) -> str:
    try:
        since_of(text, 0.0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


async def run(settings: Settings, args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """Read the history the server would, and print the report."""
    since = since_of(args.since, time.time())
    url = settings.history_url()
    if url is not None:
        async with History.connect(url) as history:
            rows = await history.spending(since or 0.0)
    else:
        if not settings.history_path().exists():  # never create an empty history just to report on it
            print(f"flux-mcp report: no history at {settings.history_path()} (FLUX_MCP_DB)", file=sys.stderr)
            return 1
        history = History(settings.history_path())
        try:
            rows = await history.spending(since or 0.0)
        finally:
            history.close()
    out(render(tally(rows, args.by, since), args.format))
    return 0


def tally(rows: Sequence[tuple[HistoryEntry, float]], by: Grouping, since: float | None) -> Report:
    report = Report(by, since)
    for entry, spent in rows:
        key = group_of(entry, by)
        report.groups.setdefault(key, Tally()).add(entry, spent)
        report.total.add(entry, spent)
    report.groups = dict(sorted(report.groups.items()))
    return report


def group_of(entry: HistoryEntry, by: Grouping) -> tuple[str, ...]:
    model = entry.model or "?"
    if by == "model":
        return (model,)
    if by == "day":
        return (iso(entry.created_at)[:10],)
    return (shown_person(entry), model)


def shown_person(entry: HistoryEntry) -> str:
    """Who a row is for, as an operator knows them; never a token (the history holds none)."""
    who = entry.person or entry.owner or "(shared)"  # "": server tokens' and stdio's shared history
    if who.startswith("oauth:"):
        return who.rpartition(" ")[2] or who  # the OAuth subject
    if OWNER_HASH.fullmatch(who):
        return f"passthrough-{who[:8]}"
    return who


def render(report: Report, fmt: Format) -> str:
    if fmt == "json":
        return as_json(report)
    headings = [*HEADINGS[report.by], *FIGURES]
    rows = [[*key, *tally.cells()] for key, tally in report.groups.items()]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([headings, *rows])
        return buffer.getvalue().rstrip("\n")
    blank = [""] * (len(HEADINGS[report.by]) - 1)
    return as_table(headings, rows, ["total", *blank, *report.total.cells()], title(report))


def title(report: Report) -> str:
    since = "all time" if report.since is None else f"since {iso(report.since)[:16].replace('T', ' ')} UTC"
    by = {"person": "person and model", "model": "model", "day": "UTC day"}[report.by]
    return f"Spending {since}, by {by}"


def as_table(headings: list[str], rows: list[list[str]], total: list[str], heading: str) -> str:
    figures = len(FIGURES)
    widths = [max(len(row[i]) for row in [headings, *rows, total]) for i in range(len(headings))]

    def line(cells: list[str]) -> str:
        keys = [cell.ljust(width) for cell, width in zip(cells[:-figures], widths, strict=False)]
        numbers = [cell.rjust(width) for cell, width in zip(cells[-figures:], widths[-figures:], strict=True)]
        return "  ".join(keys + numbers).rstrip()

    rule = "  ".join("-" * width for width in widths)
    body = [line(row) for row in rows] or ["(no jobs)"]
    return "\n".join([heading, "", line(headings), rule, *body, rule, line(total)])


def as_json(report: Report) -> str:
    keys = HEADINGS[report.by]

    def figures(tally: Tally) -> dict[str, float | int]:
        return {
            "jobs": tally.jobs,
            "images": tally.images,
            "videos": tally.videos,
            "credits": round(tally.credits, 6),
        }

    return json.dumps(
        {
            "since": iso(report.since) if report.since is not None else None,
            "by": report.by,
            "rows": [
                dict(zip(keys, key, strict=True)) | figures(tally) for key, tally in report.groups.items()
            ],
            "total": figures(report.total),
        },
        indent=2,
    )
