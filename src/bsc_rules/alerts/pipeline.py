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

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bsc_rules.alerts.acklink import VALID_FOR, AckClaim, ack_url
from bsc_rules.alerts.lifecycle import AlertRecord, Notify, Observation, Policy, step
from bsc_rules.alerts.notes import Notes
from bsc_rules.alerts.table import AlertTable, message_id
from bsc_rules.calendar import year_of
from bsc_rules.measures.cases import case_end, case_opened
from bsc_rules.measures.report import KpiResult, Report
from bsc_rules.notify.digest import DigestInputs, build_digests
from bsc_rules.notify.notices import AlertNotice, NoteLine, kpi_info
from bsc_rules.notify.outbox import Outbox
from bsc_rules.rules.office import addr_spec
from bsc_rules.rules.ruleset import RuleSet
from bsc_rules.scorecard import Scorecard
from bsc_rules.settings import Settings
from bsc_rules.store.db import transaction

RESOLVING_STATUSES = ("met", "on_track")


@dataclass(frozen=True, slots=True)
class Seen:
    """One observed alert with the context a notification shows."""

    observation: Observation
    kpi: KpiResult
    subject: str | None = None
    opened: int | None = None
    due: int | None = None
    ended: int | None = None  # a closed case: its closing event's own time


class Pipeline:
    """Evaluate, decide, enqueue: the same code for the service and for replay."""

    def __init__(self, card: Scorecard, settings: Settings, conn: sqlite3.Connection) -> None:
        self.card, self.settings, self.conn = card, settings, conn
        self.policy: Policy = card.rules.office.alerts.policy()  # the office file's values
        self.alerts = AlertTable(conn)
        self.outbox = Outbox(conn)
        # (public_url, secret) where the office runs the HTTP door: each alert notice then
        # carries a signed acknowledgement link. None in a replay (its mail must be the
        # same from run to run) and wherever no public address is set.
        self.ack_links: tuple[str, bytes] | None = None

    @property
    def rules(self) -> RuleSet:
        """The scorecard's rules as they stand (the calendar is re-read while running)."""
        return self.card.rules

    # ------------------------------------------------------------ observation

    @staticmethod
    def _of_year(
        reports: dict[int, Report], card: Scorecard, kpi_id: str, opened: int, now: int
    ) -> KpiResult:
        """A case's KPI in the year the case belongs to (one carried over from 106 into
        107 is shown in 106's context), each year's report made once per evaluation."""
        year = year_of(opened)
        if year not in reports:
            reports[year] = card.report_at(now, year)
        return reports[year].kpis[kpi_id]

    def observe(self, report: Report, records: dict[str, AlertRecord], now: int) -> dict[str, Seen]:
        seen: dict[str, Seen] = {}
        of_year = {report.year: report}
        for case in report.cases:
            kpi = self._of_year(of_year, self.card, case.kpi, case.opened, now)
            seen[f"case:{case.kpi}:{case.subject}"] = Seen(
                Observation(case.state, case.since),  # type: ignore[arg-type]
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
        """Evaluate at ``now``; write alert transitions and their mail; return message ids.

        The records are read inside the ``BEGIN IMMEDIATE`` transaction that writes them
        back: an acknowledgement lands wholly before (and is seen) or after (and stays).
        """
        report = self.card.report_at(now)
        queued: list[str] = []
        with transaction(self.conn):
            records = self.alerts.load()
            plans = self._plans(report, records, now)
            if plans:
                self._mark_clock(now)
            for key, old, new, notes, context in plans:
                self._record(key, old, new, now)
                queued += [self._enqueue(n, context, now) for n in notes if context is not None]
        return queued

    def _plans(
        self, report: Report, records: dict[str, AlertRecord], now: int
    ) -> list[tuple[str, AlertRecord | None, AlertRecord | None, list[Notify], Seen | None]]:
        """Every alert whose record changes or that notifies at ``now``."""
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
        return plans

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
        self.alerts.save(new, old)

    def _context(self, key: str, report: Report, old: AlertRecord | None) -> Seen | None:
        """What a resolved notice shows when the alert is no longer observed."""
        kind, rest = key.split(":", 1)
        kpi_id, subject = rest.split(":", 1) if kind == "case" else (rest.split(":", 1)[1], None)
        result = report.kpis.get(kpi_id)
        if result is None or old is None:
            return None
        due = old.since if old.state == "overdue" else None
        if subject is None:
            return Seen(Observation(old.state, old.since), result, None, None, due)
        opened = case_opened(self.card.book, result.kpi, subject)
        if opened is not None:  # shown in its own year, as while it was open
            result = self._of_year({report.year: report}, self.card, kpi_id, opened, report.as_of)
        ended = case_end(self.card.book, result.kpi, subject, report.as_of)  # the event's time
        return Seen(Observation(old.state, old.since), result, subject, opened, due, ended)

    def _recipients(self, note: Notify, owner: str) -> tuple[str, ...]:
        """The office file's mailboxes of the sections told (the director's with the
        secretary's), each address once."""
        sections = [owner] if "owner" in note.to else []
        if "director" in note.to:
            sections.append("director")
        recipients = self.card.rules.office.recipients
        mailboxes: dict[str, str] = {}
        for section in sections:
            for mailbox in recipients.of(section):
                mailboxes.setdefault(addr_spec(mailbox), mailbox)
        return tuple(mailboxes.values())

    def _ack_url(self, note: Notify, now: int) -> str | None:
        """The signed link acknowledging this alert in this state (none for a closing)."""
        if self.ack_links is None or note.kind == "resolved":
            return None
        public_url, secret = self.ack_links
        claim = AckClaim(self.rules.code, note.key, note.kind, note.since, now + VALID_FOR)
        return ack_url(public_url, claim, secret)

    def _enqueue(self, note: Notify, seen: Seen, now: int) -> str:
        from bsc_rules.notify.render import render_alert

        result = seen.kpi
        info = kpi_info(self.rules, result.kpi)
        to = self._recipients(note, info.owner)
        addresses = tuple(addr_spec(m) for m in to)  # the id and history: addresses only
        mid = message_id(note, addresses, self.rules.code)
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
            ack_url=self._ack_url(note, now),
            pace=_float(result.pace),
            ended=seen.ended,
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
            self.alerts.log(now, note.key, "notified", note.kind, mid, ",".join(addresses))
        return mid

    # ------------------------------------------------------------ digests

    def digest_sent(self, year: int, month: int) -> bool:
        """Whether the digest of (year, month) was already sent."""
        row = self.conn.execute(
            "SELECT 1 FROM runs WHERE job = 'digest' AND period = ?", (f"{year}-{month:02d}",)
        ).fetchone()
        return row is not None

    def digest_inputs(self, year: int, month: int, now: int) -> DigestInputs:
        """What the digest of (year, month) sent at ``now`` reads, and nothing more: the
        notes shown are those entered for the month before ``now``."""
        records = self.alerts.load()
        notes = Notes(self.conn).for_month(f"{year}-{month:02d}", before=now)
        return DigestInputs(
            card=self.card,
            recipients=self.card.rules.office.recipients.by_section(),
            items=self.outbox.items(),
            unacknowledged=frozenset(k for k, r in records.items() if not r.acknowledged),
            notes={
                kpi: [NoteLine(n.author, n.text, n.at) for n in entries]
                for kpi, entries in notes.items()
            },
        )

    def send_digests(self, year: int, month: int, now: int) -> list[str]:
        """Enqueue the month's digests (director and every section) once; record the run."""
        if self.digest_sent(year, month):
            return []
        mails = build_digests(
            self.digest_inputs(year, month, now),
            year,
            month,
            office=self.rules.code,
            sender=self.settings.sender,
            now=now,
            templates=self.settings.templates,
        )
        with transaction(self.conn):
            for mail in mails:
                self.outbox.enqueue(mail, kind="digest", now_us=now)
            period = f"{year}-{month:02d}"
            self.conn.execute("INSERT INTO runs VALUES ('digest', ?, ?)", (period, now))
            self._mark_clock(now)
        return [m.message_id for m in mails]


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def open_pipeline(settings: Settings, db: Path | None = None) -> Pipeline:
    """A pipeline over the settings' database (state rebuilt from the log)."""
    from bsc_rules.rules.ruleset import load_ruleset
    from bsc_rules.store.sqlite import SQLiteStore

    rules = load_ruleset(settings.rules)
    store = SQLiteStore(db or settings.database)
    card = Scorecard(rules, store=store, matcher=settings.matcher)
    return Pipeline(card, settings, store.connection)
