"""Alert records and their history, kept in the event database."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from bsc_rules.alerts.lifecycle import AlertRecord, acknowledge
from bsc_rules.errors import UsageError
from bsc_rules.privacy import mask_text
from bsc_rules.store.sqlconn import Db

if TYPE_CHECKING:
    from bsc_rules.store.sqlconn import AnyConnection

_COLUMNS: dict[str, Callable[[AlertRecord], object]] = {  # column -> value stored
    "state": lambda r: r.state,
    "since_us": lambda r: r.since,
    "notified": lambda r: r.notified,
    "told": lambda r: ",".join(sorted(r.told)),
    "escalated": lambda r: int(r.escalated),
    "acknowledged": lambda r: int(r.acknowledged),
    "ack_note": lambda r: r.ack_note,
    "sent": lambda r: r.sent,
}
_INSERT = (
    f"INSERT INTO alerts ({{office_col}}key, {', '.join(_COLUMNS)})"
    f" VALUES ({{office_val}}?{', ?' * len(_COLUMNS)})"
)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """An alert acknowledged in its state: by whom, when, with which note; ``already``
    when it had been acknowledged before (nothing changed)."""

    record: AlertRecord
    by: str | None
    at: int | None
    note: str | None
    already: bool


class AlertTable:
    """Alert records and their history in the event database (tables of
    :mod:`bsc_rules.store.db`): one office's, on SQLite or PostgreSQL (a
    :class:`~bsc_rules.store.sqlconn.Db`, or a connection wrapped in one).

    Writers touch only the columns they change: an evaluation inserts a new record or
    updates the columns its step changed; acknowledging updates ``acknowledged`` and
    ``ack_note`` only. Both load and write inside one :meth:`Db.transaction` (the
    office's writers in turn), so neither loses the other's write.
    """

    def __init__(self, db: Db | AnyConnection) -> None:
        self.db = Db.of(db)
        self.conn = self.db.connection  # the connection itself, as callers used to reach it

    def load(self) -> dict[str, AlertRecord]:
        rows = self.db.execute(
            "SELECT key, state, since_us, notified, told, escalated, acknowledged, ack_note, sent,"
            " ack_by, ack_at_us FROM alerts WHERE {office}"
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
                r[9],
                r[10],
            )
            for r in rows
        }

    def save(self, rec: AlertRecord, old: AlertRecord | None = None) -> None:
        """Write ``rec``: a new row, or (given the ``old`` record it was decided from)
        an UPDATE of the columns that differ, leaving the others as they are now."""
        if old is None:
            self.db.execute(_INSERT, (rec.key, *(value(rec) for value in _COLUMNS.values())))
            return
        changed = {c: v(rec) for c, v in _COLUMNS.items() if v(rec) != v(old)}
        if "state" in changed:  # an acknowledgement belongs to the state it was given in
            changed.update(ack_by=None, ack_at_us=None)
        if changed:
            assignments = ", ".join(f"{c} = ?" for c in changed)
            self.db.execute(
                f"UPDATE alerts SET {assignments} WHERE {{office}} AND key = ?",
                (*changed.values(), rec.key),
            )

    def resolve(self, key: str, records: dict[str, AlertRecord]) -> str:
        """The alert a person names: its key, or the key as mails and `history` show it
        (ID-shaped parts masked), when that names exactly one active alert."""
        if key in records:
            return key
        found = [k for k in records if mask_text(k) == key]
        if len(found) == 1:
            return found[0]
        active = ", ".join(sorted(mask_text(k) for k in records)) or "none"
        msg = f"alert: no active alert {key!r} (active: {active})"
        raise UsageError(msg)

    def acknowledge(
        self, key: str, note: str, now: int, *, by: str | None = None
    ) -> Acknowledgement:
        """Acknowledge an active alert in its current state: repeats and escalation stop
        (an UPDATE of the acknowledgement's own columns, nothing else). Acknowledging
        again changes nothing and says who did it first."""
        with self.db.transaction():
            records = self.load()
            key = self.resolve(key, records)
            rec = records[key]
            if rec.acknowledged:
                row = self.db.execute(
                    "SELECT ack_by, ack_at_us, ack_note FROM alerts WHERE {office} AND key = ?",
                    (key,),
                ).fetchone()
                assert row is not None  # loaded in this transaction
                return Acknowledgement(rec, row[0], row[1], row[2], already=True)
            rec = acknowledge(rec, note)
            self.db.execute(
                "UPDATE alerts SET acknowledged = 1, ack_note = ?, ack_by = ?, ack_at_us = ?"
                " WHERE {office} AND key = ?",
                (note, by, now, key),
            )
            self.log(now, key, "acknowledged", rec.state, note=note, actor=by)
        return Acknowledgement(rec, by, now, note, already=False)

    def delete(self, key: str) -> None:
        self.db.execute("DELETE FROM alerts WHERE {office} AND key = ?", (key,))

    def log(
        self,
        at: int,
        key: str,
        event: str,
        state: str | None = None,
        message_id: str | None = None,
        recipients: str | None = None,
        note: str | None = None,
        actor: str | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO alert_history"
            " ({office_col}at_us, key, event, state, message_id, recipients, note, actor)"
            " VALUES ({office_val}?, ?, ?, ?, ?, ?, ?, ?)",
            (at, key, event, state, message_id, recipients, note, actor),
        )

    def history(
        self, kpi: str | None = None, case: str | None = None
    ) -> Iterator[tuple[object, ...]]:
        query = (
            "SELECT at_us, key, event, state, message_id, recipients, note, actor"
            " FROM alert_history WHERE {office}"
        )
        args: list[str] = []
        if kpi or case:
            query += " AND key LIKE ?"
            args.append(f"%:{kpi or '%'}:{case}" if case else f"%:{kpi}%")
        yield from self.db.execute(query + " ORDER BY seq", args)


def told_rows(db: Db | AnyConnection, before: int) -> list[tuple[int, str, str, str, str]]:
    """Every alert of one office listed in a message before ``before``, oldest first: (at,
    key, state, message id, recipients as comma-separated addresses)."""
    rows = Db.of(db).execute(
        "SELECT at_us, key, state, message_id, recipients FROM alert_history"
        " WHERE {office} AND event = 'notified' AND at_us < ? ORDER BY seq",
        (before,),
    )
    return [(int(r[0]), r[1], r[2], r[3], r[4] or "") for r in rows]


def message_id(office: str, kind: str, recipient: str, day: date) -> str:
    """The Message-ID of one office's ``kind`` of mail (``morning``, ``director``) to one
    recipient (a section code) on one day: a resend on the same day is the same message."""
    seed = f"{office}|{kind}|{recipient}|{day.isoformat()}"
    digest = hashlib.sha256(seed.encode()).hexdigest()[:32]
    return f"<{digest}.{kind}@bsc-rules.{office}>"
