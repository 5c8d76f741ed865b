"""What the alert pipeline hands to rendering and delivery (spec/notifications.md).

* :class:`DailyList`: a morning mail to one section or the director's list, with its
  :class:`CaseRow` and :class:`KpiRow` rows and everything a template shows.
* :class:`DigestData` / :class:`DigestRow`: one monthly compliance digest.
* :class:`Mail`: a rendered message, ready for the outbox: stable ``Message-ID``,
  recipients, subject, plain text, HTML and inline PNG images, and the instant it is
  sent (``Date:``, Asia/Taipei).

Instants are microseconds since the epoch (see :mod:`bsc_rules.calendar`); numbers are
floats in the KPI's unit (percent, count or pages).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from bsc_rules.rules.ruleset import Kpi, RuleSet
from bsc_rules.types import CaseStateName, Direction, KpiKind, Section, Unit

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
class AckLine:
    """Who acknowledged an alert in its state, when, with which note."""

    by: str | None
    at: int | None
    note: str | None


@dataclass(frozen=True, slots=True)
class CaseRow:
    """A case in a morning mail or the director's list.

    ``state`` is the state listed (``due_soon``, ``overdue``), or for a closing the one
    it closed from; ``due`` the exclusive due instant (the last allowed day is the day
    before); ``closed`` the closing or cancelling event's own time; ``days_overdue``
    calendar dates in Asia/Taipei from the last allowed day to the mail's day (or to the
    closing's); ``working_days`` the working days overdue, counting the mail's day.
    """

    key: str
    kpi: KpiInfo
    subject: str
    state: CaseStateName
    due: int
    opened: int | None = None
    closed: int | None = None
    new: bool = False  # in this state since this mail
    days_overdue: int = 0
    working_days: int = 0
    ack: AckLine | None = None
    ack_url: str | None = None
    year: int = 0  # the scorecard year the case belongs to (one carried over: its own)


@dataclass(frozen=True, slots=True)
class KpiRow:
    """A KPI alert that began, repeated or ended since the previous mail.

    ``change`` is ``began``, ``repeat``, ``ended`` (back on track) or ``year_end`` (its
    year finished); ``state`` the alert's state (``at_risk``, ``breached``), ``status``
    the KPI's status as of the mail, ``year`` the scorecard year of the alert.
    """

    key: str
    kpi: KpiInfo
    change: str
    state: str
    status: str
    year: int
    value: float | None
    target: float | None
    pace: float | None = None
    ack: AckLine | None = None
    ack_url: str | None = None


@dataclass(frozen=True, slots=True)
class DailyList:
    """A morning mail (``morning``, to one section) or the director's list (``director``).

    The director's list carries in ``overdue`` the cases on it, in ``closed`` the listed
    cases closed since, and in ``kpis`` the breached KPI alerts that began or ended;
    ``cc_names`` the sections copied.
    """

    kind: str
    office_name: str
    office_code: str
    audience: Audience
    audience_name: str
    date: int  # the mail instant
    overdue: tuple[CaseRow, ...] = ()
    due_soon: tuple[CaseRow, ...] = ()
    closed: tuple[CaseRow, ...] = ()
    kpis: tuple[KpiRow, ...] = ()
    undelivered: tuple[SentLine, ...] = ()  # this section's mail parked since the last one
    cc_names: tuple[str, ...] = ()
    escalation_days: int = 3
    warning_window_days: int = 2
    hour: int = 8  # the office's hour of the morning mail (lists.hour)
    reply_by: dt.date | None = None  # acknowledge by this day (the next working day)
    multi_office: bool = False  # the ack command names the office


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
    message_id: str = ""  # the message that carried it (a morning mail lists many alerts)


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
    cc: tuple[str, ...] = ()
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
