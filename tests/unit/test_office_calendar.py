"""The office calendar and the deadlines it moves (spec/kpis.md, "Per-case deadlines").

Every expected date is a literal: the DGPA work calendars of 106 and 107 and the spec's
own examples, not the ``holidays`` package's output.
"""

from __future__ import annotations

import shutil
from datetime import date, datetime
from pathlib import Path

import pytest

from bsc_rules import calendar as cal
from bsc_rules.errors import RuleFileError
from bsc_rules.officecal import DATA_THROUGH, OfficeCalendar, national_year
from bsc_rules.rules.ruleset import RuleSet, default_rules_dir, load_ruleset
from bsc_rules.scorecard import Scorecard
from tests.conftest import event

OFFICE = OfficeCalendar()


def us(text: str) -> int:
    return cal.to_us(datetime.fromisoformat(text))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def d(text: str) -> date:
    return date.fromisoformat(text)


# ------------------------------------------------------------------ the calendar facts

DAYS = [
    # (date, working?) — 2017 (106): days off on weekdays, make-up Saturdays, private-only days
    pytest.param("2017-01-02", False, id="2017-new-year-observed"),
    pytest.param("2017-01-27", False, id="2017-lunar-new-year-eve"),
    pytest.param("2017-01-30", False, id="2017-lunar-new-year-3rd-day"),
    pytest.param("2017-01-31", False, id="2017-lunar-new-year-observed-1"),
    pytest.param("2017-02-01", False, id="2017-lunar-new-year-observed-2"),
    pytest.param("2017-02-02", True, id="2017-back-at-work"),
    pytest.param("2017-02-18", True, id="2017-make-up-saturday-02-18"),
    pytest.param("2017-02-27", False, id="2017-bridge-day-02-27"),
    pytest.param("2017-02-28", False, id="2017-peace-memorial-day"),
    pytest.param("2017-04-03", False, id="2017-childrens-day-observed"),
    pytest.param("2017-04-04", False, id="2017-tomb-sweeping-day"),
    pytest.param("2017-05-01", True, id="2017-labour-day-private-only"),
    pytest.param("2017-05-29", False, id="2017-bridge-day-05-29"),
    pytest.param("2017-05-30", False, id="2017-dragon-boat"),
    pytest.param("2017-06-03", True, id="2017-make-up-saturday-06-03"),
    pytest.param("2017-06-10", False, id="2017-ordinary-saturday"),
    pytest.param("2017-06-11", False, id="2017-ordinary-sunday"),
    pytest.param("2017-09-28", True, id="2017-teachers-day-commemorative-only"),
    pytest.param("2017-09-30", True, id="2017-make-up-saturday-09-30"),
    pytest.param("2017-10-04", False, id="2017-mid-autumn"),
    pytest.param("2017-10-09", False, id="2017-bridge-day-10-09"),
    pytest.param("2017-10-10", False, id="2017-national-day"),
    pytest.param("2017-12-25", True, id="2017-constitution-day-working"),
    # 2018 (107) spot checks
    pytest.param("2018-01-01", False, id="2018-new-year"),
    pytest.param("2018-02-15", False, id="2018-lunar-new-year-eve"),
    pytest.param("2018-02-20", False, id="2018-lunar-new-year-observed"),
    pytest.param("2018-03-31", True, id="2018-make-up-saturday-03-31"),
    pytest.param("2018-04-06", False, id="2018-bridge-day-04-06"),
    pytest.param("2018-05-01", True, id="2018-labour-day-private-only"),
    pytest.param("2018-06-18", False, id="2018-dragon-boat"),
    pytest.param("2018-12-22", True, id="2018-make-up-saturday-12-22"),
    pytest.param("2018-12-31", False, id="2018-bridge-day-12-31"),
]


@pytest.mark.parametrize(("day", "working"), DAYS)
def test_working_days_of_government_offices(day: str, working: bool) -> None:
    assert OFFICE.is_working_day(d(day)) is working


