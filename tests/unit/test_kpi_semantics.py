"""The KPI semantics of spec/kpis.md, checked only through Scorecard.ingest and report().as_dict().

Every expected figure is a literal derived by hand from the spec; the arithmetic is in the
comment next to it. Office parameters (rules/): required_forms 200000, headcount 40,
CC1.1 due_day 10, warning window 2 working days; Datong's `deadlines: working_day_end` moves a
last allowed day that is not a working day to the next working day (kpis.md).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from bsc_rules.errors import UsageError
from bsc_rules.scorecard import Scorecard

SOURCE = "/taipei/datong/registration"
_IDS = itertools.count(1)

# A valid ``data`` for each type; a test overrides only the fields it is about.
DEFAULT_DATA: dict[str, dict[str, Any]] = {
    "registration.completed": {"kind": "birth"},
    "registration.error_found": {"cause": "staff"},
    "cross_notice.recorded": {"channel": "hris"},
    "seal_certificate.issued": {},
    "seal_certificate.error_found": {},
    "archive.scanned": {"forms": 1},
    "archive.retrieved": {"mode": "online", "scanned": True},
    "immigrant_visit.reported": {"method": "home"},
    "birth_subsidy.applied": {"amount": 20000},
    "birth_subsidy.paid": {},
    "birth_subsidy.rejected": {"reason": "not eligible"},
    "care_case.identified": {"category": "elderly_marriage"},
    "care_case.notified": {},
    "training.attended": {"employee": "E001", "course": "戶政法令"},
    "survey.completed": {"mode": "online", "pages": 1},
}

ALL_KPIS = (
    "AC1.1",
    "AC1.2",
    "AP1.1",
    "AP2.1",
    "BC1.1",
    "BP1.1",
    "CC1.1",
    "CP1.1",
    "TF1.1",
    "TL1.1",
)
RATE_KPIS = ("AC1.2", "AP1.1", "AP2.1", "BP1.1", "CC1.1", "CP1.1")
PROGRESS_KPIS = ("AC1.1", "BC1.1", "TF1.1", "TL1.1")

MID_2017 = "2017-07-02T12:00:00+08:00"  # elapsed = 182.5 days / 365 days = 0.5 exactly
END_2017 = "2017-12-31T23:59:59+08:00"  # the instant from which 2017 is complete
JUNE_2017 = "2017-06-30T23:59:59+08:00"


def event(
    type_: str,
    subject: str,
    time: str,
    *,
    id: str | None = None,
    source: str = SOURCE,
    office: str | None = None,
    **data: Any,
) -> dict[str, Any]:
    """A CloudEvents 1.0 envelope with a fresh id and the type's default data."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": id if id is not None else f"kpi-test-{next(_IDS):06d}",
        "source": source,
        "type": type_,
        "time": time,
        "subject": subject,
        "data": {**DEFAULT_DATA[type_], **data},
    }
    if office is not None:
        body["office"] = office
    return body


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Office:
    """A fresh in-memory scorecard with terse send/report helpers."""

    def __init__(self) -> None:
        self.card = Scorecard(matcher="python")

    def ingest(self, body: dict[str, Any] | bytes) -> str:
        return self.card.ingest(body).status

    def send(self, type_: str, subject: str, time: str, **kw: Any) -> dict[str, Any]:
        body = event(type_, subject, time, **kw)
        status = self.ingest(body)
        assert status == "accepted", f"test event not accepted: {body}"
        return body

    def report(self, as_of: str, year: int | None = None) -> dict[str, Any]:
        return self.card.report(at(as_of), year=year).as_dict()

    def kpi(self, kpi: str, as_of: str, year: int | None = None) -> dict[str, Any]:
        return self.report(as_of, year)["kpis"][kpi]

    def cases(self, as_of: str, year: int | None = None) -> list[dict[str, Any]]:
        return self.report(as_of, year)["cases"]


@pytest.fixture
def office() -> Iterator[Office]:
    o = Office()
    yield o
    o.card.close()


def check(got: dict[str, Any], **want: Any) -> None:
    """Compare the named fields of one KPI's JSON; numbers approximately, the rest exactly."""
    for key, expected in want.items():
        actual = got[key]
        if expected is None or isinstance(expected, str):
            assert actual == expected, f"{key}: expected {expected!r}, got {actual!r} in {got}"
        else:
            assert actual is not None, f"{key}: expected {expected!r}, got None in {got}"
            assert actual == pytest.approx(expected), (
                f"{key}: expected {expected!r}, got {actual!r} in {got}"
            )


def case(kpi: str, subject: str, state: str, due: str) -> dict[str, str]:
    return {"kpi": kpi, "subject": subject, "state": state, "due": due}


# ===================================================================== report shape


def test_report_lists_all_ten_kpis_with_owner_and_direction(office: Office) -> None:
    """The JSON report holds all ten KPIs with the spec's owner and direction."""
    rep = office.report(JUNE_2017)
    assert rep["as_of"] == JUNE_2017
    assert rep["year"] == 2017
    assert set(rep["kpis"]) == set(ALL_KPIS)
    owners = {
        "AC1.1": "records",
        "AC1.2": "records",
        "AP1.1": "records",
        "AP2.1": "registration",
        "BC1.1": "registration",
        "BP1.1": "registration",
        "CC1.1": "registration",
        "CP1.1": "registration",
        "TF1.1": "general_affairs",
        "TL1.1": "general_affairs",
    }
    for kpi, owner in owners.items():
        check(rep["kpis"][kpi], owner=owner, direction="lower" if kpi == "BP1.1" else "higher")
    assert rep["cases"] == []
    assert rep["rejected"] == 0
    assert rep["unmatched"] == 0


@pytest.mark.parametrize(
    ("year", "targets"),
    [
        # floors: AP2.1 max(100, mean(99.98,99.97,99.97)=99.973) = 100;
        # BC1.1 max(379, mean(27,379)=203)
        # = 379; CP1.1 max(80, mean(6.79,9.02,52.71)=22.84) = 80
        (
            2017,
            {
                "AC1.1": 50,
                "AC1.2": 100,
                "AP1.1": 100,
                "AP2.1": 100,
                "BC1.1": 379,
                "BP1.1": 0,
                "CC1.1": 100,
                "CP1.1": 80,
                "TF1.1": 1250,
                "TL1.1": 100,
            },
        ),
        # 2018: AP2.1 floor mean(99.97,99.97) < 100; BC1.1 mean(27,379) = 203 < 379;
        # CP1.1 mean(9.02,52.71) = 30.865 < 80
        (
            2018,
            {
                "AC1.1": 100,
                "AC1.2": 100,
                "AP1.1": 100,
                "AP2.1": 100,
                "BC1.1": 379,
                "BP1.1": 0,
                "CC1.1": 100,
                "CP1.1": 80,
                "TF1.1": 1300,
                "TL1.1": 100,
            },
        ),
        # 2019: BC1.1 floor mean(379) = 379; CP1.1 mean(52.71) < 80
        (
            2019,
            {
                "AC1.1": 100,
                "AC1.2": 100,
                "AP1.1": 100,
                "AP2.1": 100,
                "BC1.1": 379,
                "BP1.1": 0,
                "CC1.1": 100,
                "CP1.1": 80,
                "TF1.1": 1350,
                "TL1.1": 100,
            },
        ),
    ],
    ids=["2017", "2018", "2019"],
)
def test_effective_targets_per_year(office: Office, year: int, targets: dict[str, float]) -> None:
    """Each year's effective target is the stated one, made stricter by the three-year floor."""
    kpis = office.report(f"{year}-06-30T12:00:00+08:00")["kpis"]
    for kpi, target in targets.items():
        check(kpis[kpi], target=target)


# ===================================================================== BP1.1

