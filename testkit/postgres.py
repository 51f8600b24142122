"""A throw-away PostgreSQL cluster for tests and benchmarks: `initdb` + `pg_ctl` in a temporary folder.

It listens on a free loopback port only, trusts local connections (nothing else can reach it), and
runs as an unprivileged user when we are root (PostgreSQL refuses to run as root): the `postgres`
user Debian's package creates, or `nobody`. `.ci/run` installs the package when it is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from testkit import free_port

SUPERUSER = "flux"
START_TIMEOUT_SECONDS = 120
PORT_ATTEMPTS = 3


class ClusterUnavailable(Exception):
    """PostgreSQL is not installed here, or would not start; the message says which."""


def postgres_bin() -> Path:
    """The folder with initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/local/pgsql/bin")
    usable = [
        Path(c) for c in candidates if (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file()
    ]
    if not usable:
        raise ClusterUnavailable("no initdb/pg_ctl found (apt-get install postgresql)")
    return max(usable, key=lambda path: _version(path.parent.name))


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit()) or (0,)


class PostgresCluster:
    """One running cluster; `url(db)` connects to it, `stop`/`start` simulate an outage."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="flux-mcp-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._user = _unprivileged_user()
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            self._start_on_a_free_port()
        except (ClusterUnavailable, OSError) as exc:
            self.remove()
            raise ClusterUnavailable(str(exc)) from exc

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)

    def _start_on_a_free_port(self) -> None:
        """Start; if another process took the port meanwhile (parallel test workers), on another one."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                self.start()
                return
            except ClusterUnavailable as exc:
                if "already in use" not in str(exc) or attempt == PORT_ATTEMPTS - 1:
                    raise
                self.port = free_port()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(ClusterUnavailable):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, check=False)
        if done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise ClusterUnavailable(f"{tool} failed: {(done.stderr or done.stdout).strip()[-800:]} {tail}")


def _unprivileged_user() -> str | None:
    """None when we are not root; else a user PostgreSQL agrees to run as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ClusterUnavailable("running as root and no unprivileged user (postgres, nobody) exists")
