"""Alerts: the lifecycle of every case and KPI alert, as pure functions of (state, now).

An alert is keyed ``case:<kpi>:<subject>`` or ``kpi:<kpi>``. At each evaluation the
pipeline observes, per key, a state (``due_soon``, ``overdue``, ``at_risk``,
``breached``) or nothing, and :func:`step` decides the new record and the notifications
due, following spec/notifications.md:

* case ``due_soon``: once, to the owner section;
* case ``overdue``: at the due instant and every repeat interval while open; from the
  escalation delay on, the director is told too;
* KPI ``at_risk``: owner; KPI ``breached``: owner and director; both repeat every
  ``kpi_repeat`` while they stay;
* resolved: when an overdue case closes or a KPI returns to ``met``/``on_track``, to the
  recipients that were told; a case that was only due soon ends silently;
* acknowledged alerts stop repeating and escalating; the resolved notice still goes.

Notification *n* of a state is due at ``since + n × interval`` and is identified by
``(key, state, since, n)``: evaluating again, restarting or replaying never notifies the
same thing twice, and after downtime only the latest due repeat is sent. For cases
``since`` is intrinsic (the due instant, or the start of the warning window), so a
replay sends at the same instants as a live run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from bsc_rules.calendar import US_PER_DAY
from bsc_rules.types import AlertKind, AlertState

State = AlertState
Role = Literal["owner", "director"]
CASE_STATES = ("due_soon", "overdue")
KPI_STATES = ("at_risk", "breached")


@dataclass(frozen=True, slots=True)
class Policy:
    """Office settings for alerts (defaults of spec/notifications.md)."""

    overdue_repeat: int = US_PER_DAY
    kpi_repeat: int = 7 * US_PER_DAY
    escalation_delay: int = 3 * US_PER_DAY


@dataclass(frozen=True, slots=True)
class Observation:
    """What an evaluation sees for one alert key."""

    state: State
    since: int  # when this state began (intrinsic for cases, first seen for KPIs)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The stored state of one alert."""

    key: str
    state: State
    since: int
    notified: int  # notifications sent in this state (0 = none yet)
    told: frozenset[Role]  # who has been told about this alert
    escalated: bool = False
    acknowledged: bool = False
    ack_note: str | None = None
    sent: int = 0  # notifications actually sent in this state (after downtime < notified)


@dataclass(frozen=True, slots=True)
class Notify:
    """A notification decided by :func:`step`."""

    key: str
    kind: AlertKind
    to: frozenset[Role]
    repeat: int  # 0 for the first notification of a state
    since: int
    escalated: bool = False
    resolved_from: State | None = None
    count: int = 0  # how many notifications of this state were sent before this one

    @property
    def ident(self) -> str:
        """Stable identity: the same notification always gets the same id."""
        return f"{self.key}|{self.kind}|{self.resolved_from or ''}|{self.since}|{self.repeat}"


def _interval(state: State, policy: Policy) -> int | None:
    if state == "overdue":
        return policy.overdue_repeat
    if state in KPI_STATES:
        return policy.kpi_repeat
    return None


def _recipients(state: State, escalated: bool) -> frozenset[Role]:
    if state == "breached" or (state == "overdue" and escalated):
        return frozenset({"owner", "director"})
    return frozenset({"owner"})


def _due_count(rec: AlertRecord, now: int, policy: Policy) -> int:
    """How many notifications of ``rec``'s state are due by ``now`` (at least 1)."""
    interval = _interval(rec.state, policy)
    if interval is None or rec.acknowledged:
        return 1
    return (now - rec.since) // interval + 1


def _enter(key: str, seen: Observation, previous: AlertRecord | None) -> AlertRecord:
    told = previous.told if previous else frozenset()
    return AlertRecord(key, seen.state, seen.since, 0, told)


def _notify_if_due(rec: AlertRecord, now: int, policy: Policy) -> tuple[AlertRecord, list[Notify]]:
    due = _due_count(rec, now, policy)
    escalate = (
        rec.state == "overdue"
        and not rec.acknowledged
        and now - rec.since >= policy.escalation_delay
    )
    newly_escalated = escalate and not rec.escalated
    if rec.notified >= due and not newly_escalated:
        return rec, []
    repeat = max(due - 1, rec.notified if newly_escalated else 0)
    escalated = rec.escalated or escalate
    to = _recipients(rec.state, escalated)
    note = Notify(rec.key, rec.state, to, repeat, rec.since, escalated, count=rec.sent)
    new = replace(
        rec, notified=repeat + 1, told=rec.told | to, escalated=escalated, sent=rec.sent + 1
    )
    return new, [note]


def _resolve(rec: AlertRecord) -> list[Notify]:
    if rec.state == "due_soon" or not rec.told:
        return []
    return [Notify(rec.key, "resolved", rec.told, 0, rec.since, rec.escalated, rec.state)]


def step(
    key: str,
    rec: AlertRecord | None,
    seen: Observation | None,
    now: int,
    policy: Policy,
    *,
    resolved: bool = True,
) -> tuple[AlertRecord | None, list[Notify]]:
    """The new record of alert ``key`` and the notifications due at ``now``.

    ``seen`` is what the evaluation observes (``None``: not in an alert state);
    ``resolved`` says whether that absence is a resolution (a case that closed, a KPI
    back to met/on_track) or merely ends the alert silently (e.g. a new year's KPI
    without data yet).
    """
    if seen is None:
        if rec is None:
            return None, []
        return None, _resolve(rec) if resolved else []
    if rec is None or rec.state != seen.state:
        rec = _enter(key, seen, rec)
    return _notify_if_due(rec, now, policy)


def acknowledge(rec: AlertRecord, note: str) -> AlertRecord:
    """Stop repeats and escalation; the resolved notice will still go out."""
    return replace(rec, acknowledged=True, ack_note=note)
