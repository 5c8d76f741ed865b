"""When the service acts, and what it does at one instant: the same for the live service
(:mod:`~bsc_rules.scheduling.service`) and for a replay (:mod:`~bsc_rules.scheduling.replay`).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from bsc_rules.alerts.pipeline import Pipeline
from bsc_rules.calendar import TAIPEI, from_us, to_us
from bsc_rules.clock import FakeClock
from bsc_rules.notify.mailer import Mailer, deliver_due


def digest_instant(year: int, month: int, day: int, hour: int) -> int:
    """When the digest of (year, month) goes out: ``day`` of the next month at ``hour``."""
    y, m = (year + 1, 1) if month == 12 else (year, month + 1)
    return to_us(datetime.combine(date(y, m, day), time(hour), tzinfo=TAIPEI))


def previous_month(instant: int) -> tuple[int, int]:
    """The month before the local month of ``instant``."""
    moment = from_us(instant)
    return (moment.year - 1, 12) if moment.month == 1 else (moment.year, moment.month - 1)


def missed_months(start: int, now: int, day: int, hour: int) -> list[tuple[int, int]]:
    """The months whose digest instant falls in ``[start, now]``, oldest first."""
    months: list[tuple[int, int]] = []
    year, month = previous_month(start)
    while (instant := digest_instant(year, month, day, hour)) <= now:
        if instant >= start:
            months.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


class Schedule:
    """The instants at which the service acts: ticks from local midnight and digests."""

    def __init__(self, tick_minutes: int, digest_day: int, digest_hour: int) -> None:
        self.tick = tick_minutes * 60 * 1_000_000
        self.day, self.hour = digest_day, digest_hour

    def after(self, instant: int) -> int:
        """The first scheduled instant strictly after ``instant``."""
        moment = from_us(instant)
        midnight = to_us(datetime.combine(moment.date(), datetime.min.time(), tzinfo=TAIPEI))
        tick = midnight + ((instant - midnight) // self.tick + 1) * self.tick
        next_midnight = to_us(
            datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=TAIPEI)
        )
        this = (moment.year, moment.month)
        candidates = (previous_month(instant), this)  # digests sent this month and next
        digest = min(d for d in (self._instant(m) for m in candidates) if d > instant)
        return min(tick, next_midnight, digest)

    def _instant(self, month: tuple[int, int]) -> int:
        return digest_instant(month[0], month[1], self.day, self.hour)

    def digest_due(self, instant: int) -> tuple[int, int] | None:
        """The month whose digest is due at ``instant`` (at or after its digest instant)."""
        year, month = previous_month(instant)
        return (
            (year, month) if instant >= digest_instant(year, month, self.day, self.hour) else None
        )


def run_tick(
    pipeline: Pipeline, schedule: Schedule, mailer: Mailer, now: int, start: int
) -> tuple[list[str], list[str], list[str]]:
    """Everything the service does at one instant: evaluate, digests, delivery."""
    queued = pipeline.evaluate(now)
    # every digest owed since the service began (a missed one too), once each: runs table
    for year, month in missed_months(start, now, schedule.day, schedule.hour):
        queued += pipeline.send_digests(year, month, now)
    report = deliver_due(pipeline.outbox, mailer, FakeClock(from_us(now)))
    return queued, report.sent, [f.message_id for f in report.parked]
