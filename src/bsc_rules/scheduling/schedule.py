"""When the service acts, and what it does at one instant: the same for the live service
(:mod:`~bsc_rules.scheduling.service`) and for a replay (:mod:`~bsc_rules.scheduling.replay`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from bsc_rules.alerts.pipeline import Pipeline
from bsc_rules.calendar import TAIPEI, from_us, local_date, to_us
from bsc_rules.clock import FakeClock
from bsc_rules.notify.mailer import Mailer, deliver_due
from bsc_rules.notify.outbox import Outbox
from bsc_rules.officecal import OfficeCalendar


@lru_cache(maxsize=4096)
def digest_day(calendar: OfficeCalendar, year: int, month: int, working_day: int) -> date:
    """The ``working_day``-th working day of (year, month) in the office calendar.

    2017-02 (春節 to Feb 1), 1st → 2017-02-02; 2017-10 (Oct 1 a Sunday), 1st → 2017-10-02.
    """
    return calendar.working_days_after(date(year, month, 1) - timedelta(days=1), working_day)


def digest_instant(
    year: int, month: int, calendar: OfficeCalendar, working_day: int, hour: int
) -> int:
    """When the digest of (year, month) goes out: the ``working_day``-th working day of
    the next month at ``hour``, Asia/Taipei."""
    y, m = (year + 1, 1) if month == 12 else (year, month + 1)
    day = digest_day(calendar, y, m, working_day)
    return to_us(datetime.combine(day, time(hour), tzinfo=TAIPEI))


def previous_month(instant: int) -> tuple[int, int]:
    """The month before the local month of ``instant``."""
    moment = from_us(instant)
    return (moment.year - 1, 12) if moment.month == 1 else (moment.year, moment.month - 1)


class Schedule:
    """The instants at which the service acts: its ticks, the morning mail and the digests.

    The morning mail and the director's list go out on each working day at ``lists_hour``
    (the office file's ``lists.hour``); the digest on the ``working_day``-th working day of
    the month at ``hour`` (the office file's ``digest``), both counted in the office
    calendar as it is at the time asked: ``calendar`` is called each time, so a closure
    re-read from the rules counts. The service ticks every ``tick_minutes`` besides (to
    deliver, retry and pick up a mail missed while it was down); a replay acts at the mail
    instants only (:meth:`mail_after`).
    """

    def __init__(
        self,
        tick_minutes: int,
        working_day: int,
        hour: int,
        calendar: Callable[[], OfficeCalendar],
        lists_hour: int = 8,
    ) -> None:
        self.tick = tick_minutes * 60 * 1_000_000
        self.working_day, self.hour, self.lists_hour = working_day, hour, lists_hour
        self.calendar = calendar

    @classmethod
    def of(cls, pipeline: Pipeline, tick_minutes: int) -> Schedule:
        """The schedule of ``pipeline``'s office (its office file's hours)."""
        office = pipeline.card.rules.office
        return cls(
            tick_minutes,
            office.digest.working_day,
            office.digest.hour,
            lambda: pipeline.card.rules.calendar,
            office.lists.hour,
        )

    def after(self, instant: int) -> int:
        """The first tick or mail instant strictly after ``instant`` (the service's)."""
        return min(self.tick_after(instant), self.mail_after(instant))

    def tick_after(self, instant: int) -> int:
        """The first tick strictly after ``instant``: every ``tick_minutes`` from local
        midnight, restarting at each midnight."""
        moment = from_us(instant)
        midnight = to_us(datetime.combine(moment.date(), datetime.min.time(), tzinfo=TAIPEI))
        tick = midnight + ((instant - midnight) // self.tick + 1) * self.tick
        next_midnight = to_us(
            datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=TAIPEI)
        )
        return min(tick, next_midnight)

    def mail_after(self, instant: int) -> int:
        """The first morning-mail or digest instant strictly after ``instant``."""
        moment = from_us(instant)
        this = (moment.year, moment.month)
        candidates = (previous_month(instant), this)  # digests sent this month and next
        digest = min(d for d in (self.digest_instant(*m) for m in candidates) if d > instant)
        return min(digest, self.lists_after(instant))

    def lists_instant(self, day: date) -> int:
        """The morning mail's instant on ``day``."""
        return to_us(datetime.combine(day, time(self.lists_hour), tzinfo=TAIPEI))

    def lists_after(self, instant: int) -> int:
        """The first morning-mail instant strictly after ``instant``."""
        calendar, day = self.calendar(), local_date(instant)
        if not calendar.is_working_day(day) or self.lists_instant(day) <= instant:
            day = calendar.next_working_day(day)
        return self.lists_instant(day)

    def lists_day(self, now: int) -> date | None:
        """The working day whose morning mail is due at ``now``: today, from its hour on
        (a mail missed while down goes out on return the same day, never for a past day)."""
        day = local_date(now)
        if self.calendar().is_working_day(day) and now >= self.lists_instant(day):
            return day
        return None

    def digest_instant(self, year: int, month: int) -> int:
        """When the digest of (year, month) goes out."""
        return digest_instant(year, month, self.calendar(), self.working_day, self.hour)

    def missed_months(self, start: int, now: int) -> list[tuple[int, int]]:
        """The months whose digest instant falls in ``[start, now]``, oldest first."""
        return missed_months(start, now, self.calendar(), self.working_day, self.hour)


def missed_months(
    start: int, now: int, calendar: OfficeCalendar, working_day: int = 1, hour: int = 8
) -> list[tuple[int, int]]:
    """The months whose digest instant falls in ``[start, now]``, oldest first."""
    months: list[tuple[int, int]] = []
    year, month = previous_month(start)
    while (instant := digest_instant(year, month, calendar, working_day, hour)) <= now:
        if instant >= start:
            months.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def decide_tick(pipeline: Pipeline, schedule: Schedule, now: int, start: int) -> list[str]:
    """What the service decides at one instant: every digest owed since ``start`` (a
    missed one too, once each: the runs table; first, so that the December digest still
    lists the year's alerts that the morning mail then ends), then today's morning mail
    and director's list if not yet decided (not one due before the first start). The mail
    decided is in the outbox, committed, on return; nothing is sent. Return the
    Message-IDs queued."""
    queued: list[str] = []
    for year, month in schedule.missed_months(start, now):
        queued += pipeline.send_digests(year, month, now)
    day = schedule.lists_day(now)
    if day is not None and schedule.lists_instant(day) >= start and not pipeline.lists_sent(day):
        queued += pipeline.morning(now)
    return queued


def deliver(outbox: Outbox, mailer: Mailer, now: int) -> tuple[list[str], list[str]]:
    """Send what ``outbox`` holds due at ``now``, each outcome recorded at ``now`` (the
    outbox may be on a connection of its own: it reads and writes only its table).
    Return the Message-IDs sent and those parked."""
    report = deliver_due(outbox, mailer, FakeClock(from_us(now)))
    return report.sent, [f.message_id for f in report.parked]


def run_tick(
    pipeline: Pipeline, schedule: Schedule, mailer: Mailer, now: int, start: int
) -> tuple[list[str], list[str], list[str]]:
    """Everything the service does at one instant: decide, then deliver (a replay calls
    this; the live service delivers outside its lock, see :mod:`.service`)."""
    queued = decide_tick(pipeline, schedule, now, start)
    sent, parked = deliver(pipeline.outbox, mailer, now)
    return queued, sent, parked
