"""Office time: Asia/Taipei instants, periods, deadlines and ROC dates.

Instants inside bsc_rules are integers: microseconds since the Unix epoch (``us``), so
comparisons at a deadline are exact. All calendar logic (days, months, years) uses the
office's local time, Asia/Taipei.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from bsc_rules.officecal import OfficeCalendar

TAIPEI = ZoneInfo("Asia/Taipei")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
ROC_OFFSET = 1911


def to_us(instant: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    if instant.tzinfo is None:
        msg = f"naive datetime {instant.isoformat()} has no offset"
        raise ValueError(msg)
    return (instant - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    """The instant ``us`` as an Asia/Taipei datetime."""
    return (EPOCH + timedelta(microseconds=us)).astimezone(TAIPEI)


def iso(us: int) -> str:
    """RFC 3339 text of an instant in local time, e.g. ``2017-03-23T00:00:00+08:00``."""
    moment = from_us(us)
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec)


def local_date(us: int) -> date:
    """The Asia/Taipei calendar date of an instant."""
    return from_us(us).date()


def local_midnight(day: date) -> int:
    """The instant 00:00 local of ``day``."""
    return to_us(datetime.combine(day, time(0), tzinfo=TAIPEI))


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """``[start, end)`` of a local calendar month."""
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return local_midnight(date(year, month, 1)), local_midnight(following)


@lru_cache(maxsize=64)
def year_bounds(year: int) -> tuple[int, int]:
    """``(start, end)`` of a local calendar year: start inclusive, end exclusive."""
    return local_midnight(date(year, 1, 1)), local_midnight(date(year + 1, 1, 1))


def year_of(us: int) -> int:
    """The local calendar year of an instant."""
    return local_date(us).year


def year_complete_at(year: int) -> int:
    """The instant from which year ``year`` counts as complete: 12-31T23:59:59 local."""
    return year_bounds(year)[1] - US_PER_SECOND


def due_days_after(opened_us: int, days: int, office: OfficeCalendar | None = None) -> int:
    """00:00 of the day after the ``days``-th day counted from the next day (次日起N日內).

    Applied 2017-03-15 at any hour with ``days=7`` gives 2017-03-23T00:00+08:00. With an
    ``office`` calendar (``deadlines: working_day_end``) a last day that is not a working
    day moves to the next working day: applied 2017-05-22 → 2017-06-01T00:00+08:00.
    """
    return due_after_last(local_date(opened_us) + timedelta(days=days), office)


def due_next_month(opened_us: int, due_day: int, office: OfficeCalendar | None = None) -> int:
    """00:00 of the day after ``due_day`` of the month after the opening's month (that day
    moved to the next working day of an ``office`` calendar, if given)."""
    opened = local_date(opened_us)
    year, month = (opened.year + 1, 1) if opened.month == 12 else (opened.year, opened.month + 1)
    return due_after_last(date(year, month, due_day), office)


def due_after_last(last: date, office: OfficeCalendar | None = None) -> int:
    """``due`` of a last allowed day: 00:00 after it, or after the working day it moves to."""
    if office is not None:
        last = office.on_or_after(last)
    return local_midnight(last + timedelta(days=1))


def due_soon_from(due_us: int, window_days: int, office: OfficeCalendar) -> int:
    """The instant from which a case due at ``due_us`` is due soon (kpis.md): 00:00 of the
    first day whose ``window_days``-th working day after it reaches the last allowed day."""
    return local_midnight(office.first_warned(last_allowed_day(due_us), window_days))


def roc_year(year: int) -> int:
    """ROC (民國) year of a Gregorian year: 2017 → 106."""
    return year - ROC_OFFSET


def roc_date(day: date) -> str:
    """``106年3月22日``: the body-text form of a date."""
    return f"{roc_year(day.year)}年{day.month}月{day.day}日"


def roc_slash(day: date) -> str:
    """``106/03/22``: the table form of a date."""
    return f"{roc_year(day.year)}/{day.month:02d}/{day.day:02d}"


def roc_compact(day: date) -> str:
    """``1060322``: the seven-digit form used in household-registration data."""
    return f"{roc_year(day.year):03d}{day.month:02d}{day.day:02d}"


def last_allowed_day(due_us: int) -> date:
    """The last local day on which a case is still on time (the day before ``due``)."""
    return local_date(due_us - 1)


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?P<fraction>\.\d+)?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?"
)


def days_late(due_us: int, day: date) -> int:
    """Calendar dates from a due's last allowed day to ``day`` (Asia/Taipei): last allowed
    day 106/03/22 → 1 day overdue on 106/03/23."""
    return max(0, (day - last_allowed_day(due_us)).days)


def parse_instant(text: str) -> datetime:
    """Parse an RFC 3339 instant with an explicit offset (``Z`` allowed)."""
    shape = _RFC3339.fullmatch(text)
    if shape is None:
        msg = f"expected an RFC 3339 date-time such as 2017-06-30T23:59:59+08:00, got {text!r}"
        raise ValueError(msg)
    if shape.group("offset") is None:
        msg = f"expected a date-time with an explicit offset (e.g. +08:00), got {text!r}"
        raise ValueError(msg)
    fraction = shape.group("fraction") or ""
    normal = text.upper().replace(fraction, fraction[:7], 1) if fraction else text.upper()
    try:
        moment = datetime.fromisoformat(normal)
    except ValueError:
        msg = f"expected an RFC 3339 date-time such as 2017-06-30T23:59:59+08:00, got {text!r}"
        raise ValueError(msg) from None
    if moment.tzinfo is None:
        msg = f"expected a date-time with an explicit offset (e.g. +08:00), got {text!r}"
        raise ValueError(msg)
    return moment