# (applied, due, paid one second before due, paid at due)
BP_DUE = [
    pytest.param(
        "2017-03-15T10:23:00+08:00",
        "2017-03-23T00:00:00+08:00",
        "2017-03-22T23:59:59+08:00",
        "2017-03-23T00:00:00+08:00",
        id="local-10h23",
    ),
    pytest.param(
        "2017-03-15T00:00:00+08:00",
        "2017-03-23T00:00:00+08:00",
        "2017-03-22T23:59:59+08:00",
        "2017-03-23T00:00:00+08:00",
        id="local-00h00m00s",
    ),
    pytest.param(
        "2017-03-15T23:59:59+08:00",
        "2017-03-23T00:00:00+08:00",
        "2017-03-22T23:59:59+08:00",
        "2017-03-23T00:00:00+08:00",
        id="local-23h59m59s",
    ),
    # 2017-03-14T16:30Z = 03-15 00:30 local → due 03-15 + 8 days = 03-23 00:00 local = 03-22T16:00Z
    pytest.param(
        "2017-03-14T16:30:00Z",
        "2017-03-23T00:00:00+08:00",
        "2017-03-22T15:59:59Z",
        "2017-03-22T16:00:00Z",
        id="utc-prev-day-is-local-03-15",
    ),
    # 2017-03-15T15:59:59Z = 03-15 23:59:59 local → due 03-23
    pytest.param(
        "2017-03-15T15:59:59Z",
        "2017-03-23T00:00:00+08:00",
        "2017-03-22T23:59:59+08:00",
        "2017-03-23T00:00:00+08:00",
        id="utc-local-23h59m59s",
    ),
    # 2017-03-15T16:00:00Z = 03-16 00:00 local → due 03-16 + 8 days = 03-24 00:00 local
    pytest.param(
        "2017-03-15T16:00:00Z",
        "2017-03-24T00:00:00+08:00",
        "2017-03-23T23:59:59+08:00",
        "2017-03-24T00:00:00+08:00",
        id="utc-next-local-day",
    ),
    # month end: last day 03-28 + 7 = 04-04 (兒童節、民族掃墓節, a day off; working_day_end)
    # → the next working day 04-05, due 04-06 00:00 (it would be 04-05 by calendar days)
    pytest.param(
        "2017-03-28T09:00:00+08:00",
        "2017-04-06T00:00:00+08:00",
        "2017-04-05T23:59:59+08:00",
        "2017-04-06T00:00:00+08:00",
        id="across-month-end",
    ),
]


@pytest.mark.parametrize(("applied", "due", "before_due", "at_due"), BP_DUE)
def test_bp_open_application_due_instant(
    office: Office, applied: str, due: str, before_due: str, at_due: str
) -> None:
    """An open application is due_soon one second before its due instant and overdue at it."""
    office.send("birth_subsidy.applied", "BS1", applied)
    # one second before due: in the denominator, not overdue → 100 × 0/1 = 0, met (target ≤ 0)
    check(office.kpi("BP1.1", before_due), numerator=0, denominator=1, value=0, status="met")
    assert office.cases(before_due) == [case("BP1.1", "BS1", "due_soon", due)]
    # at due: overdue → 100 × 1/1 = 100, breached (a 0 % target missed)
    check(office.kpi("BP1.1", at_due), numerator=1, denominator=1, value=100, status="breached")
    assert office.cases(at_due) == [case("BP1.1", "BS1", "overdue", due)]


@pytest.mark.parametrize(("applied", "due", "before_due", "at_due"), BP_DUE)
def test_bp_paid_one_second_before_due_is_on_time(
    office: Office, applied: str, due: str, before_due: str, at_due: str
) -> None:
    """Paid one second before due: on time (0 overdue of 1) and no longer in cases."""
    office.send("birth_subsidy.applied", "BS1", applied)
    office.send("birth_subsidy.paid", "BS1", before_due)
    # 100 × 0/1 = 0
    check(office.kpi("BP1.1", JUNE_2017), numerator=0, denominator=1, value=0, status="met")
    assert office.cases(JUNE_2017) == []


@pytest.mark.parametrize(("applied", "due", "before_due", "at_due"), BP_DUE)
def test_bp_paid_at_due_is_overdue(
    office: Office, applied: str, due: str, before_due: str, at_due: str
) -> None:
    """Paid exactly at the due instant: overdue (due is exclusive)."""
    office.send("birth_subsidy.applied", "BS1", applied)
    office.send("birth_subsidy.paid", "BS1", at_due)
    # 100 × 1/1 = 100
    check(office.kpi("BP1.1", JUNE_2017), numerator=1, denominator=1, value=100, status="breached")
    assert office.cases(JUNE_2017) == []  # ended (paid), so not listed


def test_bp_payment_before_application_gives_same_report() -> None:
    """A payment arriving before its application gives the same report as in order."""
    in_order, out_of_order = Office(), Office()
    events = [
        event("birth_subsidy.applied", "BS1", "2017-03-15T10:00:00+08:00"),
        event("birth_subsidy.paid", "BS1", "2017-03-20T10:00:00+08:00"),  # on time
        event("birth_subsidy.applied", "BS2", "2017-03-16T10:00:00+08:00"),
        event("birth_subsidy.paid", "BS2", "2017-03-24T00:00:00+08:00"),  # due 03-24: overdue
    ]
    for body in events:
        assert in_order.ingest(body) == "accepted"
    for body in [events[3], events[1], events[2], events[0]]:
        assert out_of_order.ingest(body) == "accepted"
    for as_of in ("2017-03-21T00:00:00+08:00", "2017-03-24T00:00:00+08:00", JUNE_2017):
        assert out_of_order.report(as_of) == in_order.report(as_of)
    # 100 × 1 overdue / 2 applications = 50
    check(
        out_of_order.kpi("BP1.1", JUNE_2017),
        numerator=1,
        denominator=2,
        value=50,
        status="breached",
    )
    assert out_of_order.report(JUNE_2017)["unmatched"] == 0


# applied 2017-03-15T10:00 → due 2017-03-23T00:00; follow-ups listed by time, ingested newest first
BP_ENDINGS = [
    # rejected before due → left out: 0 / 0 → no_data
    pytest.param(
        [("birth_subsidy.rejected", "2017-03-22T23:59:59+08:00")],
        0,
        0,
        None,
        "no_data",
        id="rejected-before-due-left-out",
    ),
    # rejected at due → overdue: 100 × 1/1
    pytest.param(
        [("birth_subsidy.rejected", "2017-03-23T00:00:00+08:00")],
        1,
        1,
        100,
        "breached",
        id="rejected-at-due-overdue",
    ),
    pytest.param(
        [("birth_subsidy.rejected", "2017-04-10T09:00:00+08:00")],
        1,
        1,
        100,
        "breached",
        id="rejected-after-due-overdue",
    ),
    # paid 03-20 ends the case on time; the later rejection changes nothing: 100 × 0/1
    pytest.param(
        [
            ("birth_subsidy.paid", "2017-03-20T10:00:00+08:00"),
            ("birth_subsidy.rejected", "2017-03-21T10:00:00+08:00"),
        ],
        0,
        1,
        0,
        "met",
        id="paid-then-rejected",
    ),
    # rejected 03-20 (before due) ends it first: left out, 0 / 0
    pytest.param(
        [
            ("birth_subsidy.rejected", "2017-03-20T10:00:00+08:00"),
            ("birth_subsidy.paid", "2017-03-21T10:00:00+08:00"),
        ],
        0,
        0,
        None,
        "no_data",
        id="rejected-then-paid",
    ),
    # rejected 03-24 (after due) ends it first: overdue, 100 × 1/1
    pytest.param(
        [
            ("birth_subsidy.rejected", "2017-03-24T10:00:00+08:00"),
            ("birth_subsidy.paid", "2017-03-25T10:00:00+08:00"),
        ],
        1,
        1,
        100,
        "breached",
        id="rejected-late-then-paid",
    ),
    # paid late 03-24 ends it first; a later rejection does not make it left out: 100 × 1/1
    pytest.param(
        [
            ("birth_subsidy.paid", "2017-03-24T10:00:00+08:00"),
            ("birth_subsidy.rejected", "2017-03-25T10:00:00+08:00"),
        ],
        1,
        1,
        100,
        "breached",
        id="paid-late-then-rejected",
    ),
]


@pytest.mark.parametrize(("follow_ups", "num", "den", "value", "status"), BP_ENDINGS)
def test_bp_first_ending_event_by_time_decides(
    office: Office,
    follow_ups: list[tuple[str, str]],
    num: int,
    den: int,
    value: float | None,
    status: str,
) -> None:
    """The case ends at its first payment or rejection by time; early rejections are left out."""
    office.send("birth_subsidy.applied", "BS1", "2017-03-15T10:00:00+08:00")
    for type_, time in reversed(follow_ups):  # arrival order opposite to time order
        office.send(type_, "BS1", time)
    check(
        office.kpi("BP1.1", JUNE_2017), numerator=num, denominator=den, value=value, status=status
    )
    assert office.cases(JUNE_2017) == []


def test_bp_rejected_before_due_not_in_denominator(office: Office) -> None:
    """An application rejected before due is left out of the denominator too."""
    office.send("birth_subsidy.applied", "BS1", "2017-03-15T10:00:00+08:00")
    office.send("birth_subsidy.rejected", "BS1", "2017-03-16T10:00:00+08:00")
    office.send("birth_subsidy.applied", "BS2", "2017-03-15T10:00:00+08:00")
    office.send("birth_subsidy.paid", "BS2", "2017-03-23T00:00:00+08:00")  # at due: overdue
    # BS1 left out, BS2 overdue → 100 × 1/1 = 100 (not 1/2 = 50)
    check(office.kpi("BP1.1", JUNE_2017), numerator=1, denominator=1, value=100, status="breached")