def test_2017_has_249_working_days() -> None:
    """DGPA's 106 calendar: 249 working days (make-up Saturdays included)."""
    days = [
        date.fromordinal(n) for n in range(d("2017-01-01").toordinal(), d("2018-01-01").toordinal())
    ]
    assert sum(OFFICE.is_working_day(x) for x in days) == 249


def test_2017_make_up_saturdays_and_days_off_are_the_packages_data() -> None:
    days_off, make_up = national_year(2017)
    assert make_up == {d("2017-02-18"), d("2017-06-03"), d("2017-09-30")}
    assert {d("2017-05-29"), d("2017-10-09"), d("2017-02-27")} <= days_off
    assert d("2017-05-01") not in days_off  # Labour Day: the package's 'optional' category


STEPS = [
    # (day, next_working_day, working_days_after(day, 2), on_or_after)
    pytest.param("2017-03-09", "2017-03-10", "2017-03-13", "2017-03-09", id="thursday"),
    pytest.param("2017-03-10", "2017-03-13", "2017-03-14", "2017-03-10", id="friday"),
    pytest.param("2017-05-27", "2017-05-31", "2017-06-01", "2017-05-31", id="dragon-boat-weekend"),
    pytest.param("2017-02-17", "2017-02-18", "2017-02-20", "2017-02-17", id="make-up-saturday"),
    pytest.param("2017-01-26", "2017-02-02", "2017-02-03", "2017-01-26", id="lunar-new-year"),
    pytest.param("2017-12-29", "2018-01-02", "2018-01-03", "2017-12-29", id="across-year-end"),
]


@pytest.mark.parametrize(("day", "following", "second", "rolled"), STEPS)
def test_stepping_over_days_off(day: str, following: str, second: str, rolled: str) -> None:
    assert OFFICE.next_working_day(d(day)) == d(following)
    assert OFFICE.working_days_after(d(day), 2) == d(second)
    assert OFFICE.working_days_after(d(day), 0) == d(day)
    assert OFFICE.on_or_after(d(day)) == d(rolled)


def test_closures_are_days_off_even_on_a_make_up_saturday() -> None:
    office = OfficeCalendar([d("2017-07-31"), d("2017-06-03")])
    assert not office.is_working_day(d("2017-07-31"))  # a typhoon Monday
    assert not office.is_working_day(d("2017-06-03"))  # a make-up Saturday closed
    assert office.next_working_day(d("2017-07-28")) == d("2017-08-01")
    assert OFFICE.is_working_day(d("2017-07-31"))  # not in another calendar
    assert office == OfficeCalendar([d("2017-06-03"), d("2017-07-31")]) != OFFICE


def test_years_without_calendar_data() -> None:
    """Bridge days and make-up Saturdays are known only through DATA_THROUGH; a later
    year still has its national holidays by rule."""
    assert OfficeCalendar.known(2017)
    assert OfficeCalendar.known(DATA_THROUGH)
    assert not OfficeCalendar.known(DATA_THROUGH + 1)
    assert not OFFICE.is_working_day(d("2027-01-01"))  # Founding Day, a Friday
    assert not OFFICE.is_working_day(d("2027-10-11"))  # National Day on a Sunday → Monday
    assert OFFICE.is_working_day(d("2027-01-04"))


# ------------------------------------------------------------------ deadlines

