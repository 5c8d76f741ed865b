"""The morning mail and the director's list of one mail instant, from its decisions.

:func:`build_lists` turns the pipeline's :class:`Plan` list (one per alert: the old and
new record, what the mails say about it, the context shown) into the
:class:`~bsc_rules.notify.notices.DailyList` of each section that has something to
report and the director's list (spec/notifications.md, "When mail goes out").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bsc_rules.alerts.lifecycle import AlertRecord, Mention, Observation
from bsc_rules.calendar import days_late, local_date, year_of
from bsc_rules.measures.report import KpiResult
from bsc_rules.notify.notices import AckLine, CaseRow, DailyList, KpiRow, SentLine, kpi_info
from bsc_rules.rules.office import DIRECTOR, SECTIONS
from bsc_rules.rules.ruleset import RuleSet


@dataclass(frozen=True, slots=True)
class Seen:
    """One alert with the context its row shows."""

    observation: Observation
    kpi: KpiResult
    subject: str | None = None
    opened: int | None = None
    due: int | None = None
    ended: int | None = None  # a closed case: its closing event's own time


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision about one alert at a mail instant."""

    key: str
    old: AlertRecord | None
    new: AlertRecord | None
    mention: Mention | None
    seen: Seen | None  # the context a row shows (None: nothing to show)
    working_days: int = 0  # an overdue case: working days overdue, counting today


AckUrl = Callable[[str, str, int], str | None]  # (key, state, since) → the signed link


def _ack(rec: AlertRecord | None) -> AckLine | None:
    if rec is None or not rec.acknowledged:
        return None
    return AckLine(rec.ack_by, rec.ack_at, rec.ack_note)


class ListBuilder:
    """Rows and lists of one mail instant."""

    def __init__(self, rules: RuleSet, now: int, ack_url: AckUrl, *, multi_office: bool) -> None:
        self.rules, self.now, self.ack_url = rules, now, ack_url
        self.today = local_date(now)
        self.multi_office = multi_office

    def case_row(self, plan: Plan) -> CaseRow:
        seen, mention = plan.seen, plan.mention
        assert seen is not None
        assert mention is not None
        assert seen.subject is not None
        assert seen.due is not None
        info = kpi_info(self.rules, seen.kpi.kpi)
        if mention.change == "closed":
            end = seen.ended if seen.ended is not None else self.now
            late = days_late(seen.due, local_date(end)) if end >= seen.due else 0
            return CaseRow(
                plan.key, info, seen.subject, mention.state, seen.due, seen.opened,  # type: ignore[arg-type]
                closed=end, days_overdue=late, ack=_ack(plan.old), year=self._year(seen),
            )  # fmt: skip
        rec = plan.new
        assert rec is not None
        overdue = mention.state == "overdue"
        return CaseRow(
            plan.key, info, seen.subject, mention.state, seen.due, seen.opened,  # type: ignore[arg-type]
            new=mention.change == "began",
            days_overdue=days_late(seen.due, self.today) if overdue else 0,
            working_days=plan.working_days,
            ack=_ack(rec),
            ack_url=None if rec.acknowledged else self.ack_url(plan.key, rec.state, rec.since),
            year=self._year(seen),
        )  # fmt: skip

    def _year(self, seen: Seen) -> int:
        return year_of(seen.opened if seen.opened is not None else self.now)

    def kpi_row(self, plan: Plan) -> KpiRow:
        seen, mention = plan.seen, plan.mention
        assert seen is not None
        assert mention is not None
        result = seen.kpi
        rec = plan.new if plan.new is not None else plan.old
        live = mention.change in ("began", "repeat") and rec is not None
        url = self.ack_url(plan.key, rec.state, rec.since) if live and rec else None
        return KpiRow(
            plan.key, kpi_info(self.rules, result.kpi), mention.change, mention.state,
            result.status, int(plan.key.split(":")[1]),
            _float(result.value), _float(result.target), _float(result.pace),
            ack=_ack(rec), ack_url=url,
        )  # fmt: skip

    def build(
        self, plans: list[Plan], undelivered: dict[str, list[SentLine]] | None = None
    ) -> list[DailyList]:
        """The morning mail of every section with something to report (its rows, or its
        mail parked since the previous morning mail: ``undelivered``), then the director's
        list if it lists anything."""
        parts: dict[str, _Parts] = {}
        for section, lines in (undelivered or {}).items():
            parts.setdefault(section, _Parts()).undelivered.extend(lines)
        director, cc = _Parts(), []
        for plan in plans:
            if plan.mention is None or plan.seen is None:
                continue
            owner = plan.seen.kpi.kpi.spec.owner
            mine = parts.setdefault(owner, _Parts())
            if plan.key.startswith("kpi:"):
                kpi_row = self.kpi_row(plan)
                mine.kpis.append(kpi_row)
                if plan.mention.director:
                    director.kpis.append(kpi_row)
                    cc.append(owner)
                continue
            row = self.case_row(plan)
            mine.add(row)
            if plan.mention.director:
                director.add(row)
                cc.append(owner)
        lists = [self._list(s, parts[s]) for s in SECTIONS if s in parts and s != DIRECTOR]
        if cc:
            lists.append(self._list(DIRECTOR, director, tuple(dict.fromkeys(cc))))
        return lists

    def _list(self, audience: str, parts: _Parts, cc: tuple[str, ...] = ()) -> DailyList:
        office = self.rules.office
        return DailyList(
            kind="director" if audience == DIRECTOR else "morning",
            office_name=office.office.name,
            office_code=office.office.code,
            audience=audience,  # type: ignore[arg-type]
            audience_name=office.sections[audience].name,  # type: ignore[index]
            date=self.now,
            overdue=_by_due(parts.overdue),
            due_soon=_by_due(parts.due_soon),
            closed=tuple(sorted(parts.closed, key=lambda r: (r.closed or 0, r.subject))),
            kpis=tuple(parts.kpis),
            undelivered=tuple(parts.undelivered),
            cc_names=tuple(office.sections[c].name for c in cc),  # type: ignore[index]
            escalation_days=office.alerts.escalation_days,
            warning_window_days=office.alerts.warning_window_days,
            hour=office.lists.hour,
            reply_by=self.rules.calendar.next_working_day(self.today),
            multi_office=self.multi_office,
        )


@dataclass(slots=True)
class _Parts:
    """The rows of one mail, by part."""

    overdue: list[CaseRow] = field(default_factory=list)
    due_soon: list[CaseRow] = field(default_factory=list)
    closed: list[CaseRow] = field(default_factory=list)
    kpis: list[KpiRow] = field(default_factory=list)
    undelivered: list[SentLine] = field(default_factory=list)

    def add(self, row: CaseRow) -> None:
        if row.closed is not None:
            self.closed.append(row)
        elif row.state == "overdue":
            self.overdue.append(row)
        else:
            self.due_soon.append(row)


def _by_due(rows: list[CaseRow]) -> tuple[CaseRow, ...]:
    """Oldest due first (by due, then case, then KPI), as the report's cases."""
    return tuple(sorted(rows, key=lambda r: (r.due, r.subject, r.kpi.id)))


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