# applied 2017-03-15T10:00, never ended; last day Wed 03-22, due 2017-03-23T00:00; due soon
# from Mon 03-20T00:00 (03-22 is the 2nd working day after 03-20; after Sun 03-19 it is 03-21)
BP_OPEN = [
    # not applied yet at as_of: 0 / 0
    pytest.param("2017-03-15T09:59:59+08:00", 0, 0, None, "no_data", [], id="before-application"),
    # applied exactly at as_of (time <= as_of): 100 × 0/1
    pytest.param("2017-03-15T10:00:00+08:00", 0, 1, 0, "met", [], id="at-application"),
    pytest.param("2017-03-19T23:59:59+08:00", 0, 1, 0, "met", [], id="just-before-warning"),
    pytest.param(
        "2017-03-20T00:00:00+08:00",
        0,
        1,
        0,
        "met",
        [case("BP1.1", "BS1", "due_soon", "2017-03-23T00:00:00+08:00")],
        id="warning-starts",
    ),
    pytest.param(
        "2017-03-21T00:00:00+08:00",
        0,
        1,
        0,
        "met",
        [case("BP1.1", "BS1", "due_soon", "2017-03-23T00:00:00+08:00")],
        id="due-minus-2-days",
    ),
    pytest.param(
        "2017-03-22T23:59:59+08:00",
        0,
        1,
        0,
        "met",
        [case("BP1.1", "BS1", "due_soon", "2017-03-23T00:00:00+08:00")],
        id="due-minus-1s",
    ),
    # as_of >= due: overdue, 100 × 1/1
    pytest.param(
        "2017-03-23T00:00:00+08:00",
        1,
        1,
        100,
        "breached",
        [case("BP1.1", "BS1", "overdue", "2017-03-23T00:00:00+08:00")],
        id="at-due",
    ),
    pytest.param(
        END_2017,
        1,
        1,
        100,
        "breached",
        [case("BP1.1", "BS1", "overdue", "2017-03-23T00:00:00+08:00")],
        id="year-end",
    ),
]


@pytest.mark.parametrize(("as_of", "num", "den", "value", "status", "cases"), BP_OPEN)
def test_bp_open_application_counts_in_denominator(
    office: Office,
    as_of: str,
    num: int,
    den: int,
    value: float | None,
    status: str,
    cases: list[dict[str, str]],
) -> None:
    """An open application is in the denominator, and overdue only once as_of >= due."""
    office.send("birth_subsidy.applied", "BS1", "2017-03-15T10:00:00+08:00")
    rep = office.report(as_of)
    check(rep["kpis"]["BP1.1"], numerator=num, denominator=den, value=value, status=status)
    assert rep["cases"] == cases


def test_bp_repeated_application_counts_once_as_earliest(office: Office) -> None:
    """A subject applied twice counts once, with the due of its earliest application by time."""
    office.send("birth_subsidy.applied", "BS1", "2017-03-20T09:00:00+08:00")  # arrives first
    office.send("birth_subsidy.applied", "BS1", "2017-03-15T10:00:00+08:00")  # earliest by time
    as_of = "2017-03-23T00:00:00+08:00"
    # due of the 03-15 application is 03-23 00:00 (not 03-28): overdue, 100 × 1/1
    check(office.kpi("BP1.1", as_of), numerator=1, denominator=1, value=100, status="breached")
    assert office.cases(as_of) == [case("BP1.1", "BS1", "overdue", "2017-03-23T00:00:00+08:00")]


def test_cases_list_states_and_order(office: Office) -> None:
    """`cases` lists unended due_soon/overdue cases ordered by due, then subject, then kpi."""
    # deliberately scrambled arrival order
    office.send("care_case.identified", "X1", "2017-02-14T10:00:00+08:00")  # due 03-11
    office.send("birth_subsidy.applied", "BS-far", "2017-03-10T08:00:00+08:00")  # due 03-18
    office.send("birth_subsidy.applied", "X1", "2017-03-03T09:00:00+08:00")  # due 03-11
    office.send("care_case.identified", "Jan", "2017-01-20T10:00:00+08:00")  # due 02-11
    office.send("birth_subsidy.applied", "BS-paid", "2017-03-01T09:00:00+08:00")  # due 03-09
    office.send("birth_subsidy.paid", "BS-paid", "2017-03-10T00:00:00+08:00")  # ended (late)
    office.send("care_case.identified", "A9", "2017-02-28T23:59:59+08:00")  # due 03-11
    office.send("birth_subsidy.applied", "B5", "2017-03-03T18:00:00+08:00")  # due 03-11
    office.send("care_case.identified", "C-done", "2017-02-01T10:00:00+08:00")  # due 03-11
    office.send("care_case.notified", "C-done", "2017-03-10T10:00:00+08:00")  # ended
    office.send("birth_subsidy.applied", "BS-late", "2017-03-01T09:00:00+08:00")  # due 03-09
    # as_of 03-10 12:00: due 03-09 → overdue; due 03-11 (last day Fri 03-10) → due_soon
    # (from Wed 03-08 00:00, the 2nd working day after it being 03-10); due 03-18 (last day
    # Fri 03-17) → not yet in the window (from Wed 03-15 00:00)
    assert office.cases("2017-03-10T12:00:00+08:00") == [
        case("CC1.1", "Jan", "overdue", "2017-02-11T00:00:00+08:00"),
        case("BP1.1", "BS-late", "overdue", "2017-03-09T00:00:00+08:00"),
        case("CC1.1", "A9", "due_soon", "2017-03-11T00:00:00+08:00"),
        case("BP1.1", "B5", "due_soon", "2017-03-11T00:00:00+08:00"),
        case("BP1.1", "X1", "due_soon", "2017-03-11T00:00:00+08:00"),
        case("CC1.1", "X1", "due_soon", "2017-03-11T00:00:00+08:00"),
    ]


def test_bp_december_application_due_in_january(office: Office) -> None:
    """A December application falls due in January, counts for 2017 and is listed in any year."""
    office.send("birth_subsidy.applied", "BS-DEC", "2017-12-28T10:00:00+08:00")
    due = "2018-01-05T00:00:00+08:00"  # 12-28 + 8 days = 01-05
    listed = [case("BP1.1", "BS-DEC", "overdue", due)]
    as_of = "2018-01-10T09:00:00+08:00"
    rep = office.report(as_of, year=2017)
    assert rep["year"] == 2017
    # the final 2017 figure: 100 × 1 overdue / 1 = 100
    check(rep["kpis"]["BP1.1"], numerator=1, denominator=1, value=100, status="breached", target=0)
    assert rep["cases"] == listed
    # year 2018 (default for this as_of): no 2018 application → no_data, but the case is listed
    rep = office.report(as_of)
    assert rep["year"] == 2018
    check(rep["kpis"]["BP1.1"], numerator=0, denominator=0, value=None, status="no_data")
    assert rep["cases"] == listed
    # 2018-01-03 00:00: the last day 01-04 is the 1st working day after → due_soon (from
    # 01-02 00:00, 01-01 being a day off), not yet overdue: 100 × 0/1
    early = "2018-01-03T00:00:00+08:00"
    check(office.kpi("BP1.1", early, year=2017), numerator=0, denominator=1, value=0, status="met")
    assert office.cases(early) == [case("BP1.1", "BS-DEC", "due_soon", due)]


def test_bp_december_application_paid_in_january_on_time(office: Office) -> None:
    """A December application paid on 01-04 23:59:59 counts as on time for the year before."""
    office.send("birth_subsidy.applied", "BS-DEC", "2017-12-28T10:00:00+08:00")
    office.send("birth_subsidy.paid", "BS-DEC", "2018-01-04T23:59:59+08:00")
    # 100 × 0/1 = 0
    check(
        office.kpi("BP1.1", "2018-01-10T09:00:00+08:00", year=2017),
        numerator=0,
        denominator=1,
        value=0,
        status="met",
    )


# ===================================================================== CC1.1

