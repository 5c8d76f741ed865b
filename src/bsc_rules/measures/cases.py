"""Measures and cases: per-subject case records and the KPI aggregates, on event time.

:class:`CaseBook` keeps, per opening type and subject, the case's earliest opening
event and every follow-up (time, arrival, matched conditions). Nothing depends on
arrival order: a follow-up that arrives before its opening event simply waits on its
case record. :func:`aggregate` computes one KPI's figures for a year at an instant
``as_of``; :func:`open_cases` lists the deadline cases not ended at ``as_of``. Both are
pure functions of the book, the rules and the instant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, NamedTuple

from bsc_rules.calendar import (
    due_after_last,
    due_next_month,
    due_soon_from,
    local_date,
    local_midnight,
    year_bounds,
    year_of,
)
from bsc_rules.events import FOLLOW_UP_OF, PERIOD_TYPES, Event
from bsc_rules.officecal import OfficeCalendar
from bsc_rules.rules.ruleset import (
    SCORE_SCALE,
    DeadlineMeasure,
    DistinctMeasure,
    Kpi,
    RatioMeasure,
    RuleSet,
    SumMeasure,
)

FollowUp = tuple[int, int, int]  # (time_us, arrival seq, condition mask)
Period = tuple[int, int]  # [start, end) in microseconds
FAR_FUTURE = 2**62


class CaseRec:
    """One subject of one opening type: its earliest opening event and its follow-ups."""

    __slots__ = ("dues", "follow", "open_mask", "open_seq", "open_us", "vals", "year")

    def __init__(self) -> None:
        self.open_us: int | None = None
        self.open_seq = 0
        self.open_mask = 0
        self.year = 0
        self.vals: tuple[Any, ...] = ()
        self.dues: tuple[int, ...] = ()
        self.follow: list[FollowUp] | None = None

    def flags(self, as_of: int) -> int:
        """The conditions met by the opening event and every follow-up up to ``as_of``."""
        mask = self.open_mask
        for time_us, _seq, fmask in self.follow or ():
            if time_us <= as_of:
                mask |= fmask
        return mask

    def first(self, as_of: int, mask: int) -> FollowUp | None:
        """The earliest follow-up (by time, then arrival) up to ``as_of`` matching ``mask``."""
        best: FollowUp | None = None
        for item in self.follow or ():
            if item[0] <= as_of and item[2] & mask and (best is None or item[:2] < best[:2]):
                best = item
        return best


DueRule = Callable[[int], int]


class _DueByDay:
    """A KPI's due rule, remembering the due of the last local day asked (events come
    mostly in time order, so this mostly skips the time-zone conversion and the calendar).
    """

    __slots__ = ("_due", "_hi", "_lo", "_of_day")

    def __init__(self, of_day: Callable[[date], int]) -> None:
        self._of_day = of_day
        self._lo = self._hi = self._due = 0

    def __call__(self, opened: int) -> int:
        if self._lo <= opened < self._hi:
            return self._due
        day = local_date(opened)
        self._lo, self._hi = local_midnight(day), local_midnight(day + timedelta(days=1))
        self._due = self._of_day(day)
        return self._due


def due_rule(kpi: Kpi, office: OfficeCalendar | None = None) -> DueRule:
    """The function giving a case's due instant from its opening instant; with an
    ``office`` calendar (``deadlines: working_day_end``) the last day moves off days off."""
    m = kpi.spec.measure
    assert isinstance(m, DeadlineMeasure)
    if m.due.rule == "days_after":
        days = m.due.days or 0
        return _DueByDay(lambda day: due_after_last(day + timedelta(days=days), office))
    due_day = int(kpi.spec.parameters[m.due.day_parameter or ""])
    return _DueByDay(lambda day: due_next_month(local_midnight(day), due_day, office))


class CaseBook:
    """Every case record of a rule set, filled one event at a time in any order.

    Besides the records it keeps running yearly totals of the KPIs whose figures do not
    depend on the instant once every event is in (all but deadline KPIs), and a running
    count of follow-ups still without their opening event: a report at or after the
    latest event time (the live case) then costs no scan.

    :meth:`add` runs once per accepted event (the replay's hottest Python), so each KPI
    is compiled once, here, into a :class:`_Plan` of plain masks and a contribution
    function; ``add`` then does no per-event lookups by KPI id or measure kind.
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.cases: dict[str, dict[str, CaseRec]] = {t: {} for t in PERIOD_TYPES}
        self._deadlines: dict[str, list[DueRule]] = {}  # per opening type, by deadline_index
        self.deadline_index: dict[str, int] = {}
        self.totals: dict[str, dict[int, Counter[Any]]] = {}
        self.max_time = -FAR_FUTURE
        self.orphans = 0
        self.pending: dict[str, set[str]] = {}  # deadline cases not ended (by any time)
        self._year_span = (0, 0, 0)  # [start, end) of the local year last seen, and the year
        self.office_calendar = rules.calendar  # working days (due_soon)
        self.calendar = rules.deadline_calendar  # the dues' (None: by calendar days)
        self._deadline_kpis: dict[str, list[Kpi]] = {}
        for kpi in rules.kpis.values():
            if isinstance(kpi.spec.measure, DeadlineMeasure):
                kpis_of_type = self._deadline_kpis.setdefault(kpi.population.type, [])
                self.deadline_index[kpi.id] = len(kpis_of_type)
                kpis_of_type.append(kpi)
                self.pending[kpi.id] = set()
            self.totals[kpi.id] = {}
        self._due_rules(self.calendar)
        self._soon: dict[tuple[int, int], int] = {}  # (due, window) → due soon from
        plans: dict[str, list[_Plan]] = {t: [] for t in PERIOD_TYPES}
        for kpi in rules.kpis.values():  # after the loop above: a plan binds totals, pending
            plans[kpi.population.type].append(_plan(self, kpi))
        self._plans = {t: tuple(p) for t, p in plans.items()}
        self._open_plan = {  # per opening type: the fields its KPIs read, its due rules
            t: (rules.field_needs.get(t, ()), tuple(self._deadlines.get(t, ())))
            for t in PERIOD_TYPES
        }
        # per opening type, a follow-up's mask → the plans it can change (few masks occur)
        self._touched: dict[str, dict[int, tuple[_Plan, ...]]] = {t: {} for t in PERIOD_TYPES}

    def _due_rules(self, office: OfficeCalendar | None) -> None:
        self._deadlines = {
            t: [due_rule(kpi, office) for kpi in kpis] for t, kpis in self._deadline_kpis.items()
        }

    def recalendar(self, rules: RuleSet) -> int:
        """Take the office calendar of ``rules`` as re-read (closures, ``deadlines``):
        every case's due is computed again — a closure added later moves the dues of open
        and closed cases alike — and the running totals move with them. Return how many
        cases' dues changed."""
        if rules.calendar != self.office_calendar:
            self.office_calendar = rules.calendar
            self._soon.clear()
        office = rules.deadline_calendar
        if office == self.calendar:
            return 0
        self.calendar = office
        self._due_rules(office)
        changed = 0
        for type_, due_rules in self._deadlines.items():
            needs = self._open_plan[type_][0]
            self._open_plan[type_] = (needs, tuple(due_rules))
            plans = tuple(p for p in self._plans[type_] if p.pending is not None)
            for subject, rec in self.cases[type_].items():
                if rec.open_us is None:
                    continue
                dues = tuple([rule(rec.open_us) for rule in due_rules])
                if dues != rec.dues:
                    before = [p.contribution(rec) for p in plans]
                    rec.dues = dues
                    self._update(plans, before, rec, subject)
                    changed += 1
        return changed

    def due_soon_from(self, due: int, window_days: int) -> int:
        """The instant from which a case due at ``due`` is due soon (by working days of
        the office calendar, whatever the ``deadlines`` setting), remembered per due."""
        key = (due, window_days)
        found = self._soon.get(key)
        if found is None:
            found = self._soon[key] = due_soon_from(due, window_days, self.office_calendar)
        return found

    def add(self, event: Event, mask: int, seq: int) -> None:
        """Record one accepted event with the mask of the conditions it matched.

        Only the KPIs the event can change are recomputed for its case: a follow-up
        changes those whose conditions it meets, an opening event all of its type's
        (unless a repeat later than the case's opening, which changes nothing). Each
        changed contribution moves the running totals by its difference.
        """
        time_us = event.time_us
        if time_us > self.max_time:
            self.max_time = time_us
        type_, subject = event.type, event.subject
        opening = FOLLOW_UP_OF.get(type_, type_)
        records = self.cases[opening]
        rec = records.get(subject)
        if rec is None:
            rec = records[subject] = CaseRec()
        if opening != type_:
            self._follow_up(rec, opening, subject, (time_us, seq, mask))
        elif rec.open_us is None:
            self._open(rec, event, mask, seq)
            self._update(self._plans[opening], None, rec, subject)
        elif (time_us, seq) < (rec.open_us, rec.open_seq):  # an earlier repeat: reopens it
            plans = self._plans[opening]
            before = [p.contribution(rec) for p in plans]
            self._open(rec, event, mask, seq)
            self._update(plans, before, rec, subject)
        # else a later repeat of the opening event, which changes nothing

    def _follow_up(self, rec: CaseRec, opening: str, subject: str, item: FollowUp) -> None:
        """Add a follow-up to its case and update the KPIs it changes (none if not opened)."""
        plans: tuple[_Plan, ...] = ()
        if rec.open_us is None:  # it waits for its opening event: no KPI counts it yet
            self.orphans += 1
        else:  # it changes only the KPIs whose conditions it meets
            mask, touched = item[2], self._touched[opening]
            found = touched.get(mask)
            if found is None:
                found = tuple(p for p in self._plans[opening] if mask & p.follow_ups)
                touched[mask] = found
            plans = found
        before = [p.contribution(rec) for p in plans]
        if rec.follow is None:
            rec.follow = []
        rec.follow.append(item)
        if plans:
            self._update(plans, before, rec, subject)

    @staticmethod
    def _update(
        plans: tuple[_Plan, ...], before: list[Contribution] | None, rec: CaseRec, subject: str
    ) -> None:
        """Move each KPI's totals from the case's contribution ``before`` the event (None:
        the case was not opened) to its contribution now, and its pending state."""
        olds = [None] * len(plans) if before is None else before
        for plan, old in zip(plans, olds, strict=True):
            _follow_ups, population, contribution, totals, pending = plan
            new = contribution(rec)
            if new != old:
                if old is not None:
                    _tally(totals, old, -1)
                if new is not None:
                    _tally(totals, new, +1)
            if pending is not None:  # a deadline KPI: pending while opened and not ended
                if new is None and rec.open_mask & population:
                    pending.add(subject)
                else:
                    pending.discard(subject)

    def _open(self, rec: CaseRec, event: Event, mask: int, seq: int) -> None:
        if rec.open_us is None:
            self.orphans -= len(rec.follow or ())
        time_us = event.time_us
        rec.open_us, rec.open_seq, rec.open_mask = time_us, seq, mask
        rec.year = self._year(time_us)
        needs, rules = self._open_plan[event.type]
        rec.vals = tuple(map(event.data.get, needs)) if needs else ()
        rec.dues = tuple([rule(time_us) for rule in rules]) if rules else ()

    def _year(self, time_us: int) -> int:
        """:func:`year_of`, remembering the last year's bounds: events mostly come in
        time order, and a local date costs a time-zone conversion."""
        start, end, year = self._year_span
        if start <= time_us < end:
            return year
        year = year_of(time_us)
        start, end = year_bounds(year)
        if start <= time_us < end:  # always, as Taipei's offset never moves at New Year
            self._year_span = (start, end, year)
        return year

    def settled(self, as_of: int) -> bool:
        """Whether every event is at or before ``as_of`` (running totals then apply)."""
        return as_of >= self.max_time

    def unmatched(self, as_of: int) -> int:
        """Follow-ups up to ``as_of`` whose case has no opening event up to ``as_of``."""
        if self.settled(as_of):
            return self.orphans
        count = 0
        for type_ in set(FOLLOW_UP_OF.values()):
            for rec in self.cases[type_].values():
                if rec.follow and (rec.open_us is None or rec.open_us > as_of):
                    count += sum(1 for item in rec.follow if item[0] <= as_of)
        return count


# A case's part in a KPI's running totals: (year, ((key, amount), ...)), or None.
Contribution = tuple[int, tuple[tuple[Any, int], ...]] | None


class _Plan(NamedTuple):
    """One KPI compiled for :meth:`CaseBook.add`: what it needs per event, bound once.

    It holds the book's own totals dict and pending set of the KPI (updated in place,
    never replaced), so ``add`` looks nothing up by KPI id.
    """

    follow_ups: int  # the conditions a follow-up must meet to change the KPI
    population: int  # the conditions an opening event must meet to be in its population
    contribution: Callable[[CaseRec], Contribution]  # what a case adds once all is in
    totals: dict[int, Counter[Any]]  # the KPI's running totals: book.totals[kpi.id]
    pending: set[str] | None  # book.pending[kpi.id] for a deadline KPI, else None


def _plan(book: CaseBook, kpi: Kpi) -> _Plan:
    return _Plan(
        kpi.masks["follow_ups"],
        kpi.population.mask,
        _contribution_of(book, kpi),
        book.totals[kpi.id],
        book.pending.get(kpi.id),
    )


def _contribution_of(book: CaseBook, kpi: Kpi) -> Callable[[CaseRec], Contribution]:
    """The function giving what one case adds to ``kpi``'s yearly totals once all its
    events are in (None: nothing, e.g. not opened, outside the population, not ended).

    Masks, weights and indexes are looked up here, once per KPI, not once per event.
    """
    population = kpi.population.mask
    m = kpi.spec.measure

    def opened(rec: CaseRec) -> bool:
        return rec.open_us is not None and bool(rec.open_mask & population)

    if isinstance(m, RatioMeasure):
        return _ratio_contribution(kpi)
    if isinstance(m, DeadlineMeasure):
        return _deadline_contribution(book, kpi)
    if isinstance(m, SumMeasure):
        i = _field_index(book, kpi, m.field)

        def total(rec: CaseRec) -> Contribution:
            return (rec.year, (("sum", int(rec.vals[i])),)) if opened(rec) else None

        return total
    if isinstance(m, DistinctMeasure):
        i = _field_index(book, kpi, m.field)

        def distinct(rec: CaseRec) -> Contribution:
            return (rec.year, ((("value", rec.vals[i]), 1),)) if opened(rec) else None

        return distinct

    def count(rec: CaseRec) -> Contribution:
        return (rec.year, (("count", 1),)) if opened(rec) else None

    return count


def _ratio_contribution(kpi: Kpi) -> Callable[[CaseRec], Contribution]:
    """A ratio KPI's contribution: the case's :func:`_score` once all its events are in.

    The score depends only on the bits of the KPI's own conditions among the case's
    flags, so it is computed once per combination of them and remembered (a few at most).
    """
    population = kpi.population.mask
    relevant = kpi.masks["exclude"] | kpi.masks["fail"] | kpi.masks["credit"]
    scores: dict[int, int | None] = {}  # flags & relevant → score (None: left out)

    def ratio(rec: CaseRec) -> Contribution:
        if rec.open_us is None or not rec.open_mask & population:
            return None
        flags = rec.open_mask  # rec.flags(FAR_FUTURE): every follow-up is before it
        for _time, _seq, fmask in rec.follow or ():
            flags |= fmask
        flags &= relevant
        score = scores.get(flags, -1)
        if score == -1:
            score = scores[flags] = _score(kpi, flags)
        return None if score is None else (rec.year, (("den", 1), ("num", score)))

    return ratio


def _deadline_contribution(book: CaseBook, kpi: Kpi) -> Callable[[CaseRec], Contribution]:
    """A deadline KPI's contribution: the case's :func:`deadline_outcome` once it has
    ended (None while not: the case is pending, counted at an instant only)."""
    population = kpi.population.mask
    index = book.deadline_index[kpi.id]

    def deadline(rec: CaseRec) -> Contribution:
        if rec.open_us is None or not rec.open_mask & population:
            return None
        outcome = deadline_outcome(rec, kpi, rec.dues[index], FAR_FUTURE)
        if not outcome.ended:
            return None
        good = outcome.counted and outcome.good
        return (rec.year, (("den", int(outcome.counted)), ("num", SCORE_SCALE * good)))

    return deadline


def _tally(
    totals: dict[int, Counter[Any]], part: tuple[int, tuple[tuple[Any, int], ...]], sign: int
) -> None:
    """Add (``sign`` +1) or remove (-1) a contribution; a key whose amount reaches 0 goes."""
    year, amounts = part
    bucket = totals.get(year)  # not setdefault(year, Counter()): that builds one per call
    if bucket is None:
        bucket = totals[year] = Counter()
    for key, amount in amounts:
        if amount:  # adding 0 changes nothing (and must not leave a 0 entry)
            value = bucket.get(key, 0) + sign * amount  # .get: Counter[] calls __missing__
            if value:
                bucket[key] = value
            else:
                del bucket[key]


@dataclass(frozen=True, slots=True)
class Figures:
    """A KPI's raw figures for a year at an instant.

    ``numerator``/``denominator`` are in :data:`SCORE_SCALE` units for ratio KPIs;
    ``start`` is the value reached before the year began (cumulative KPIs).
    """

    numerator: int
    denominator: int | None
    start: int = 0


def _in_population(rec: CaseRec, kpi: Kpi, lo: int, hi: int, as_of: int) -> bool:
    opened = rec.open_us
    return (
        opened is not None
        and lo <= opened < hi
        and opened <= as_of
        and bool(rec.open_mask & kpi.population.mask)
    )


def _records(book: CaseBook, kpi: Kpi) -> Iterator[CaseRec]:
    return iter(book.cases[kpi.population.type].values())


def _ratio(book: CaseBook, kpi: Kpi, period: Period, as_of: int) -> Figures:
    lo, hi = period
    num = den = 0
    for rec in _records(book, kpi):
        if not _in_population(rec, kpi, lo, hi, as_of):
            continue
        score = _score(kpi, rec.flags(as_of))
        if score is not None:
            num += score
            den += 1
    return Figures(num, den * SCORE_SCALE)


def _score(kpi: Kpi, flags: int) -> int | None:
    """A case's score in 1/SCORE_SCALE, or None when it is left out (excluded)."""
    if flags & kpi.masks["exclude"]:
        return None
    if flags & kpi.masks["fail"]:
        return 0
    if kpi.credit:
        return min(SCORE_SCALE, sum(w for c, w in kpi.credit if flags & c.mask))
    return SCORE_SCALE


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a deadline case stands at an instant."""

    ended: bool
    counted: bool  # in the KPI's denominator
    good: bool  # in the numerator (overdue for 'overdue' KPIs, on time for 'on_time')


def deadline_outcome(rec: CaseRec, kpi: Kpi, due: int, as_of: int) -> Outcome:
    """Pure decision of kpis.md's per-case deadlines for one case."""
    m = kpi.spec.measure
    close = kpi.masks["closed_by"]
    end = rec.first(as_of, close | kpi.masks["cancelled_by"])
    if m.count == "overdue":  # type: ignore[union-attr]
        if end is None:
            return Outcome(False, True, as_of >= due)
        if not end[2] & close:  # cancelled (rejected): left out if before due
            return Outcome(True, end[0] >= due, end[0] >= due)
        return Outcome(True, True, end[0] >= due)
    if end is None:
        return Outcome(False, as_of >= due, False)
    return Outcome(True, True, end[0] < due)


def _deadline(book: CaseBook, kpi: Kpi, period: Period, as_of: int) -> Figures:
    return _deadline_over(book, kpi, _records(book, kpi), period, as_of)


def _deadline_over(
    book: CaseBook, kpi: Kpi, recs: Iterable[CaseRec], period: Period, as_of: int
) -> Figures:
    lo, hi = period
    index = book.deadline_index[kpi.id]
    num = den = 0
    for rec in recs:
        if not _in_population(rec, kpi, lo, hi, as_of):
            continue
        outcome = deadline_outcome(rec, kpi, rec.dues[index], as_of)
        den += outcome.counted
        num += outcome.counted and outcome.good
    return Figures(num * SCORE_SCALE, den * SCORE_SCALE)


def _count(book: CaseBook, kpi: Kpi, period: Period, as_of: int) -> Figures:
    lo, hi = period
    return Figures(
        sum(1 for r in _records(book, kpi) if _in_population(r, kpi, lo, hi, as_of)), None
    )


def _field_index(book: CaseBook, kpi: Kpi, name: str) -> int:
    return book.rules.field_needs[kpi.population.type].index(name)


def _sum(book: CaseBook, kpi: Kpi, period: Period, as_of: int) -> Figures:
    m = kpi.spec.measure
    assert isinstance(m, SumMeasure)
    lo, hi = period
    i = _field_index(book, kpi, m.field)
    if not m.cumulative:
        total = sum(
            int(r.vals[i]) for r in _records(book, kpi) if _in_population(r, kpi, lo, hi, as_of)
        )
        return Figures(total, _per(kpi, m.per))
    floor = -(2**62)
    before = sum(
        int(r.vals[i]) for r in _records(book, kpi) if _in_population(r, kpi, floor, lo, as_of)
    )
    during = sum(
        int(r.vals[i]) for r in _records(book, kpi) if _in_population(r, kpi, lo, hi, as_of)
    )
    return Figures(before + during, _per(kpi, m.per), start=before)


def _distinct(book: CaseBook, kpi: Kpi, period: Period, as_of: int) -> Figures:
    m = kpi.spec.measure
    assert isinstance(m, DistinctMeasure)
    lo, hi = period
    i = _field_index(book, kpi, m.field)
    seen = {r.vals[i] for r in _records(book, kpi) if _in_population(r, kpi, lo, hi, as_of)}
    return Figures(len(seen), _per(kpi, m.per))


def _per(kpi: Kpi, parameter: str | None) -> int | None:
    return None if parameter is None else int(kpi.spec.parameters[parameter])


def aggregate(book: CaseBook, kpi: Kpi, year: int, as_of: int) -> Figures:
    """A KPI's figures for ``year`` counting what happened up to ``as_of``."""
    if not book.settled(as_of):
        return aggregate_period(book, kpi, year_bounds(year), as_of)
    figures = _from_totals(kpi, book.totals[kpi.id], year)
    if kpi.id in book.pending:  # add the cases still open: they depend on as_of
        lo, hi = year_bounds(year)
        recs = book.cases[kpi.population.type]
        extra = _deadline_over(book, kpi, (recs[s] for s in book.pending[kpi.id]), (lo, hi), as_of)
        figures = Figures(
            figures.numerator + extra.numerator,
            (figures.denominator or 0) + (extra.denominator or 0),
        )
    return figures


def _from_totals(kpi: Kpi, totals: dict[int, Counter[Any]], year: int) -> Figures:
    """The figures of ``year`` from the running totals (every event at or before as_of)."""
    m = kpi.spec.measure
    bucket = totals.get(year, Counter())
    if isinstance(m, RatioMeasure | DeadlineMeasure):
        return Figures(bucket["num"], bucket["den"] * SCORE_SCALE)
    if isinstance(m, SumMeasure):
        if not m.cumulative:
            return Figures(bucket["sum"], _per(kpi, m.per))
        before = sum(b["sum"] for y, b in totals.items() if y < year)
        return Figures(before + bucket["sum"], _per(kpi, m.per), start=before)
    if isinstance(m, DistinctMeasure):
        return Figures(len(bucket), _per(kpi, m.per))
    return Figures(bucket["count"], None)


def aggregate_period(book: CaseBook, kpi: Kpi, period: Period, as_of: int) -> Figures:
    """A KPI's figures over the period events of ``period`` (e.g. one month), up to ``as_of``.

    Cumulative KPIs count everything before the period's end.
    """
    m = kpi.spec.measure
    if isinstance(m, RatioMeasure):
        return _ratio(book, kpi, period, as_of)
    if isinstance(m, DeadlineMeasure):
        return _deadline(book, kpi, period, as_of)
    if isinstance(m, SumMeasure):
        return _sum(book, kpi, period, as_of)
    if isinstance(m, DistinctMeasure):
        return _distinct(book, kpi, period, as_of)
    return _count(book, kpi, period, as_of)


@dataclass(frozen=True, slots=True)
class CaseState:
    """A deadline case that has not ended, as it stands at an instant."""

    kpi: str
    subject: str
    state: str  # "due_soon" or "overdue"
    due: int
    opened: int
    since: int  # the instant the case entered ``state``: its due, or when due soon began


def open_cases(book: CaseBook, kpi: Kpi, as_of: int, window_days: int) -> list[CaseState]:
    """Every case of ``kpi`` (any year) not ended at ``as_of`` that is due soon or overdue.

    Due soon (kpis.md): ``as_of < due`` and the last allowed day is on or before the
    ``window_days``-th working day after ``as_of``'s local date.
    """
    index = book.deadline_index[kpi.id]
    found = []
    recs = book.cases[kpi.population.type]
    items: Iterable[tuple[str, CaseRec]] = (
        ((s, recs[s]) for s in book.pending[kpi.id]) if book.settled(as_of) else recs.items()
    )
    for subject, rec in items:
        if rec.open_us is None or rec.open_us > as_of or not rec.open_mask & kpi.population.mask:
            continue
        due = rec.dues[index]
        since = due if as_of >= due else book.due_soon_from(due, window_days)
        if as_of < since or deadline_outcome(rec, kpi, due, as_of).ended:
            continue
        state = "overdue" if as_of >= due else "due_soon"
        found.append(CaseState(kpi.id, subject, state, due, rec.open_us, since))
    return found


def case_end(book: CaseBook, kpi: Kpi, subject: str, as_of: int) -> int | None:
    """When a deadline case ended (its first closing or cancelling event up to ``as_of``,
    by the event's own time), or ``None`` while it is open."""
    rec = book.cases[kpi.population.type].get(subject)
    if rec is None:
        return None
    end = rec.first(as_of, kpi.masks["closed_by"] | kpi.masks["cancelled_by"])
    return None if end is None else end[0]


def case_opened(book: CaseBook, kpi: Kpi, subject: str) -> int | None:
    """When a deadline case was opened (its earliest opening event), if it was."""
    rec = book.cases[kpi.population.type].get(subject)
    return None if rec is None else rec.open_us


def case_due(book: CaseBook, kpi: Kpi, subject: str) -> int | None:
    """A deadline case's due instant (exclusive), if it was opened."""
    rec = book.cases[kpi.population.type].get(subject)
    if rec is None or rec.open_us is None:
        return None
    return rec.dues[book.deadline_index[kpi.id]]
