"""Alert records and their history, kept in the event database."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator

from bsc_rules.alerts.lifecycle import AlertRecord, Notify, acknowledge
from bsc_rules.errors import UsageError
from bsc_rules.store.db import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    key          TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    since_us     INTEGER NOT NULL,
    notified     INTEGER NOT NULL,
    told         TEXT NOT NULL,
    escalated    INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL,
    ack_note     TEXT,
    sent         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS alert_history (
    seq        INTEGER PRIMARY KEY,
    at_us      INTEGER NOT NULL,
    key        TEXT NOT NULL,
    event      TEXT NOT NULL,
    state      TEXT,
    message_id TEXT,
    recipients TEXT,
    note       TEXT
);
CREATE INDEX IF NOT EXISTS alert_history_key ON alert_history (key, seq);
CREATE TABLE IF NOT EXISTS runs (
    job     TEXT NOT NULL,
    period  TEXT NOT NULL,
    done_us INTEGER NOT NULL,
    PRIMARY KEY (job, period)
);
"""

class AlertTable:
    """Alert records and their history in the event database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.executescript(SCHEMA)

    def load(self) -> dict[str, AlertRecord]:
        rows = self.conn.execute(
            "SELECT key, state, since_us, notified, told, escalated, acknowledged, ack_note, sent"
            " FROM alerts"
        )
        return {
            r[0]: AlertRecord(
                r[0],
                r[1],
                r[2],
                r[3],
                frozenset(filter(None, r[4].split(","))),
                bool(r[5]),
                bool(r[6]),
                r[7],
                r[8],
            )
            for r in rows
        }

    def save(self, rec: AlertRecord) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.key,
                rec.state,
                rec.since,
                rec.notified,
                ",".join(sorted(rec.told)),
                int(rec.escalated),
                int(rec.acknowledged),
                rec.ack_note,
                rec.sent,
            ),
        )

    def acknowledge(self, key: str, note: str, now: int) -> AlertRecord:
        """Acknowledge an active alert: repeats and escalation stop."""
        with transaction(self.conn):
            rec = self.load().get(key)
            if rec is None:
                active = ", ".join(sorted(self.load())) or "none"
                msg = f"no active alert {key!r} (active: {active})"
                raise UsageError(msg)
            rec = acknowledge(rec, note)
            self.save(rec)
            self.log(now, key, "acknowledged", rec.state, note=note)
        return rec

    def delete(self, key: str) -> None:
        self.conn.execute("DELETE FROM alerts WHERE key = ?", (key,))

    def log(
        self,
        at: int,
        key: str,
        event: str,
        state: str | None = None,
        message_id: str | None = None,
        recipients: str | None = None,
        note: str | None = None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO alert_history (at_us, key, event, state, message_id, recipients, note)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at, key, event, state, message_id, recipients, note),
        )

    def history(
        self, kpi: str | None = None, case: str | None = None
    ) -> Iterator[tuple[object, ...]]:
        query = "SELECT at_us, key, event, state, message_id, recipients, note FROM alert_history"
        args: list[str] = []
        if kpi or case:
            query += " WHERE key LIKE ?"
            args.append(f"%:{kpi or '%'}:{case}" if case else f"%:{kpi}%")
        yield from self.conn.execute(query + " ORDER BY seq", args)


def message_id(note: Notify, to: tuple[str, ...], office: str) -> str:
    """A stable Message-ID: the same notification always has the same id."""
    digest = hashlib.sha256((note.ident + "|" + ",".join(to)).encode()).hexdigest()[:32]
    return f"<{digest}.{note.kind}@bsc-rules.{office}>"