# (identified, one second before due, due, report year)
CC_DUE = [
    pytest.param(
        "2017-01-31T15:00:00+08:00",
        "2017-02-10T23:59:59+08:00",
        "2017-02-11T00:00:00+08:00",
        2017,
        id="jan-31",
    ),
    pytest.param(
        "2017-01-01T00:00:00+08:00",
        "2017-02-10T23:59:59+08:00",
        "2017-02-11T00:00:00+08:00",
        2017,
        id="jan-1-midnight",
    ),
    # 2016-12-31T16:30Z = 2017-01-01 00:30 local → January → due 02-11
    pytest.param(
        "2016-12-31T16:30:00Z",
        "2017-02-10T23:59:59+08:00",
        "2017-02-11T00:00:00+08:00",
        2017,
        id="utc-dec-31-is-local-jan",
    ),
    # 2017-01-31T16:00Z = 02-01 00:00 local → February → due 03-11
    pytest.param(
        "2017-01-31T16:00:00Z",
        "2017-03-10T23:59:59+08:00",
        "2017-03-11T00:00:00+08:00",
        2017,
        id="utc-jan-31-is-local-feb",
    ),
    pytest.param(
        "2017-02-28T23:59:59+08:00",
        "2017-03-10T23:59:59+08:00",
        "2017-03-11T00:00:00+08:00",
        2017,
        id="feb-28-last-second",
    ),
    # December → 11 January of the next year; the case belongs to 2017
    pytest.param(
        "2017-12-05T10:00:00+08:00",
        "2018-01-10T23:59:59+08:00",
        "2018-01-11T00:00:00+08:00",
        2017,
        id="december",
    ),
]


@pytest.mark.parametrize(("identified", "before_due", "due", "year"), CC_DUE)
def test_cc_open_case_due_instant(
    office: Office, identified: str, before_due: str, due: str, year: int
) -> None:
    """A care case is due 00:00 on the 11th of the next month; an open case counts once past due."""
    office.send("care_case.identified", "CC1", identified)
    # open before due: not counted → 0 / 0 → no_data; listed due_soon
    rep = office.report(before_due, year=year)
    check(rep["kpis"]["CC1.1"], numerator=0, denominator=0, value=None, status="no_data")
    assert rep["cases"] == [case("CC1.1", "CC1", "due_soon", due)]
    # open at due: in the denominator, not the numerator → 100 × 0/1 = 0, breached
    rep = office.report(due, year=year)
    check(rep["kpis"]["CC1.1"], numerator=0, denominator=1, value=0, status="breached")
    assert rep["cases"] == [case("CC1.1", "CC1", "overdue", due)]


CC_NOTIFIED = [
    # identified 2017-01-31T15:00 → due 2017-02-11T00:00
    pytest.param("2017-02-10T23:59:59+08:00", 1, 1, 100, "met", id="one-second-before-due"),
    pytest.param("2017-02-10T15:59:59Z", 1, 1, 100, "met", id="utc-one-second-before-due"),
    pytest.param("2017-01-31T15:00:00+08:00", 1, 1, 100, "met", id="same-instant-as-identified"),
    # at due: late, in the denominator only → 100 × 0/1
    pytest.param("2017-02-11T00:00:00+08:00", 0, 1, 0, "breached", id="at-due"),
    pytest.param("2017-02-10T16:00:00Z", 0, 1, 0, "breached", id="utc-at-due"),
    pytest.param("2017-03-01T10:00:00+08:00", 0, 1, 0, "breached", id="after-due"),
]


@pytest.mark.parametrize(("notified", "num", "den", "value", "status"), CC_NOTIFIED)
def test_cc_notified_on_time_or_late(
    office: Office, notified: str, num: int, den: int, value: float, status: str
) -> None:
    """Notified before due is on time; at or after due is late (denominator, not numerator)."""
    office.send("care_case.identified", "CC1", "2017-01-31T15:00:00+08:00")
    office.send("care_case.notified", "CC1", notified)
    check(
        office.kpi("CC1.1", JUNE_2017), numerator=num, denominator=den, value=value, status=status
    )
    assert office.cases(JUNE_2017) == []


def test_cc_mixed_cases(office: Office) -> None:
    """CC1.1 = on time / (notified + open past due); a notification after as_of leaves it open."""
    office.send("care_case.identified", "CC-A", "2017-01-05T10:00:00+08:00")  # due 02-11
    office.send("care_case.notified", "CC-A", "2017-01-20T10:00:00+08:00")  # on time
    office.send("care_case.identified", "CC-B", "2017-01-10T10:00:00+08:00")  # due 02-11
    office.send("care_case.notified", "CC-B", "2017-02-15T10:00:00+08:00")  # late
    office.send("care_case.identified", "CC-C", "2017-01-15T10:00:00+08:00")  # due 02-11, open
    office.send("care_case.identified", "CC-D", "2017-02-20T10:00:00+08:00")  # due 03-11, open
    office.send("care_case.identified", "CC-E", "2017-01-20T10:00:00+08:00")  # due 02-11
    office.send("care_case.notified", "CC-E", "2017-03-05T10:00:00+08:00")  # after as_of
    as_of = "2017-03-01T12:00:00+08:00"
    # numerator: A; denominator: A, B (notified) + C, E (open past due) = 4; D not due
    # → 100 × 1/4 = 25
    check(office.kpi("CC1.1", as_of), numerator=1, denominator=4, value=25, status="breached")
    # D's warning starts 03-08 00:00 (last day Fri 03-10), so only C and E are listed
    assert office.cases(as_of) == [
        case("CC1.1", "CC-C", "overdue", "2017-02-11T00:00:00+08:00"),
        case("CC1.1", "CC-E", "overdue", "2017-02-11T00:00:00+08:00"),
    ]


# ===================================================================== AP2.1


AP21_SINGLE = [
    pytest.param([], 1, 1, 100, "met", id="no-error"),  # 100 × 1/1
    pytest.param(["citizen"], 0, 0, None, "no_data", id="citizen-excluded"),  # (1−1−0)/(1−1) = 0/0
    pytest.param(["staff"], 0, 1, 0, "breached", id="staff-incorrect"),  # (1−0−1)/(1−0) = 0/1
    pytest.param(["staff", "citizen"], 0, 0, None, "no_data", id="staff-and-citizen-excluded"),
    pytest.param(["citizen", "staff"], 0, 0, None, "no_data", id="citizen-and-staff-excluded"),
    pytest.param(["staff", "staff"], 0, 1, 0, "breached", id="two-staff-errors-one-case"),
]


@pytest.mark.parametrize(("causes", "num", "den", "value", "status"), AP21_SINGLE)
def test_ap21_error_causes_on_one_case(
    office: Office, causes: list[str], num: int, den: int, value: float | None, status: str
) -> None:
    """A citizen-caused error excludes the case; otherwise a staff error makes it incorrect."""
    office.send("registration.completed", "R1", "2017-02-01T10:00:00+08:00")
    for day, cause in enumerate(causes, start=10):
        office.send("registration.error_found", "R1", f"2017-03-{day}T10:00:00+08:00", cause=cause)
    check(
        office.kpi("AP2.1", JUNE_2017),
        numerator=num,
        denominator=den,
        value=value,
        status=status,
        target=100,
    )


def test_ap21_mixed_cases(office: Office) -> None:
    """AP2.1 = (N − Ec − Es) / (N − Ec) over clean, citizen, staff and doubly-flagged cases."""
    for n in range(1, 7):
        office.send("registration.completed", f"R{n}", f"2017-02-0{n}T10:00:00+08:00")
    office.send("registration.error_found", "R2", "2017-03-01T10:00:00+08:00", cause="citizen")
    office.send("registration.error_found", "R3", "2017-03-01T10:00:00+08:00", cause="staff")
    office.send("registration.error_found", "R4", "2017-03-01T10:00:00+08:00", cause="staff")
    office.send("registration.error_found", "R4", "2017-03-02T10:00:00+08:00", cause="citizen")
    office.send("registration.error_found", "R5", "2017-03-01T10:00:00+08:00", cause="staff")
    office.send("registration.error_found", "R5", "2017-03-02T10:00:00+08:00", cause="staff")
    # N = 6, Ec = 2 (R2, R4), Es = 2 (R3, R5) → 100 × (6−2−2)/(6−2) = 100 × 2/4 = 50
    check(office.kpi("AP2.1", JUNE_2017), numerator=2, denominator=4, value=50, status="breached")


def test_ap21_floor_any_staff_error_breaches(office: Office) -> None:
    """Target max(100, mean(99.98, 99.97, 99.97)) = 100: one staff error in five breaches."""
    for n in range(1, 6):
        office.send("registration.completed", f"R{n}", f"2017-02-0{n}T10:00:00+08:00")
    office.send("registration.error_found", "R1", "2017-03-01T10:00:00+08:00", cause="staff")
    # 100 × (5−0−1)/5 = 80 < 100 → breached (not at_risk)
    check(
        office.kpi("AP2.1", JUNE_2017),
        numerator=4,
        denominator=5,
        value=80,
        target=100,
        status="breached",
    )


