"""`flux-mcp doctor`: check, one line each, what a first run needs, and say how to fix each failure.

Every check is one small async function `(DoctorContext) -> CheckResult` in `CHECKS`; adding a check
is writing one more function and listing it. A check never prints the token: it sees the settings,
and `run_doctor` also redacts the token from every line it writes, as a second guard.
"""

from __future__ import annotations

import io
import re
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

import anyio
from pydantic import ValidationError

from flux_mcp import __version__
from flux_mcp.domain.errors import (
    AuthenticationError,
    FluxError,
    HistoryUnavailableError,
    MalformedResponseError,
    NotSentError,
    RateLimitedError,
    RequestRejectedError,
    ResponseLostError,
    ServerError,
    TaskNotFoundError,
)
from flux_mcp.domain.settings import DEFAULT_BASE_URL, Settings
from flux_mcp.history.sqlite import UNOPENABLE_FIX, SqliteBackend
from flux_mcp.history.store import History
from flux_mcp.net.clients import build_http_client
from flux_mcp.server.sdk import MCP_REQUIREMENT, MCP_VERSIONS
from flux_mcp.upstream.call import RetryPolicy
from flux_mcp.upstream.flux import FluxClient

MIN_PYTHON = (3, 11)
PACKAGES = ("flux-mcp", "mcp", "httpx2", "pydantic")
PROBE_TASK_ID = "flux-mcp-doctor"
PROBE_TIMEOUT_SECONDS = 15.0
DESKTOP_HOST_TIMEOUT_SECONDS = 60.0
TOKEN_SITE = "https://platform.acedata.cloud"
PLACEHOLDER_TOKENS = frozenset(
    {"<your-acedatacloud-token>", "your-acedatacloud-token", "your-token-here", "<your-token>", "your-token"}
)
SET_TOKEN = (
    f'get a token at {TOKEN_SITE} and set ACEDATACLOUD_API_TOKEN in the MCP host\'s "env" block '
    "(`flux-mcp config HOST` prints one); for this shell: export ACEDATACLOUD_API_TOKEN=…"
)


class Status(Enum):
    OK = "✓"
    WARN = "!"
    FAIL = "✗"
    SKIP = "-"


@dataclass(frozen=True)
class CheckResult:
    status: Status
    text: str
    fix: str | None = None

    @property
    def passed(self) -> bool:
        return self.status in (Status.OK, Status.WARN)


@dataclass(frozen=True)
class DoctorContext:
    """What the checks look at: the parsed settings, or why they did not parse."""

    settings: Settings | None
    settings_error: str | None = None


Check = Callable[[DoctorContext], Awaitable[CheckResult]]


def ok(text: str) -> CheckResult:
    return CheckResult(Status.OK, text)


def warn(text: str, fix: str) -> CheckResult:
    return CheckResult(Status.WARN, text, fix)


def fail(text: str, fix: str) -> CheckResult:
    return CheckResult(Status.FAIL, text, fix)


def skip(text: str) -> CheckResult:
    return CheckResult(Status.SKIP, text)


async def check_python(_: DoctorContext) -> CheckResult:
    current = ".".join(str(part) for part in sys.version_info[:3])
    needed = ".".join(str(part) for part in MIN_PYTHON)
    if sys.version_info[:2] < MIN_PYTHON:
        return fail(
            f"Python {current} (flux-mcp needs ≥ {needed})",
            f"install Python {needed}+ and reinstall flux-mcp with it (or run `uvx flux-mcp`)",
        )
    return ok(f"Python {current} ({sys.executable})")


async def check_packages(_: DoctorContext) -> CheckResult:
    found: list[str] = []
    missing: list[str] = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            missing.append(name)
    if missing:
        return fail(f"packages missing: {', '.join(missing)}", f"pip install --upgrade {' '.join(PACKAGES)}")
    mcp_version = version("mcp")
    lowest, beyond = MCP_VERSIONS
    if not lowest <= _version_tuple(mcp_version)[:2] < beyond:
        return fail(
            f"mcp {mcp_version} is not a version flux-mcp supports ({MCP_REQUIREMENT})",
            f'pip install "{MCP_REQUIREMENT}"',
        )
    return ok("packages: " + ", ".join(found))


