"""The database layer: the connection, transactions and every table of a bsc_rules database.

Every table (the event log, the rejected events, the alerts and their history, the record
of runs, the outbox) is created here, by numbered migrations applied in order. The
database's schema version is the ``schema`` row of ``meta``; opening a database applies
the migrations it lacks, in one ``BEGIN IMMEDIATE`` transaction, and refuses a database
newer than this code. The migrations are data (statements per dialect), so that another
backend (PostgreSQL) applies the same numbered steps in its own SQL.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bsc_rules.errors import StoreError


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


_EVENT_LOG = (
    """CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY,
    source   TEXT NOT NULL,
    id       TEXT NOT NULL,
    type     TEXT NOT NULL,
    time_us  INTEGER NOT NULL,
    subject  TEXT NOT NULL,
    digest   BLOB NOT NULL,  -- BLAKE2b-128 of body: a fingerprint for audits and tools
    body     BLOB NOT NULL,  -- the event as received (see events.Event.body)
    UNIQUE (source, id)
)""",
    """CREATE TABLE IF NOT EXISTS rejected (
    seq      INTEGER PRIMARY KEY,
    origin   TEXT NOT NULL DEFAULT '',
    line     INTEGER NOT NULL DEFAULT 0,
    digest   BLOB NOT NULL,
    event_id TEXT,
    source   TEXT,
    field    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    raw      BLOB NOT NULL,
    UNIQUE (origin, line, digest)
)""",
    """CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END""",
)

# Before version 2 these tables were created on first use (IF NOT EXISTS), and
# ``alerts.sent`` was added to the statement later: a database made then may lack it.
_ALERTS_AND_OUTBOX = (
    """CREATE TABLE IF NOT EXISTS alerts (
    key          TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    since_us     INTEGER NOT NULL,
    notified     INTEGER NOT NULL,
    told         TEXT NOT NULL,
    escalated    INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL,
    ack_note     TEXT,
    sent         INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS alert_history (
    seq        INTEGER PRIMARY KEY,
    at_us      INTEGER NOT NULL,
    key        TEXT NOT NULL,
    event      TEXT NOT NULL,
    state      TEXT,
    message_id TEXT,
    recipients TEXT,
    note       TEXT
)""",
    "CREATE INDEX IF NOT EXISTS alert_history_key ON alert_history (key, seq)",
    """CREATE TABLE IF NOT EXISTS runs (
    job     TEXT NOT NULL,
    period  TEXT NOT NULL,
    done_us INTEGER NOT NULL,
    PRIMARY KEY (job, period)
)""",
    """CREATE TABLE IF NOT EXISTS outbox (
    message_id      TEXT PRIMARY KEY,
    created_us      INTEGER NOT NULL,
    send_after_us   INTEGER NOT NULL,
    sender          TEXT NOT NULL,
    recipients      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            BLOB NOT NULL,
    alert_key       TEXT,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'parked')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_us INTEGER NOT NULL,
    last_error      TEXT,
    sent_us         INTEGER
)""",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_us)",
)

# The owner sections' analysis and improvement notes per KPI and month (bsc-rules
# comment): every entry is kept; the digest shows the latest before it is sent.
_NOTES = (
    """CREATE TABLE IF NOT EXISTS notes (
    seq    INTEGER PRIMARY KEY,
    kpi    TEXT NOT NULL,
    month  TEXT NOT NULL,  -- YYYY-MM, the month the note is about
    author TEXT NOT NULL,
    text   TEXT NOT NULL,
    at_us  INTEGER NOT NULL  -- when it was entered
)""",
    "CREATE INDEX IF NOT EXISTS notes_month ON notes (month, kpi, seq)",
)

MIGRATIONS: dict[str, tuple[Migration, ...]] = {
    "sqlite": (
        Migration(1, "the event log and its rejected events", _EVENT_LOG),
        Migration(
            2,
            "alerts, alert history, runs and the outbox",
            _ALERTS_AND_OUTBOX,
            (AddColumn("alerts", "sent", "INTEGER NOT NULL DEFAULT 0"),),
        ),
        Migration(3, "the sections' notes per KPI and month", _NOTES),
        Migration(
            4,
            "who acknowledged an alert, and when",
            (),
            (
                AddColumn("alerts", "ack_by", "TEXT"),
                AddColumn("alerts", "ack_at_us", "INTEGER"),
                AddColumn("alert_history", "actor", "TEXT"),
            ),
        ),
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


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in ``meta`` (0: a new or empty database)."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if found is None:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return 0 if row is None else int(row[0])


def migrate(
    conn: sqlite3.Connection, path: Path, migrations: tuple[Migration, ...] | None = None
) -> int:
    """Apply the migrations the database lacks, in order, in one transaction; return the
    version reached. A database newer than the code is refused, naming both versions."""
    steps = MIGRATIONS["sqlite"] if migrations is None else migrations
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


def _current(conn: sqlite3.Connection, path: Path, latest: int) -> int:
    version = schema_version(conn)
    if version > latest:
        msg = (
            f"the database {path}: schema version {version}, this bsc_rules knows up to "
            f"{latest}; upgrade bsc_rules"
        )
        raise StoreError(msg)
    return version


def _apply(conn: sqlite3.Connection, step: Migration) -> None:
    for statement in step.statements:
        conn.execute(statement)
    for add in step.columns:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({add.table})")}
        if add.column not in present:
            conn.execute(f"ALTER TABLE {add.table} ADD COLUMN {add.column} {add.declaration}")
