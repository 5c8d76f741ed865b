"""One scheduler per SQLite database: an OS file lock beside the database.

``<db>.lock`` is locked with ``flock`` by the service that schedules the database's
work, and holds that service's host, pid and start time. The operating system releases
the lock when the process ends, however it ends (SIGKILL included), so a stale file
never blocks a successor; a second service finds the lock taken and is refused with a
message naming the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from bsc_rules.calendar import from_us, local_date, roc_date
from bsc_rules.errors import StoreError


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a database's lock, as written in its lock file."""

    host: str
    pid: int
    since: int  # µs since the epoch

    def describe(self) -> str:
        """主機、程序與起始時間 (Traditional Chinese, ROC date, Asia/Taipei time)."""
        when = f"{roc_date(local_date(self.since))} {from_us(self.since):%H:%M:%S}"
        return f"主機 {self.host}，程序 {self.pid}，自 {when} 起"


class DatabaseBusy(StoreError):
    """Another service holds the database's lock."""

    def __init__(self, database: Path, holder: Holder | None) -> None:
        self.database, self.holder = database, holder
        who = holder.describe() if holder is not None else "持有者不明"
        super().__init__(
            f"資料庫 {database} 已有服務在執行（{who}）；同一資料庫只能有一個服務，"
            f"請先停止該服務（鎖定檔 {lock_path(database)}）"
        )


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class ServiceLock:
    """The lock of one database, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, database: Path) -> None:
        self.database = Path(database)
        self.path = lock_path(self.database)
        self._fd: int | None = None

    def acquire(self, now: int) -> None:
        """Take the lock (never waiting) and write this process in the file; raise
        :class:`DatabaseBusy` naming the holder if another process has it."""
        if not self.path.parent.exists():
            folder = self.path.parent
            msg = f"cannot open the database {self.database}: folder {folder} does not exist"
            raise StoreError(msg)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            msg = f"cannot create the lock file {self.path}: {exc.strerror}"
            raise StoreError(msg) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise DatabaseBusy(self.database, holder) from None
        record = {"host": socket.gethostname(), "pid": os.getpid(), "since": now}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Clear the file and let go of the lock (also done by the OS at exit)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_holder(fd: int) -> Holder | None:
    """The holder written in an open lock file (None if unreadable, e.g. being written)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return Holder(str(data["host"]), int(data["pid"]), int(data["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None
