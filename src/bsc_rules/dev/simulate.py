"""A deterministic, realistic event generator for household-registration offices.

``simulate(year, seed, offices)`` yields the CloudEvents (``spec/events.md``) that the case
workflow of one or more offices would send during one year, in arrival order, calibrated
on the Datong office's monthly volumes (``reference/domain.md`` §2.3 and §7). Other office
codes get the same shape scaled by a per-office factor in [0.6, 1.8] (:func:`office_factor`).

How it works, per office: at the start of each month the month's opening events are
planned as counts per working day; each day the day's cases are opened, and their
follow-ups (payments, cross-agency records, notifications, errors) are scheduled at later
times on a small per-office heap; every event whose time falls before the end of the day
is then numbered (``id``) and delivered. About 1 % of events are delivered late and 0.5 %
twice. Several offices are merged by arrival instant, so the memory held is a few hundred
pending events per office, whatever the number of offices.

Only ``random.Random`` seeded from SHA-256 of (seed, year, office) is used: the same
arguments give byte-identical output; the wall clock is never read.

Case ids (``subject``) follow office style, prefix + ROC date + daily sequence, e.g.
``RG1060315001``; they are unique per office (two offices may both have ``RG1060315001``,
as their own numbering would), while event ids embed the office code.
"""

from __future__ import annotations

import hashlib
import heapq
import io
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from operator import itemgetter
from random import Random
from typing import Any, BinaryIO, Final, TextIO, cast

import orjson

__all__ = ["RATES", "Rates", "office_factor", "simulate", "write_jsonl"]

# --------------------------------------------------------------------------------------
# Volumes (Datong, 2017; domain.md §2.3) and rates
# --------------------------------------------------------------------------------------

#: ``registration.completed`` cases per month, by ``kind`` (other = 60 other + 8 初設戶籍).
REGISTRATIONS: Final[dict[str, float]] = {
    "birth": 100, "death": 87, "marriage": 65, "divorce": 25,
    "move_in": 295, "address_change": 150, "move_out": 20, "other": 70,
}  # fmt: skip

#: Other opening events per month (seal certificates before the 2017-05-31 drop).
OPENINGS: Final[dict[str, float]] = {
    "seal_certificate": 800,
    "birth_subsidy": 85,
    "elderly_marriage": 2,  # care_case.identified, category elderly_marriage
    "divorce_with_minor": 11,  # care_case.identified, category divorce_with_minor
    "archive_retrieval": 115,
    "immigrant_visit": 32.5,
}

#: Monthly multipliers, January to December; streams not listed are flat.
SEASONALITY: Final[dict[str, tuple[float, ...]]] = {
    #              Jan   Feb   Mar   Apr   May   Jun   Jul   Aug   Sep   Oct   Nov   Dec
    "birth":     (0.97, 0.92, 0.97, 0.95, 0.98, 0.97, 1.00, 1.00, 1.00, 1.06, 1.08, 1.10),
    "birth_subsidy": (0.97, 0.92, 0.97, 0.95, 0.98, 0.97, 1.00, 1.00, 1.00, 1.06, 1.08, 1.10),
    "death":     (1.18, 1.17, 1.15, 1.00, 0.98, 0.90, 0.88, 0.90, 0.90, 0.98, 1.02, 1.06),
    "marriage":  (1.35, 1.10, 0.90, 0.90, 0.95, 0.85, 0.85, 1.00, 1.00, 1.15, 1.20, 1.25),
    "move_in":   (1.00, 0.80, 1.00, 0.98, 0.98, 1.00, 1.15, 1.18, 1.12, 0.95, 0.92, 0.92),
}  # fmt: skip