async def check_settings(ctx: DoctorContext) -> CheckResult:
    settings = ctx.settings
    if settings is None:
        return fail(
            f"settings: {ctx.settings_error or 'invalid'}",
            'correct or unset the variable named above in the MCP host\'s "env" block (or this shell)',
        )
    where = "" if settings.api_base_url == DEFAULT_BASE_URL else f", base URL {settings.api_base_url}"
    summary = f"wait {settings.wait_seconds:g} s, log level {settings.log_level}{where}"
    if settings.wait_seconds >= DESKTOP_HOST_TIMEOUT_SECONDS:
        return warn(
            f"settings: FLUX_MCP_WAIT_SECONDS={settings.wait_seconds:g}; desktop hosts cancel tool calls "
            f"at about {DESKTOP_HOST_TIMEOUT_SECONDS:.0f} s",
            "set FLUX_MCP_WAIT_SECONDS=45 (or unset it) unless your host allows longer tool calls; "
            "a job that outlasts the wait returns a task id that get_task resumes",
        )
    return ok(f"settings: {summary}")


async def check_token(ctx: DoctorContext) -> CheckResult:
    token = _token(ctx)
    if ctx.settings is None:
        return skip("token: not checked (settings invalid)")
    if token is None:
        return fail("token: ACEDATACLOUD_API_TOKEN is not set", SET_TOKEN)
    if token.strip().strip("\"'").lower() in PLACEHOLDER_TOKENS:
        return fail("token: ACEDATACLOUD_API_TOKEN is still the placeholder", SET_TOKEN)
    if token.lower().startswith("bearer "):
        return fail(
            f"token: ACEDATACLOUD_API_TOKEN starts with 'Bearer ' ({mask(token)})",
            "set ACEDATACLOUD_API_TOKEN to the token alone, without the 'Bearer ' prefix",
        )
    if token != token.strip() or token[:1] in "\"'":
        return fail(
            f"token: ACEDATACLOUD_API_TOKEN has surrounding spaces or quotes ({mask(token)})",
            "set ACEDATACLOUD_API_TOKEN to the bare token: no spaces, no quotes inside the value",
        )
    return ok(f"token: set ({mask(token)})")


async def check_upstream(ctx: DoctorContext) -> CheckResult:
    settings = ctx.settings
    token = _token(ctx)
    if settings is None or token is None:
        return skip("upstream: not checked (no usable settings or token)")
    base = settings.api_base_url
    fix_url = f"check your network, proxy (HTTPS_PROXY) and firewall; ACEDATACLOUD_API_BASE_URL is {base}" + (
        "" if base == DEFAULT_BASE_URL else f" (the default is {DEFAULT_BASE_URL})"
    )
    probe = settings.with_changes(
        http_timeout_seconds=min(settings.http_timeout_seconds, PROBE_TIMEOUT_SECONDS)
    )
    started = time.monotonic()
    try:
        async with build_http_client(probe) as http:
            client = FluxClient(http, base, token, retry=RetryPolicy(max_retries=0))
            await client.retrieve(PROBE_TASK_ID)
    except TaskNotFoundError:
        pass  # the answer we expect: the API authenticated us and looked the probe id up
    except AuthenticationError as exc:
        return fail(
            f"upstream: {base} rejected the token (HTTP {exc.status}{_code(exc)})",
            f"copy the token again from {TOKEN_SITE} into ACEDATACLOUD_API_TOKEN; it may be expired "
            "or revoked",
        )
    except RateLimitedError:
        return fail(
            f"upstream: {base} is rate limiting; the token could not be confirmed",
            "run `flux-mcp doctor` again in a minute",
        )
    except RequestRejectedError as exc:
        if exc.status == 402 or exc.code == "used_up":
            return fail(f"upstream: {base} says the account balance is used up", f"top up at {TOKEN_SITE}")
        if exc.status == 403:
            return fail(
                f"upstream: {base} refused the token for the Flux API (HTTP 403{_code(exc)})",
                f"check at {TOKEN_SITE} that this token may use the Flux service",
            )
        # Any other 4xx came after authentication: the probe id itself was refused.
        return ok(
            f"upstream: {base} reachable, token accepted (probe answered HTTP {exc.status}) "
            f"in {time.monotonic() - started:.2f} s"
        )
    except NotSentError as exc:
        return fail(f"upstream: unreachable: {exc.message}", fix_url)
    except ResponseLostError as exc:
        return fail(f"upstream: no usable answer from {base}: {exc.message}", fix_url)
    except MalformedResponseError:
        return fail(
            f"upstream: {base} answered with something that is not the Flux API",
            f"{fix_url}; a captive portal or proxy may be answering instead",
        )
    except ServerError as exc:
        return fail(
            f"upstream: {base} is failing (HTTP {exc.status})",
            "the Flux API has a problem; try again later",
        )
    except FluxError as exc:
        return fail(f"upstream: {exc.message}", fix_url)
    return ok(f"upstream: {base} reachable, token accepted in {time.monotonic() - started:.2f} s")


