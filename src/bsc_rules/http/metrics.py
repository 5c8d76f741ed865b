"""``/metrics``: a prometheus_client collector that reads the current state at scrape time.

Nothing is kept between scrapes but the door's own answer counters. Labels are office,
KPI, section and status only: never a case id or a subject.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bsc_rules.http.door import Door, by_office
from bsc_rules.measures.report import Report
from bsc_rules.store.sqlconn import Db

STATUSES = ("met", "on_track", "at_risk", "breached", "no_data", "no_target")
OUTBOX = ("pending", "sent", "parked")


class StateCollector(Collector):
    """The scorecard, the outbox and the event log of each door's office, as metrics."""

    def __init__(self, doors: Door | list[Door], now_us: Callable[[], int]) -> None:
        self.doors = list(by_office(doors).values())
        self.now_us = now_us

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for door in self.doors:
            for family in self._office(door):
                if family.name in families:
                    families[family.name].samples.extend(family.samples)
                else:
                    families[family.name] = family
        yield from families.values()

    def _office(self, door: Door) -> Iterator[Metric]:
        office = door.office
        with door.reading() as card:
            report = card.report_at(self.now_us())
            open_cases = sum(len(s) for s in card.book.pending.values())
            db = door.store.db
            row = db.execute("SELECT count(*), max(time_us) FROM events WHERE {office}")
            stored, last_us = row.fetchone() or (0, None)
            rejected = card.store.rejected_count()
            outbox = _outbox(db)
        yield from _kpis(report, office)
        yield from _cases(report, office, open_cases)
        yield _gauge(
            "bsc_outbox_messages",
            "Messages in the outbox by status.",
            [((office, s), outbox[s]) for s in OUTBOX],
            ["office", "status"],
        )
        answered = CounterMetricFamily(
            "bsc_http_events",
            "Events answered by the HTTP door since it started.",
            labels=["office", "status"],
        )
        for status in ("accepted", "duplicate", "conflict", "rejected", "forbidden"):
            answered.add_metric([office, status], door.counts[status])
        yield answered
        yield _gauge("bsc_events_stored", "Events in the log.", [((office,), stored)], ["office"])
        yield _gauge(
            "bsc_events_rejected_kept", "Rejected events kept.", [((office,), rejected)], ["office"]
        )
        if last_us is not None:
            yield _gauge("bsc_last_event_time_seconds", "Time of the latest event in the log.",
                         [((office,), last_us / 1e6)], ["office"])  # fmt: skip


def _gauge(
    name: str, text: str, rows: list[tuple[tuple[str, ...], float]], labels: list[str]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=labels)
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def _kpis(report: Report, office: str) -> Iterator[Metric]:
    value = GaugeMetricFamily("bsc_kpi_value", "KPI value.", labels=["office", "kpi", "section"])
    target = GaugeMetricFamily("bsc_kpi_target", "KPI target.", labels=["office", "kpi", "section"])
    status = GaugeMetricFamily(
        "bsc_kpi_status", "1 for the KPI's current status.",
        labels=["office", "kpi", "section", "status"],
    )  # fmt: skip
    for kpi_id, result in report.kpis.items():
        labels = [office, kpi_id, result.kpi.spec.owner]
        if result.value is not None:
            value.add_metric(labels, float(result.value))
        if result.target is not None:
            target.add_metric(labels, float(result.target))
        for name in STATUSES:
            status.add_metric([*labels, name], 1.0 if result.status == name else 0.0)
    yield from (value, target, status)


def _cases(report: Report, office: str, open_cases: int) -> Iterator[Metric]:
    owners = {k: r.kpi.spec.owner for k, r in report.kpis.items()}
    counts = Counter((owners.get(c.kpi, ""), c.state) for c in report.cases)
    sections = sorted({s for s in owners.values()})
    yield _gauge(
        "bsc_cases", "Deadline cases due soon or overdue, by owner section.",
        [((office, s, st), counts[(s, st)]) for s in sections for st in ("due_soon", "overdue")],
        ["office", "section", "status"],
    )  # fmt: skip
    yield _gauge("bsc_cases_open", "Deadline cases not ended.",
                 [((office,), open_cases)], ["office"])  # fmt: skip


def _outbox(db: Db) -> Counter[str]:
    try:
        rows = db.execute(
            "SELECT status, count(*) FROM outbox WHERE {office} GROUP BY status"
        ).fetchall()
    except sqlite3.OperationalError:  # no outbox table: nothing sent from this database yet
        return Counter()
    return Counter({str(s): int(n) for s, n in rows})
