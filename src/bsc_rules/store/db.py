"""The database layer: the connection, transactions and every table of a bsc_rules database.

Every table (the event log, the rejected events, the alerts and their history, the record
of runs, the outbox, the notes) is created here, by numbered migrations applied in order,
in SQLite and in PostgreSQL alike: :data:`MIGRATIONS` holds the same numbered, named steps
per dialect, their statements data (:mod:`.sqlite_schema`, :mod:`.pg_schema`). The
database's schema version is the ``schema`` row of ``meta``; :func:`schema_version` and
:func:`migrate` take either kind of connection. Opening a database applies the migrations
it lacks, in one transaction (``BEGIN IMMEDIATE`` in SQLite; under an advisory lock in
PostgreSQL), and refuses a database newer than this code, naming both versions.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from bsc_rules.errors import StoreError
from bsc_rules.store import pg_schema, sqlite_schema

if TYPE_CHECKING:
    import psycopg

    AnyConnection: TypeAlias = sqlite3.Connection | psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class AddColumn:
    """A column a table must have (added when an older database lacks it)."""

    table: str
    column: str
    declaration: str


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered step: statements run in order, then columns ensured present."""

    version: int
    name: str
    statements: tuple[str, ...]
    columns: tuple[AddColumn, ...] = ()


_STEPS = (
    "the event log and its rejected events",
    "alerts, alert history, runs and the outbox",
    "the sections' notes per KPI and month",
    "who acknowledged an alert, and when",
    "the office leases of services sharing a PostgreSQL database",
)
_ACK_COLUMNS = (
    AddColumn("alerts", "ack_by", "TEXT"),
    AddColumn("alerts", "ack_at_us", "BIGINT"),  # INTEGER in SQLite's affinity too
    AddColumn("alert_history", "actor", "TEXT"),
)

MIGRATIONS: dict[str, tuple[Migration, ...]] = {
    "sqlite": (
        Migration(1, _STEPS[0], sqlite_schema.EVENT_LOG),
        # Before version 2 these tables were created on first use (IF NOT EXISTS), and
        # ``alerts.sent`` was added to the statement later: a database made then may lack it.
        Migration(
            2,
            _STEPS[1],
            sqlite_schema.ALERTS_AND_OUTBOX,
            (AddColumn("alerts", "sent", "INTEGER NOT NULL DEFAULT 0"),),
        ),
        Migration(3, _STEPS[2], sqlite_schema.NOTES),
        Migration(4, _STEPS[3], (), _ACK_COLUMNS),
        # One service per SQLite file (an OS lock, store/lock.py): no leases to keep.
        Migration(5, _STEPS[4], ()),
    ),
    "postgres": (
        Migration(1, _STEPS[0], pg_schema.EVENT_LOG),
        Migration(2, _STEPS[1], pg_schema.ALERTS_AND_OUTBOX),
        Migration(3, _STEPS[2], pg_schema.NOTES),
        Migration(4, _STEPS[3], (), _ACK_COLUMNS),
        Migration(5, _STEPS[4], pg_schema.LEASES),
    ),
}
SCHEMA_VERSION = len(MIGRATIONS["sqlite"])
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


