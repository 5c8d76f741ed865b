"""The event log in one SQLite file: append-only, with rejected events beside it.

:class:`SQLiteStore` is the embedded default: one SQLite file in WAL mode. An event is
acknowledged only once its transaction is committed with ``synchronous=FULL``, so an
acknowledged event is on disk. ``append`` commits per event; ``append_batch`` commits a
group (what file ingest uses). Rows of ``events`` can be neither updated nor deleted
(triggers).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from bsc_rules.errors import StoreError
from bsc_rules.events import Event, Rejection, content_digest, same_content
from bsc_rules.privacy import mask_text
from bsc_rules.store.base import KeepsOwnWrites, OwnWrites, Verdict
from bsc_rules.store.db import open_database, transaction
from bsc_rules.store.sqlconn import Db

_INSERT = (
    "INSERT INTO events (source, id, type, time_us, subject, digest, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING"
)


class SQLiteStore(KeepsOwnWrites):
    """The append-only event log in one SQLite file (WAL, durable commits)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn = open_database(self.path)
        self._own = OwnWrites()

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
        written: list[int] = []
        verdicts: list[Verdict] = []
        with transaction(self._conn, self.path):
            for e in events:
                body = e.body
                row = (e.source, e.id, e.type, e.time_us, e.subject, content_digest(body), body)
                cur.execute(_INSERT, row)
                if cur.rowcount == 1:
                    written.append(cur.lastrowid or 0)
                    verdicts.append("accepted")
                else:
                    verdicts.append(self._verdict(e))
        # Only now, committed: a rolled-back row's seq is reused by the next writer.
        self._own.add(written)
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

    @property
    def db(self) -> Db:
        """The connection as the seam of the office's other tables (alerts, runs, outbox,
        notes: :mod:`.sqlconn`), sharing the log's transactions."""
        return Db(self._conn)

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
