"""The alert pipeline: evaluate at an instant, decide alerts, write the outbox, deliver.

One :class:`Pipeline` wires the scorecard (over the SQLite event log), the alert
lifecycle (:mod:`alerts`), rendering (:mod:`render`), the outbox (:mod:`outbox`) and a
mailer (:mod:`mailer`). Every call takes the instant ``now`` explicitly: the service
passes its clock's time, a replay passes the simulated time, so both run the same code.
Alert records, their history and the record of digest runs live in the same database as
the event log; each evaluation writes its alert transitions and their outbox rows in one
transaction.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bsc_rules.alerts import AlertRecord, Notify, Observation, Policy, step
from bsc_rules.calendar import US_PER_DAY
from bsc_rules.notices import AlertNotice, KpiInfo
from bsc_rules.outbox import Outbox
from bsc_rules.report import KpiResult, Report
from bsc_rules.ruleset import Kpi, RuleSet
from bsc_rules.scorecard import Scorecard
from bsc_rules.settings import Settings
from bsc_rules.store import transaction

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
RESOLVING_STATUSES = ("met", "on_track")


def kpi_info(rules: RuleSet, kpi: Kpi) -> KpiInfo:
    """How a template names a KPI."""
    spec, office = kpi.spec, rules.office
    return KpiInfo(
        id=spec.id,
        name=spec.name,
        objective_code=spec.objective.code,
        objective_name=spec.objective.name,
        theme=spec.theme,
        theme_name=office.themes[spec.theme].name,
        perspective=spec.perspective,
        perspective_name=office.perspectives[spec.perspective].name,
        owner=spec.owner,
        owner_name=office.sections[spec.owner].name,
        unit=spec.unit,
        direction=spec.direction,
    )


@dataclass(frozen=True, slots=True)
class Seen:
    """One observed alert with the context a notification shows."""

    observation: Observation
    kpi: KpiResult
    subject: str | None = None
    opened: int | None = None
    due: int | None = None


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
        from bsc_rules.alerts import acknowledge
        from bsc_rules.errors import UsageError

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


class Pipeline:
    """Evaluate, decide, enqueue: the same code for the service and for replay."""

    def __init__(self, card: Scorecard, settings: Settings, conn: sqlite3.Connection) -> None:
        self.card, self.settings, self.conn = card, settings, conn
        self.rules = card.rules
        self.policy: Policy = settings.alerts.policy()
        self.alerts = AlertTable(conn)
        self.outbox = Outbox(conn)

    # ------------------------------------------------------------ observation

    def observe(self, report: Report, records: dict[str, AlertRecord], now: int) -> dict[str, Seen]:
        seen: dict[str, Seen] = {}
        for case in report.cases:
            kpi = report.kpis[case.kpi]
            window = self.rules.warning_window_days(kpi.kpi) * US_PER_DAY
            since = case.due if case.state == "overdue" else case.due - window
            seen[f"case:{case.kpi}:{case.subject}"] = Seen(
                Observation(case.state, since),  # type: ignore[arg-type]
                kpi,
                case.subject,
                case.opened,
                case.due,
            )
        for kpi_id, result in report.kpis.items():
            if result.status in ("at_risk", "breached"):
                key = f"kpi:{report.year}:{kpi_id}"
                old = records.get(key)
                since = old.since if old is not None and old.state == result.status else now
                seen[key] = Seen(Observation(result.status, since), result)  # type: ignore[arg-type]
        return seen

    def _resolution(self, key: str, report: Report) -> bool:
        """Whether an alert no longer observed was resolved (or just ended silently)."""
        if key.startswith("case:"):
            return True
        _, year, kpi_id = key.split(":", 2)
        status = report.kpis[kpi_id].status if kpi_id in report.kpis else "no_data"
        return int(year) == report.year and status in RESOLVING_STATUSES

    # ------------------------------------------------------------ evaluation

    def evaluate(self, now: int) -> list[str]:
        """Evaluate at ``now``; write alert transitions and their mail; return message ids."""
        report = self.card.report_at(now)
        records = self.alerts.load()
        seen = self.observe(report, records, now)
        plans = []
        for key in sorted(set(records) | set(seen)):
            old, obs = records.get(key), seen.get(key)
            resolved = obs is not None or self._resolution(key, report)
            new, notes = step(
                key, old, obs.observation if obs else None, now, self.policy, resolved=resolved
            )
            if new != old or notes:
                plans.append((key, old, new, notes, obs or self._context(key, report, old)))
        if not plans:
            return []
        queued: list[str] = []
        with transaction(self.conn):
            self._mark_clock(now)
            for key, old, new, notes, context in plans:
                self._record(key, old, new, now)
                queued += [self._enqueue(n, context, now) for n in notes if context is not None]
        return queued

    def _mark_clock(self, now: int) -> None:
        """Record the instant of the latest decision (a resumed replay goes on from it)."""
        self.conn.execute("INSERT OR REPLACE INTO runs VALUES ('pipeline', 'clock', ?)", (now,))

    def resume_clock(self) -> int | None:
        """The instant of the latest decision recorded, if any."""
        row = self.conn.execute(
            "SELECT done_us FROM runs WHERE job = 'pipeline' AND period = 'clock'"
        ).fetchone()
        return None if row is None else int(row[0])

    def started(self, now: int) -> int:
        """When this database's pipeline first ran (recorded at ``now`` the first time)."""
        with transaction(self.conn):
            self.conn.execute("INSERT OR IGNORE INTO runs VALUES ('service', 'started', ?)", (now,))
        row = self.conn.execute(
            "SELECT done_us FROM runs WHERE job = 'service' AND period = 'started'"
        ).fetchone()
        return int(row[0])

    def _record(self, key: str, old: AlertRecord | None, new: AlertRecord | None, now: int) -> None:
        if new is None:
            if old is not None:
                self.alerts.delete(key)
                self.alerts.log(now, key, "ended", old.state)
            return
        if old is None or old.state != new.state:
            self.alerts.log(now, key, "entered", new.state)
        self.alerts.save(new)

    def _context(self, key: str, report: Report, old: AlertRecord | None) -> Seen | None:
        """What a resolved notice shows when the alert is no longer observed."""
        kind, rest = key.split(":", 1)
        kpi_id, subject = rest.split(":", 1) if kind == "case" else (rest.split(":", 1)[1], None)
        result = report.kpis.get(kpi_id)
        if result is None or old is None:
            return None
        due = old.since if old.state == "overdue" else None
        return Seen(Observation(old.state, old.since), result, subject, None, due)

    def _recipients(self, note: Notify, owner: str) -> tuple[str, ...]:
        sections = [owner] if "owner" in note.to else []
        if "director" in note.to:
            sections.append("director")
        addresses: list[str] = []
        for section in sections:
            for address in self.settings.recipients[section]:  # type: ignore[index]
                if address not in addresses:
                    addresses.append(address)
        return tuple(addresses)

    def _enqueue(self, note: Notify, seen: Seen, now: int) -> str:
        from bsc_rules.render import render_alert

        result = seen.kpi
        info = kpi_info(self.rules, result.kpi)
        to = self._recipients(note, info.owner)
        mid = message_id(note, to, self.rules.code)
        notice = AlertNotice(
            kind=note.kind,
            alert_key=note.key,
            kpi=info,
            as_of=now,
            value=_float(result.value),
            target=_float(result.target),
            status=result.status,
            subject=seen.subject,
            opened=seen.opened,
            due=seen.due,
            resolved_from=note.resolved_from,
            escalated=note.escalated,
            repeat=note.count,
        )
        mail = render_alert(
            notice,
            office_name=self.rules.office.office.name,
            sender=self.settings.sender,
            to=to,
            message_id=mid,
            date=now,
            templates=self.settings.templates,
        )
        if self.outbox.enqueue(mail, kind=note.kind, now_us=now, alert_key=note.key):
            self.alerts.log(now, note.key, "notified", note.kind, mid, ",".join(to))
        return mid


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def open_pipeline(settings: Settings, db: Path | None = None) -> Pipeline:
    """A pipeline over the settings' database (state rebuilt from the log)."""
    from bsc_rules.ruleset import load_ruleset
    from bsc_rules.store import SQLiteStore

    rules = load_ruleset(settings.rules)
    store = SQLiteStore(db or settings.database)
    card = Scorecard(rules, store=store, matcher=settings.matcher)
    return Pipeline(card, settings, store.connection)