@dataclass(frozen=True)
class Rates:
    """Shares, counts and delays of everything that is not a monthly volume."""

    monthly_noise: float = 0.08  # each month's volume varies uniformly by ± this share
    utc_share: float = 0.05  # events whose time is written in UTC ("Z" or "+00:00")
    late_share: float = 0.01  # events delivered after later ones
    duplicate_share: float = 0.005  # events sent twice, byte-identical
    late_application_days: tuple[int, int] = (2, 7)  # a late subsidy application: keyed in
    #                                    days later, often after its payment has arrived
    # cross_notice.recorded per registration case; CP1.1 ≈ .40 + .60 × .82 ≈ 89 %
    declined: float = 0.40
    hris: float = 0.93
    non_hris: float = 0.65
    office: float = 0.45
    repeat: float = 0.005  # cases with a second record of a channel already used
    hris_batch: float = 0.30  # hris records sent by the nightly batch (01:00–05:00)
    # errors per office-year (ranges inclusive)
    staff_errors: tuple[int, int] = (2, 3)
    citizen_errors: tuple[int, int] = (1, 2)
    seal_errors: int = 1
    # birth subsidy (BP1.1): due = 00:00 of the 8th day after the application's date
    subsidy_amount: int = 20_000
    subsidy_late: float = 0.01
    subsidy_rejected: float = 0.01
    subsidy_never_paid: int = 3
    subsidy_paid_then_rejected: int = 1
    # care cases (CC1.1): due = 00:00 of the 11th of the next month
    care_prompt: float = 0.30  # notified within days rather than at the monthly compilation
    care_late: tuple[int, int] = (1, 2)
    care_open: int = 1  # identified in Q4, never notified
    # archive (AC1.1, AC1.2)
    scanned_forms: int = 100_000  # 50 % of required_forms = 200000
    batch_forms: tuple[int, int] = (200, 500)
    scanned_share: tuple[float, float] = (0.15, 0.75)  # retrievals of scanned docs, Jan → Dec
    scanned_online: float = 0.98
    # new-immigrant visits (BC1.1)
    visits_floor: int = 379
    visit_methods: tuple[str, ...] = ("phone",) * 8 + ("home", "other")
    # training (TL1.1); the last session up to November takes everyone not yet trained
    headcount: int = 40
    sessions: tuple[tuple[int, str], ...] = (
        (3, "戶政法令"), (5, "資安管理"), (7, "服務禮儀"), (9, "戶政法令"), (11, "資安管理"),
    )  # fmt: skip
    session_share: float = 0.45
    # surveys (TF1.1): quarterly waves of two weeks
    survey_pages: int = 1_300  # online pages per year
    survey_months: tuple[int, ...] = (3, 6, 9, 12)
    survey_paper: float = 0.15
    survey_form_pages: tuple[int, ...] = (0,) + (2,) * 5 + (3,) * 9 + (4,) * 5  # drawn uniformly


RATES: Final = Rates()

# --------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------

#: Weekday days off and make-up Saturdays (補行上班日), from holidays.TW 0.109 (domain.md §5).
DAYS_OFF: Final[dict[int, frozenset[str]]] = {
    2017: frozenset({"01-02", "01-27", "01-30", "01-31", "02-01", "02-27", "02-28", "04-03",
                     "04-04", "05-29", "05-30", "10-04", "10-09", "10-10"}),
    2018: frozenset({"01-01", "02-15", "02-16", "02-19", "02-20", "02-28", "04-04", "04-05",
                     "04-06", "06-18", "09-24", "10-10", "12-31"}),
    2019: frozenset({"01-01", "02-04", "02-05", "02-06", "02-07", "02-08", "02-28", "03-01",
                     "04-04", "04-05", "06-07", "09-13", "10-10", "10-11"}),
}  # fmt: skip
FIXED_DAYS_OFF: Final = frozenset({"01-01", "02-28", "04-04", "10-10"})  # other years
MAKEUP_SATURDAYS: Final[dict[int, frozenset[str]]] = {
    2017: frozenset({"02-18", "06-03", "09-30"}),
    2018: frozenset({"03-31", "12-22"}),
    2019: frozenset({"01-19", "02-23", "10-05"}),
}
#: 鬼月 (7th lunar month): marriages fall by half.
GHOST_MONTH: Final[dict[int, tuple[str, str]]] = {
    2017: ("08-22", "09-19"), 2018: ("08-11", "09-09"), 2019: ("08-01", "08-29"),
}  # fmt: skip
GHOST_WEIGHT: Final = 0.5
#: Popular wedding dates (when a working day): marriages × 4.
SPIKE_DAYS: Final = frozenset({"02-14", "05-20", "07-07", "12-12"})
SPIKE_WEIGHT: Final = 4.0
#: From this date on, seal certificates fall by a quarter (digital lookup for land registration).
SEAL_DROP: Final = (date(2017, 6, 1), 0.75)