BP_DUES = [
    # (applied, due with working_day_end, due by calendar days)
    pytest.param(
        "2017-05-22T10:00:00+08:00",
        "2017-06-01T00:00:00+08:00",
        "2017-05-30T00:00:00+08:00",
        id="spec-bridge-day-then-dragon-boat",
    ),
    pytest.param(
        "2017-03-15T23:30:00+08:00",
        "2017-03-23T00:00:00+08:00",
        "2017-03-23T00:00:00+08:00",
        id="spec-working-wednesday-stays",
    ),
    pytest.param(
        "2017-02-11T10:00:00+08:00",
        "2017-02-19T00:00:00+08:00",
        "2017-02-19T00:00:00+08:00",
        id="make-up-saturday-stays",
    ),
    pytest.param(
        "2017-04-24T10:00:00+08:00",
        "2017-05-02T00:00:00+08:00",
        "2017-05-02T00:00:00+08:00",
        id="labour-day-stays",
    ),
    pytest.param(
        "2017-03-04T10:00:00+08:00",
        "2017-03-14T00:00:00+08:00",
        "2017-03-12T00:00:00+08:00",
        id="saturday-to-monday-whole-day",
    ),
    pytest.param(
        "2017-01-20T10:00:00+08:00",
        "2017-02-03T00:00:00+08:00",
        "2017-01-28T00:00:00+08:00",
        id="lunar-new-year",
    ),
    pytest.param(
        "2017-12-31T10:00:00+08:00",
        "2018-01-09T00:00:00+08:00",
        "2018-01-08T00:00:00+08:00",
        id="into-2018-sunday",
    ),
]


@pytest.mark.parametrize(("applied", "due", "calendar_due"), BP_DUES)
def test_bp_due_moves_off_days_off(applied: str, due: str, calendar_due: str) -> None:
    assert cal.due_days_after(us(applied), 7, OFFICE) == us(due)
    assert cal.due_days_after(us(applied), 7) == us(calendar_due)


CC_DUES = [
    # (identified, due with working_day_end): day 10 of the next month, moved
    pytest.param("2017-09-05T10:00:00+08:00", "2017-10-12T00:00:00+08:00", id="national-day"),
    pytest.param("2017-05-31T10:00:00+08:00", "2017-06-13T00:00:00+08:00", id="saturday-10th"),
    pytest.param("2017-02-14T10:00:00+08:00", "2017-03-11T00:00:00+08:00", id="friday-10th"),
    pytest.param("2017-12-05T10:00:00+08:00", "2018-01-11T00:00:00+08:00", id="december"),
]


@pytest.mark.parametrize(("identified", "due"), CC_DUES)
def test_cc_due_moves_off_days_off(identified: str, due: str) -> None:
    assert cal.due_next_month(us(identified), 10, OFFICE) == us(due)


def test_a_closure_moves_a_due() -> None:
    typhoon = OfficeCalendar([d("2017-03-22")])
    assert cal.due_days_after(us("2017-03-15T10:00:00+08:00"), 7, typhoon) == us(
        "2017-03-24T00:00:00+08:00"
    )


SOON = [
    # (due, due soon from) with a window of 2 working days
    pytest.param("2017-03-14T00:00:00+08:00", "2017-03-09T00:00:00+08:00", id="spec-monday-13th"),
    pytest.param("2017-03-23T00:00:00+08:00", "2017-03-20T00:00:00+08:00", id="wednesday"),
    pytest.param("2017-06-01T00:00:00+08:00", "2017-05-25T00:00:00+08:00", id="after-dragon-boat"),
    pytest.param("2017-02-19T00:00:00+08:00", "2017-02-16T00:00:00+08:00", id="make-up-saturday"),
]


@pytest.mark.parametrize(("due", "since"), SOON)
def test_due_soon_from_counts_working_days(due: str, since: str) -> None:
    assert cal.due_soon_from(us(due), 2, OFFICE) == us(since)


# ------------------------------------------------------------------ through the scorecard


def rules_with(tmp_path: Path, office_lines: str = "", city: str | None = None) -> RuleSet:
    """The project's rules copied, with lines appended to the office file (replacing its
    ``closures: []``) and an optional closures.yaml."""
    folder = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), folder)
    office = folder / "office.yaml"
    text = office.read_text(encoding="utf-8").replace("closures: []\n", "")
    office.write_text(text + office_lines, encoding="utf-8")
    if city is not None:
        (folder / "closures.yaml").write_text(city, encoding="utf-8")
    return load_ruleset(folder)


def cases(card: Scorecard, as_of: str) -> list[tuple[str, str, str]]:
    report = card.report(at(as_of)).as_dict()
    return [(c["subject"], c["state"], c["due"]) for c in report["cases"]]


