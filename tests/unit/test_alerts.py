"""The alert lifecycle: transitions, repeats, escalation, resolution and dedup."""

from __future__ import annotations

import pytest

from bsc_rules.alerts.lifecycle import Observation, Policy, acknowledge, step
from bsc_rules.calendar import US_PER_DAY

DAY = US_PER_DAY
HOUR = DAY // 24
P = Policy()
DUE = 1_000 * DAY  # an arbitrary due instant
KEY = "case:BP1.1:BS1"


def run(
    observations: list[tuple[int, Observation | None]],
    *,
    resolved: bool = True,
    ack_at: int | None = None,
):
    """Step one alert through (now, observation) pairs; collect every notification."""
    rec = None
    sent = []
    for now, seen in observations:
        if ack_at is not None and rec is not None and now >= ack_at:
            rec = acknowledge(rec, "處理中")
        rec, notes = step(KEY, rec, seen, now, P, resolved=resolved)
        sent += [(now, n.kind, tuple(sorted(n.to)), n.repeat, n.escalated) for n in notes]
    return rec, sent


def soon() -> Observation:
    return Observation("due_soon", DUE - 2 * DAY)


def overdue() -> Observation:
    return Observation("overdue", DUE)


def test_due_soon_once_however_often_evaluated() -> None:
    """Entering the warning window notifies the owner once; re-evaluation adds nothing."""
    _, sent = run([(DUE - 2 * DAY + h * HOUR, soon()) for h in range(48)])
    assert sent == [(DUE - 2 * DAY, "due_soon", ("owner",), 0, False)]


def test_overdue_repeats_daily_and_escalates_after_three_days() -> None:
    """Overdue: daily to the owner, and from day 3 to the director too."""
    times = [DUE + h * HOUR for h in range(0, 24 * 5, 6)]
    _, sent = run([(t, overdue()) for t in times])
    assert sent == [
        (DUE, "overdue", ("owner",), 0, False),
        (DUE + 1 * DAY, "overdue", ("owner",), 1, False),
        (DUE + 2 * DAY, "overdue", ("owner",), 2, False),
        (DUE + 3 * DAY, "overdue", ("director", "owner"), 3, True),
        (DUE + 4 * DAY, "overdue", ("director", "owner"), 4, True),
    ]


def test_closing_an_overdue_case_resolves_to_everyone_told() -> None:
    """The resolved notice goes to the owner and, once escalated, the director."""
    _, sent = run([(DUE, overdue()), (DUE + 3 * DAY, overdue()), (DUE + 3 * DAY + HOUR, None)])
    assert sent[-1] == (DUE + 3 * DAY + HOUR, "resolved", ("director", "owner"), 0, True)


def test_a_case_only_due_soon_ends_silently() -> None:
    """A case paid within its warning window sends no resolved notice."""
    _, sent = run([(DUE - DAY, soon()), (DUE - HOUR, None)])
    assert [s[1] for s in sent] == ["due_soon"]


def test_due_soon_then_overdue() -> None:
    """A case passing its due instant gets the overdue notice."""
    _, sent = run([(DUE - DAY, soon()), (DUE, overdue())])
    assert [s[1] for s in sent] == ["due_soon", "overdue"]


def test_downtime_sends_only_the_latest_repeat() -> None:
    """After a gap, one catch-up notification, not one per missed interval."""
    _, sent = run([(DUE, overdue()), (DUE + 10 * DAY + HOUR, overdue())])
    assert sent == [
        (DUE, "overdue", ("owner",), 0, False),
        (DUE + 10 * DAY + HOUR, "overdue", ("director", "owner"), 10, True),
    ]


def test_acknowledged_alert_stops_repeating_but_resolves() -> None:
    """Acknowledgement stops repeats and escalation; the resolved notice still goes."""
    times = [(DUE + d * DAY, overdue()) for d in range(6)] + [(DUE + 6 * DAY, None)]
    _, sent = run(times, ack_at=DUE + DAY // 2)
    assert [(s[1], s[2]) for s in sent] == [("overdue", ("owner",)), ("resolved", ("owner",))]


@pytest.mark.parametrize(
    ("state", "recipients"),
    [("at_risk", ("owner",)), ("breached", ("director", "owner"))],
)
def test_kpi_alerts_repeat_weekly(state: str, recipients: tuple[str, ...]) -> None:
    """KPI alerts repeat every 7 days while they stay, to owner (and director if breached)."""
    start = 50 * DAY + 5 * HOUR
    seen = Observation(state, start)  # type: ignore[arg-type]
    _, sent = run([(start + d * DAY, seen) for d in range(15)])
    assert [(s[0] - start) // DAY for s in sent] == [0, 7, 14]
    assert {s[2] for s in sent} == {recipients}


def test_kpi_worsening_and_recovering() -> None:
    """at_risk → breached is a new alert state; back to met resolves it."""
    t = 50 * DAY
    obs = [
        (t, Observation("at_risk", t)),
        (t + DAY, Observation("breached", t + DAY)),
        (t + 2 * DAY, None),
    ]
    _, sent = run(obs)
    assert [(s[1], s[2]) for s in sent] == [
        ("at_risk", ("owner",)),
        ("breached", ("director", "owner")),
        ("resolved", ("director", "owner")),
    ]


def test_silent_end() -> None:
    """An alert that ends without resolution (e.g. no data) sends nothing."""
    t = 50 * DAY
    _, sent = run([(t, Observation("at_risk", t)), (t + DAY, None)], resolved=False)
    assert [s[1] for s in sent] == ["at_risk"]


def test_identity_is_stable() -> None:
    """The same notification decided twice has the same identity."""
    _, first = step(KEY, None, overdue(), DUE + HOUR, P)
    _, second = step(KEY, None, overdue(), DUE + 2 * HOUR, P)
    assert [n.ident for n in first] == [n.ident for n in second]


def test_count_is_messages_sent_not_intervals() -> None:
    """After downtime the catch-up notice counts the messages sent, not intervals passed."""
    rec, first = step(KEY, None, overdue(), DUE, P)
    _, later = step(KEY, rec, overdue(), DUE + 10 * DAY + HOUR, P)
    assert (first[0].count, later[0].count) == (0, 1)
    assert later[0].repeat == 10  # the identity still follows the interval