DAY: Final = 86_400
HOUR: Final = 3_600
OPEN: Final = 8 * HOUR
CLOSE: Final = 17 * HOUR
LOCAL_OFFSET: Final = 8 * HOUR
HORIZON: Final = 366 + 130  # days covered: the year and the follow-ups in the next one

_HM: Final = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_SS: Final = tuple(f"{s:02d}" for s in range(60))

SECTION: Final[dict[str, str]] = {
    "registration.completed": "registration",
    "registration.error_found": "registration",
    "cross_notice.recorded": "registration",
    "birth_subsidy.applied": "registration",
    "birth_subsidy.paid": "registration",
    "birth_subsidy.rejected": "registration",
    "care_case.identified": "registration",
    "care_case.notified": "registration",
    "immigrant_visit.reported": "registration",
    "seal_certificate.issued": "records",
    "seal_certificate.error_found": "records",
    "archive.scanned": "records",
    "archive.retrieved": "records",
    "training.attended": "general_affairs",
    "survey.completed": "general_affairs",
}
REJECT_REASONS: Final = (
    "資格不符：設籍未滿一年",
    "逾申請期限（出生後60日內）",
    "重複申請",
    "申請文件不全，逾期未補正",
)


@dataclass(frozen=True)
class _Calendar:
    """Day tables of one year and the next; day 0 is January 1st, local time."""

    iso: tuple[str, ...]  # ISO date of day d at index d + 1 (day -1 for UTC of Jan 1st)
    roc: tuple[str, ...]  # ROC date of day d, e.g. "1060315"
    work: tuple[bool, ...]  # office open on day d
    month_start: tuple[int, ...]  # day of the 1st of month k (0 = January of the year)
    month_of: tuple[int, ...]  # month k of day d
    ghost: frozenset[int]
    spikes: frozenset[int]
    seal_drop: int  # first day with fewer seal certificates

    def workdays(self, lo: int, hi: int) -> list[int]:
        """Working days in [lo, hi)."""
        return [d for d in range(lo, hi) if self.work[d]]


def _month_day(d: date) -> str:
    return f"{d.month:02d}-{d.day:02d}"


def _is_workday(d: date) -> bool:
    md = _month_day(d)
    if md in MAKEUP_SATURDAYS.get(d.year, frozenset()):
        return True
    return d.weekday() < 5 and md not in DAYS_OFF.get(d.year, FIXED_DAYS_OFF)


@lru_cache(maxsize=8)
def _calendar(year: int) -> _Calendar:
    first = date(year, 1, 1)
    days = [first + timedelta(n) for n in range(HORIZON)]
    ghost = GHOST_MONTH.get(year, ("", ""))
    work = tuple(_is_workday(d) for d in days)
    in_year = list(enumerate(_month_day(d) for d in days[: (date(year + 1, 1, 1) - first).days]))
    return _Calendar(
        iso=tuple(d.isoformat() for d in [first - timedelta(1), *days]),
        roc=tuple(f"{d.year - 1911:03d}{d.month:02d}{d.day:02d}" for d in days),
        work=work,
        month_start=tuple(n for n, d in enumerate(days) if d.day == 1),
        month_of=tuple((d.year - year) * 12 + d.month - 1 for d in days),
        ghost=frozenset(n for n, md in in_year if ghost[0] <= md <= ghost[1]),
        spikes=frozenset(n for n, md in in_year if md in SPIKE_DAYS and work[n]),
        seal_drop=(SEAL_DROP[0] - first).days,
    )


