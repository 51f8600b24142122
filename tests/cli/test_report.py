"""`flux-mcp report` (issue 26): a scripted history, on SQLite and on PostgreSQL, gives exactly this table,
this CSV and this JSON; people are shown as configured (a token's name, an OAuth subject), never a token."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_mcp.cli.main import main
from flux_mcp.domain.tasks import ImageInfo, TaskResult, TaskStatus, VideoInfo
from flux_mcp.history.backend import Backend
from flux_mcp.history.sqlite import SqliteBackend
from flux_mcp.history.store import History

PASS_THROUGH = "0123456789abcdef0123456789abcdef"  # a keyed hash of a pass-through token, as owners are
OAUTH = "oauth:https://sso.example.com/realms/acme carol@example.com"
INSERT = (
    "INSERT INTO tasks (owner, task_id, status, model, prompt, size, request, result, created_at, "
    "updated_at, person, reserved, cost) VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?, ?, ?, ?, ?)"
)


def at(day: int, hour: int = 12) -> float:
    return datetime(2026, 12, day, hour, tzinfo=UTC).timestamp()


def result(status: str, images: int = 0, videos: int = 0) -> str:
    return TaskResult(
        task_id="t",
        status=TaskStatus(status),
        images=[ImageInfo(index=i, url=f"https://cdn.example/{i}.png") for i in range(images)],
        videos=[VideoInfo(index=i, url=f"https://cdn.example/{i}.mp4") for i in range(videos)],
        elapsed_seconds=1.0,
    ).model_dump_json()


# owner, status, model, result, created_at, person, reserved, cost
SCRIPT: list[tuple[Any, ...]] = [
    ("", "succeeded", "flux-dev", result("succeeded", images=2), at(1), "alice", 1.0, 1.0),
    ("", "succeeded", "flux-dev", result("succeeded", images=1), at(2), "alice", 0.5, 0.5),
    ("", "pending", "flux-pro", None, at(2, 13), "bob", 0.8, None),  # running: its reservation counts
    ("", "rejected", "flux-pro", None, at(2, 14), "bob", 0.8, None),  # never taken: no job, no credits
    ("", "succeeded", "flux-dev", result("succeeded", images=1), at(1, 8), None, None, None),  # before names
    (OAUTH, "succeeded", "flux-3", result("succeeded", videos=1), at(2, 9), OAUTH, 4.0, 5.0),
    (PASS_THROUGH, "failed", "flux-dev", result("failed"), at(1, 10), PASS_THROUGH, 0.5, None),
]

TABLE = """\
Spending all time, by person and model

person                model     jobs  images  videos  credits
--------------------  --------  ----  ------  ------  -------
(shared)              flux-dev     1       1       0        0
alice                 flux-dev     2       3       0      1.5
bob                   flux-pro     1       0       0      0.8
carol@example.com     flux-3       1       0       1        5
passthrough-01234567  flux-dev     1       0       0        0
--------------------  --------  ----  ------  ------  -------
total                              6       4       1      7.3"""

CSV_BY_MODEL = """\
model,jobs,images,videos,credits
flux-3,1,0,1,5
flux-dev,4,4,0,1.5
flux-pro,1,0,0,0.8"""

JSON_BY_DAY = {
    "since": None,
    "by": "day",
    "rows": [
        {"day": "2026-12-01", "jobs": 3, "images": 3, "videos": 0, "credits": 1.0},
        {"day": "2026-12-02", "jobs": 3, "images": 1, "videos": 1, "credits": 6.3},
    ],
    "total": {"jobs": 6, "images": 4, "videos": 1, "credits": 7.3},
}


async def script(backend: Backend, rows: list[tuple[Any, ...]]) -> None:
    for index, (owner, status, model, stored, created, person, reserved, cost) in enumerate(rows):
        params = (
            owner,
            f"task-{index}",
            status,
            model,
            f"prompt {index}",
            "1024x1024",
            stored,
            created,
            created,
        )
        await backend.execute(INSERT, (*params, person, reserved, cost))


def sqlite_history(tmp_path: Path, rows: list[tuple[Any, ...]]) -> Path:
    path = tmp_path / "history.db"
    History(path).close()  # the tables, as the server makes them
    backend = SqliteBackend(path)
    anyio.run(script, backend, rows)
    backend.close()
    return path


def report(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["report", *args]) == 0
    out, _ = capsys.readouterr()
    return out.rstrip("\n")


def test_a_scripted_history_reports_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUX_MCP_DB", str(sqlite_history(tmp_path, SCRIPT)))
    assert report(capsys, "--since", "all") == TABLE
    assert report(capsys, "--since", "all", "--by", "model", "--format", "csv") == CSV_BY_MODEL
    assert json.loads(report(capsys, "--since", "all", "--by", "day", "--format", "json")) == JSON_BY_DAY
    assert "tok" not in TABLE and PASS_THROUGH not in TABLE  # never a token, never a whole hash


def test_since_leaves_older_jobs_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    rows = [
        ("", "succeeded", "flux-dev", result("succeeded", images=1), now - 30 * 86_400, "alice", 0.5, 0.5),
        ("", "succeeded", "flux-dev", result("succeeded", images=1), now - 3600, "alice", 0.5, 0.5),
    ]
    monkeypatch.setenv("FLUX_MCP_DB", str(sqlite_history(tmp_path, rows)))
    recent = json.loads(report(capsys, "--format", "json"))  # the last 7 days by default
    assert recent["total"] == {"jobs": 1, "images": 1, "videos": 0, "credits": 0.5}
    assert json.loads(report(capsys, "--since", "5w", "--format", "json"))["total"]["jobs"] == 2
    with pytest.raises(SystemExit):
        main(["report", "--since", "yesterday"])
    assert "--since takes Nh, Nd, Nw or all" in capsys.readouterr().err
    monkeypatch.setenv("FLUX_MCP_DB", str(tmp_path / "nothing-here.db"))
    assert main(["report"]) == 1
    assert "no history at" in capsys.readouterr().err
    assert not (tmp_path / "nothing-here.db").exists()


@pytest.mark.postgres
def test_the_same_report_from_postgresql(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flux_mcp.history.postgres import PostgresBackend

    async def scripted() -> None:
        async with History.connect(postgres_url) as history:
            await history.probe()  # the tables, as the server makes them
        async with PostgresBackend(postgres_url).opened() as backend:
            await script(backend, SCRIPT)

    anyio.run(scripted)
    monkeypatch.setenv("FLUX_MCP_DATABASE_URL", postgres_url)
    assert report(capsys, "--since", "all") == TABLE


@pytest.mark.parametrize("since", ["99999999999999999999d", "9" * 400 + "w"])
def test_a_since_before_any_date_is_all_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    """Further back than a date can be written (or than a float holds): the whole history, no traceback."""
    monkeypatch.setenv("FLUX_MCP_DB", str(sqlite_history(tmp_path, SCRIPT)))
    assert report(capsys, "--since", since) == TABLE