def test_due_soon_in_the_report_from_thursday(rules: RuleSet) -> None:
    """Last allowed day Monday 2017-03-13 → due_soon from Thursday 2017-03-09 00:00."""
    card = Scorecard(rules, matcher="python")
    card.ingest(event("birth_subsidy.applied", "2017-03-06T10:00:00+08:00", "BS1", {"amount": 1}))
    assert cases(card, "2017-03-08T23:59:59+08:00") == []
    due = "2017-03-14T00:00:00+08:00"
    assert cases(card, "2017-03-09T00:00:00+08:00") == [("BS1", "due_soon", due)]
    (state,) = card.report(at("2017-03-09T00:00:00+08:00")).cases
    assert state.since == us("2017-03-09T00:00:00+08:00")


def test_shipped_office_moves_deadlines(rules: RuleSet) -> None:
    assert rules.office.deadlines == "working_day_end"
    card = Scorecard(rules, matcher="python")
    card.ingest(event("birth_subsidy.applied", "2017-05-22T10:00:00+08:00", "BS1", {"amount": 1}))
    assert cases(card, "2017-05-31T12:00:00+08:00") == [
        ("BS1", "due_soon", "2017-06-01T00:00:00+08:00")
    ]


def test_calendar_deadlines_when_the_key_is_absent(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), folder)
    office = folder / "office.yaml"
    office.write_text(
        office.read_text(encoding="utf-8").replace("deadlines: working_day_end\n", ""),
        encoding="utf-8",
    )
    rules = load_ruleset(folder)
    assert rules.office.deadlines == "calendar"
    assert rules.deadline_calendar is None
    card = Scorecard(rules, matcher="python")
    card.ingest(event("birth_subsidy.applied", "2017-05-22T10:00:00+08:00", "BS1", {"amount": 1}))
    assert cases(card, "2017-05-30T00:00:00+08:00") == [
        ("BS1", "overdue", "2017-05-30T00:00:00+08:00")
    ]


def test_office_and_city_closures_move_dues(tmp_path: Path) -> None:
    rules = rules_with(
        tmp_path,
        "closures:\n  - 2017-03-22\n",
        "closures:\n  - {date: 2017-03-23, reason: 颱風停止上班}\n",
    )
    assert rules.calendar.closures == {d("2017-03-22"), d("2017-03-23")}
    card = Scorecard(rules, matcher="python")
    card.ingest(event("birth_subsidy.applied", "2017-03-15T10:00:00+08:00", "BS1", {"amount": 1}))
    assert cases(card, "2017-03-24T12:00:00+08:00") == [
        ("BS1", "due_soon", "2017-03-25T00:00:00+08:00")
    ]


def test_a_closure_added_later_moves_open_and_closed_cases(rules: RuleSet, tmp_path: Path) -> None:
    """Dues are computed with the calendar as it stands: the open case is no longer
    overdue, the one paid on 03-23 is no longer late (kpis.md)."""
    card = Scorecard(rules, matcher="python")
    amount = {"amount": 1}
    card.ingest(event("birth_subsidy.applied", "2017-03-15T10:00:00+08:00", "OPEN", amount))
    card.ingest(event("birth_subsidy.applied", "2017-03-15T11:00:00+08:00", "PAID", amount))
    card.ingest(event("birth_subsidy.paid", "2017-03-23T10:00:00+08:00", "PAID"))
    as_of = "2017-03-23T12:00:00+08:00"
    before = card.report(at(as_of)).as_dict()
    assert before["kpis"]["BP1.1"]["numerator"] == 2  # both overdue
    assert cases(card, as_of) == [("OPEN", "overdue", "2017-03-23T00:00:00+08:00")]
    typhoon = rules_with(tmp_path, "closures: [{date: 2017-03-22, reason: 颱風}]\n")
    assert card.book.recalendar(typhoon) == 2
    card.rules = typhoon
    after = card.report(at(as_of)).as_dict()
    assert after["kpis"]["BP1.1"]["numerator"] == 0
    assert cases(card, as_of) == [("OPEN", "due_soon", "2017-03-24T00:00:00+08:00")]
    assert card.book.recalendar(typhoon) == 0  # the same calendar again: nothing moves