# --------------------------------------------------------------------------------------
# One office
# --------------------------------------------------------------------------------------

#: A created event before numbering: (time, tie-break, type, subject, data); time in seconds
#: since January 1st 00:00 local of the simulated year.
_Item = tuple[int, int, str, str, dict[str, Any]]
#: A delivered event: (arrival instant, event).
_Delivery = tuple[int, dict[str, Any]]


def _digest(*parts: object) -> int:
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def office_factor(office: str) -> float:
    """Size of an office relative to Datong: 1.0 for ``datong``, else in [0.6, 1.8)."""
    if office == "datong":
        return 1.0
    return 0.6 + 1.2 * _digest("bsc-sim-factor", office) / 2**64


class _Office:
    """Generates one office's events for one year, day by day, with bounded state."""

    def __init__(self, office: str, year: int, seed: int) -> None:
        self.office, self.year = office, year
        self.rng = Random(_digest("bsc-sim", seed, year, office))
        self.r = self.rng.random
        self.factor = office_factor(office)
        self.cal = _calendar(year)
        self.sources = {t: f"/taipei/{office}/{s}" for t, s in SECTION.items()}
        self.heap: list[_Item] = []
        self.seq = 0
        self.counters: dict[str, tuple[int, int]] = {}
        self.visits = 0
        self.flags = self._plan_flags()
        self.batches = self._plan_batches()
        self.sessions = self._plan_sessions()
        self.surveys = self._plan_surveys()

    # ---- small helpers ----------------------------------------------------------------

    def _u(self, lo: int, hi: int) -> int:
        """A uniform int in [lo, hi)."""
        return lo + int(self.r() * (hi - lo))

    def _round(self, x: float) -> int:
        """Stochastic rounding: the expectation stays x."""
        n = int(x)
        return n + (self.r() < x - n)

    def _at(self, day: int, lo: int = OPEN, hi: int = CLOSE) -> int:
        return day * DAY + self._u(lo, hi)

    def _workday(self, lo: int, hi: int) -> int:
        """A random working day in [lo, hi]; hi if there is none."""
        days = self.cal.workdays(lo, hi + 1)
        return days[int(self.r() * len(days))] if days else hi

    def _times(self, day: int, n: int) -> list[int]:
        return sorted(self._at(day) for _ in range(n))

    def _subject(self, prefix: str, day: int) -> str:
        last_day, n = self.counters.get(prefix, (day, 0))
        n = n + 1 if last_day == day else 1
        self.counters[prefix] = (day, n)
        return f"{prefix}{self.cal.roc[day]}{n:03d}"

    def _push(self, t: int, etype: str, subject: str, data: dict[str, Any]) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, etype, subject, data))

    def _take(self, flag: str, day: int, n: int) -> int:
        """How many of the first n cases of the day carry a planned rare outcome."""
        days, k = self.flags[flag], 0
        while days and days[0] <= day and k < n:
            days.pop(0)
            k += 1
        return k

    # ---- plans made once per office-year ----------------------------------------------

    def _plan_flags(self) -> dict[str, list[int]]:
        rates, year_days = RATES, self.cal.workdays(0, self.cal.month_start[12])
        q4 = self.cal.workdays(self.cal.month_start[9], self.cal.month_start[12])
        december = self.cal.workdays(self.cal.month_start[11] + 21, self.cal.month_start[12] - 2)
        staff = self.rng.sample(year_days, self.rng.randint(*rates.staff_errors) - 1)
        counts = {
            "citizen_error": self.rng.randint(*rates.citizen_errors),
            "seal_error": rates.seal_errors,
            "never_paid": rates.subsidy_never_paid,
            "paid_then_rejected": rates.subsidy_paid_then_rejected,
            "care_late": self.rng.randint(*rates.care_late),
        }
        flags = {k: self.rng.sample(year_days, n) for k, n in counts.items()}
        flags["staff_error"] = [*staff, self.rng.choice(december)]  # found next January
        flags["care_open"] = self.rng.sample(q4, rates.care_open)
        return {k: sorted(v) for k, v in flags.items()}

    def _plan_batches(self) -> dict[int, list[int]]:
        total, lo, hi = round(RATES.scanned_forms * self.factor), *RATES.batch_forms
        sizes: list[int] = []
        while sum(sizes) < total:
            sizes.append(self._u(lo, hi + 1))
        days = self.cal.workdays(0, self.cal.month_start[12])
        batches: dict[int, list[int]] = {}
        for i, forms in enumerate(sizes):
            batches.setdefault(days[i * len(days) // len(sizes)], []).append(forms)
        return batches

    def _plan_sessions(self) -> dict[int, tuple[str, list[str]]]:
        headcount = max(10, round(RATES.headcount * self.factor))
        roster = [f"E{n:03d}" for n in range(1, headcount + 1)]
        untrained = set(roster)
        last = max(i for i, (month, _) in enumerate(RATES.sessions) if month <= 11)
        plan: dict[int, tuple[str, list[str]]] = {}
        for i, (month, course) in enumerate(RATES.sessions):
            start = self.cal.month_start[month - 1]
            day = self._workday(start + 7, start + 20)
            k = round(headcount * RATES.session_share * (0.8 + 0.4 * self.r()))
            people = set(self.rng.sample(roster, k)) | (untrained if i == last else set())
            untrained -= people
            plan[day] = (course, sorted(people))
        return plan

    def _plan_surveys(self) -> dict[int, list[tuple[int, bool, int]]]:
        """Survey responses (time, online, pages) by day, in quarterly two-week waves."""
        plan: dict[int, list[tuple[int, bool, int]]] = {}
        wave_pages = RATES.survey_pages * self.factor / len(RATES.survey_months)
        for month in RATES.survey_months:
            start = self.cal.month_start[month - 1]
            first = self._workday(start + 4, start + 11)
            target, pages = wave_pages * (0.97 + 0.1 * self.r()), 0
            while pages < target:
                n = self.rng.choice(RATES.survey_form_pages)
                pages += n
                self._plan_survey(plan, first, True, n)
                if self.r() < RATES.survey_paper / (1 - RATES.survey_paper):
                    self._plan_survey(plan, first, False, self.rng.choice(RATES.survey_form_pages))
        return plan

    def _plan_survey(self, plan: dict[int, list[tuple[int, bool, int]]], first: int,
                     online: bool, pages: int) -> None:  # fmt: skip
        if online:
            day = first + self._u(0, 14)
            t = self._at(day, 0, 2 * HOUR) if self.r() < 0.05 else self._at(day, 7 * HOUR, DAY)
        else:
            day = self._workday(first, first + 13)
            t = self._at(day)
        plan.setdefault(day, []).append((t, online, pages))

    # ---- month plan ---------------------------------------------------------------------

    def _weight(self, stream: str, day: int) -> float:
        if stream == "marriage":
            if day in self.cal.ghost:
                return GHOST_WEIGHT
            return SPIKE_WEIGHT if day in self.cal.spikes else 1.0
        if stream == "seal_certificate" and day >= self.cal.seal_drop:
            return SEAL_DROP[1]
        return 1.0

    def _plan_month(self, month: int) -> dict[str, Counter[int]]:
        """Opening events of the month, as counts per working day for each stream."""
        days = self.cal.workdays(self.cal.month_start[month], self.cal.month_start[month + 1])
        plan: dict[str, Counter[int]] = {}
        for stream, base in {**REGISTRATIONS, **OPENINGS}.items():
            weights = [self._weight(stream, d) for d in days]
            mean = base * SEASONALITY.get(stream, (1.0,) * 12)[month] * self.factor
            noise = 1 + RATES.monthly_noise * (2 * self.r() - 1)
            n = self._round(mean * noise * sum(weights) / len(days))
            if stream == "immigrant_visit":
                n = self._visit_count(month, n)
            plan[stream] = Counter(self.rng.choices(days, weights, k=n))
        return plan

    def _visit_count(self, month: int, n: int) -> int:
        """Keep the year's visits at or above the floor (BC1.1 target)."""
        if month == 11:
            n = max(n, round(RATES.visits_floor * self.factor) + 3 - self.visits)
        self.visits += n
        return n

    # ---- opening events of a day and their follow-ups -----------------------------------

    def _open_day(self, day: int, plan: dict[str, Counter[int]]) -> None:
        kinds = [k for k in REGISTRATIONS for _ in range(plan[k][day])]
        self.rng.shuffle(kinds)
        self._registrations(day, kinds)
        self._seals(day, plan["seal_certificate"][day])
        self._subsidies(day, plan["birth_subsidy"][day])
        care = ["elderly_marriage"] * plan["elderly_marriage"][day]
        self._care(day, care + ["divorce_with_minor"] * plan["divorce_with_minor"][day])
        self._retrievals(day, plan["archive_retrieval"][day])
        self._visits(day, plan["immigrant_visit"][day])
        self._scans(day, self.batches.pop(day, []))
        if day in self.sessions:
            self._training(day, *self.sessions.pop(day))
        self._surveys(day, sorted(self.surveys.pop(day, [])))

    def _registrations(self, day: int, kinds: list[str]) -> None:
        staff = self._take("staff_error", day, len(kinds))
        citizen = self._take("citizen_error", day, len(kinds) - staff)
        for i, (t, kind) in enumerate(zip(self._times(day, len(kinds)), kinds, strict=True)):
            subject = self._subject("RG", day)
            self._push(t, "registration.completed", subject, {"kind": kind})
            self._cross_notices(t, subject)
            if i < staff + citizen:
                found = self._at(self._workday(day + 10, day + 35))
                cause = "staff" if i < staff else "citizen"
                self._push(found, "registration.error_found", subject, {"cause": cause})

    def _cross_notices(self, t: int, subject: str) -> None:
        """Cross-agency records of a registration case (CP1.1)."""
        for when, channel in self._channels(t):
            self._push(when, "cross_notice.recorded", subject, {"channel": channel})

    def _channels(self, t: int) -> list[tuple[int, str]]:
        r, day = self.r, t // DAY
        if r() < RATES.declined:
            return [(t + self._u(60, 1200), "declined")]  # noted at the counter
        sent = []
        if r() < RATES.hris:
            batch = r() < RATES.hris_batch  # else sent minutes after the registration
            when = self._at(day + 1, HOUR, 5 * HOUR) if batch else t + self._u(120, 1800)
            sent.append((when, "hris"))
        if r() < RATES.non_hris:
            sent.append((self._at(self._workday(day + 1, day + 6)), "non_hris"))
        if r() < RATES.office:
            sent.append((self._at(self._workday(day + 1, day + 3)), "office"))
        if sent and r() < RATES.repeat:
            sent.append((self._at(self._workday(day + 4, day + 9)), self.rng.choice(sent)[1]))
        return sent

    def _seals(self, day: int, n: int) -> None:
        errors = self._take("seal_error", day, n)
        for i, t in enumerate(self._times(day, n)):
            subject = self._subject("SC", day)
            self._push(t, "seal_certificate.issued", subject, {})
            if i < errors:
                found = self._at(self._workday(day + 1, day + 20))
                self._push(found, "seal_certificate.error_found", subject, {})

    def _subsidies(self, day: int, n: int) -> None:
        never = self._take("never_paid", day, n)
        both = self._take("paid_then_rejected", day, n - never)
        for i, t in enumerate(self._times(day, n)):
            subject = self._subject("BS", day)
            self._push(t, "birth_subsidy.applied", subject, {"amount": RATES.subsidy_amount})
            if i >= never:
                self._subsidy_outcome(day, subject, paid_then_rejected=i < never + both)

    def _subsidy_outcome(self, day: int, subject: str, *, paid_then_rejected: bool) -> None:
        due, r = day + 8, self.r()  # due instant: 00:00 of day + 8
        if paid_then_rejected:
            self._push(self._at(self._workday(day + 1, day + 6)), "birth_subsidy.paid", subject, {})
            self._reject(self._workday(day + 15, day + 30), subject, "重複申領，已追回")
        elif r < RATES.subsidy_late:
            self._push(self._at(self._workday(due, due + 4)), "birth_subsidy.paid", subject, {})
        elif r < RATES.subsidy_late + RATES.subsidy_rejected:
            early = self.r() < 0.5
            when = self._workday(day + 2, day + 6) if early else self._workday(due, due + 6)
            self._reject(when, subject, self.rng.choice(REJECT_REASONS))
        else:
            self._push(self._at(self._workday(day + 1, day + 6)), "birth_subsidy.paid", subject, {})

    def _reject(self, day: int, subject: str, reason: str) -> None:
        self._push(self._at(day), "birth_subsidy.rejected", subject, {"reason": reason})

    def _care(self, day: int, categories: list[str]) -> None:
        self.rng.shuffle(categories)
        never = self._take("care_open", day, len(categories))
        late = self._take("care_late", day, len(categories) - never)
        next_month = self.cal.month_start[self.cal.month_of[day] + 1]  # due: its 11th, 00:00
        times = self._times(day, len(categories))
        for i, (t, category) in enumerate(zip(times, categories, strict=True)):
            subject = self._subject("CC", day)
            self._push(t, "care_case.identified", subject, {"category": category})
            if i < never:
                continue
            if i < never + late:
                when = self._workday(next_month + 10, next_month + 19)
            elif self.r() < RATES.care_prompt:
                when = self._workday(day + 1, min(day + 5, next_month + 9))
            else:
                when = self._workday(next_month, next_month + 9)
            self._push(self._at(when), "care_case.notified", subject, {})

    def _retrievals(self, day: int, n: int) -> None:
        lo, hi = RATES.scanned_share
        share = lo + (hi - lo) * day / 365
        for t in self._times(day, n):
            scanned = self.r() < share
            online = scanned and self.r() < RATES.scanned_online
            data = {"mode": "online" if online else "paper", "scanned": scanned}
            self._push(t, "archive.retrieved", self._subject("AR", day), data)

    def _visits(self, day: int, n: int) -> None:
        for t in self._times(day, n):
            data = {"method": self.rng.choice(RATES.visit_methods)}
            self._push(t, "immigrant_visit.reported", self._subject("NV", day), data)

    def _scans(self, day: int, batches: list[int]) -> None:
        for t, forms in zip(self._times(day, len(batches)), batches, strict=True):
            self._push(t, "archive.scanned", self._subject("AS", day), {"forms": forms})

    def _training(self, day: int, course: str, people: list[str]) -> None:
        start = day * DAY + 14 * HOUR
        times = sorted(start - self._u(0, 1200) for _ in people)
        for t, employee in zip(times, self.rng.sample(people, len(people)), strict=True):
            data = {"employee": employee, "course": course}
            self._push(t, "training.attended", self._subject("TR", day), data)

    def _surveys(self, day: int, responses: list[tuple[int, bool, int]]) -> None:
        for t, online, pages in responses:
            data = {"mode": "online" if online else "paper", "pages": pages}
            self._push(t, "survey.completed", self._subject("SV", day), data)

    # ---- numbering and delivery ---------------------------------------------------------

    def _created(self) -> Iterator[_Item]:
        """Every event of the office-year and its follow-ups, in time order."""
        for month in range(12):
            plan = self._plan_month(month)
            for day in range(self.cal.month_start[month], self.cal.month_start[month + 1]):
                self._open_day(day, plan)
                while self.heap and self.heap[0][0] < (day + 1) * DAY:
                    yield heapq.heappop(self.heap)
        while self.heap:
            yield heapq.heappop(self.heap)

    def _stamp(self, t: int) -> str:
        """RFC 3339: local time with +08:00, or now and then the same instant in UTC."""
        if self.r() >= RATES.utc_share:
            day, s = divmod(t, DAY)
            return f"{self.cal.iso[day + 1]}T{_HM[s // 60]}{_SS[s % 60]}+08:00"
        day, s = divmod(t - LOCAL_OFFSET, DAY)
        zone = "Z" if self.r() < 0.5 else "+00:00"
        return f"{self.cal.iso[day + 1]}T{_HM[s // 60]}{_SS[s % 60]}{zone}"

    def _envelope(self, n: int, item: _Item) -> dict[str, Any]:
        t, _, etype, subject, data = item
        return {
            "specversion": "1.0",
            "id": f"{self.office}-{self.year}-{n:07d}",
            "source": self.sources[etype],
            "type": etype,
            "time": self._stamp(t),
            "subject": subject,
            "office": self.office,
            "data": data,
        }

    def _delay(self, etype: str) -> int:
        """How late a late event arrives: minutes, hours or days."""
        if etype == "birth_subsidy.applied":
            lo, hi = RATES.late_application_days
            return self._u(lo * DAY, hi * DAY)
        r = self.r()
        if r < 0.4:
            return self._u(300, 2 * HOUR)
        return self._u(2 * HOUR, DAY) if r < 0.75 else self._u(DAY, 4 * DAY)

    def deliveries(self) -> Iterator[_Delivery]:
        """The office's events in arrival order, each with its arrival instant."""
        pending: list[tuple[int, int, dict[str, Any]]] = []
        for n, item in enumerate(self._created(), 1):
            t = item[0]
            while pending and pending[0][0] <= t:
                arrival, _, late = heapq.heappop(pending)
                yield arrival, late
            event = self._envelope(n, item)
            arrival = t
            delayed = self.r() < RATES.late_share
            if delayed:
                arrival = t + self._delay(item[2])
            # the duplicate is copied before the event is yielded: what a consumer does
            # with a yielded event cannot reach its duplicate (draws in the same order)
            if self.r() < RATES.duplicate_share:
                again = {**event, "data": dict(event["data"])}
                heapq.heappush(pending, (arrival + self._u(1, 6 * HOUR), 2 * n + 1, again))
            if delayed:
                heapq.heappush(pending, (arrival, 2 * n, event))
            else:
                yield t, event
        while pending:
            arrival, _, late = heapq.heappop(pending)
            yield arrival, late


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def simulate(
    year: int = 2017, seed: int = 0, offices: Sequence[str] = ("datong",)
) -> Iterator[dict[str, Any]]:
    """Yield one year of CloudEvents for ``offices``, in arrival order, deterministically.

    Several offices are interleaved by arrival instant; each office keeps only a small
    state, so hundreds of offices stream in constant memory per office.
    """
    if isinstance(offices, str):
        raise TypeError("offices must be a sequence of office codes, not a string")
    if len(set(offices)) != len(offices) or not all(offices):
        raise ValueError(f"office codes must be non-empty and distinct: {list(offices)!r}")
    streams = [_Office(office, year, seed).deliveries() for office in offices]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=itemgetter(0))
    for _, event in merged:
        yield event


def write_jsonl(
    events: Iterable[dict[str, Any]],
    out: BinaryIO | TextIO,
    progress: Callable[[int], None] | None = None,
    chunk: int = 4096,
) -> int:
    """Write one compact JSON object per line (UTF-8, non-ASCII kept); return the count.

    ``out`` may be a binary or a text stream. ``progress``, if given, is called with the
    number of events written so far after every ``chunk`` events and at the end.
    """
    text = isinstance(out, io.TextIOBase) or hasattr(out, "encoding")
    count, lines = 0, []
    for event in events:
        lines.append(orjson.dumps(event))
        count += 1
        if len(lines) == chunk:
            _flush(out, lines, text)
            if progress is not None:
                progress(count)
    _flush(out, lines, text)
    if progress is not None:
        progress(count)
    return count


def _flush(out: BinaryIO | TextIO, lines: list[bytes], text: bool) -> None:
    if not lines:
        return
    data = b"\n".join(lines) + b"\n"
    lines.clear()
    if text:
        cast(TextIO, out).write(data.decode())
    else:
        cast(BinaryIO, out).write(data)
