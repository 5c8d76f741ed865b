"""The monthly compliance digest: what it reports, for the director and each section.

The digest reports as of the last instant of the month just ended: each KPI's month and
year-to-date values, target, status and monthly trend; open and overdue cases; what was
notified in the month and what is still unacknowledged; undeliverable mail.

It reads through a narrow interface, :class:`DigestInputs`, that the alert pipeline
hands it (the scorecard, the recipients, the outbox's items, the unacknowledged alert
keys); when it goes out and that it goes out once is the scheduling stage's business.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bsc_rules.calendar import month_bounds
from bsc_rules.measures.cases import CaseState, aggregate, aggregate_period
from bsc_rules.measures.report import Report, kpi_status, start_value
from bsc_rules.notify.notices import (
    CaseLine,
    DigestData,
    DigestRow,
    Mail,
    NoteLine,
    PlanLine,
    SentLine,
    TrendPoint,
    kpi_info,
)
from bsc_rules.notify.outbox import OutboxItem
from bsc_rules.notify.render import render_digest
from bsc_rules.rules.office import SECTIONS, addr_spec
from bsc_rules.rules.ruleset import Kpi
from bsc_rules.scorecard import Scorecard

DIRECTOR = "director"


@dataclass(frozen=True, slots=True)
class DigestInputs:
    """What the digest reads: handed over by the alert pipeline."""

    card: Scorecard
    recipients: Mapping[str, Sequence[str]]  # section → mailboxes (the office file's)
    items: Sequence[OutboxItem]
    unacknowledged: frozenset[str]  # keys of the open alerts nobody acknowledged
    notes: Mapping[str, Sequence[NoteLine]] = field(default_factory=dict)  # KPI → the month's
    told: Sequence[Told] = ()  # every alert row of every message sent, oldest first


@dataclass(frozen=True, slots=True)
class Told:
    """One alert listed in one message (the history's ``notified`` rows): when, which
    alert in which state (``closed``/``resolved`` for an ending), the message, to whom."""

    at: int
    key: str
    state: str
    message_id: str
    recipients: tuple[str, ...]


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def history_of(kpi: Kpi, year: int) -> tuple[tuple[int, float | None], ...]:
    """The final values of the three years before ``year`` (103–105 for 106) in the rule
    file's history, ``None`` where unknown."""
    return tuple((y, _float(kpi.spec.history.get(y))) for y in range(year - 3, year))


def plans_of(kpi: Kpi, year: int, section_names: Mapping[str, str]) -> tuple[PlanLine, ...]:
    """The rule file's action plans with their owner section and the year's budget."""
    return tuple(
        PlanLine(p.code, p.name, section_names[p.owner], p.budget.get(year))
        for p in kpi.spec.action_plans
    )


class DigestBuilder:
    """Builds the digests of one month."""

    def __init__(self, inputs: DigestInputs, year: int, month: int) -> None:
        self.inputs, self.year, self.month = inputs, year, month
        self.card, self.rules = inputs.card, inputs.card.rules
        self.lo, self.hi = month_bounds(year, month)
        self.as_of = self.hi - 1
        self.reports: list[Report] = [
            self.card.report_at(month_bounds(year, m)[1] - 1, year) for m in range(1, month + 1)
        ]
        self.report = self.reports[-1]
        self.items = inputs.items
        self.subjects = {i.message_id: i.subject for i in inputs.items}

    def _month_value(self, kpi: Kpi, trend: tuple[TrendPoint, ...]) -> float | None:
        """The month's own figure: a rate over the month's cases alone; for a progress
        KPI what the month added (its year to date less the previous month's, or less the
        value reached before the year in January: AC1.1's earlier scans)."""
        book = self.card.book
        if kpi.spec.kind == "rate":
            month = aggregate_period(book, kpi, (self.lo, self.hi), self.as_of)
            return _float(kpi_status(kpi, month, self.year, self.as_of).value)
        now = trend[-1].value
        if len(trend) > 1:
            before = trend[-2].value
        else:
            before = float(start_value(kpi, aggregate(book, kpi, self.year, self.as_of)))
        return None if now is None or before is None else now - before

    def _row(self, kpi_id: str) -> DigestRow:
        result = self.report.kpis[kpi_id]
        kpi = result.kpi
        trend = tuple(
            TrendPoint(i + 1, _float(r.kpis[kpi_id].value), _float(r.kpis[kpi_id].target))
            for i, r in enumerate(self.reports)
        )
        return DigestRow(
            kpi_info(self.rules, kpi),
            self._month_value(kpi, trend),
            _float(result.value),
            _float(result.target),
            result.status,
            _float(result.numerator),
            _float(result.denominator),
            trend,
            pace=_float(result.pace),
            history=self._history(kpi),
            plans=self._plans(kpi),
            notes=tuple(self.inputs.notes.get(kpi_id, ())),
        )

    def _history(self, kpi: Kpi) -> tuple[tuple[int, float | None], ...]:
        return history_of(kpi, self.year)

    def _plans(self, kpi: Kpi) -> tuple[PlanLine, ...]:
        names: dict[str, str] = {code: s.name for code, s in self.rules.office.sections.items()}
        return plans_of(kpi, self.year, names)

    def _sections_of(self, recipients: Sequence[str]) -> tuple[str, ...]:
        """The names of the sections (and the director) whose addresses a message went to."""
        sections = self.rules.office.sections
        return tuple(
            sections[code].name  # type: ignore[index]
            for code, mailboxes in self.inputs.recipients.items()
            if {addr_spec(m) for m in mailboxes} & set(recipients)
        )

    def _case(self, case: CaseState) -> CaseLine:
        owner = self.rules.kpis[case.kpi].spec.owner
        name = self.rules.office.sections[owner].name
        return CaseLine(case.kpi, case.subject, case.state, case.due, name)  # type: ignore[arg-type]

    def _kpis_of(self, audience: str) -> list[str]:
        return [
            k
            for k, v in self.rules.kpis.items()
            if audience == DIRECTOR or v.spec.owner == audience
        ]

    def _sent(self, item: OutboxItem) -> SentLine:
        return SentLine(
            item.created_us,
            item.subject,
            item.recipients,
            item.alert_key,
            acknowledged=False,
            error=item.last_error,
            kind=item.kind,
            sections=self._sections_of(item.recipients),
            message_id=item.message_id,
        )

    def _told(self, told: Told) -> SentLine:
        return SentLine(
            told.at,
            self.subjects.get(told.message_id, ""),
            told.recipients,
            told.key,
            acknowledged=told.key not in self.inputs.unacknowledged,
            kind="resolved" if told.state in ("closed", "resolved") else told.state,
            sections=self._sections_of(told.recipients),
            message_id=told.message_id,
        )

    def _mine(self, recipients: Sequence[str], audience: str) -> bool:
        if audience == DIRECTOR:
            return True
        addresses = {addr_spec(m) for m in self.inputs.recipients[audience]}
        return bool(addresses & set(recipients))

    def build(self, audience: str) -> DigestData:
        kpis = self._kpis_of(audience)
        office = self.rules.office
        told = [t for t in self.inputs.told if self._mine(t.recipients, audience)]
        latest = {t.key: t for t in told if t.key in self.inputs.unacknowledged}
        parked = [
            i for i in self.items
            if i.kind != "digest" and i.status == "parked" and self._mine(i.recipients, audience)
        ]  # fmt: skip
        return DigestData(
            office_name=office.office.name,
            audience=audience,  # type: ignore[arg-type]
            audience_name=office.sections[audience].name,  # type: ignore[index]
            year=self.year,
            month=self.month,
            as_of=self.as_of,
            rows=tuple(self._row(k) for k in kpis),
            open_cases=tuple(self._case(c) for c in self.report.cases if c.kpi in kpis),
            notified=tuple(self._told(t) for t in told if self.lo <= t.at < self.hi),
            unacknowledged=tuple(self._told(t) for t in latest.values()),
            undeliverable=tuple(self._sent(i) for i in parked),
            themes={k: v.name for k, v in office.themes.items()},
            section_names=tuple(v.name for v in office.sections.values()),
            perspectives={k: v.name for k, v in office.perspectives.items()},
        )


def digest_message_id(year: int, month: int, audience: str, office: str) -> str:
    digest = hashlib.sha256(f"digest|{year}-{month:02d}|{audience}".encode()).hexdigest()[:32]
    return f"<{digest}.digest@bsc-rules.{office}>"


def build_digests(
    inputs: DigestInputs,
    year: int,
    month: int,
    *,
    office: str,
    sender: str,
    now: int,
    templates: Path | None,
) -> list[Mail]:
    """The month's digests: the director's and every section's, rendered."""
    builder = DigestBuilder(inputs, year, month)
    mails = []
    for audience in (DIRECTOR, *[s for s in SECTIONS if s != DIRECTOR]):
        data = builder.build(audience)
        mails.append(
            render_digest(
                data,
                sender=sender,
                to=tuple(inputs.recipients[audience]),
                message_id=digest_message_id(year, month, audience, office),
                date=now,
                templates=templates,
            )
        )
    return mails