@contextmanager
def transaction(conn: sqlite3.Connection, path: Path | None = None) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` if the block raises; a database
    error becomes a :class:`StoreError` (naming ``path`` when given).

    Inside a transaction already, the block joins it (the outer one commits).
    """
    if conn.in_transaction:
        yield conn
        return
    where = "the database" if path is None else f"the database {path}"
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot write to {where}: {exc}") from exc
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # nothing of the block stays: no partial state
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"cannot write to {where}: {exc}") from exc
        raise


# ---------------------------------------------------------------- opening


def _denied(path: Path) -> str | None:
    """Why the process may not use ``path`` (file or folder permissions), if it may not."""
    try:
        os.close(os.open(path, os.O_RDWR))
    except PermissionError:
        return f"permission denied: {path} cannot be read and written by this user"
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"permission denied: {exc.strerror}"
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() and not os.access(path.parent, os.W_OK | os.X_OK):
        return f"permission denied: folder {path.parent} is not writable (SQLite adds {wal.name})"
    return None


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the SQLite file ``path`` (created owner-only if absent), in WAL
    mode with durable commits; the schema is not touched (see :func:`open_database`)."""
    if not path.parent.exists():
        msg = f"cannot open the database {path}: folder {path.parent} does not exist"
        raise StoreError(msg)
    fresh = not path.exists()
    try:
        if fresh:  # owner-only: the log holds the office's case data
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # The (source, id) index of a national year's log outgrows the default 2 MiB
        # page cache, and every insert then misses (docs/benchmarks.md): allow 256 MiB,
        # taken only as the file grows.
        conn.execute("PRAGMA cache_size = -262144")
    except sqlite3.Error as exc:
        raise _unusable(path, exc) from exc
    except PermissionError as exc:
        msg = f"cannot open the database {path}: permission denied ({exc.strerror})"
        raise StoreError(msg) from exc
    except OSError as exc:
        msg = f"cannot open the database {path}: {exc}"
        raise StoreError(msg) from exc
    return conn


def _unusable(path: Path, exc: sqlite3.Error) -> StoreError:
    """The error for a file SQLite could not use: permissions first (SQLite says only
    "unable to open database file"), then a file that is not a database or is damaged.
    A read-only file is not refused up front: reading it works."""
    denied = _denied(path) if path.exists() else None
    if denied is not None:
        return StoreError(f"cannot open the database {path}: {denied}")
    if isinstance(exc, sqlite3.DatabaseError):
        msg = f"the database {path} cannot be used ({exc}); is it a bsc_rules database, and intact?"
        return StoreError(msg)
    return StoreError(f"cannot open the database {path}: {exc}")


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """SQLite's quick_check: a damaged file is refused with a clear message."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        conn.close()
        found = "; ".join(rows)
        msg = (
            f"the database {path} is damaged (SQLite quick_check: {found}); "
            "restore it from a backup or move it aside"
        )
        raise StoreError(msg)


def open_database(path: Path) -> sqlite3.Connection:
    """Connect, check an existing file, and bring its schema up to this code's version."""
    existed = path.exists() and path.stat().st_size > 0
    conn = connect(path)
    try:
        if existed:
            check_integrity(conn, path)
        migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise _unusable(path, exc) from exc
    except StoreError:
        conn.close()
        raise
    return conn


# ---------------------------------------------------------------- migrations


def dialect(conn: AnyConnection) -> str:
    """``sqlite`` or ``postgres``: the key of :data:`MIGRATIONS` for a connection."""
    return "sqlite" if isinstance(conn, sqlite3.Connection) else "postgres"


def schema_version(conn: AnyConnection) -> int:
    """The version recorded in ``meta`` (0: a new or empty database), on either kind of
    connection (a PostgreSQL one in autocommit mode, as :mod:`.postgres` opens them)."""
    if isinstance(conn, sqlite3.Connection):
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if found is None:
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    else:
        has_meta = conn.execute(pg_schema.HAS_META).fetchone()
        if not has_meta or not has_meta[0]:
            return 0
        row = conn.execute(pg_schema.READ_VERSION).fetchone()
    return 0 if row is None else int(row[0])


def migrate(
    conn: AnyConnection, where: Path | str, migrations: tuple[Migration, ...] | None = None
) -> int:
    """Apply the migrations the database lacks, in order, in one transaction; return the
    version reached. A database newer than the code is refused, naming both versions.

    ``conn`` is a SQLite or a PostgreSQL connection (its dialect's :data:`MIGRATIONS`);
    ``where`` names the database in messages (a file, or a server without password)."""
    steps = MIGRATIONS[dialect(conn)] if migrations is None else migrations
    if isinstance(conn, sqlite3.Connection):
        return _migrate_sqlite(conn, Path(where), steps)
    return _migrate_postgres(conn, str(where), steps)


def _migrate_sqlite(conn: sqlite3.Connection, path: Path, steps: tuple[Migration, ...]) -> int:
    latest = len(steps)
    if _current(conn, path, latest) == latest:
        return latest
    with transaction(conn, path):
        version = _current(conn, path, latest)  # again: another process may have done it
        conn.execute(_META)
        for step in steps[version:]:
            _apply(conn, step)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(latest),))
    return latest


def _migrate_postgres(
    conn: psycopg.Connection[Any], where: str, steps: tuple[Migration, ...]
) -> int:
    """The same in PostgreSQL: one transaction, one upgrader at a time (an advisory lock
    taken before the version is read again)."""
    import psycopg

    latest = len(steps)
    try:
        if _current(conn, where, latest) == latest:
            return latest
        with conn.transaction():
            for statement in pg_schema.PREAMBLE:
                conn.execute(statement)
            version = _current(conn, where, latest)
            for step in steps[version:]:
                _apply(conn, step)
            conn.execute(pg_schema.WRITE_VERSION, (str(latest),))
    except psycopg.Error as exc:
        raise StoreError(f"cannot upgrade the database {where}: {exc}") from exc
    return latest


def _current(conn: AnyConnection, where: Path | str, latest: int) -> int:
    version = schema_version(conn)
    if version > latest:
        msg = (
            f"the database {where}: schema version {version}, this bsc_rules knows up to "
            f"{latest}; upgrade bsc_rules"
        )
        raise StoreError(msg)
    return version


def _apply(conn: AnyConnection, step: Migration) -> None:
    for statement in step.statements:
        conn.execute(statement)
    for add in step.columns:
        if isinstance(conn, sqlite3.Connection):
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({add.table})")}
            if add.column not in present:
                conn.execute(f"ALTER TABLE {add.table} ADD COLUMN {add.column} {add.declaration}")
        else:
            conn.execute(
                f"ALTER TABLE {add.table} ADD COLUMN IF NOT EXISTS {add.column} {add.declaration}"
            )
