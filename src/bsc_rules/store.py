"""The event store: an append-only log of accepted events, with rejected events beside it.

:class:`SQLiteStore` is the embedded default: one SQLite file in WAL mode. An event is
acknowledged only once its transaction is committed with ``synchronous=FULL``, so an
acknowledged event is on disk. ``append`` commits per event; ``append_batch`` commits a
group (what file ingest uses). Rows of ``events`` can be neither updated nor deleted
(triggers). :class:`MemoryStore` has the same semantics without a file (``evaluate``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Protocol

from bsc_rules.errors import StoreError
from bsc_rules.events import Event, Rejection, content_digest, same_content
from bsc_rules.privacy import mask_text

Verdict = Literal["accepted", "duplicate", "conflict"]

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
_INSERT = (
    "INSERT INTO events (source, id, type, time_us, subject, digest, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING"
)


class EventStore(Protocol):
    """Where accepted and rejected events are kept."""

    def append(self, event: Event) -> Verdict:
        """Store one event durably; say whether it was new, a duplicate or a conflict."""
        ...

    def append_batch(self, events: Iterable[Event]) -> list[Verdict]:
        """Store several events in one commit."""
        ...

    def reject(self, rejection: Rejection, origin: str = "") -> None:
        """Keep a rejected event (once per origin, line and content)."""
        ...

    def rejected_count(self) -> int:
        """How many rejections are kept."""
        ...

    def replay(self) -> Iterator[bytes]:
        """The bodies of the accepted events, in arrival order."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class MemoryStore:
    """The same idempotency semantics, in memory only (nothing is durable)."""

    def __init__(self) -> None:
        self._bodies: dict[tuple[str, str], bytes] = {}
        self._rejected: set[tuple[str, int, bytes]] = set()

    def append(self, event: Event) -> Verdict:
        known = self._bodies.get(event.key)
        if known is None:
            self._bodies[event.key] = event.body
            return "accepted"
        return "duplicate" if same_content(known, event.body) else "conflict"

    def append_batch(self, events: Iterable[Event]) -> list[Verdict]:
        return [self.append(e) for e in events]

    def reject(self, rejection: Rejection, origin: str = "") -> None:
        self._rejected.add((origin, rejection.line or 0, content_digest(rejection.raw)))

    def rejected_count(self) -> int:
        return len(self._rejected)

    def replay(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        return None


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


def _connect(path: Path) -> sqlite3.Connection:
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


class SQLiteStore:
    """The append-only event log in one SQLite file (WAL, durable commits)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        existed = self.path.exists()
        self._conn = _connect(self.path)
        self.written: set[int] = set()  # seqs this connection wrote (see Scorecard.refresh)
        if existed:
            self._check_integrity()
        self._check_version()

    def _check_integrity(self) -> None:
        """SQLite's quick_check on start: a damaged file is refused with a clear message."""
        try:
            rows = [r[0] for r in self._conn.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            rows = [str(exc)]
        if rows != ["ok"]:
            self._conn.close()
            found = "; ".join(rows)
            msg = (
                f"the database {self.path} is damaged (SQLite quick_check: {found}); "
                "restore it from a backup or move it aside"
            )
            raise StoreError(msg)

    def _check_version(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            msg = f"{self.path}: schema version {row[0]}, this bsc_rules reads {SCHEMA_VERSION}"
            raise StoreError(msg)

    def _verdict(self, event: Event) -> Verdict:
        """A duplicate or a conflict: the key is taken, by the same content or not."""
        row = self._conn.execute(
            "SELECT body FROM events WHERE source = ? AND id = ?", event.key
        ).fetchone()
        return "duplicate" if row is not None and same_content(row[0], event.body) else "conflict"

    def append(self, event: Event) -> Verdict:
        return self.append_batch([event])[0]

    def append_batch(self, events: Iterable[Event]) -> list[Verdict]:
        cur = self._conn.cursor()  # one cursor for the batch (execute makes one per call)
        written = self.written
        verdicts: list[Verdict] = []
        with transaction(self._conn, self.path):
            for e in events:
                body = e.body
                row = (e.source, e.id, e.type, e.time_us, e.subject, content_digest(body), body)
                cur.execute(_INSERT, row)
                if cur.rowcount == 1:
                    written.add(cur.lastrowid or 0)
                    verdicts.append("accepted")
                else:
                    verdicts.append(self._verdict(e))
        return verdicts

    def reject(self, rejection: Rejection, origin: str = "") -> None:
        try:
            self._conn.execute(
                "INSERT OR IGNORE INTO rejected (origin, line, digest, event_id, source, field,"
                " reason, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    origin,
                    rejection.line or 0,
                    content_digest(rejection.raw),
                    rejection.event_id,
                    rejection.source,
                    rejection.field,
                    mask_text(rejection.message),
                    rejection.raw,
                ),
            )
        except sqlite3.Error as exc:
            msg = f"cannot write to the database {self.path}: {exc}"
            raise StoreError(msg) from exc

    def rejected_count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM rejected").fetchone()[0])

    def rejections(self) -> list[tuple[str, int, str | None, str, str]]:
        """``(origin, line, event id, field, reason)`` of every rejection, oldest first."""
        rows = self._conn.execute(
            "SELECT origin, line, event_id, field, reason FROM rejected ORDER BY seq"
        )
        return [tuple(r) for r in rows]

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for tables that share the log's transactions (the outbox)."""
        return self._conn

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def replay(self) -> Iterator[bytes]:
        for _seq, body in self.rows_after(0):
            yield body

    def rows_after(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """``(seq, body)`` of the events stored after ``seq``, in order."""
        cur = self._conn.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq", (seq,))
        while rows := cur.fetchmany(4096):
            for seq_, body in rows:
                yield int(seq_), bytes(body)

    def close(self) -> None:
        self._conn.close()