async def check_output_folder(ctx: DoctorContext) -> CheckResult:
    settings = ctx.settings
    if settings is None:
        return skip("output folder: not checked (settings invalid)")
    if not settings.saves_images():
        return ok("output folder: saving is off (FLUX_MCP_SAVE=false)")
    folder = settings.image_folder()
    try:
        await anyio.to_thread.run_sync(_probe_writable, folder)
    except OSError as exc:
        return fail(
            f"output folder: cannot write to {folder} ({exc.strerror or exc})",
            "set FLUX_MCP_OUTPUT_DIR to a folder you can write to, or FLUX_MCP_SAVE=false",
        )
    return ok(f"output folder: {folder.resolve()} is writable")


async def check_history(ctx: DoctorContext) -> CheckResult:
    settings = ctx.settings
    if settings is None:
        return skip("history: not checked (settings invalid)")
    if (problem := settings.history_problem()) is not None:
        return fail(f"history: {problem}", "fix the setting named above")
    if (url := settings.history_url()) is not None:
        return await _check_shared_history(url)
    path = settings.history_path()
    try:
        count = await anyio.to_thread.run_sync(_count_history, path)
    except (OSError, sqlite3.Error) as exc:
        return fail(
            f"history: cannot open {path} ({exc}): the server does not start without it",
            UNOPENABLE_FIX,
        )
    return ok(f"history: {path} ({count} tasks)")


async def _check_shared_history(url: str) -> CheckResult:
    try:
        async with History.connect(url) as history:
            await history.probe()
            where = history.where
    except HistoryUnavailableError as exc:
        return fail(f"history: {exc.where} cannot be reached ({exc.reason})", "check FLUX_MCP_DATABASE_URL")
    except ModuleNotFoundError:
        return fail("history: FLUX_MCP_DATABASE_URL is set", "pip install 'flux-mcp[postgres]'")
    return ok(f"history: {where} answers (schema up to date)")


def _probe_writable(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".flux-mcp-doctor"
    probe.write_bytes(b"ok")
    probe.unlink()


def _count_history(path: Path) -> int:
    """The tasks in the history file, opened as the server's backend opens it (created, private, brought up
    to the current schema): what would stop the server fails here. Not through `History`, whose opening
    settles rows left `submitting`: a server may be submitting one right now."""
    SqliteBackend(path).close()
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])