def test_ap21_error_counts_for_the_year_of_the_case(office: Office) -> None:
    """An error found in 2017 on a 2016 registration counts for 2016, not 2017."""
    office.send("registration.completed", "R0", "2016-12-20T10:00:00+08:00")
    office.send("registration.error_found", "R0", "2017-02-01T10:00:00+08:00", cause="staff")
    office.send("registration.completed", "R1", "2017-01-10T10:00:00+08:00")
    # 2017: R1 only, clean → 100 × 1/1
    check(office.kpi("AP2.1", JUNE_2017), numerator=1, denominator=1, value=100, status="met")
    # 2016: R0 incorrect → 100 × 0/1 = 0; no stated target for 2016 → no_target
    check(
        office.kpi("AP2.1", JUNE_2017, year=2016),
        numerator=0,
        denominator=1,
        value=0,
        status="no_target",
        target=None,
    )


def test_ap21_unmatched_error_not_in_kpi(office: Office) -> None:
    """An error naming no registration is counted in `unmatched` and left out of AP2.1."""
    office.send("registration.completed", "R1", "2017-02-01T10:00:00+08:00")
    office.send("registration.error_found", "R-ghost", "2017-03-01T10:00:00+08:00", cause="staff")
    rep = office.report(JUNE_2017)
    assert rep["unmatched"] == 1
    # R1 only → 100 × 1/1
    check(rep["kpis"]["AP2.1"], numerator=1, denominator=1, value=100, status="met")


# ===================================================================== AP1.1


def test_ap11_certificates_with_errors(office: Office) -> None:
    """AP1.1 = (issued − issued with an error) / issued; two errors on one certificate: one."""
    office.send("seal_certificate.issued", "C1", "2017-02-01T10:00:00+08:00")
    office.send("seal_certificate.issued", "C2", "2017-02-02T10:00:00+08:00")
    office.send("seal_certificate.issued", "C3", "2017-02-03T10:00:00+08:00")
    office.send("seal_certificate.error_found", "C1", "2017-03-01T10:00:00+08:00")
    office.send("seal_certificate.error_found", "C3", "2017-03-01T10:00:00+08:00")
    office.send("seal_certificate.error_found", "C3", "2017-03-02T10:00:00+08:00")
    # 100 × (3 − 2)/3 = 33.333…, target 100 → breached
    check(
        office.kpi("AP1.1", JUNE_2017),
        numerator=1,
        denominator=3,
        value=33.3333333,
        target=100,
        status="breached",
    )
    # before any error (as_of 02-15): 100 × 3/3
    check(
        office.kpi("AP1.1", "2017-02-15T00:00:00+08:00"),
        numerator=3,
        denominator=3,
        value=100,
        status="met",
    )


def test_ap11_error_counts_for_year_certificate_was_issued(office: Office) -> None:
    """An error found in 2017 on a certificate issued in 2016 counts for 2016."""
    office.send("seal_certificate.issued", "C0", "2016-12-30T10:00:00+08:00")
    office.send("seal_certificate.error_found", "C0", "2017-01-05T10:00:00+08:00")
    office.send("seal_certificate.issued", "C1", "2017-01-06T10:00:00+08:00")
    # 2017: C1 → 100 × 1/1
    check(office.kpi("AP1.1", JUNE_2017), numerator=1, denominator=1, value=100, status="met")
    # 2016: C0 with an error → 100 × 0/1 = 0, no 2016 target
    check(
        office.kpi("AP1.1", JUNE_2017, year=2016),
        numerator=0,
        denominator=1,
        value=0,
        status="no_target",
    )


# ===================================================================== CP1.1

LATER = "2017-07-01T00:00:00+08:00"  # after JUNE_2017
CP_SCORES = [
    # (channel, time) records of one registration completed 2017-02-01; value = 100 × score / 1
    pytest.param([], 0.0, "at_risk", id="none-0"),
    pytest.param([("declined", None)], 1.0, "met", id="declined-1.0"),
    pytest.param(
        [("declined", None), ("hris", None), ("non_hris", None)],
        1.0,
        "met",
        id="declined-with-other-channels-1.0",
    ),
    pytest.param([("hris", None)], 0.65, "at_risk", id="hris-0.65"),
    pytest.param([("non_hris", None)], 0.30, "at_risk", id="non_hris-0.30"),
    pytest.param([("office", None)], 0.05, "at_risk", id="office-0.05"),
    pytest.param([("hris", None), ("non_hris", None)], 0.95, "met", id="hris+non_hris-0.95"),
    pytest.param([("hris", None), ("office", None)], 0.70, "at_risk", id="hris+office-0.70"),
    pytest.param(
        [("hris", None), ("non_hris", None), ("office", None)], 1.0, "met", id="all-three-1.0"
    ),
    pytest.param([("hris", None), ("hris", None)], 0.65, "at_risk", id="hris-twice-0.65"),
    pytest.param(
        [("non_hris", None), ("non_hris", None), ("non_hris", None), ("office", None)],
        0.35,
        "at_risk",
        id="non_hris-thrice+office-0.35",
    ),
    pytest.param(
        [("hris", None), ("non_hris", LATER)], 0.65, "at_risk", id="record-after-as_of-ignored"
    ),
    pytest.param(
        [("hris", None), ("declined", LATER)], 0.65, "at_risk", id="declined-after-as_of-ignored"
    ),
    pytest.param(
        [("hris", "2017-01-31T10:00:00+08:00")],
        0.65,
        "at_risk",
        id="record-timed-before-registration",
    ),
]


@pytest.mark.parametrize(("records", "score", "status"), CP_SCORES)
def test_cp11_case_score(
    office: Office, records: list[tuple[str, str | None]], score: float, status: str
) -> None:
    """A case scores 1.0 if declined, else 0.65/0.30/0.05 per channel, each channel once."""
    office.send("registration.completed", "R1", "2017-02-01T10:00:00+08:00")
    for n, (channel, time) in enumerate(records):
        office.send(
            "cross_notice.recorded",
            "R1",
            time or f"2017-02-{10 + n}T10:00:00+08:00",
            channel=channel,
        )
    # target = max(80, mean(6.79, 9.02, 52.71) = 22.84) = 80; below 80 → at_risk (target is not 100)
    check(
        office.kpi("CP1.1", JUNE_2017),
        numerator=score,
        denominator=1,
        value=100 * score,
        target=80,
        status=status,
    )


def test_cp11_sum_of_scores_over_registrations(office: Office) -> None:
    """CP1.1 = 100 × Σ scores / registrations; 65 % is at_risk against a target of 80."""
    for n in range(1, 5):
        office.send("registration.completed", f"R{n}", f"2017-02-0{n}T10:00:00+08:00")
    office.send("cross_notice.recorded", "R1", "2017-03-01T10:00:00+08:00", channel="hris")
    office.send("cross_notice.recorded", "R2", "2017-03-01T10:00:00+08:00", channel="hris")
    office.send("cross_notice.recorded", "R2", "2017-03-02T10:00:00+08:00", channel="non_hris")
    office.send("cross_notice.recorded", "R3", "2017-03-01T10:00:00+08:00", channel="declined")
    # 0.65 + 0.95 + 1.0 + 0 = 2.6; 100 × 2.6/4 = 65
    check(office.kpi("CP1.1", JUNE_2017), numerator=2.6, denominator=4, value=65, status="at_risk")


def test_cp11_record_counts_in_period_of_registration(office: Office) -> None:
    """A 2017 record on a 2016 registration counts for 2016."""
    office.send("registration.completed", "R0", "2016-12-30T10:00:00+08:00")
    office.send("cross_notice.recorded", "R0", "2017-01-03T10:00:00+08:00", channel="hris")
    office.send("registration.completed", "R1", "2017-01-05T10:00:00+08:00")
    # 2017: R1 scores 0 → 100 × 0/1
    check(office.kpi("CP1.1", JUNE_2017), numerator=0, denominator=1, value=0, status="at_risk")
    # 2016: R0 scores 0.65 → 65, no 2016 target
    check(
        office.kpi("CP1.1", JUNE_2017, year=2016),
        numerator=0.65,
        denominator=1,
        value=65,
        status="no_target",
    )


# ===================================================================== AC1.2

AC12 = [
    # (mode, scanned) retrievals → (online among scanned, scanned retrievals)
    pytest.param(
        [("online", True)] * 3 + [("paper", True)] + [("paper", False)] * 2 + [("online", False)],
        3,
        4,
        75,
        "breached",
        id="mix-3-of-4",
    ),  # 100 × 3/4 = 75
    pytest.param(
        [("paper", False), ("paper", False)], 0, 0, None, "no_data", id="only-unscanned-paper"
    ),
    pytest.param([("online", True), ("online", True)], 2, 2, 100, "met", id="all-online"),
    pytest.param([("paper", True)], 0, 1, 0, "breached", id="paper-retrieval-of-scanned-is-miss"),
    pytest.param([("online", False)], 0, 0, None, "no_data", id="online-unscanned-not-counted"),
]


