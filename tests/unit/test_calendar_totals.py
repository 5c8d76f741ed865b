"""Running totals equal the full scan with ``deadlines: working_day_end``, closures included,
and after a closure is added later (:meth:`CaseBook.recalendar`)."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsc_rules.calendar import US_PER_DAY, iso, local_midnight, year_bounds
from bsc_rules.measures.cases import CaseBook, aggregate, aggregate_period, open_cases
from bsc_rules.rules.ruleset import RuleSet, default_rules_dir, load_ruleset
from bsc_rules.scorecard import Scorecard
from tests.conftest import event

START = date(2016, 12, 20)  # around Lunar New Year, 5/29-30 and year end alike
SPAN_DAYS = 400
US_PER_HOUR = US_PER_DAY // 24
KINDS = ("birth_subsidy.paid", "birth_subsidy.rejected", None)


def _rules(folder: Path, closures: list[date]) -> RuleSet:
    if not folder.exists():
        shutil.copytree(default_rules_dir(), folder)
    office = folder / "office.yaml"
    text = office.read_text(encoding="utf-8").split("closures:")[0]
    listed = ", ".join(day.isoformat() for day in sorted(set(closures)))
    office.write_text(text + f"closures: [{listed}]\n", encoding="utf-8")
    return load_ruleset(folder)


def _time(offset_hours: int) -> str:
    """The local time ``offset_hours`` after the start of :data:`START`, as RFC 3339."""
    return iso(local_midnight(START) + offset_hours * US_PER_HOUR)


case = st.tuples(
    st.sampled_from(("birth_subsidy.applied", "care_case.identified")),
    st.integers(0, SPAN_DAYS * 24),  # opened, hours after START
    st.sampled_from(KINDS),
    st.integers(0, 40 * 24) | st.integers(7 * 24, 11 * 24),  # ended, hours after opening
)
# a case and a day count after its opening: closures that land near BP1.1's last days
near_dues = st.lists(st.tuples(st.integers(0, 14), st.integers(7, 9)), min_size=1, max_size=4)
days = st.lists(st.integers(0, SPAN_DAYS).map(lambda n: START + timedelta(days=n)), max_size=6)


def _events(cases: list[tuple[str, int, str | None, int]]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, (opening, opened, end, after) in enumerate(cases):
        subject = f"S{i}"
        data = {"amount": 1} if opening.startswith("birth") else {"category": "elderly_marriage"}
        out.append(event(opening, _time(opened), subject, data))
        if end is not None:
            kind = end if opening.startswith("birth") else "care_case.notified"
            extra = {"reason": "x"} if kind.endswith("rejected") else None
            out.append(event(kind, _time(opened + after), subject, extra))
    return out


def _same_as_scan(book: CaseBook, rules: RuleSet) -> None:
    as_of = book.max_time
    assert book.settled(as_of)
    for kpi_id in book.pending:
        kpi = rules.kpis[kpi_id]
        for year in (2016, 2017, 2018):
            fast = aggregate(book, kpi, year, as_of)
            assert fast == aggregate_period(book, kpi, year_bounds(year), as_of), (kpi_id, year)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cases=st.lists(case, min_size=1, max_size=15), first=days, near=near_dues)
def test_totals_equal_scan_with_working_day_end(
    tmp_path_factory, cases: list[tuple[str, int, str | None, int]], first, near
) -> None:
    """Closures anywhere first; then more added later, near the cases' last days."""
    later = [START + timedelta(days=cases[i % len(cases)][1] // 24 + n) for i, n in near]
    folder = tmp_path_factory.mktemp("rules") / "rules"
    rules = _rules(folder, first)
    assert rules.office.deadlines == "working_day_end"
    card = Scorecard(rules, matcher="python")
    for item in reversed(_events(cases)):  # arrival order is not time order
        card.ingest(item)
    _same_as_scan(card.book, rules)
    moved = _rules(folder, first + later)
    card.book.recalendar(moved)
    card.rules = moved
    _same_as_scan(card.book, moved)
    fresh = Scorecard(moved, matcher="python")
    for item in _events(cases):
        fresh.ingest(item)
    as_of = card.book.max_time
    for kpi_id in card.book.pending:
        kpi = moved.kpis[kpi_id]
        assert aggregate(card.book, kpi, 2017, as_of) == aggregate(fresh.book, kpi, 2017, as_of)
        mine = sorted(open_cases(card.book, kpi, as_of, 2), key=lambda c: c.subject)
        theirs = sorted(open_cases(fresh.book, kpi, as_of, 2), key=lambda c: c.subject)
        assert mine == theirs
