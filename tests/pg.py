"""A throwaway PostgreSQL cluster for the tests, from the machine's own binaries.

``initdb`` and ``pg_ctl`` are looked up on PATH, then in Debian's
``/usr/lib/postgresql/<version>/bin``. Run as root, they run as the ``postgres`` user (the
server refuses root) on a temporary directory that user owns. The server listens only on
a Unix socket in that directory (on a free port number, so that clusters of parallel
runs never meet), with ``fsync=off``: a test cluster needs no crash safety.
``BSC_RULES_TEST_PG`` (a ``postgresql://`` URL of a role that may create databases) is
used instead when set.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ENV = "BSC_RULES_TEST_PG"


class PgUnavailable(RuntimeError):
    """No PostgreSQL to test against (the reason says why)."""


def find_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else the newest Debian cluster version."""
    found = shutil.which(name)
    if found:
        return found
    debian = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version)
    return debian[-1] if debian else None


def _version(path: str) -> tuple[int, ...]:
    part = Path(path).parts[-3]
    return tuple(int(p) for p in part.split(".") if p.isdigit())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class _Server:
    """How a local cluster's server was started, to stop and start it again."""

    pg_ctl: str
    base: Path
    data: Path
    opts: str

    def stop(self, mode: str) -> None:
        _run([self.pg_ctl, "stop", "-D", str(self.data), "-m", mode, "-w"], self.base)

    def start(self) -> None:
        _run([self.pg_ctl, "start", "-w", "-t", "60", "-D", str(self.data),
              "-l", str(self.base / "log"), "-o", self.opts], self.base)  # fmt: skip


class Cluster:
    """A PostgreSQL server reachable at ``admin_url``; ``url(db)`` names a database on it.
    A local cluster's server can be stopped and started again (the fault suites)."""

    def __init__(self, admin_url: str, server: _Server | None = None) -> None:
        self.admin_url = admin_url
        self._server = server

    def url(self, dbname: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path="/" + quote(dbname)))

    @property
    def restartable(self) -> bool:
        """Whether this process started the server (a ``BSC_RULES_TEST_PG`` one is not)."""
        return self._server is not None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server and wait until it is down. ``fast``: every session is ended,
        open transactions rolled back (``immediate``: no shutdown checkpoint, a crash)."""
        self._control().stop(mode)

    def start(self) -> None:
        """Start the stopped server again, on the same socket; returns once it accepts."""
        self._control().start()

    def restart(self, mode: str = "fast") -> None:
        """:meth:`stop`, then :meth:`start`: clients lose their connections and must
        connect again."""
        self.stop(mode)
        self.start()

    def _control(self) -> _Server:
        if self._server is None:
            raise PgUnavailable(f"the server given by {ENV} cannot be stopped by the tests")
        return self._server


def _as_postgres(cmd: list[str]) -> list[str]:
    """Root may not run the server: run the command as the postgres user."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(_quote, cmd))]


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(
        _as_postgres(cmd), cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise PgUnavailable(f"{' '.join(cmd[:2])} failed: {done.stderr.strip() or done.stdout}")


def _owned_tempdir() -> Path:
    base = Path(tempfile.mkdtemp(prefix="bsc-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError as exc:
            shutil.rmtree(base)
            raise PgUnavailable("running as root, and there is no postgres user") from exc
        os.chown(base, user.pw_uid, user.pw_gid)
    base.chmod(0o700)
    return base


@contextmanager
def local_cluster() -> Iterator[Cluster]:
    """Start a cluster in a temporary directory; stop it and remove it on exit."""
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise PgUnavailable("no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin")
    base = _owned_tempdir()
    data, port = base / "data", free_port()
    try:
        _run([initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
              "--no-locale", "--no-sync"], base)  # fmt: skip
        opts = f"-k {base} -p {port} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        server = _Server(pg_ctl, base, data, opts)
        server.start()
        try:
            url = f"postgresql://postgres@/postgres?host={quote(str(base))}&port={port}"
            yield Cluster(url, server)
        finally:
            with suppress(PgUnavailable):  # a test may have left it stopped
                server.stop("immediate")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def cluster() -> Iterator[Cluster]:
    """``BSC_RULES_TEST_PG`` when set, else a local throwaway cluster."""
    given = os.environ.get(ENV)
    if given:
        yield Cluster(given)
        return
    with local_cluster() as c:
        yield c