@pytest.mark.parametrize(("retrievals", "num", "den", "value", "status"), AC12)
def test_ac12_only_scanned_retrievals_count(
    office: Office,
    retrievals: list[tuple[str, bool]],
    num: int,
    den: int,
    value: float | None,
    status: str,
) -> None:
    """Only `scanned: true` retrievals count, online ones in the numerator; below 100 breached."""
    for n, (mode, scanned) in enumerate(retrievals):
        office.send(
            "archive.retrieved", f"Q{n}", "2017-03-01T10:00:00+08:00", mode=mode, scanned=scanned
        )
    check(
        office.kpi("AC1.2", JUNE_2017), numerator=num, denominator=den, value=value, status=status
    )


# ===================================================================== AC1.1


def test_ac11_cumulative_counts_scans_before_the_year(office: Office) -> None:
    """AC1.1 counts scans of earlier years: 40,000 (2016) + 20,000 (2017) forms = 30 %."""
    office.send("archive.scanned", "B2016", "2016-06-01T10:00:00+08:00", forms=40000)
    office.send("archive.scanned", "B2017", "2017-03-01T10:00:00+08:00", forms=20000)
    # 100 × 60000 / 200000 = 30; start = 100 × 40000/200000 = 20;
    # elapsed at 06-30 23:59:59 ≈ 0.49589 → pace 20 + 30 × 0.49589 ≈ 34.877, minus 30/12 = 2.5
    # → 32.377 > 30 → at_risk
    check(
        office.kpi("AC1.1", JUNE_2017),
        value=30,
        numerator=60000,
        denominator=200000,
        target=50,
        status="at_risk",
    )


AC11_PACE = [
    # start = 100 × 40000/200000 = 20 (a 2016 scan); target 50; tolerance (50 − 20)/12 = 2.5.
    # Jan 1 00:00: elapsed 0 → pace 20, line 17.5; value 20 → on_track
    pytest.param(0, "2017-01-01T00:00:00+08:00", 20, "on_track", id="jan-1-nothing-new"),
    # elapsed 0.5 → pace 20 + 30 × 0.5 = 35, line 32.5. value = 100 × (40000 + x)/200000
    pytest.param(25000, MID_2017, 32.5, "on_track", id="mid-year-on-the-line"),  # 65000 → 32.5
    pytest.param(25001, MID_2017, 32.5005, "on_track", id="mid-year-just-above"),  # 65001 → 32.5005
    pytest.param(24999, MID_2017, 32.4995, "at_risk", id="mid-year-just-below"),  # 64999 → 32.4995
    # one second before complete: pace ≈ 50, line ≈ 47.5; 99999 forms → 49.9995 → on_track
    pytest.param(
        59999, "2017-12-31T23:59:58+08:00", 49.9995, "on_track", id="last-second-not-complete"
    ),
    # complete: 49.9995 < 50 → breached; 100000 → 50 → met
    pytest.param(59999, END_2017, 49.9995, "breached", id="complete-missed"),
    pytest.param(60000, END_2017, 50, "met", id="complete-reached"),
    pytest.param(60000, "2017-03-01T00:00:00+08:00", 50, "met", id="reached-early"),
]


@pytest.mark.parametrize(("forms_2017", "as_of", "value", "status"), AC11_PACE)
def test_ac11_progress_status_against_pace_line(
    office: Office, forms_2017: int, as_of: str, value: float, status: str
) -> None:
    """AC1.1 status follows start + (target − start) × elapsed, with a month's tolerance."""
    office.send("archive.scanned", "B2016", "2016-06-01T10:00:00+08:00", forms=40000)
    if forms_2017:
        office.send("archive.scanned", "B2017", "2017-01-01T00:00:00+08:00", forms=forms_2017)
    check(office.kpi("AC1.1", as_of), value=value, status=status)


AC11_START = [
    # 40000 forms → value 20 at elapsed 0.25 (2017-04-02T06:00: 91.25 of 365 days).
    # In the start (start 20): pace 20 + 30 × 0.25 = 27.5, line 25 → 20 < 25 → at_risk.
    pytest.param("2016-12-31T23:59:59+08:00", "at_risk", id="last-second-of-2016-is-start"),
    # Not in the start (start 0): pace 50 × 0.25 = 12.5, line 12.5 − 50/12 = 8.33 → on_track.
    pytest.param("2017-01-01T00:00:00+08:00", "on_track", id="first-second-of-2017-not-start"),
    pytest.param("2016-12-31T16:00:00Z", "on_track", id="utc-2016-is-local-2017-not-start"),
]


@pytest.mark.parametrize(("scanned_at", "status"), AC11_START)
def test_ac11_pace_start_is_value_before_the_year(
    office: Office, scanned_at: str, status: str
) -> None:
    """The pace line starts at the cumulative value before the year's first local instant."""
    office.send("archive.scanned", "B1", scanned_at, forms=40000)
    check(office.kpi("AC1.1", "2017-04-02T06:00:00+08:00"), value=20, status=status)


def test_ac11_year_report_stops_at_end_of_year(office: Office) -> None:
    """A scan after year Y's end is not counted for Y even when as_of is later."""
    office.send("archive.scanned", "B2016", "2016-06-01T10:00:00+08:00", forms=40000)
    office.send("archive.scanned", "B2017", "2017-06-01T10:00:00+08:00", forms=60000)
    office.send("archive.scanned", "B2018", "2018-01-05T10:00:00+08:00", forms=10000)
    as_of = "2018-01-10T00:00:00+08:00"
    # 2017: 100 × 100000/200000 = 50 → met
    check(
        office.kpi("AC1.1", as_of, year=2017), value=50, numerator=100000, status="met", target=50
    )
    # 2018: 100 × 110000/200000 = 55; start 50, target 100, elapsed 9/365 → pace 51.23,
    # line 51.23 − 50/12 ≈ 47.07 → on_track
    check(office.kpi("AC1.1", as_of), value=55, numerator=110000, status="on_track", target=100)


def test_ac11_repeated_batch_counts_once_as_earliest(office: Office) -> None:
    """A batch scanned twice counts once, as its earliest (first to arrive at equal times)."""
    office.send("archive.scanned", "B1", "2017-03-01T10:00:00+08:00", forms=30000)  # later by time
    office.send("archive.scanned", "B1", "2017-02-01T10:00:00+08:00", forms=10000)  # earliest
    office.send("archive.scanned", "B2", "2017-02-01T10:00:00+08:00", forms=2000)  # first to arrive
    office.send("archive.scanned", "B2", "2017-02-01T10:00:00+08:00", forms=8000)  # same time
    # 100 × (10000 + 2000)/200000 = 6
    check(office.kpi("AC1.1", JUNE_2017), value=6, numerator=12000, denominator=200000)


# ===================================================================== BC1.1, TF1.1, TL1.1


def test_bc11_counts_distinct_visits(office: Office) -> None:
    """BC1.1 counts distinct visit subjects of the year; numerator and denominator are null."""
    office.send("immigrant_visit.reported", "V1", "2017-02-01T10:00:00+08:00")
    office.send("immigrant_visit.reported", "V1", "2017-03-01T10:00:00+08:00", method="phone")
    office.send("immigrant_visit.reported", "V2", "2017-02-01T10:00:00+08:00", method="other")
    office.send("immigrant_visit.reported", "V0", "2016-12-31T23:59:59+08:00")  # 2016
    # V1, V2 = 2; target max(379, mean(27, 379) = 203) = 379
    check(office.kpi("BC1.1", JUNE_2017), value=2, target=379, numerator=None, denominator=None)


BC11 = [
    # target 379, start 0, tolerance 379/12 = 31.583
    pytest.param(0, "2017-01-01T00:00:00+08:00", "on_track", id="jan-1-nothing"),
    # elapsed 0.5: pace 189.5, line 189.5 − 31.583 = 157.917
    pytest.param(158, MID_2017, "on_track", id="mid-year-just-above"),
    pytest.param(157, MID_2017, "at_risk", id="mid-year-just-below"),
    pytest.param(378, "2017-12-31T23:59:58+08:00", "on_track", id="last-second-not-complete"),
    pytest.param(378, END_2017, "breached", id="complete-missed"),
    pytest.param(379, END_2017, "met", id="complete-reached"),
    pytest.param(379, "2017-03-01T00:00:00+08:00", "met", id="reached-early"),
]


