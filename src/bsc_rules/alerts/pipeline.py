"""The alert pipeline: decide alerts at the mail instants, write the outbox, deliver.

One :class:`Pipeline` wires the scorecard (over the event log), the alert lifecycle
(:mod:`~bsc_rules.alerts.lifecycle`), the morning mail and the director's list
(:mod:`~bsc_rules.alerts.dailylist`), rendering, the outbox and the digests. Every call
takes the instant ``now`` explicitly: the service passes its clock's time, a replay the
simulated time, so both run the same code. Alert states are decided at the mail instants
only (:meth:`Pipeline.morning`, 08:00 of each working day): between them nothing but
events is stored. Alert records, their history and the record of runs live in the same
database as the event log; each mail instant writes its alert transitions, its mail and
its run in one transaction. The database is a SQLite file (one office) or one office of a
PostgreSQL database: the same code runs on both, through
:class:`~bsc_rules.store.sqlconn.Db` (every statement scoped to the office, every
transaction the office's writers in turn).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from bsc_rules.alerts.acklink import VALID_FOR, AckClaim, ack_url
from bsc_rules.alerts.dailylist import ListBuilder, Plan, Seen
from bsc_rules.alerts.lifecycle import AlertRecord, Ending, Observation, Policy, decide
from bsc_rules.alerts.notes import Notes
from bsc_rules.alerts.table import AlertTable, message_id, told_rows
from bsc_rules.calendar import last_allowed_day, local_date, year_of
from bsc_rules.measures.cases import case_due, case_end, case_opened
from bsc_rules.measures.report import KpiResult, Report
from bsc_rules.notify.digest import DigestInputs, Told, build_digests
from bsc_rules.notify.notices import DailyList, NoteLine, SentLine
from bsc_rules.notify.outbox import Outbox
from bsc_rules.rules.office import DIRECTOR, addr_spec
from bsc_rules.rules.ruleset import RuleSet
from bsc_rules.scorecard import Scorecard
from bsc_rules.settings import Settings
from bsc_rules.store.runs import Runs
from bsc_rules.store.sqlconn import Db

if TYPE_CHECKING:
    from bsc_rules.store.base import EventStore
    from bsc_rules.store.sqlconn import AnyConnection

RESOLVING_STATUSES = ("met", "on_track")
LISTS = "lists"  # the runs table's job of the morning mail and the director's list


class Pipeline:
    """Decide, enqueue: the same code for the service and for replay."""

    def __init__(self, card: Scorecard, settings: Settings, db: Db | AnyConnection) -> None:
        """The pipeline of ``card`` over ``db``: a :class:`Db` of the office (a store's
        ``db``), or a SQLite connection (one office's file)."""
        self.card, self.settings = card, settings
        self.db = Db.of(db)
        self.conn = self.db.connection  # the connection itself, as callers used to reach it
        self.policy: Policy = card.rules.office.alerts.policy()  # the office file's values
        self.alerts = AlertTable(self.db)
        self.outbox = Outbox(self.db)
        self.runs = Runs(self.db)
        # (public_url, secret) where the office runs the HTTP door: each row then carries
        # a signed acknowledgement link. None in a replay (its mail must be the same from
        # run to run) and wherever no public address is set.
        self.ack_links: tuple[str, bytes] | None = None
        # in a multi-office deployment the ack commands in mail name the office
        self.multi_office = card.rules.office_path is not None

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
        107 is shown in 106's context), each year's report made once per mail instant."""
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

    def _ended(self, key: str, report: Report, old: AlertRecord) -> tuple[Ending, Seen | None]:
        """How an alert no longer observed ended, and what its row shows."""
        kind, rest = key.split(":", 1)
        if kind == "case":
            kpi_id, subject = rest.split(":", 1)
            result = report.kpis.get(kpi_id)
            if result is None:
                return "silent", None
            kpi = result.kpi
            opened = case_opened(self.card.book, kpi, subject)
            ended = case_end(self.card.book, kpi, subject, report.as_of)  # the event's time
            due = case_due(self.card.book, kpi, subject)
            if ended is None or opened is None or due is None:
                return "silent", None  # not closed: e.g. a closure moved its due away
            result = self._of_year({report.year: report}, self.card, kpi_id, opened, report.as_of)
            return "closed", Seen(
                Observation(old.state, old.since), result, subject, opened, due, ended
            )
        year, kpi_id = rest.split(":", 1)
        if int(year) < report.year:
            last = self.card.report_at(report.as_of, int(year)).kpis.get(kpi_id)
            return (
                ("year_end", Seen(Observation(old.state, old.since), last))
                if last
                else ("silent", None)
            )
        result = report.kpis.get(kpi_id)
        if result is None or result.status not in RESOLVING_STATUSES:
            return "silent", None
        return "resolved", Seen(Observation(old.state, old.since), result)

    def _working_days(self, seen: Seen, now: int) -> int:
        """Working days an overdue case is late, counting today, up to the escalation
        count (last allowed day Wednesday 106/03/22: Monday 106/03/27 is the 3rd)."""
        if seen.observation.state != "overdue" or seen.due is None:
            return 0
        calendar, cap = self.rules.calendar, max(self.policy.escalation_days, 1)
        return calendar.working_days_between(last_allowed_day(seen.due), local_date(now), cap)

    def plan(self, report: Report, records: dict[str, AlertRecord], now: int) -> list[Plan]:
        """The decision about every alert, active or ending, at the mail instant ``now``."""
        seen = self.observe(report, records, now)
        plans = []
        for key in sorted(set(records) | set(seen)):
            old, obs = records.get(key), seen.get(key)
            if obs is None:
                assert old is not None
                ending, context = self._ended(key, report, old)
                new, mention = decide(key, old, None, now, self.policy, ending=ending)
                plans.append(Plan(key, old, new, mention, context))
                continue
            days = self._working_days(obs, now)
            escalate = days >= self.policy.escalation_days and obs.observation.state == "overdue"
            new, mention = decide(key, old, obs.observation, now, self.policy, escalate=escalate)
            plans.append(Plan(key, old, new, mention, obs, days))
        return plans

    # ------------------------------------------------------------ the morning mail

    def lists_sent(self, day: date) -> bool:
        """Whether the morning mail and the director's list of ``day`` were decided."""
        return self.runs.done(LISTS, day.isoformat())

    def morning(self, now: int) -> list[str]:
        """The mail instant ``now``: decide every alert, write the records, their history,
        the morning mails and the director's list, and the run, in one transaction; once
        per day (a second call on the same day does nothing). Return the Message-IDs.

        The records are read inside the transaction that writes them back (SQLite's
        ``BEGIN IMMEDIATE``, the office's lock on PostgreSQL): an acknowledgement lands
        wholly before (and is seen) or after (and stays).
        """
        day = local_date(now)
        report = self.card.report_at(now)
        with self.db.transaction():
            if self.lists_sent(day):
                return []
            plans = self.plan(report, self.alerts.load(), now)
            for p in plans:
                self._record(p, now)
            undelivered = self._parked_since_last_lists(now)

            def link(key: str, state: str, since: int) -> str | None:
                return self._ack_url(key, state, since, now)

            builder = ListBuilder(self.rules, now, link, multi_office=self.multi_office)
            queued = [self._enqueue(data, day) for data in builder.build(plans, undelivered)]
            self.runs.record(LISTS, day.isoformat(), now)
            self._mark_clock(now)
        return queued

    def _parked_since_last_lists(self, now: int) -> dict[str, list[SentLine]]:
        """Each section's mail parked (given up at the end of its day) since the previous
        morning mail, to report in this one."""
        row = self.db.execute(
            "SELECT MAX(done_us) FROM runs WHERE {office} AND job = ?", (LISTS,)
        ).fetchone()
        since = int(row[0]) if row and row[0] is not None else 0
        parked = [i for i in self.outbox.parked() if since <= i.next_attempt_us < now]
        found: dict[str, list[SentLine]] = {}
        for section in self.rules.office.sections:
            mine = {addr_spec(m) for m in self._mailboxes(section)}
            lines = [
                SentLine(i.send_after_us, i.subject, i.recipients, error=i.last_error, kind=i.kind)
                for i in parked
                if mine & set(i.recipients) and i.kind != "digest"
            ]
            if lines and section != DIRECTOR:
                found[section] = lines
        return found

    def evaluate(self, now: int) -> list[str]:
        """What a mail at ``now`` decides (the rule tests and ``run --once`` ask at any
        instant): :meth:`morning`."""
        return self.morning(now)

    def _mark_clock(self, now: int) -> None:
        """Record the instant of the latest decision (a resumed replay goes on from it)."""
        self.runs.record("pipeline", "clock", now)

    def resume_clock(self) -> int | None:
        """The instant of the latest decision recorded, if any."""
        return self.runs.get("pipeline", "clock")

    def started(self, now: int) -> int:
        """When this office's pipeline first ran (recorded at ``now`` the first time)."""
        return self.runs.record_once("service", "started", now)

    def _record(self, plan: Plan, now: int) -> None:
        old, new, key = plan.old, plan.new, plan.key
        if new is None:
            if old is not None:
                self.alerts.delete(key)
                self.alerts.log(now, key, "ended", old.state)
            return
        if old is None or old.state != new.state:
            self.alerts.log(now, key, "entered", new.state)
        if new.escalated and (old is None or not old.escalated):
            self.alerts.log(now, key, "escalated", new.state)
        if new != old:
            self.alerts.save(new, old if old is not None and old.key == new.key else None)

    def _ack_url(self, key: str, state: str, since: int, now: int) -> str | None:
        """The signed link acknowledging an alert in its state, where the office has one."""
        if self.ack_links is None:
            return None
        public_url, secret = self.ack_links
        claim = AckClaim(self.rules.code, key, state, since, now + VALID_FOR)
        return ack_url(public_url, claim, secret)

    def _told(self, data: DailyList, mid: str, to: tuple[str, ...]) -> None:
        """History: each row of the message, told to its addressees and (on the
        director's list) its owner section in Cc."""
        rows: list[tuple[str, str, str]] = [
            (r.key, "closed" if r.closed is not None else r.state, r.kpi.owner)
            for r in (*data.overdue, *data.due_soon, *data.closed)
        ]
        rows += [
            (k.key, k.state if k.change in ("began", "repeat") else "resolved", k.kpi.owner)
            for k in data.kpis
        ]
        for key, state, owner in rows:
            cc = self._mailboxes(owner) if data.audience == DIRECTOR else ()
            told = ",".join(dict.fromkeys(addr_spec(m) for m in (*to, *cc)))
            self.alerts.log(data.date, key, "notified", state, mid, told)

    def _mailboxes(self, section: str) -> tuple[str, ...]:
        return self.rules.office.recipients.of(section)

    def _enqueue(self, data: DailyList, day: date) -> str:
        from bsc_rules.notify.render import render_list

        to = self._mailboxes(data.audience)
        cc: dict[str, str] = {}
        if data.audience == DIRECTOR:
            codes = {s.name: c for c, s in self.rules.office.sections.items()}
            for name in data.cc_names:
                for mailbox in self._mailboxes(codes[name]):
                    cc.setdefault(addr_spec(mailbox), mailbox)
        mid = message_id(self.rules.code, data.kind, data.audience, day)
        mail = render_list(
            data,
            sender=self.settings.sender,
            to=to,
            cc=tuple(cc.values()),
            message_id=mid,
            date=data.date,
            templates=self.settings.templates,
        )
        if self.outbox.enqueue(mail, kind=data.kind, now_us=data.date):
            self._told(data, mid, to)
        return mid

    # ------------------------------------------------------------ digests

    def digest_sent(self, year: int, month: int) -> bool:
        """Whether the digest of (year, month) was already sent."""
        return self.runs.done("digest", f"{year}-{month:02d}")

    def digest_inputs(self, year: int, month: int, now: int) -> DigestInputs:
        """What the digest of (year, month) sent at ``now`` reads, and nothing more: the
        notes shown are those entered for the month before ``now``."""
        records = self.alerts.load()
        notes = Notes(self.db).for_month(f"{year}-{month:02d}", before=now)
        return DigestInputs(
            card=self.card,
            recipients=self.card.rules.office.recipients.by_section(),
            items=self.outbox.items(),
            unacknowledged=frozenset(k for k, r in records.items() if not r.acknowledged),
            notes={
                kpi: [NoteLine(n.author, n.text, n.at) for n in entries]
                for kpi, entries in notes.items()
            },
            told=[
                Told(at, key, state, mid, tuple(filter(None, to.split(","))))
                for at, key, state, mid, to in told_rows(self.db, now + 1)
            ],
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
        with self.db.transaction():
            for mail in mails:
                self.outbox.enqueue(mail, kind="digest", now_us=now)
            self.runs.record("digest", f"{year}-{month:02d}", now)
            self._mark_clock(now)
        return [m.message_id for m in mails]


def open_pipeline(
    settings: Settings, db: Path | str | None = None, *, office: str | None = None
) -> Pipeline:
    """A pipeline over ``db`` (default: the settings' database) in any ``--db`` form: a
    SQLite file, a directory (``DIR/<office>.db``) or a ``postgresql://`` URL, with the
    office's rule set from the settings' rule folder (``offices/<office>.yaml`` of a
    multi-office folder). ``office`` is required where the folder has several offices
    (or the database is not one office's file); the store is created if new, and the
    state is rebuilt from the log."""
    target = str(db if db is not None else settings.database)
    card = Scorecard.open(target, office_rules(settings.rules, office), settings.matcher)
    try:
        return Pipeline(card, settings, office_db(card.store))
    except BaseException:
        card.close()
        raise


def office_rules(folder: Path | None, office: str | None) -> RuleSet:
    """The rule set of ``office`` in the rule ``folder`` (default: the project's rules/): a
    multi-office folder's ``offices/<office>.yaml``, or a one-office folder's own office
    (which must then be ``office``, when one is named)."""
    from bsc_rules.errors import UsageError
    from bsc_rules.rules.offices import is_multi_office, load_office
    from bsc_rules.rules.ruleset import default_rules_dir, load_ruleset

    folder = folder or default_rules_dir()
    if is_multi_office(folder):
        codes = sorted(p.stem for p in (folder / "offices").glob("*.yaml"))
        if office is None or office not in codes:
            given = "no office given" if office is None else f"no office {office!r}"
            msg = f"office: {given}; the rules {folder} have offices: {', '.join(codes)}"
            raise UsageError(msg)
        return load_office(folder, office)
    rules = load_ruleset(folder)
    if office is not None and office != rules.code:
        msg = f"office: the rules {folder} are office {rules.code!r}'s, not {office!r}"
        raise UsageError(msg)
    return rules


def office_db(store: EventStore) -> Db:
    """The database seam of a store's office tables (a SQLite file or a PostgreSQL office)."""
    db = getattr(store, "db", None)
    if not isinstance(db, Db):
        from bsc_rules.errors import UsageError

        msg = f"the store {type(store).__name__} keeps no alerts (a SQLite file or PostgreSQL)"
        raise UsageError(msg)
    return db