async def check_http(ctx: DoctorContext) -> CheckResult:
    """What `serve --transport http` would do with these settings (stdio users can ignore it)."""
    settings = ctx.settings
    if settings is None:
        return skip("http: not checked (settings invalid)")
    from flux_mcp.domain.errors import StartupError
    from flux_mcp.web.app import check_http_settings
    from flux_mcp.web.gate import is_loopback

    where = f"{settings.host}:{settings.port}"
    try:
        check_http_settings(settings, allow_unauthenticated=False)
    except StartupError as exc:
        return fail(f"http: serving on {where} would be refused: {exc}", HTTP_FIX)
    reach = "this machine only" if is_loopback(settings.host) else "the network"
    callbacks = ", callbacks on" if settings.public_url else ""
    return ok(f"http: would serve {where} ({reach}), auth {settings.auth_mode()}{callbacks}")


HTTP_FIX = (
    "set FLUX_MCP_AUTH_TOKENS, or FLUX_MCP_HOST=127.0.0.1, or serve with --allow-unauthenticated behind a "
    "proxy that authenticates users"
)

CHECKS: tuple[Check, ...] = (
    check_python,
    check_packages,
    check_settings,
    check_token,
    check_upstream,
    check_output_folder,
    check_history,
    check_http,
)


async def run_doctor(
    settings: Settings | None,
    out: TextIO,
    *,
    settings_error: str | None = None,
    checks: Sequence[Check] = CHECKS,
) -> bool:
    """Run every check, write one line each (and a fix under each failure); True iff all passed."""
    ctx = DoctorContext(settings, settings_error)
    secret = _token(ctx)
    out.write(f"flux-mcp doctor {__version__}\n")
    results: list[CheckResult] = []
    for check in checks:
        try:
            result = await check(ctx)
        except Exception as exc:  # a broken check is a failed check, never a crashed doctor
            result = fail(f"{check.__name__}: crashed: {type(exc).__name__}: {exc}", "please report this")
        results.append(result)
        out.write(_redact(f"{result.status.value} {result.text}\n", secret))
        if result.fix and result.status is not Status.OK:
            out.write(_redact(f"    fix: {result.fix}\n", secret))
    failed = sum(result.status is Status.FAIL for result in results)
    skipped = sum(result.status is Status.SKIP for result in results)
    if failed or skipped:
        not_checked = f", {skipped} not checked" if skipped else ""
        out.write(f"\n{failed} of {len(results)} checks failed{not_checked}.\n")
    else:
        out.write(f"\nAll {len(results)} checks passed.\n")
    out.flush()
    return all(result.passed for result in results)


def load_settings() -> tuple[Settings | None, str | None]:
    """The settings from the environment, or None and a description naming the bad variables."""
    try:
        return Settings(), None
    except ValidationError as exc:
        return None, describe_settings_error(exc)


def describe_settings_error(exc: ValidationError) -> str:
    """Which variables are wrong and why, without echoing their values (one of them is a secret)."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "settings"
        name = field if field.isupper() else f"FLUX_MCP_{field.upper()}"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}: {message}")
    return "; ".join(parts) or str(exc.title)


def main(out: TextIO | None = None) -> int:
    """`flux-mcp doctor`: exit code 0 iff every check passed."""
    stream = out or sys.stdout
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="replace")  # a legacy console code page must not crash on ✓
    settings, error = load_settings()
    passed = anyio.run(_run, settings, stream, error)
    return 0 if passed else 1


async def _run(settings: Settings | None, out: TextIO, error: str | None) -> bool:
    return await run_doctor(settings, out, settings_error=error)


def mask(token: str) -> str:
    """Enough of a token to tell two apart, never enough to use: its last 4 characters."""
    return f"…{token[-4:]}" if len(token) >= 12 else f"{len(token)} characters"


def _token(ctx: DoctorContext) -> str | None:
    if ctx.settings is None or ctx.settings.api_token is None:
        return None
    return ctx.settings.api_token.get_secret_value()


def _redact(line: str, secret: str | None) -> str:
    return line.replace(secret, "[redacted]") if secret and len(secret) >= 4 else line


def _code(exc: FluxError) -> str:
    code = getattr(exc, "code", None)
    return f", {code}" if code else ""


def _version_tuple(text: str) -> tuple[int, ...]:
    """(2, 3, 0) from "2.3.0rc1": the leading numbers of the first three parts."""
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)