@pytest.mark.parametrize(("visits", "as_of", "status"), BC11)
def test_bc11_progress_status(office: Office, visits: int, as_of: str, status: str) -> None:
    """BC1.1 is a count against 379 with the pace line and a month's tolerance."""
    for n in range(visits):
        office.send("immigrant_visit.reported", f"V{n:03d}", "2017-01-01T00:00:00+08:00")
    check(office.kpi("BC1.1", as_of), value=visits, status=status, target=379)


def test_tf11_sums_pages_of_online_surveys_only(office: Office) -> None:
    """TF1.1 sums the pages of online surveys; a paper survey saves nothing."""
    office.send("survey.completed", "S1", "2017-02-01T10:00:00+08:00", mode="online", pages=10)
    office.send("survey.completed", "S2", "2017-02-02T10:00:00+08:00", mode="online", pages=5)
    office.send("survey.completed", "S3", "2017-02-03T10:00:00+08:00", mode="paper", pages=100)
    office.send("survey.completed", "S4", "2017-02-04T10:00:00+08:00", mode="online", pages=0)
    # 10 + 5 + 0 = 15 (S3 is paper)
    check(office.kpi("TF1.1", JUNE_2017), value=15, target=1250, numerator=None, denominator=None)


TF11 = [
    # 2017 target 1250, tolerance 1250/12 = 104.167
    pytest.param(0, "2017-01-01T00:00:00+08:00", 2017, "on_track", id="jan-1-nothing"),
    # elapsed 0.5: pace 625, line 520.833
    pytest.param(521, MID_2017, 2017, "on_track", id="mid-year-just-above"),
    pytest.param(520, MID_2017, 2017, "at_risk", id="mid-year-just-below"),
    pytest.param(1249, END_2017, 2017, "breached", id="complete-missed"),
    pytest.param(1250, END_2017, 2017, "met", id="complete-reached"),
    # 2018 target 1300: 1250 at 2018's end is a miss
    pytest.param(1250, "2018-12-31T23:59:59+08:00", 2018, "breached", id="2018-target-1300-missed"),
    pytest.param(1300, "2018-12-31T23:59:59+08:00", 2018, "met", id="2018-target-1300-reached"),
]


@pytest.mark.parametrize(("pages", "as_of", "year", "status"), TF11)
def test_tf11_progress_status(
    office: Office, pages: int, as_of: str, year: int, status: str
) -> None:
    """TF1.1 pages against the year's target with the pace line and a month's tolerance."""
    if pages:
        office.send(
            "survey.completed", "S1", f"{year}-01-01T00:00:00+08:00", mode="online", pages=pages
        )
    check(office.kpi("TF1.1", as_of), value=pages, status=status)


def test_tl11_distinct_employees_over_headcount(office: Office) -> None:
    """TL1.1 = 100 × distinct employees / 40; an employee twice counts once; 2016 does not."""
    office.send(
        "training.attended", "T1", "2017-02-01T10:00:00+08:00", employee="E01", course="資安"
    )
    office.send(
        "training.attended", "T2", "2017-03-01T10:00:00+08:00", employee="E01", course="禮儀"
    )
    office.send(
        "training.attended", "T3", "2017-03-01T10:00:00+08:00", employee="E02", course="禮儀"
    )
    office.send(
        "training.attended", "T0", "2016-12-31T10:00:00+08:00", employee="E03", course="禮儀"
    )
    # {E01, E02} = 2 → 100 × 2/40 = 5
    check(office.kpi("TL1.1", JUNE_2017), value=5, numerator=2, denominator=40, target=100)


TL11 = [
    # target 100, tolerance 100/12 = 8.333; elapsed 0.5 → pace 50, line 41.667
    pytest.param(17, MID_2017, 42.5, "on_track", id="mid-year-17-of-40"),  # 100 × 17/40 = 42.5
    pytest.param(16, MID_2017, 40, "at_risk", id="mid-year-16-of-40"),  # 100 × 16/40 = 40
    pytest.param(39, END_2017, 97.5, "breached", id="complete-39-of-40"),  # 100 × 39/40 = 97.5
    pytest.param(40, END_2017, 100, "met", id="complete-40-of-40"),
    pytest.param(40, "2017-04-01T00:00:00+08:00", 100, "met", id="40-distinct-early"),
]


@pytest.mark.parametrize(("employees", "as_of", "value", "status"), TL11)
def test_tl11_progress_status(
    office: Office, employees: int, as_of: str, value: float, status: str
) -> None:
    """TL1.1 distinct employees trained against 100 % with the pace line."""
    for n in range(employees):
        office.send(
            "training.attended", f"T{n:02d}", "2017-01-01T00:00:00+08:00", employee=f"E{n:02d}"
        )
    check(
        office.kpi("TL1.1", as_of), value=value, numerator=employees, denominator=40, status=status
    )


# ===================================================================== no_data, no_target, year


def test_empty_scorecard_rates_no_data_progress_at_risk(office: Office) -> None:
    """With no events, rate KPIs are no_data (value null), progress KPIs at 0 at_risk mid-year."""
    kpis = office.report(JUNE_2017)["kpis"]
    for kpi in RATE_KPIS:
        check(kpis[kpi], value=None, denominator=0, status="no_data")
    # progress: value 0 < pace (≈0.496 × target) − target/12 → at_risk
    for kpi in PROGRESS_KPIS:
        check(kpis[kpi], value=0, status="at_risk")


@pytest.mark.parametrize(
    ("as_of", "year"),
    [
        pytest.param(JUNE_2017, 2016, id="2016-asked-in-2017"),
        pytest.param("2020-03-01T00:00:00+08:00", None, id="2020-default"),
        pytest.param("2020-03-01T00:00:00+08:00", 2020, id="2020-explicit"),
        pytest.param("2020-03-01T00:00:00+08:00", 2016, id="2016-asked-in-2020"),
    ],
)
def test_years_without_target_are_no_target(office: Office, as_of: str, year: int | None) -> None:
    """A year without a stated target gives every KPI the status no_target, data or not."""
    office.send("registration.completed", "R1", "2016-05-01T10:00:00+08:00")
    office.send("registration.completed", "R2", "2020-01-05T10:00:00+08:00")
    office.send("birth_subsidy.applied", "BS1", "2016-05-01T10:00:00+08:00")
    rep = office.report(as_of, year)
    assert rep["year"] == (year or 2020)
    for kpi in ALL_KPIS:
        check(rep["kpis"][kpi], status="no_target", target=None)


def test_year_after_as_of_is_an_error(office: Office) -> None:
    """Asking for a year after the year of as_of raises UsageError."""
    with pytest.raises(UsageError):
        office.card.report(at(JUNE_2017), year=2018)
    # the local year decides: 2017-12-31T16:00Z is 2018-01-01 local, so 2018 may be asked for
    assert office.card.report(at("2017-12-31T16:00:00Z"), year=2018).as_dict()["year"] == 2018
    with pytest.raises(UsageError):
        office.card.report(at("2017-12-31T15:59:59Z"), year=2018)


# ===================================================================== period boundaries

PERIODS = [
    pytest.param("2016-12-31T23:59:59+08:00", 2016, id="2016-last-second"),
    pytest.param("2017-01-01T00:00:00+08:00", 2017, id="2017-first-second"),
    pytest.param("2017-12-31T23:59:59+08:00", 2017, id="2017-last-second"),
    pytest.param("2017-12-31T15:59:59Z", 2017, id="utc-2017-last-second"),
    pytest.param("2018-01-01T00:00:00+08:00", 2018, id="2018-first-second"),
    pytest.param("2017-12-31T16:00:00Z", 2018, id="utc-is-2018-local"),
]


@pytest.mark.parametrize(("completed", "year"), PERIODS)
def test_registration_counts_for_its_local_year(office: Office, completed: str, year: int) -> None:
    """A period event counts for the local calendar year of its time."""
    office.send("registration.completed", "R1", completed)
    as_of = "2018-06-30T12:00:00+08:00"
    for y in (2016, 2017, 2018):
        expected = 1 if y == year else 0
        kpis = office.report(as_of, year=y)["kpis"]
        check(kpis["AP2.1"], denominator=expected)
        check(kpis["CP1.1"], denominator=expected)


def test_events_after_as_of_are_ignored(office: Office) -> None:
    """A period event counts only once time <= as_of (inclusive)."""
    office.send("registration.completed", "R1", "2017-06-30T12:00:00+08:00")
    check(
        office.kpi("AP2.1", "2017-06-30T11:59:59+08:00"),
        denominator=0,
        value=None,
        status="no_data",
    )
    check(
        office.kpi("AP2.1", "2017-06-30T12:00:00+08:00"),
        numerator=1,
        denominator=1,
        value=100,
        status="met",
    )


