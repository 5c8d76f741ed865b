"""What-if: the same events replayed under two rule sets, compared side by side.

Each rule set gets its own temporary SQLite database and the whole-pipeline replay
(:func:`bsc_rules.scheduling.replay.replay`, the code ``bsc-rules replay`` runs) with an
in-memory mailer. Compared are each KPI's status, value and target at every month end
(and at ``until``), the mail per kind and recipient, and the cases whose state differs.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bsc_rules.alerts.pipeline import open_pipeline
from bsc_rules.alerts.table import told_rows
from bsc_rules.calendar import from_us, iso, month_bounds, parse_instant, to_us, year_of
from bsc_rules.errors import UsageError
from bsc_rules.measures.report import Report
from bsc_rules.scheduling.replay import replay
from bsc_rules.settings import Settings, load_settings

US_PER_SECOND = 1_000_000
Cell = dict[str, Any]  # {"status", "value", "target"}


class MemoryMailer:
    """A mailer that keeps what it is given (the what-if sends no mail)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[str, ...], bytes]] = []

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        self.sent.append((sender, tuple(recipients), message))


@dataclass(slots=True)
class Outcome:
    """What one rule set made of the events."""

    rules: Path
    reports: list[Report] = field(default_factory=list)  # one per instant compared
    mails: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, recipient)
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (alert key, kind)
    names: dict[str, str] = field(default_factory=dict)  # KPI id -> name


@dataclass(slots=True)
class WhatIf:
    """Two outcomes over the same instants."""

    events: Path
    until: int
    instants: list[int]
    a: Outcome
    b: Outcome

    def kpi_rows(self) -> dict[str, list[tuple[int, Cell | None, Cell | None]]]:
        """Per KPI (of either rule set), per instant: the two cells."""
        ids = sorted({k for o in (self.a, self.b) for r in o.reports for k in r.kpis})
        return {
            kpi: [
                (at, _cell(ra, kpi), _cell(rb, kpi))
                for at, ra, rb in zip(self.instants, self.a.reports, self.b.reports, strict=True)
            ]
            for kpi in ids
        }

    def mail_rows(self) -> list[tuple[str, str, int, int]]:
        keys = sorted(set(self.a.mails) | set(self.b.mails))
        return [(kind, to, self.a.mails[(kind, to)], self.b.mails[(kind, to)]) for kind, to in keys]

    def alert_rows(self) -> list[tuple[str, str, int, int]]:
        """``(alert key, kind, under A, under B)`` for the alert notices whose counts differ."""
        keys = sorted(set(self.a.alerts) | set(self.b.alerts))
        rows = [
            (key, kind, self.a.alerts[(key, kind)], self.b.alerts[(key, kind)])
            for key, kind in keys
        ]
        return [row for row in rows if row[2] != row[3]]

    def case_rows(self) -> list[tuple[int, str, str, str | None, str | None]]:
        """``(instant, kpi, subject, state under A, state under B)`` where they differ."""
        rows = []
        for at, ra, rb in zip(self.instants, self.a.reports, self.b.reports, strict=True):
            sa = {(c.kpi, c.subject): c.state for c in ra.cases}
            sb = {(c.kpi, c.subject): c.state for c in rb.cases}
            for kpi, subject in sorted(set(sa) | set(sb)):
                if sa.get((kpi, subject)) != sb.get((kpi, subject)):
                    rows.append((at, kpi, subject, sa.get((kpi, subject)), sb.get((kpi, subject))))
        return rows

    def as_dict(self) -> dict[str, Any]:
        kpis = {
            kpi: [{"as_of": iso(at), "a": ca, "b": cb, "differs": ca != cb} for at, ca, cb in rows]
            for kpi, rows in self.kpi_rows().items()
        }
        return {
            "events": str(self.events),
            "until": iso(self.until),
            "a": {"rules": str(self.a.rules)},
            "b": {"rules": str(self.b.rules)},
            "instants": [iso(at) for at in self.instants],
            "kpis": kpis,
            "mails": [
                {"kind": k, "recipient": to, "a": na, "b": nb, "differs": na != nb}
                for k, to, na, nb in self.mail_rows()
            ],
            "alerts": [
                {"key": key, "kind": kind, "a": na, "b": nb}
                for key, kind, na, nb in self.alert_rows()
            ],
            "cases": [
                {"as_of": iso(at), "kpi": kpi, "subject": s, "a": x, "b": y}
                for at, kpi, s, x, y in self.case_rows()
            ],
        }


def _cell(report: Report, kpi: str) -> Cell | None:
    result = report.kpis.get(kpi)
    if result is None:
        return None
    data = result.as_dict()
    return {"status": data["status"], "value": data["value"], "target": data["target"]}


def month_ends(start: int, until: int) -> list[int]:
    """The last second of every month from ``start``'s to ``until``'s, the last one ``until``."""
    moment = from_us(start)
    year, month = moment.year, moment.month
    instants: list[int] = []
    while True:
        end = month_bounds(year, month)[1] - US_PER_SECOND
        if end >= until:
            return [*instants, until]
        instants.append(end)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _times(lines: list[bytes]) -> list[int]:
    times = []
    for raw in lines:
        try:
            obj = orjson.loads(raw)
            times.append(to_us(parse_instant(str(obj["time"]))))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a bad line: the replay rejects and counts it
    return times


def run_side(
    lines: list[bytes], rules: Path, instants: list[int], until: int, settings: Path | None
) -> Outcome:
    """Replay ``lines`` under ``rules`` into a fresh database; reports at ``instants``."""
    outcome = Outcome(rules)
    with tempfile.TemporaryDirectory(prefix="bsc-whatif-") as tmp:
        db = Path(tmp) / "whatif.db"
        base: Settings = (
            load_settings(settings, rules=rules, database=db)
            if settings is not None
            else Settings(rules=rules, database=db)
        )
        pipeline = open_pipeline(base, db)
        try:
            replay(lines, until, pipeline, MemoryMailer())
            card = pipeline.card
            outcome.reports = [card.report_at(at, year_of(at)) for at in instants]
            outcome.names = {k: v.spec.name for k, v in card.rules.kpis.items()}
            for item in pipeline.outbox.items():
                for to in item.recipients:
                    outcome.mails[(item.kind, to)] += 1
            for _, key, state, _, _ in told_rows(pipeline.db, until + 1):
                kind = "resolved" if state in ("closed", "resolved") else state
                outcome.alerts[(key, kind)] += 1  # each listing of an alert in a message
        finally:
            pipeline.card.close()
    return outcome


def what_if(
    events: Path,
    rules_a: Path,
    rules_b: Path,
    until: int | None = None,
    settings: Path | None = None,
) -> WhatIf:
    """Replay ``events`` under both rule folders and compare."""
    try:
        lines = [raw for raw in events.read_bytes().splitlines(keepends=True) if raw.strip()]
    except OSError as exc:
        msg = f"cannot read {events}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    times = _times(lines)
    if not times:
        msg = f"{events}: no event with a valid time to replay"
        raise UsageError(msg)
    last = max(times)
    moment = from_us(last)
    end = until if until is not None else month_bounds(moment.year, moment.month)[1] - US_PER_SECOND
    instants = month_ends(min(times), end)
    a = run_side(lines, rules_a, instants, end, settings)
    b = run_side(lines, rules_b, instants, end, settings)
    return WhatIf(events, end, instants, a, b)
