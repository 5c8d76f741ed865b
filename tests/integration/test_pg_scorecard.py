"""A scorecard on PostgreSQL reports what it reports on SQLite, and rebuilds its state
from the database when reopened."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pytest

from bsc_rules.calendar import TAIPEI
from bsc_rules.dev.simulate import simulate
from bsc_rules.scorecard import Scorecard
from bsc_rules.store.postgres import PostgresStore
from tests.conftest import event, jsonl

AS_OF = datetime(2017, 12, 31, 23, 59, 59, tzinfo=TAIPEI)


@pytest.fixture(scope="module")
def months() -> list[bytes]:
    """The first months of a generated Datong year as JSON Lines, with a bad line, a
    conflict and repeated lines among them."""
    lines = jsonl(list(itertools.islice(simulate(year=2017, seed=3), 8000))).splitlines()
    first = event("archive.scanned", "2017-03-01T10:00:00+08:00", "AS1", {"forms": 5}, id="k")
    clash = dict(first, data={"forms": 6})
    extra = [b'{"not": "an event"}', *jsonl([first, clash]).splitlines()]
    return lines[:4000] + extra + lines[3990:]  # ten lines twice


def test_report_equals_the_sqlite_one(pg_url: str, tmp_path: Path, rules, months) -> None:
    with Scorecard.open(tmp_path / "office.db", rules, matcher="python") as lite:
        lite_sum = lite.ingest_lines(months, origin="m.jsonl", batch=500)
        expected = lite.report(AS_OF).as_dict()
    store = PostgresStore(pg_url, office="datong")
    with Scorecard(rules, store=store, matcher="python") as card:
        summary = card.ingest_lines(months, origin="m.jsonl", batch=500)
        got = card.report(AS_OF).as_dict()
    counts = (summary.accepted, summary.duplicates, summary.rejected)
    assert counts == (lite_sum.accepted, lite_sum.duplicates, lite_sum.rejected)
    assert summary.duplicates >= 10  # the repeated lines, and the simulator's redeliveries
    assert summary.rejected == 2
    assert got == expected
    assert got["rejected"] == 2


def test_reopened_scorecard_rebuilds_the_same_state(pg_url: str, rules, months) -> None:
    half = len(months) // 2
    with Scorecard(rules, store=PostgresStore(pg_url, "datong"), matcher="python") as card:
        card.ingest_lines(months[:half], origin="m.jsonl")
    with Scorecard(rules, store=PostgresStore(pg_url, "datong"), matcher="python") as card:
        card.ingest_lines(months[half:], origin="m.jsonl")
        expected = card.report(AS_OF).as_dict()
        assert card.ingest_lines(months, origin="m.jsonl").accepted == 0
    with Scorecard(rules, store=PostgresStore(pg_url, "datong"), matcher="python") as card:
        assert card.report(AS_OF).as_dict() == expected
    whole = Scorecard(rules, matcher="python")
    whole.ingest_lines(months, origin="m.jsonl")
    assert whole.report(AS_OF).as_dict()["kpis"] == expected["kpis"]


def test_refresh_picks_up_another_writer(pg_url: str, rules) -> None:
    """Two scorecards on one database: each applies the other's events once, on refresh."""
    visit = "immigrant_visit.reported"
    with (
        Scorecard(rules, store=PostgresStore(pg_url, "datong"), matcher="python") as ours,
        Scorecard(rules, store=PostgresStore(pg_url, "datong"), matcher="python") as theirs,
    ):
        ours.ingest(event(visit, "2017-03-01T10:00:00+08:00", "NV1", {"method": "phone"}))
        theirs.ingest(event(visit, "2017-03-02T10:00:00+08:00", "NV2", {"method": "home"}))
        assert ours.report(AS_OF).kpis["BC1.1"].value == 1
        assert (ours.refresh(), ours.refresh()) == (1, 0)
        assert ours.report(AS_OF).kpis["BC1.1"].value == 2
        assert theirs.refresh() == 1
        assert theirs.report(AS_OF).kpis["BC1.1"].value == 2
