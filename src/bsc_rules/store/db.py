"""The database layer: the connection, transactions and every table of a bsc_rules database."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bsc_rules.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY,
    source   TEXT NOT NULL,
    id       TEXT NOT NULL,
    type     TEXT NOT NULL,
    time_us  INTEGER NOT NULL,
    subject  TEXT NOT NULL,
    digest   BLOB NOT NULL,  -- BLAKE2b-128 of body: a fingerprint for audits and tools
    body     BLOB NOT NULL,  -- the event as received (see events.Event.body)
    UNIQUE (source, id)
);
CREATE TABLE IF NOT EXISTS rejected (
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
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
"""
SCHEMA_VERSION = "1"


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


def connect(path: Path) -> sqlite3.Connection:
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
        conn.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        msg = f"the database {path} cannot be used ({exc}); is it a bsc_rules database, and intact?"
        raise StoreError(msg) from exc
    except (sqlite3.Error, OSError) as exc:
        msg = f"cannot open the database {path}: {exc}"
        raise StoreError(msg) from exc
    return conn
