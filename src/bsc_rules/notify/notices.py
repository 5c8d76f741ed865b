"""What the alert pipeline hands to rendering and delivery (spec/notifications.md).

* :class:`AlertNotice`: one alert notification to render (due_soon, overdue, at_risk,
  breached, resolved), with everything a template shows.
* :class:`DigestData` / :class:`DigestRow`: one monthly compliance digest.
* :class:`Mail`: a rendered message, ready for the outbox: stable ``Message-ID``,
  recipients, subject, plain text, HTML and inline PNG images, and the instant it is
  sent (``Date:``, Asia/Taipei).

Instants are microseconds since the epoch (see :mod:`bsc_rules.calendar`); numbers are
floats in the KPI's unit (percent, count or pages).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bsc_rules.rules.ruleset import Kpi, RuleSet
from bsc_rules.types import AlertKind, CaseStateName, Direction, KpiKind, Section, Unit

Audience = Section  # who a digest is for


@dataclass(frozen=True, slots=True)
class KpiInfo:
    """The KPI as the office's scorecard names it."""

    id: str
    name: str
    objective_code: str
    objective_name: str
    theme: str
    theme_name: str
    perspective: str
    perspective_name: str
    owner: Audience
    owner_name: str
    unit: Unit
    direction: Direction
    label: str = ""  # short label for subjects and tables (the name where it is short)
    kind: KpiKind = "rate"  # progress KPIs accumulate: pace matters

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """One alert notification.

    ``kind`` is what is notified; for ``resolved``, ``resolved_from`` is the state that
    ended (``overdue``, ``due_soon``, ``at_risk`` or ``breached``). Case alerts carry
    ``subject`` (the case id, masked when rendered), ``opened`` and ``due`` (the
    exclusive due instant: the last allowed day is the day before). ``escalated`` is
    true when the director is told because the case has been overdue past the
    escalation delay; ``repeat`` counts earlier notifications of the same state (0 for
    the first). ``as_of`` is the instant the alert was evaluated.
    """

    kind: AlertKind
    alert_key: str
    kpi: KpiInfo
    as_of: int
    value: float | None
    target: float | None
    status: str
    subject: str | None = None
    opened: int | None = None
    due: int | None = None
    resolved_from: str | None = None
    escalated: bool = False
    repeat: int = 0
    acknowledged_note: str | None = None
    ack_url: str | None = None  # the signed acknowledgement link, where the office has one
    pace: float | None = None  # a progress KPI's value expected by now (the pace line)
    ended: int | None = None  # a closed case: when its closing event happened


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """A KPI's year-to-date value at the end of one month."""

    month: int
    value: float | None
    target: float | None


@dataclass(frozen=True, slots=True)
class PlanLine:
    """An action plan (行動方案) of a KPI's rule file, with its budget for the year."""

    code: str
    name: str
    owner_name: str
    budget: int | None  # NT$; None where the rule file lists none for the year


@dataclass(frozen=True, slots=True)
class NoteLine:
    """The owner section's analysis and improvement note for the month (bsc-rules comment)."""

    by: str
    text: str
    at: int


@dataclass(frozen=True, slots=True)
class DigestRow:
    """One KPI in a digest: the month alone, the year to date, status and trend, and the
    briefing-book context: the pace line, the three years before, plans and notes."""

    kpi: KpiInfo
    month_value: float | None
    ytd_value: float | None
    target: float | None
    status: str
    numerator: float | None
    denominator: float | None
    trend: tuple[TrendPoint, ...]
    pace: float | None = None  # expected by now (progress KPIs with a target)
    history: tuple[tuple[int, float | None], ...] = ()  # (year, final value), oldest first
    plans: tuple[PlanLine, ...] = ()
    notes: tuple[NoteLine, ...] = ()


@dataclass(frozen=True, slots=True)
class CaseLine:
    """An open case in a digest."""

    kpi_id: str
    subject: str
    state: CaseStateName
    due: int
    owner_name: str = ""


@dataclass(frozen=True, slots=True)
class SentLine:
    """A notification of the month, or an undeliverable one."""

    sent: int
    subject: str
    recipients: tuple[str, ...]
    alert_key: str | None = None
    acknowledged: bool = False
    error: str | None = None
    kind: str = ""  # what was notified: due_soon, overdue, at_risk, breached, resolved…
    sections: tuple[str, ...] = ()  # the names of the sections it went to


@dataclass(frozen=True, slots=True)
class DigestData:
    """A monthly compliance digest for one audience (the director: every KPI)."""

    office_name: str
    audience: Audience
    audience_name: str
    year: int
    month: int
    as_of: int  # the last instant of the month reported
    rows: tuple[DigestRow, ...]
    open_cases: tuple[CaseLine, ...] = ()
    notified: tuple[SentLine, ...] = ()
    unacknowledged: tuple[SentLine, ...] = ()
    undeliverable: tuple[SentLine, ...] = ()
    themes: dict[str, str] = field(default_factory=dict)  # code → name, for the map layout
    section_names: tuple[str, ...] = ()  # the office's sections, director last, in order
    perspectives: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Mail:
    """A rendered message. ``images`` are inline PNGs referenced as ``cid:<name>``."""

    message_id: str
    sender: str
    to: tuple[str, ...]
    subject: str
    text: str
    html: str
    date: int
    images: tuple[tuple[str, bytes], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()


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
        label=spec.label or spec.name,
        kind=spec.kind,
    )