def test_the_scorecard_rereads_closures_from_its_rule_folder(tmp_path: Path) -> None:
    """An operator adds a typhoon day to closures.yaml: re-reading moves the open case's
    due (the service does this before every evaluation); a broken file changes nothing."""
    rules = rules_with(tmp_path, "closures: []\n", "closures: []\n")
    card = Scorecard(rules, matcher="python")
    card.ingest(event("birth_subsidy.applied", "2017-03-15T10:00:00+08:00", "BS1", {"amount": 1}))
    as_of = "2017-03-23T12:00:00+08:00"
    assert cases(card, as_of) == [("BS1", "overdue", "2017-03-23T00:00:00+08:00")]
    assert card.reread_calendar() == 0
    city = rules.directory / "closures.yaml"
    city.write_text("closures: [{date: 2017-03-22, reason: 颱風停止上班}]\n", encoding="utf-8")
    assert card.reread_calendar() == 1
    assert cases(card, as_of) == [("BS1", "due_soon", "2017-03-24T00:00:00+08:00")]
    city.write_text("closures: [{date: 2017-02-30}]\n", encoding="utf-8")
    with pytest.raises(RuleFileError):
        card.reread_calendar()
    assert cases(card, as_of) == [("BS1", "due_soon", "2017-03-24T00:00:00+08:00")]


# ------------------------------------------------------------------ the rule files


def problems(tmp_path: Path, office_lines: str, city: str) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        rules_with(tmp_path, office_lines, city)
    return [str(p) for p in caught.value.problems]


def test_closures_are_checked_and_located(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "closures:\n  - 2017-07-31\n  - 2017-02-30\n",
        "closures:\n  - 1900-01-01\n  - {date: 2017-08-01, reasn: x}\n",
    )
    office = str(tmp_path / "rules" / "office.yaml")
    city = str(tmp_path / "rules" / "closures.yaml")
    assert any(t.startswith(office) and "closures[1]" in t for t in found), found
    assert any(t.startswith(city + ":2:") and "closures[0]" in t for t in found), found
    assert any(t.startswith(city + ":3:") and "reasn" in t for t in found), found


def test_a_closure_listed_twice_is_located(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "closures:\n  - 2017-07-31\n  - {date: 2017-07-31, reason: 颱風}\n",
        "closures:\n  - 2017-08-01\n  - 2017-08-02\n  - 2017-08-01\n",
    )
    office = str(tmp_path / "rules" / "office.yaml")
    city = str(tmp_path / "rules" / "closures.yaml")
    assert any(
        t.startswith(office) and "closures[1]: 2017-07-31 is listed twice" in t for t in found
    )
    assert f"{city}:4:5: closures[2]: 2017-08-01 is listed twice (first on line 2)" in found


def test_deadlines_value_is_checked(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), folder)
    office = folder / "office.yaml"
    text = office.read_text(encoding="utf-8").replace("working_day_end", "working_days")
    office.write_text(text, encoding="utf-8")
    with pytest.raises(RuleFileError, match="deadlines"):
        load_ruleset(folder)


def test_the_shipped_closures_file_is_not_a_kpi(rules: RuleSet) -> None:
    assert (rules.directory / "closures.yaml").exists()
    assert len(rules.kpis) == 10
    assert rules.city_closures == ()


def test_warnings_for_years_without_calendar_data(rules: RuleSet, tmp_path: Path) -> None:
    assert rules.calendar_warnings() == []
    later = DATA_THROUGH + 1
    assert len(rules.calendar_warnings([later])) == 1
    with_closure = rules_with(tmp_path, f"closures: [{later}-07-01]\n")
    (warning,) = with_closure.calendar_warnings()
    assert f"{later - 1911}年" in warning
    assert "補行上班" in warning
