"""Alerts: what each alert does at a mail instant, as pure functions (spec/notifications.md).

An alert is keyed ``case:<kpi>:<subject>`` or ``kpi:<year>:<kpi>``. Alert states are
decided at the mail instants only (the morning mail of each working day): there the
pipeline observes, per key, a state (``due_soon``, ``overdue``, ``at_risk``,
``breached``) or nothing, and :func:`decide` returns the new record and what the mails
say about it (a :class:`Mention`):

* a case ``due_soon`` or ``overdue``: listed in its section's morning mail each working
  day while it stays; on the director's list once it is overdue ``escalation_days``
  working days and nobody acknowledged it (the pipeline counts the working days);
* a case that had been due soon or overdue and closed (or was cancelled): listed once as
  closed, on the director's list too when it had been on a sent list;
* a KPI ``at_risk``: when it begins, then again at the first morning mail at least
  ``kpi_repeat`` after the last one while nobody acknowledged it; ``breached``: when it
  begins, to the director's list too, and no repeat (the monthly digest carries it);
* a KPI alert ends when its KPI returns to ``met``/``on_track`` or its year ends; the end
  is listed once (the director's list too for ``breached``).

An acknowledgement belongs to one state: a case going from due soon to overdue starts
unacknowledged again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from bsc_rules.calendar import US_PER_DAY
from bsc_rules.types import AlertState

State = AlertState
Role = Literal["owner", "director"]
CASE_STATES = ("due_soon", "overdue")
KPI_STATES = ("at_risk", "breached")
# what a mail says about an alert: listed again as it stands, began (new in this state),
# repeated (a KPI at risk, weekly), closed (a case), ended (a KPI back on track), the
# year ended (a KPI alert of a finished year)
Change = Literal["listed", "began", "repeat", "closed", "ended", "year_end"]
# how an alert no longer observed ends: closed / resolved (mentioned) or silently
Ending = Literal["closed", "resolved", "year_end", "silent"]


@dataclass(frozen=True, slots=True)
class Policy:
    """Office settings for alerts (defaults of spec/notifications.md)."""

    kpi_repeat: int = 7 * US_PER_DAY
    escalation_days: int = 3


@dataclass(frozen=True, slots=True)
class Observation:
    """What a mail instant sees for one alert key."""

    state: State
    since: int  # when this state began (intrinsic for cases, the mail instant for KPIs)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The stored state of one alert."""

    key: str
    state: State
    since: int
    notified: int  # the mail instant it was last mentioned at (KPI repeats count from it)
    told: frozenset[Role]  # who has been told about this alert
    escalated: bool = False  # on a sent director's list at least once
    acknowledged: bool = False
    ack_note: str | None = None
    sent: int = 0  # how many mail instants mentioned it in this state
    ack_by: str | None = None
    ack_at: int | None = None


@dataclass(frozen=True, slots=True)
class Mention:
    """What the mails of one instant say about one alert."""

    key: str
    change: Change
    state: State  # the state listed, or the one that ended
    director: bool  # on the director's list as well as the owner's morning mail


def decide(
    key: str,
    rec: AlertRecord | None,
    seen: Observation | None,
    now: int,
    policy: Policy,
    *,
    ending: Ending = "silent",
    escalate: bool = False,
) -> tuple[AlertRecord | None, Mention | None]:
    """The new record of alert ``key`` at the mail instant ``now``, and its mention.

    ``seen`` is what is observed (``None``: no longer in an alert state; ``ending`` then
    says how it ended); ``escalate`` that a case is overdue long enough for the
    director's list (the pipeline counts working days; acknowledged cases never are).
    """
    if seen is None:
        return None, _end(key, rec, ending) if rec is not None else None
    if key.startswith("case:"):
        return _case(key, rec, seen, now, escalate)
    return _kpi(key, rec, seen, now, policy)


def _end(key: str, rec: AlertRecord, ending: Ending) -> Mention | None:
    if ending == "silent":
        return None
    director = rec.escalated if ending == "closed" else rec.state == "breached"
    change: Change = "ended" if ending == "resolved" else ending
    return Mention(key, change, rec.state, director)


def _case(
    key: str, rec: AlertRecord | None, seen: Observation, now: int, escalate: bool
) -> tuple[AlertRecord, Mention]:
    change: Change = "listed"
    if rec is None or rec.state != seen.state:
        before: frozenset[Role] = rec.told if rec else frozenset()
        rec, change = AlertRecord(key, seen.state, seen.since, now, before), "began"
    director = escalate and seen.state == "overdue" and not rec.acknowledged
    told: frozenset[Role] = rec.told | {"owner"}
    if director:
        told |= {"director"}
    new = replace(
        rec, notified=now, sent=rec.sent + 1, told=told,
        escalated=rec.escalated or director,
    )  # fmt: skip
    return new, Mention(key, change, seen.state, director)


def _kpi(
    key: str, rec: AlertRecord | None, seen: Observation, now: int, policy: Policy
) -> tuple[AlertRecord | None, Mention | None]:
    if rec is None or rec.state != seen.state:
        director = seen.state == "breached"
        told: frozenset[Role] = frozenset(("owner", "director") if director else ("owner",))
        told |= rec.told if rec else frozenset()
        new = AlertRecord(key, seen.state, now, now, told, sent=1)
        return new, Mention(key, "began", seen.state, director)
    due = rec.state == "at_risk" and not rec.acknowledged
    if due and now - rec.notified >= policy.kpi_repeat:
        new = replace(rec, notified=now, sent=rec.sent + 1)
        return new, Mention(key, "repeat", rec.state, False)
    return rec, None


def acknowledge(rec: AlertRecord, note: str) -> AlertRecord:
    """Stop repeats and the director's list; closings still quote the note."""
    return replace(rec, acknowledged=True, ack_note=note)
