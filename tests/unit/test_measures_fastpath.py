"""CaseBook's running state equals a full scan of its records, in any arrival order.

``CaseBook.add`` keeps yearly totals, pending deadline cases and the orphan count by
differences, through KPI plans compiled once (``measures._Plan``); the scans
(``aggregate_period``, ``deadline_outcome``, the records themselves) are the plain
definitions. The events: a simulated year thinned by subject, some events dropped (their
follow-ups stay orphans), extra follow-ups of the kinds the simulation makes rarely
(errors, rejections: exclude, fail, cancelled_by), and some events repeated with a new
id, a time moved up to 40 days either way and, for openings, a population field flipped.
So earlier and later repeat openings, population and year changes, and follow-ups
before their opening all occur; the events are then added in shuffled orders, checked
every third of the way. The rule sets: the project's, and one whose deadline KPI CC1.1
counts only part of its opening type (every project deadline KPI counts all of it).
"""

from __future__ import annotations

import random
import shutil
from typing import Any

import pytest

from bsc_rules.calendar import US_PER_DAY, US_PER_SECOND, iso, year_bounds
from bsc_rules.dev.simulate import simulate
from bsc_rules.events import Event, parse_object
from bsc_rules.matching import make_matcher
from bsc_rules.measures.cases import (
    FAR_FUTURE,
    CaseBook,
    aggregate,
    aggregate_period,
    deadline_outcome,
)
from bsc_rules.rules.ruleset import RuleSet, default_rules_dir, load_ruleset

YEARS = (2016, 2017, 2018)
# Fields some populations test (AC1.2: scanned; TF1.1: mode), and their other value.
FLIPS: dict[str, dict[Any, Any]] = {
    "scanned": {True: False, False: True},
    "mode": {"online": "paper", "paper": "online"},
    "category": {
        "elderly_marriage": "divorce_with_minor",
        "divorce_with_minor": "elderly_marriage",
    },
}
# Follow-ups the simulation makes a few of a year, by opening type, with their data.
RARE: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "registration.completed": [
        ("registration.error_found", {"cause": "staff"}),
        ("registration.error_found", {"cause": "citizen"}),
    ],
    "seal_certificate.issued": [("seal_certificate.error_found", {})],
    "birth_subsidy.applied": [("birth_subsidy.rejected", {"reason": "not eligible"})],
}


def _objects(rng: random.Random) -> list[dict[str, Any]]:
    """About a quarter of a simulated year's cases, 2 % of the events dropped."""
    keep: dict[str, bool] = {}
    objs = []
    for obj in simulate(year=2017, seed=5):
        subject = obj["subject"]
        if subject not in keep:
            keep[subject] = rng.random() < 0.25
        if keep[subject] and rng.random() >= 0.02:
            objs.append(obj)
    return objs


def _repeat(obj: dict[str, Any], time_us: int, n: int, rng: random.Random) -> dict[str, Any]:
    """The event again under a new id, up to 40 days earlier or later, maybe re-flagged."""
    shift = rng.randint(-40 * US_PER_DAY, 40 * US_PER_DAY) // US_PER_SECOND * US_PER_SECOND
    copy = dict(obj, id=f"repeat-{n}", time=iso(time_us + shift))
    data = dict(obj.get("data") or {})
    for name in sorted(FLIPS.keys() & data.keys()):
        if rng.random() < 0.5:
            data[name] = FLIPS[name][data[name]]
    if data:
        copy["data"] = data
    return copy


def _rare(obj: dict[str, Any], time_us: int, n: int, rng: random.Random) -> dict[str, Any]:
    """A rare follow-up of an opening event, up to 60 days after it."""
    type_, data = rng.choice(RARE[obj["type"]])
    time = iso(time_us + rng.randint(0, 60 * US_PER_DAY) // US_PER_SECOND * US_PER_SECOND)
    return dict(obj, id=f"rare-{n}", type=type_, time=time, data=data)


@pytest.fixture(scope="module", params=["project", "narrowed"])
def rule_set(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    if request.param == "project":
        return load_ruleset()
    folder = tmp_path_factory.mktemp("rules") / "rules"
    shutil.copytree(default_rules_dir(), folder)
    path = folder / "CC1.1.yaml"
    text = path.read_text(encoding="utf-8")
    old = "population: {type: care_case.identified}"
    assert old in text
    new = "population: {type: care_case.identified, where: {category: divorce_with_minor}}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return load_ruleset(folder)


@pytest.fixture(scope="module")
def events(rule_set: RuleSet) -> list[tuple[Event, int]]:
    """The test's events with their match masks, in simulated arrival order."""
    rng = random.Random(2017)
    objs = _objects(rng)
    parsed = [parse_object(obj) for obj in objs]
    extra = []
    for n, (obj, event) in enumerate(zip(objs, parsed, strict=True)):
        assert isinstance(event, Event)
        if rng.random() < 0.05:
            extra.append(_repeat(obj, event.time_us, n, rng))
        if obj["type"] in RARE and rng.random() < 0.1:
            extra.append(_rare(obj, event.time_us, n, rng))
    parsed += [parse_object(obj) for obj in extra]
    assert all(isinstance(e, Event) for e in parsed)
    matcher = make_matcher(rule_set.conditions, "python")
    return [(e, matcher.match(e.type, e.data)) for e in parsed if isinstance(e, Event)]


def _check(book: CaseBook, rules: RuleSet) -> None:
    """Running totals, pending sets and orphan count against scans of the records."""
    as_of = book.max_time
    assert book.settled(as_of)
    for kpi in rules.kpis.values():
        for year in YEARS:
            fast = aggregate(book, kpi, year, as_of)
            slow = aggregate_period(book, kpi, year_bounds(year), as_of)
            assert fast == slow, (kpi.id, year)
    for kpi_id, pending in book.pending.items():
        kpi = rules.kpis[kpi_id]
        index = book.deadline_index[kpi_id]
        expected = {
            subject
            for subject, rec in book.cases[kpi.population.type].items()
            if rec.open_us is not None
            and rec.open_mask & kpi.population.mask
            and not deadline_outcome(rec, kpi, rec.dues[index], FAR_FUTURE).ended
        }
        assert pending == expected, kpi_id
    orphans = sum(
        len(rec.follow or ())
        for recs in book.cases.values()
        for rec in recs.values()
        if rec.open_us is None
    )
    assert book.orphans == orphans


@pytest.mark.parametrize("order", [None, 1, 2, 3])
def test_running_state_equals_scan(
    rule_set: RuleSet, events: list[tuple[Event, int]], order: int | None
) -> None:
    """Added in arrival order (None) or shuffled: the same state as a scan, all along."""
    arrivals = list(events)
    if order is not None:
        random.Random(order).shuffle(arrivals)
    book = CaseBook(rule_set)
    checkpoints = {len(arrivals) // 3, 2 * len(arrivals) // 3, len(arrivals)}
    for seq, (event, mask) in enumerate(arrivals, start=1):
        book.add(event, mask, seq)
        if seq in checkpoints:
            _check(book, rule_set)
    # the data did reach the paths the test is about
    assert book.orphans > 0
    assert any(book.totals[k].get(2016) for k in book.totals)  # reopened a year earlier
    assert any(book.pending.values())