def test_follow_up_counts_whenever_time_le_as_of(office: Office) -> None:
    """A follow-up in the next year counts for its case once time <= as_of, not before."""
    office.send("registration.completed", "R1", "2017-12-20T10:00:00+08:00")
    office.send("registration.error_found", "R1", "2018-02-01T10:00:00+08:00", cause="staff")
    # before the error: 100 × 1/1
    check(
        office.kpi("AP2.1", "2018-01-31T23:59:59+08:00", year=2017),
        numerator=1,
        denominator=1,
        value=100,
        status="met",
    )
    # from the error's instant: 100 × 0/1
    check(
        office.kpi("AP2.1", "2018-02-01T10:00:00+08:00", year=2017),
        numerator=0,
        denominator=1,
        value=0,
        status="breached",
    )


# ===================================================================== unmatched

# (follow-up type, its data, its opening type, an opening of another type)
FOLLOW_UPS = [
    pytest.param(
        "registration.error_found",
        {"cause": "staff"},
        "registration.completed",
        "seal_certificate.issued",
        id="error_found",
    ),
    pytest.param(
        "cross_notice.recorded",
        {"channel": "hris"},
        "registration.completed",
        "care_case.identified",
        id="cross_notice",
    ),
    pytest.param(
        "seal_certificate.error_found",
        {},
        "seal_certificate.issued",
        "registration.completed",
        id="seal_error",
    ),
    pytest.param(
        "birth_subsidy.paid", {}, "birth_subsidy.applied", "registration.completed", id="paid"
    ),
    pytest.param(
        "birth_subsidy.rejected",
        {"reason": "x"},
        "birth_subsidy.applied",
        "care_case.identified",
        id="rejected",
    ),
    pytest.param(
        "care_case.notified", {}, "care_case.identified", "birth_subsidy.applied", id="notified"
    ),
]


@pytest.mark.parametrize(("follow_up", "data", "opening", "other"), FOLLOW_UPS)
def test_unmatched_follow_up_without_its_opening(
    office: Office, follow_up: str, data: dict[str, Any], opening: str, other: str
) -> None:
    """A follow-up with time <= as_of and no opening of its own type is unmatched."""
    office.send(other, "S1", "2017-02-01T10:00:00+08:00")  # same subject, wrong type
    office.send(follow_up, "S1", "2017-03-01T10:00:00+08:00", **data)
    assert office.report("2017-02-28T23:59:59+08:00")["unmatched"] == 0  # follow-up after as_of
    assert office.report("2017-03-01T10:00:00+08:00")["unmatched"] == 1


@pytest.mark.parametrize(("follow_up", "data", "opening", "other"), FOLLOW_UPS)
def test_unmatched_until_opening_time(
    office: Office, follow_up: str, data: dict[str, Any], opening: str, other: str
) -> None:
    """A follow-up whose opening is after as_of is unmatched; matched from the opening's time."""
    office.send(follow_up, "S1", "2017-03-01T10:00:00+08:00", **data)
    assert office.report(JUNE_2017)["unmatched"] == 1  # held, no opening yet
    office.send(opening, "S1", "2017-03-10T10:00:00+08:00")
    assert office.report("2017-03-05T00:00:00+08:00")["unmatched"] == 1  # opening after as_of
    assert office.report("2017-03-10T09:59:59+08:00")["unmatched"] == 1
    assert office.report("2017-03-10T10:00:00+08:00")["unmatched"] == 0


def test_unmatched_counts_each_follow_up_event(office: Office) -> None:
    """`unmatched` counts follow-up events, not cases."""
    office.send("registration.error_found", "R-ghost", "2017-03-01T10:00:00+08:00", cause="staff")
    office.send("registration.error_found", "R-ghost", "2017-03-02T10:00:00+08:00", cause="citizen")
    office.send("cross_notice.recorded", "R-ghost", "2017-03-03T10:00:00+08:00", channel="hris")
    # 3 follow-up events with no registration.completed
    assert office.report(JUNE_2017)["unmatched"] == 3


def test_held_payment_matched_when_application_arrives(office: Office) -> None:
    """A payment held for its application is applied to the case once the application arrives."""
    office.send("birth_subsidy.paid", "BS1", "2017-03-20T10:00:00+08:00")
    rep = office.report(JUNE_2017)
    assert rep["unmatched"] == 1
    check(rep["kpis"]["BP1.1"], denominator=0, value=None, status="no_data")
    office.send("birth_subsidy.applied", "BS1", "2017-03-15T10:00:00+08:00")
    rep = office.report(JUNE_2017)
    assert rep["unmatched"] == 0
    # paid 03-20 < due 03-23 → 100 × 0/1
    check(rep["kpis"]["BP1.1"], numerator=0, denominator=1, value=0, status="met")
    assert rep["cases"] == []


# ===================================================================== idempotency and rejection


def test_same_event_twice_is_duplicate_and_report_unchanged(office: Office) -> None:
    """The same event sent twice: the second is a duplicate and the report does not change."""
    body = event("registration.completed", "R1", "2017-02-01T10:00:00+08:00")
    assert office.ingest(body) == "accepted"
    before = office.report(JUNE_2017)
    assert office.ingest(dict(body)) == "duplicate"
    assert office.report(JUNE_2017) == before
    check(before["kpis"]["AP2.1"], numerator=1, denominator=1)
    assert before["rejected"] == 0


def test_same_id_different_content_is_rejected(office: Office) -> None:
    """Same (source, id) with other content is rejected as a conflict; the first one stands."""
    office.send("registration.completed", "R1", "2017-02-01T10:00:00+08:00")
    first = event(
        "registration.error_found", "R1", "2017-03-01T10:00:00+08:00", id="err-1", cause="staff"
    )
    second = event(
        "registration.error_found", "R1", "2017-03-01T10:00:00+08:00", id="err-1", cause="citizen"
    )
    assert office.ingest(first) == "accepted"
    assert office.ingest(second) == "rejected"
    rep = office.report(JUNE_2017)
    assert rep["rejected"] == 1
    # the staff error stands: 100 × 0/1 (the citizen one would give 0/0)
    check(rep["kpis"]["AP2.1"], numerator=0, denominator=1, value=0, status="breached")


def test_same_id_other_source_is_another_event(office: Office) -> None:
    """An id is unique per source: the same id from another source is a different event."""
    office.send("registration.completed", "R1", "2017-02-01T10:00:00+08:00", id="dup-id")
    office.send(
        "registration.completed",
        "R2",
        "2017-02-01T10:00:00+08:00",
        id="dup-id",
        source="/taipei/datong/other",
    )
    rep = office.report(JUNE_2017)
    check(rep["kpis"]["AP2.1"], numerator=2, denominator=2)
    assert rep["rejected"] == 0


@pytest.mark.parametrize(
    ("office_code", "status"),
    [
        pytest.param("wanhua", "rejected", id="another-office"),
        pytest.param("datong", "accepted", id="own-office"),
        pytest.param(None, "accepted", id="absent-means-own-office"),
    ],
)
def test_event_for_another_office_rejected(
    office: Office, office_code: str | None, status: str
) -> None:
    """An event for another office than the rule set's is rejected and counted in `rejected`."""
    body = event("registration.completed", "R1", "2017-02-01T10:00:00+08:00", office=office_code)
    assert office.ingest(body) == status
    rep = office.report(JUNE_2017)
    rejected = status == "rejected"
    assert rep["rejected"] == (1 if rejected else 0)
    check(rep["kpis"]["AP2.1"], denominator=0 if rejected else 1)


def test_bad_event_rejected_and_later_events_still_count(office: Office) -> None:
    """A naive time is rejected (counted), and the events after it are still applied."""
    bad = event("registration.completed", "R0", "2017-02-01T10:00:00")
    assert office.ingest(bad) == "rejected"
    office.send("registration.completed", "R1", "2017-02-01T10:00:00+08:00")
    rep = office.report(JUNE_2017)
    assert rep["rejected"] == 1
    check(rep["kpis"]["AP2.1"], numerator=1, denominator=1)


def test_ingest_json_line_bytes(office: Office) -> None:
    """A JSON line given as bytes is ingested like the object; resent, it is a duplicate."""
    line = json.dumps(event("birth_subsidy.applied", "BS1", "2017-03-15T10:00:00+08:00")).encode()
    assert office.ingest(line) == "accepted"
    assert office.ingest(line) == "duplicate"
    check(office.kpi("BP1.1", "2017-03-23T00:00:00+08:00"), numerator=1, denominator=1)
