"""The running yearly totals equal a full scan of the case records."""

from __future__ import annotations

import pytest

from bsc_rules.calendar import US_PER_DAY, year_bounds
from bsc_rules.dev.simulate import simulate
from bsc_rules.measures.cases import FAR_FUTURE, aggregate, aggregate_period, open_cases
from bsc_rules.scorecard import Scorecard
from tests.conftest import jsonl


@pytest.mark.parametrize("seed", [0, 11])
def test_totals_equal_scan(rules, seed: int) -> None:
    """After every event is in, each KPI's totals match a scan, for every year touched."""
    card = Scorecard(rules, matcher="python")
    lines = jsonl(list(simulate(year=2017, seed=seed))).splitlines()
    half = len(lines) // 2
    for chunk in (lines[:half], lines[half:]):  # check mid-stream too
        card.ingest_lines(chunk)
        as_of = card.book.max_time
        assert card.book.settled(as_of)
        for kpi in rules.kpis.values():
            for year in (2016, 2017, 2018):
                fast = aggregate(card.book, kpi, year, as_of)
                slow = aggregate_period(card.book, kpi, year_bounds(year), as_of)
                assert fast == slow, (kpi.id, year)
        _same_open_cases(card, rules, as_of)


def _same_open_cases(card: Scorecard, rules, as_of: int) -> None:
    """Open cases from the pending sets equal those from a scan of every record."""
    book = card.book
    for days in (0, 2, 30, 400):
        for kpi_id in book.pending:
            kpi = rules.kpis[kpi_id]
            at = as_of + days * US_PER_DAY
            fast = sorted(open_cases(book, kpi, at, 2), key=lambda c: c.subject)
            saved, book.max_time = book.max_time, FAR_FUTURE  # force the scan
            try:
                slow = sorted(open_cases(book, kpi, at, 2), key=lambda c: c.subject)
            finally:
                book.max_time = saved
            assert fast == slow


def test_orphans_follow_openings(rules) -> None:
    """Follow-ups before their opening count as unmatched until it arrives."""
    from tests.conftest import event

    card = Scorecard(rules, matcher="python")
    card.ingest(event("birth_subsidy.paid", "2017-03-16T10:00:00+08:00", "BS1"))
    card.ingest(
        event("cross_notice.recorded", "2017-03-16T10:00:00+08:00", "RG1", {"channel": "hris"})
    )
    assert card.book.orphans == 2
    card.ingest(
        event("birth_subsidy.applied", "2017-03-15T10:00:00+08:00", "BS1", {"amount": 20000})
    )
    assert card.book.orphans == 1
    assert card.book.unmatched(card.book.max_time) == 1
