"""The monthly compliance digest: what it reports, for the director and each section.

At the digest instant (08:00 Asia/Taipei on the 1st, by default) the digest reports as
of the last instant of the month just ended: each KPI's month and year-to-date values,
target, status and monthly trend; open and overdue cases; what was notified in the
month and what is still unacknowledged; undeliverable mail. A run is recorded per month
(``runs`` table) so that a digest is sent once, and a missed one once on catch-up.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, time

from bsc_rules.calendar import TAIPEI, local_midnight, to_us
from bsc_rules.measures import aggregate_period
from bsc_rules.notices import CaseLine, DigestData, DigestRow, SentLine, TrendPoint
from bsc_rules.outbox import OutboxItem
from bsc_rules.pipeline import Pipeline, kpi_info
from bsc_rules.report import Report, kpi_status
from bsc_rules.settings import SECTIONS
from bsc_rules.store import transaction

DIRECTOR = "director"


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """``[start, end)`` of a local calendar month."""
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return local_midnight(date(year, month, 1)), local_midnight(following)


def digest_instant(year: int, month: int, day: int, hour: int) -> int:
    """When the digest of (year, month) goes out: ``day`` of the next month at ``hour``."""
    y, m = (year + 1, 1) if month == 12 else (year, month + 1)
    return to_us(datetime.combine(date(y, m, day), time(hour), tzinfo=TAIPEI))


def previous_month(instant: int) -> tuple[int, int]:
    """The month before the local month of ``instant``."""
    moment = datetime.fromtimestamp(instant / 1_000_000, TAIPEI)
    return (moment.year - 1, 12) if moment.month == 1 else (moment.year, moment.month - 1)


def missed_months(start: int, now: int, day: int, hour: int) -> list[tuple[int, int]]:
    """The months whose digest instant falls in ``[start, now]``, oldest first."""
    months: list[tuple[int, int]] = []
    year, month = previous_month(start)
    while (instant := digest_instant(year, month, day, hour)) <= now:
        if instant >= start:
            months.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def digest_sent(pipeline: Pipeline, year: int, month: int) -> bool:
    """Whether the digest of (year, month) was already sent."""
    row = pipeline.conn.execute(
        "SELECT 1 FROM runs WHERE job = 'digest' AND period = ?", (f"{year}-{month:02d}",)
    ).fetchone()
    return row is not None


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class DigestBuilder:
    """Builds the digests of one month from a pipeline's scorecard and outbox."""

    def __init__(self, pipeline: Pipeline, year: int, month: int) -> None:
        self.p, self.year, self.month = pipeline, year, month
        self.lo, self.hi = month_bounds(year, month)
        self.as_of = self.hi - 1
        card = pipeline.card
        self.reports: list[Report] = [
            card.report_at(month_bounds(year, m)[1] - 1, year) for m in range(1, month + 1)
        ]
        self.report = self.reports[-1]
        self.items = pipeline.outbox.items()

    def _row(self, kpi_id: str) -> DigestRow:
        result = self.report.kpis[kpi_id]
        kpi = result.kpi
        book = self.p.card.book
        month = kpi_status(
            kpi, aggregate_period(book, kpi, (self.lo, self.hi), self.as_of), self.year, self.as_of
        )
        trend = tuple(
            TrendPoint(i + 1, _float(r.kpis[kpi_id].value), _float(r.kpis[kpi_id].target))
            for i, r in enumerate(self.reports)
        )
        return DigestRow(
            kpi_info(self.p.rules, kpi),
            _float(month.value),
            _float(result.value),
            _float(result.target),
            result.status,
            _float(result.numerator),
            _float(result.denominator),
            trend,
        )

    def _kpis_of(self, audience: str) -> list[str]:
        return [
            k
            for k, v in self.p.rules.kpis.items()
            if audience == DIRECTOR or v.spec.owner == audience
        ]

    def _sent(self, item: OutboxItem) -> SentLine:
        return SentLine(
            item.created_us, item.subject, item.recipients, item.alert_key, error=item.last_error
        )

    def _mine(self, item: OutboxItem, audience: str) -> bool:
        if audience == DIRECTOR:
            return True
        addresses = set(self.p.settings.recipients[audience])  # type: ignore[index]
        return bool(addresses & set(item.recipients))

    def build(self, audience: str) -> DigestData:
        kpis = self._kpis_of(audience)
        office = self.p.rules.office
        alerts = [i for i in self.items if i.kind != "digest" and self._mine(i, audience)]
        open_alerts = self.p.alerts.load()
        unacked = [
            i
            for i in alerts
            if i.alert_key in open_alerts and not open_alerts[i.alert_key].acknowledged
        ]
        latest = {i.alert_key: i for i in sorted(unacked, key=lambda i: i.created_us)}
        return DigestData(
            office_name=office.office.name,
            audience=audience,  # type: ignore[arg-type]
            audience_name=office.sections[audience].name,  # type: ignore[index]
            year=self.year,
            month=self.month,
            as_of=self.as_of,
            rows=tuple(self._row(k) for k in kpis),
            open_cases=tuple(
                CaseLine(c.kpi, c.subject, c.state, c.due)  # type: ignore[arg-type]
                for c in self.report.cases
                if c.kpi in kpis
            ),
            notified=tuple(self._sent(i) for i in alerts if self.lo <= i.created_us < self.hi),
            unacknowledged=tuple(self._sent(i) for i in latest.values()),
            undeliverable=tuple(self._sent(i) for i in alerts if i.status == "parked"),
            themes={k: v.name for k, v in office.themes.items()},
            perspectives={k: v.name for k, v in office.perspectives.items()},
        )


def digest_message_id(year: int, month: int, audience: str, office: str) -> str:
    digest = hashlib.sha256(f"digest|{year}-{month:02d}|{audience}".encode()).hexdigest()[:32]
    return f"<{digest}.digest@bsc-rules.{office}>"


def send_digests(pipeline: Pipeline, year: int, month: int, now: int) -> list[str]:
    """Enqueue the month's digests (director and every section) once; record the run."""
    from bsc_rules.render import render_digest

    period, conn = f"{year}-{month:02d}", pipeline.conn
    if digest_sent(pipeline, year, month):
        return []
    builder = DigestBuilder(pipeline, year, month)
    mails = []
    for audience in (DIRECTOR, *[s for s in SECTIONS if s != DIRECTOR]):
        data = builder.build(audience)
        to = tuple(pipeline.settings.recipients[audience])  # type: ignore[index]
        mid = digest_message_id(year, month, audience, pipeline.rules.code)
        mails.append(
            render_digest(
                data,
                sender=pipeline.settings.sender,
                to=to,
                message_id=mid,
                date=now,
                templates=pipeline.settings.templates,
            )
        )
    with transaction(conn):
        for mail in mails:
            pipeline.outbox.enqueue(mail, kind="digest", now_us=now)
        conn.execute("INSERT INTO runs VALUES ('digest', ?, ?)", (period, now))
        conn.execute("INSERT OR REPLACE INTO runs VALUES ('pipeline', 'clock', ?)", (now,))
    return [m.message_id for m in mails]
