"""The alert lifecycle at mail instants (spec/notifications.md, "Alerts")."""

from __future__ import annotations

import pytest

from bsc_rules.alerts.lifecycle import (
    AlertRecord,
    Ending,
    Mention,
    Observation,
    Policy,
    acknowledge,
    decide,
)
from bsc_rules.calendar import US_PER_DAY

DAY = US_PER_DAY
POLICY = Policy()
CASE = "case:BP1.1:BS1060301001"
KPI = "kpi:2017:CP1.1"


def mornings(
    key: str,
    seen: list[Observation | None],
    *,
    escalate_from: int | None = None,
    ending: Ending = "closed",
    rec: AlertRecord | None = None,
) -> list[Mention | None]:
    """Decide ``key`` at one mail instant per day; ``seen[i]`` is what day ``i`` shows."""
    out = []
    for day, obs in enumerate(seen):
        escalate = escalate_from is not None and day >= escalate_from
        rec, mention = decide(key, rec, obs, day * DAY, POLICY, ending=ending, escalate=escalate)
        out.append(mention)
    return out


def test_a_case_is_listed_each_morning_while_it_stays() -> None:
    soon = Observation("due_soon", 0)
    got = mornings(CASE, [soon, soon, soon])
    assert [m.change if m else None for m in got] == ["began", "listed", "listed"]
    assert all(m is not None and not m.director for m in got)


def test_overdue_goes_to_the_director_list_once_escalated_and_stays_there() -> None:
    late = Observation("overdue", 0)
    got = mornings(CASE, [late] * 5, escalate_from=3)
    assert [m.director for m in got if m] == [False, False, False, True, True]


def test_a_closed_case_is_listed_once_and_on_the_director_list_if_it_had_been() -> None:
    late = Observation("overdue", 0)
    got = mornings(CASE, [late, late, None, None], escalate_from=1)
    closing = got[2]
    assert closing == Mention(CASE, "closed", "overdue", True)
    assert got[3] is None  # nothing left to say


def test_a_case_that_was_never_escalated_closes_for_its_section_only() -> None:
    got = mornings(CASE, [Observation("due_soon", 0), None])
    assert got[1] == Mention(CASE, "closed", "due_soon", False)


def test_silent_end_says_nothing() -> None:
    got = mornings(CASE, [Observation("due_soon", 0), None], ending="silent")
    assert got[1] is None


def test_due_soon_then_overdue_begins_a_new_state_unacknowledged() -> None:
    rec, _ = decide(CASE, None, Observation("due_soon", 0), 0, POLICY)
    assert rec is not None
    rec = acknowledge(rec, "已聯絡申請人")
    rec2, mention = decide(CASE, rec, Observation("overdue", DAY), DAY, POLICY)
    assert mention is not None
    assert mention.change == "began"
    assert rec2 is not None
    assert not rec2.acknowledged
    assert rec2.state == "overdue"


def test_an_acknowledged_case_never_reaches_the_director_list() -> None:
    rec, _ = decide(CASE, None, Observation("overdue", 0), 0, POLICY)
    assert rec is not None
    rec = acknowledge(rec, "延後辦理")
    rec2, mention = decide(CASE, rec, Observation("overdue", 0), 5 * DAY, POLICY, escalate=True)
    assert mention is not None
    assert not mention.director
    assert rec2 is not None
    assert not rec2.escalated
    assert rec2.acknowledged


def test_kpi_at_risk_begins_then_repeats_at_the_first_mail_seven_days_on() -> None:
    risk = Observation("at_risk", 0)
    got = mornings(KPI, [risk] * 15, ending="resolved")
    changes = {day: m.change for day, m in enumerate(got) if m}
    assert changes == {0: "began", 7: "repeat", 14: "repeat"}
    assert all(not m.director for m in got if m)


def test_kpi_at_risk_acknowledged_does_not_repeat() -> None:
    rec, _ = decide(KPI, None, Observation("at_risk", 0), 0, POLICY)
    assert rec is not None
    rec = acknowledge(rec, "已擬改善措施")
    _, mention = decide(KPI, rec, Observation("at_risk", 0), 8 * DAY, POLICY)
    assert mention is None


def test_kpi_breached_goes_to_the_director_and_never_repeats() -> None:
    got = mornings(KPI, [Observation("breached", 0)] * 30, ending="resolved")
    assert [(d, m.change, m.director) for d, m in enumerate(got) if m] == [(0, "began", True)]


@pytest.mark.parametrize(
    ("ending", "change"), [("resolved", "ended"), ("year_end", "year_end"), ("silent", None)]
)
def test_kpi_alerts_end(ending: Ending, change: str | None) -> None:
    got = mornings(KPI, [Observation("breached", 0), None], ending=ending)
    if change is None:
        assert got[1] is None
    else:
        assert got[1] == Mention(KPI, change, "breached", True)  # type: ignore[arg-type]


def test_kpi_worsening_begins_breached_and_tells_the_director() -> None:
    got = mornings(KPI, [Observation("at_risk", 0), Observation("breached", DAY)])
    assert got[1] == Mention(KPI, "began", "breached", True)


def test_deciding_twice_at_one_instant_is_the_same() -> None:
    obs = Observation("overdue", 0)
    once, m1 = decide(CASE, None, obs, 3 * DAY, POLICY, escalate=True)
    again, m2 = decide(CASE, None, obs, 3 * DAY, POLICY, escalate=True)
    assert (once, m1) == (again, m2)
