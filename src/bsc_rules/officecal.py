"""The office calendar: which local dates are working days for a Taiwanese government office.

Working days are Monday to Friday, less the days off of Taiwan's calendar for government
offices (national holidays, their substitute days off, bridge days off 調整放假), plus the
make-up working Saturdays 補行上班, less the office's whole-day closures (typhoon days
停止上班; a closure on a make-up Saturday makes it a day off). The national data is the
``holidays`` package's TW calendar, categories ``public`` and ``government``: its
``optional`` days (5/1 Labour Day, 9/3 Armed Forces Day) are days off for private
employees or the armed forces only, working days for the office.

For a year after :data:`DATA_THROUGH` the package still gives the national holidays by
rule, but bridge days off and make-up Saturdays are announced each year by the DGPA and
are not known: :meth:`OfficeCalendar.known` tells, and ``bsc-rules check`` warns.

The national part is computed once per year (:func:`national_year`); each calendar also
remembers its answers per date, as deadlines ask for the same few dates again and again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from functools import lru_cache

# The years whose bridge days off and make-up Saturdays the pinned ``holidays`` versions
# carry, checked by the package against the DGPA work calendar (1998-2026).
DATA_FROM = 1998
DATA_THROUGH = 2026
_ONE_DAY = timedelta(days=1)
_SATURDAY = 5


@lru_cache(maxsize=256)
def national_year(year: int) -> tuple[frozenset[date], frozenset[date]]:
    """``(days off, make-up working Saturdays)`` of ``year`` for government offices.

    ``holidays`` is imported here, on first use: it takes about a second to load, which
    commands that never count a deadline (``check``, ``outbox``) need not pay.
    """
    import holidays
    from holidays.constants import GOVERNMENT, PUBLIC

    tw = holidays.country_holidays("TW", years=year, categories=(PUBLIC, GOVERNMENT))
    days_off = frozenset(day for day in tw if day.year == year)
    make_up = frozenset(day for day in tw.weekend_workdays if day.year == year)
    return days_off, make_up


class OfficeCalendar:
    """Working days of one office: the national calendar and the office's ``closures``.

    Two calendars with the same closures are equal (and hash alike), so results cached
    by calendar stay valid across rule reloads that changed nothing.
    """

    __slots__ = ("_working", "closures")

    def __init__(self, closures: Iterable[date] = ()) -> None:
        self.closures = frozenset(closures)
        self._working: dict[date, bool] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OfficeCalendar) and other.closures == self.closures

    def __hash__(self) -> int:
        return hash(self.closures)

    def __repr__(self) -> str:
        return f"OfficeCalendar(closures={sorted(self.closures)!r})"

    def is_working_day(self, day: date) -> bool:
        """Whether the office is open on ``day``."""
        found = self._working.get(day)
        if found is None:
            found = self._working[day] = self._decide(day)
        return found

    def _decide(self, day: date) -> bool:
        if day in self.closures:
            return False
        days_off, make_up = national_year(day.year)
        if day in make_up:
            return True
        return day.weekday() < _SATURDAY and day not in days_off

    def next_working_day(self, day: date) -> date:
        """The first working day after ``day`` (``day`` itself excluded)."""
        day += _ONE_DAY
        while not self.is_working_day(day):
            day += _ONE_DAY
        return day

    def on_or_after(self, day: date) -> date:
        """``day`` if it is a working day, else the next one (行政程序法第48條第4項)."""
        return day if self.is_working_day(day) else self.next_working_day(day)

    def working_days_after(self, day: date, n: int) -> date:
        """The ``n``-th working day after ``day`` (``day`` itself when ``n`` is 0)."""
        for _ in range(n):
            day = self.next_working_day(day)
        return day

    def working_days_between(self, after: date, through: date, cap: int) -> int:
        """The working days ``d`` with ``after < d <= through``, counted up to ``cap``.

        Last allowed day Wednesday 2017-03-22, through Monday 2017-03-27 → 3 (Thu, Fri,
        Mon): the escalation count of the director's list.
        """
        count, day = 0, after
        while count < cap:
            day = self.next_working_day(day)
            if day > through:
                break
            count += 1
        return count

    def first_warned(self, last: date, n: int) -> date:
        """The earliest date ``d`` with ``last`` on or before the ``n``-th working day
        after ``d``: from ``d`` on, a case whose last allowed day is ``last`` is due soon.

        Last allowed day Monday 2017-03-13, ``n`` 2 → Thursday 2017-03-09.
        """
        day = last
        while self.working_days_after(day - _ONE_DAY, n) >= last:
            day -= _ONE_DAY
        return day

    @staticmethod
    def known(year: int) -> bool:
        """Whether bridge days off and make-up Saturdays of ``year`` are known."""
        return DATA_FROM <= year <= DATA_THROUGH
