"""A throwaway PostgreSQL server for tests, from the Debian ``postgresql`` binaries.

    with postgres_server() as server:            # initdb + pg_ctl start on a temp dir
        url = server.new_database("t1")          # postgresql://actlab@127.0.0.1:PORT/t1

The cluster lives in a fresh folder under the system temp dir (its unix socket too, so
nothing goes to /var/run/postgresql), listens on 127.0.0.1 on a free port with ``trust``
authentication, runs with ``fsync=off`` (a test server: speed over durability) and is
stopped (``pg_ctl stop -m immediate``) and deleted on exit. PostgreSQL refuses to run as
root, so as root the server runs as the ``postgres`` OS user (or ``nobody``) through
``runuser``. :func:`unavailable` says in one line why no server can be started here (no
binaries, no driver, no non-root user), for ``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgServer", "postgres_server", "unavailable"]

USER = "actlab"


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return cands[-1] if cands else None


def _os_user() -> str | None:
    """The OS user the server runs as: ourselves, or (as root) postgres / nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return ""


def unavailable() -> str | None:
    """Why no throwaway server can be started here (one line), or None."""
    for name in ("initdb", "pg_ctl"):
        if _bin(name) is None:
            return (
                f"PostgreSQL server binaries not found ({name}: not on PATH nor in "
                "/usr/lib/postgresql/*/bin); install the Debian package postgresql"
            )
    try:
        import psycopg  # noqa: F401  -- SQLAlchemy's default postgresql:// driver
    except ImportError:
        return "the PostgreSQL driver is missing: pip install 'actlab[postgres]'"
    user = _os_user()
    if user == "":
        return "running as root and no postgres or nobody OS user to run the server as"
    if user and shutil.which("runuser") is None:
        return "running as root and runuser (util-linux) is missing to drop privileges"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running throwaway server."""

    port: int
    folder: Path

    @property
    def admin_url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Create an empty database ``name``; returns its URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True
        ) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}"')
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _run(cmd: list[str], user: str | None, **kw: object) -> subprocess.CompletedProcess[str]:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kw)  # type: ignore[call-overload, no-any-return]


@contextlib.contextmanager
def postgres_server() -> Iterator[PgServer]:
    """Start a server (see the module docstring); stop and delete it on exit."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    assert initdb and pg_ctl
    user = _os_user()
    folder = Path(tempfile.mkdtemp(prefix="actlab-pg-"))
    data, log = folder / "data", folder / "server.log"
    started = False
    try:
        if user:
            info = pwd.getpwnam(user)
            os.chown(folder, info.pw_uid, info.pw_gid)
        out = _run(
            [initdb, "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            user,
        )  # fmt: skip
        if out.returncode:
            raise RuntimeError(f"initdb failed: {(out.stderr or out.stdout).strip()[-500:]}")
        port = _free_port()
        opts = (
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        out = _run([pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "start"], user)
        started = True
        if out.returncode:
            tail = log.read_text()[-500:] if log.exists() else out.stderr
            raise RuntimeError(f"pg_ctl start failed: {tail.strip()}")
        yield PgServer(port, folder)
    finally:
        if started:
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], user)
        shutil.rmtree(folder, ignore_errors=True)
