"""An independent recomputation of the yearly KPI report, checked against ``evaluate``.

Written from the contract only (spec/events.md and spec/kpis.md), not from the project's
measures, report, scorecard or matching code: a generated Datong 2017 is loaded into an
in-memory SQLite database (exact duplicates dropped, one opening event per subject and
type, times converted here from RFC 3339), and every KPI's numerator, denominator, value
and status, the list of due-soon and overdue cases, ``unmatched`` and ``rejected`` are
recomputed with SQL. They must equal what ``bsc-rules evaluate --format json`` prints,
for two seeds at four instants, the last one in January for the year before.

Only :mod:`bsc_rules.dev.simulate` (to generate the input) and :func:`bsc_rules.cli.main`
(to run the command) are imported from the project.
"""

from __future__ import annotations

import io
import json
import math
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bsc_rules.cli import main
from bsc_rules.dev.simulate import simulate, write_jsonl

SEEDS = (0, 7)
#: (as_of, --year or None for the year that contains as_of)
INSTANTS = (
    ("2017-01-31T23:59:59+08:00", None),
    ("2017-06-30T12:00:00+08:00", None),
    ("2017-12-31T23:59:59+08:00", None),
    ("2018-01-20T09:00:00+08:00", 2017),
)
INSTANT_IDS = ("jan-end", "mid-year", "year-end", "next-january")

# --------------------------------------------------------------------------------------
# The contract's parameters (kpis.md, and the Datong rule parameters given in the brief)
# --------------------------------------------------------------------------------------

LOCAL_OFFSET_S = 8 * 3600  # Asia/Taipei: UTC+8, no DST
DAY_S = 86_400
US = 1_000_000
REQUIRED_FORMS = 200_000  # AC1.1
HEADCOUNT = 40  # TL1.1
CC_DUE_DAY = 10  # CC1.1: due = 00:00 of the 11th of the next month
BP_DAYS = 7  # BP1.1: 次日起7日內, due = 00:00 of the 8th day after the application's date
WARNING_DAYS = 2  # due_soon: last allowed day on or before the 2nd working day after today

# The office calendar, written out here from the DGPA work calendars of 106 and 107 (spec
# kpis.md and reference/domain.md §5), not from the `holidays` package: days off on a
# weekday, and make-up working Saturdays. Datong's office file sets working_day_end.
DAYS_OFF = (
    "2017-01-02", "2017-01-27", "2017-01-30", "2017-01-31", "2017-02-01", "2017-02-27",
    "2017-02-28", "2017-04-03", "2017-04-04", "2017-05-29", "2017-05-30", "2017-10-04",
    "2017-10-09", "2017-10-10",
    "2018-01-01", "2018-02-15", "2018-02-16", "2018-02-19", "2018-02-20", "2018-02-28",
    "2018-04-04", "2018-04-05", "2018-04-06", "2018-06-18", "2018-09-24", "2018-10-10",
    "2018-12-31",
)  # fmt: skip
MAKE_UP_SATURDAYS = ("2017-02-18", "2017-06-03", "2017-09-30", "2018-03-31", "2018-12-22")
CALENDAR_SPAN = (date(2016, 11, 1), date(2018, 12, 31))


def working_days() -> list[int]:
    """Local day numbers of the office's working days over :data:`CALENDAR_SPAN`."""
    off = {date.fromisoformat(d) for d in DAYS_OFF}
    make_up = {date.fromisoformat(d) for d in MAKE_UP_SATURDAYS}
    first, last = (d.toordinal() for d in CALENDAR_SPAN)
    days = (date.fromordinal(n) for n in range(first, last + 1))
    return [day_number(d) for d in days if d in make_up or (d.weekday() < 5 and d not in off)]


RATE, PROGRESS = "rate", "progress"


@dataclass(frozen=True)
class Kpi:
    kind: str
    owner: str
    direction: str
    targets: dict[int, float]
    floor_history: dict[int, float | None] | None = None


KPIS: dict[str, Kpi] = {
    "AC1.1": Kpi(PROGRESS, "records", "higher", {2017: 50, 2018: 100, 2019: 100}),
    "AC1.2": Kpi(RATE, "records", "higher", {2017: 100, 2018: 100, 2019: 100}),
    "AP1.1": Kpi(RATE, "records", "higher", {2017: 100, 2018: 100, 2019: 100}),
    "AP2.1": Kpi(RATE, "registration", "higher", {2017: 100, 2018: 100, 2019: 100},
                 {2014: 99.98, 2015: 99.97, 2016: 99.97}),
    "BC1.1": Kpi(PROGRESS, "registration", "higher", {2017: 379, 2018: 379, 2019: 379},
                 {2014: None, 2015: 27, 2016: 379}),
    "BP1.1": Kpi(RATE, "registration", "lower", {2017: 0, 2018: 0, 2019: 0}),
    "CC1.1": Kpi(RATE, "registration", "higher", {2017: 100, 2018: 100, 2019: 100}),
    "CP1.1": Kpi(RATE, "registration", "higher", {2017: 80, 2018: 80, 2019: 80},
                 {2014: 6.79, 2015: 9.02, 2016: 52.71}),
    "TL1.1": Kpi(PROGRESS, "general_affairs", "higher", {2017: 100, 2018: 100, 2019: 100}),
    "TF1.1": Kpi(PROGRESS, "general_affairs", "higher", {2017: 1250, 2018: 1300, 2019: 1350}),
}  # fmt: skip

#: Types that open a case or are counted themselves, and archive.scanned (distinct subject).
OPENING_TYPES = (
    "registration.completed", "seal_certificate.issued", "birth_subsidy.applied",
    "care_case.identified", "archive.retrieved", "immigrant_visit.reported",
    "training.attended", "survey.completed", "archive.scanned",
)  # fmt: skip
#: Follow-up type → the opening type of its case.
FOLLOW_UPS = {
    "registration.error_found": "registration.completed",
    "cross_notice.recorded": "registration.completed",
    "seal_certificate.error_found": "seal_certificate.issued",
    "birth_subsidy.paid": "birth_subsidy.applied",
    "birth_subsidy.rejected": "birth_subsidy.applied",
    "care_case.notified": "care_case.identified",
}

# --------------------------------------------------------------------------------------
# Validation and time, from events.md
# --------------------------------------------------------------------------------------

_ENUMS = {
    "kind": ("birth", "death", "marriage", "divorce", "move_in", "move_out",
             "address_change", "other"),
    "cause": ("staff", "citizen"),
    "channel": ("hris", "non_hris", "office", "declined"),
    "mode": ("online", "paper"),
    "method": ("phone", "home", "other"),
    "category": ("elderly_marriage", "divorce_with_minor"),
}  # fmt: skip
#: type → {field: check}
_DATA: dict[str, dict[str, Any]] = {
    "registration.completed": {"kind": _ENUMS["kind"]},
    "registration.error_found": {"cause": _ENUMS["cause"]},
    "cross_notice.recorded": {"channel": _ENUMS["channel"]},
    "seal_certificate.issued": {},
    "seal_certificate.error_found": {},
    "archive.scanned": {"forms": ("int", 1)},
    "archive.retrieved": {"mode": _ENUMS["mode"], "scanned": "bool"},
    "immigrant_visit.reported": {"method": _ENUMS["method"]},
    "birth_subsidy.applied": {"amount": ("int", None)},
    "birth_subsidy.paid": {},
    "birth_subsidy.rejected": {"reason": "str"},
    "care_case.identified": {"category": _ENUMS["category"]},
    "care_case.notified": {},
    "training.attended": {"employee": "str", "course": "str"},
    "survey.completed": {"mode": _ENUMS["mode"], "pages": ("int", 0)},
}
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def epoch_us(text: str) -> int:
    """UTC microseconds since 1970 of an RFC 3339 time with an explicit offset."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time with offset: {text!r}")
    y, mo, d, hh, mi, ss = (int(g) for g in m.groups()[:6])
    frac, zone = m.group(7), m.group(8)
    if not (0 <= hh < 24 and 0 <= mi < 60 and 0 <= ss < 60):
        raise ValueError(f"bad clock time: {text!r}")
    days = date(y, mo, d).toordinal() - _EPOCH_ORDINAL
    seconds = days * DAY_S + hh * 3600 + mi * 60 + ss
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    return seconds * US + micro


def local_day(t_us: int) -> int:
    """The local (Asia/Taipei) day number of an instant: days since 1970-01-01."""
    return (t_us // US + LOCAL_OFFSET_S) // DAY_S


def local_midnight_us(day: int) -> int:
    """The instant of 00:00 local of a local day number."""
    return (day * DAY_S - LOCAL_OFFSET_S) * US


def day_number(d: date) -> int:
    return d.toordinal() - _EPOCH_ORDINAL


def local_text(t_us: int) -> str:
    """An instant as local RFC 3339, ``YYYY-MM-DDTHH:MM:SS+08:00`` (whole seconds)."""
    s = t_us // US + LOCAL_OFFSET_S
    day, rest = divmod(s, DAY_S)
    d = date.fromordinal(day + _EPOCH_ORDINAL)
    return f"{d.isoformat()}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}+08:00"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def problems(obj: Any) -> list[str]:
    """What is wrong with one decoded line, per events.md; empty when it is valid."""
    if not isinstance(obj, dict):
        return ["not a JSON object"]
    bad = []
    if obj.get("specversion") != "1.0":
        bad.append("specversion")
    for attr in ("id", "source", "subject"):
        if not isinstance(obj.get(attr), str) or not obj[attr]:
            bad.append(attr)
    etype = obj.get("type")
    if etype not in _DATA:
        return [*bad, "type"]
    try:
        epoch_us(obj.get("time"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        bad.append("time")
    if "office" in obj and obj["office"] != "datong":
        bad.append("office")
    data = obj.get("data", {})
    if not isinstance(data, dict):
        return [*bad, "data"]
    for name, check in _DATA[etype].items():
        value = data.get(name)
        if check == "str":
            ok = isinstance(value, str)
        elif check == "bool":
            ok = isinstance(value, bool)
        elif isinstance(check, tuple) and check[:1] == ("int",):
            ok = _is_int(value) and (check[1] is None or value >= check[1])
        else:
            ok = value in check
        if not ok:
            bad.append(f"data.{name}")
    return bad


# --------------------------------------------------------------------------------------
# The event database
# --------------------------------------------------------------------------------------

_FIELDS = ("kind", "cause", "channel", "forms", "mode", "scanned", "method", "amount",
           "reason", "category", "employee", "course", "pages")  # fmt: skip


@dataclass
class Year:
    """One generated year: its file and its events loaded into SQLite."""

    seed: int
    path: Path
    db: sqlite3.Connection
    lines: int = 0
    invalid: int = 0
    duplicates: int = 0
    conflicts: int = 0
    reports: dict[tuple[str, int | None], tuple[dict[str, Any], dict[str, Any]]] = field(
        default_factory=dict
    )


def load(path: Path, seed: int) -> Year:
    """Read JSON Lines into ``raw`` (valid lines, arrival order) and ``events`` (deduplicated)."""
    db = sqlite3.connect(":memory:")
    columns = ", ".join(_FIELDS)
    db.execute(
        "CREATE TABLE raw (arrival INTEGER PRIMARY KEY, line INTEGER, source TEXT, id TEXT,"
        " type TEXT, subject TEXT, t_us INTEGER, lday INTEGER, local_date TEXT,"
        f" content TEXT, {columns})"
    )
    year = Year(seed, path, db)
    rows = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            year.lines += 1
            try:
                obj = json.loads(raw)
            except ValueError:
                year.invalid += 1
                continue
            if problems(obj):
                year.invalid += 1
                continue
            t = epoch_us(obj["time"])
            day = local_day(t)
            data = obj.get("data", {})
            values = [data.get(f) for f in _FIELDS]
            rows.append((
                number, obj["source"], obj["id"], obj["type"], obj["subject"], t, day,
                date.fromordinal(day + _EPOCH_ORDINAL).isoformat(),
                json.dumps(obj, sort_keys=True, ensure_ascii=False), *values,
            ))  # fmt: skip
    marks = ", ".join("?" * (10 + len(_FIELDS)))
    db.executemany(f"INSERT INTO raw VALUES ({marks})", [(None, *r) for r in rows])
    # The same (source, id) again: a no-op with identical content, a conflict otherwise
    # (the first to arrive stands).
    db.executescript(
        """
        CREATE TABLE events AS
          SELECT * FROM (
            SELECT *, ROW_NUMBER() OVER (PARTITION BY source, id ORDER BY arrival) AS copy
            FROM raw)
          WHERE copy = 1;
        CREATE INDEX events_type_subject ON events (type, subject, t_us);
        CREATE INDEX events_time ON events (t_us);
        CREATE TABLE workday (lday INTEGER PRIMARY KEY);
        """
    )
    db.executemany("INSERT INTO workday VALUES (?)", [(d,) for d in working_days()])
    year.conflicts = db.execute(
        "SELECT COUNT(*) FROM raw r JOIN events e USING (source, id)"
        " WHERE r.arrival <> e.arrival AND r.content <> e.content"
    ).fetchone()[0]
    year.duplicates = db.execute(
        "SELECT COUNT(*) FROM raw r JOIN events e USING (source, id)"
        " WHERE r.arrival <> e.arrival AND r.content = e.content"
    ).fetchone()[0]
    return year


# --------------------------------------------------------------------------------------
# The recomputation
# --------------------------------------------------------------------------------------


def _open(db: sqlite3.Connection, as_of: int) -> None:
    """``opened``: per (type, subject) of an opening type, its earliest event at ``as_of``.

    Earliest by time, at equal times the first to arrive; the follow-ups are all kept.
    """
    types = ", ".join(f"'{t}'" for t in OPENING_TYPES)
    db.executescript("DROP TABLE IF EXISTS temp.opened;")
    db.execute(
        f"""
        CREATE TEMP TABLE opened AS
          SELECT * FROM (
            SELECT *, ROW_NUMBER() OVER (PARTITION BY type, subject ORDER BY t_us, arrival) AS n
            FROM events WHERE type IN ({types}) AND t_us <= :as_of)
          WHERE n = 1
        """,
        {"as_of": as_of},
    )
    db.execute("CREATE INDEX temp.opened_type ON opened (type, subject)")


def _deadline_cases(db: sqlite3.Connection, p: dict[str, int]) -> list[dict[str, Any]]:
    """Every BP1.1 and CC1.1 case opened by ``as_of`` (any year) with its state at ``as_of``.

    state: ``overdue``/``due_soon``/``open`` for a case not ended; ``on_time``, ``late``
    or (BP1.1, rejected before due) ``left_out`` for one that ended.
    """
    rows = db.execute(
        """
        WITH lasts AS (
          SELECT 'BP1.1' AS kpi, subject, t_us, lday + :bp_days AS last,
                 'birth_subsidy.applied' AS opening
          FROM opened WHERE type = 'birth_subsidy.applied'
          UNION ALL
          SELECT 'CC1.1', subject, t_us,
                 CAST(julianday(local_date, 'start of month', '+1 month',
                                printf('+%d days', :due_day - 1)) - 2440587.5 AS INTEGER),
                 'care_case.identified'
          FROM opened WHERE type = 'care_case.identified'),
        cases AS (  -- working_day_end: the last day moves to the next working day
          SELECT l.*, (SELECT MIN(w.lday) FROM workday w WHERE w.lday >= l.last) AS moved
          FROM lasts l),
        soon AS (  -- the WARNING_DAYS-th working day after as_of's local date
          SELECT lday AS until FROM workday WHERE lday > :today
          ORDER BY lday LIMIT 1 OFFSET :warning - 1),
        ends AS (
          SELECT type, subject, t_us,
                 ROW_NUMBER() OVER (PARTITION BY type IN ('birth_subsidy.paid',
                                                          'birth_subsidy.rejected'), subject
                                    ORDER BY t_us, arrival) AS n
          FROM events
          WHERE type IN ('birth_subsidy.paid', 'birth_subsidy.rejected', 'care_case.notified')
            AND t_us <= :as_of),
        first_end AS (
          SELECT CASE WHEN type = 'care_case.notified' THEN 'care_case.identified'
                      ELSE 'birth_subsidy.applied' END AS opening,
                 subject, type AS end_type, t_us AS end_t
          FROM ends WHERE n = 1),
        dated AS (
          SELECT c.*, ((c.moved + 1) * 86400 - 28800) * 1000000 AS due FROM cases c)
        SELECT c.kpi, c.subject, c.t_us, c.due,
               CASE
                 WHEN f.end_t IS NULL THEN
                   CASE WHEN :as_of >= c.due THEN 'overdue'
                        WHEN c.moved <= (SELECT until FROM soon) THEN 'due_soon'
                        ELSE 'open' END
                 WHEN f.end_t >= c.due THEN 'late'
                 WHEN f.end_type = 'birth_subsidy.rejected' THEN 'left_out'
                 ELSE 'on_time'
               END AS state
        FROM dated c LEFT JOIN first_end f USING (opening, subject)
        """,
        {
            **p,
            "bp_days": BP_DAYS,
            "due_day": CC_DUE_DAY,
            "warning": WARNING_DAYS,
            "today": local_day(p["as_of"]),
        },
    ).fetchall()
    keys = ("kpi", "subject", "t_us", "due", "state")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _one(db: sqlite3.Connection, sql: str, p: dict[str, int]) -> tuple[Any, ...]:
    row = db.execute(sql, p).fetchone()
    return tuple(0 if v is None else v for v in row)


PERIOD = "t_us >= :ys AND t_us < :ye"


def _figures(db: sqlite3.Connection, p: dict[str, int]) -> dict[str, tuple[Any, Any, Any]]:
    """KPI → (value, numerator, denominator) before statuses; also AC1.1's start value."""
    out: dict[str, tuple[Any, Any, Any]] = {}
    # AC1.1: cumulative, every distinct scan before the end of year Y (and <= as_of).
    (forms, before) = _one(db, """
        SELECT SUM(forms), SUM(CASE WHEN t_us < :ys THEN forms END)
        FROM opened WHERE type = 'archive.scanned' AND t_us < :ye""", p)  # fmt: skip
    out["AC1.1"] = (100 * forms / REQUIRED_FORMS, forms, REQUIRED_FORMS)
    out["AC1.1 start"] = (100 * before / REQUIRED_FORMS, before, REQUIRED_FORMS)
    # AC1.2: retrievals of scanned documents, online among them.
    (den, num) = _one(db, f"""
        SELECT COUNT(*), SUM(mode = 'online') FROM opened
        WHERE type = 'archive.retrieved' AND scanned = 1 AND {PERIOD}""", p)  # fmt: skip
    out["AC1.2"] = _ratio(num, den)
    # AP1.1: certificates issued in Y, less those with any error_found (any time <= as_of).
    (den, bad) = _one(db, f"""
        SELECT COUNT(*), SUM(EXISTS (
                 SELECT 1 FROM events e WHERE e.type = 'seal_certificate.error_found'
                   AND e.subject = o.subject AND e.t_us <= :as_of))
        FROM opened o WHERE o.type = 'seal_certificate.issued' AND {PERIOD}""", p)  # fmt: skip
    out["AP1.1"] = _ratio(den - bad, den)
    # AP2.1 and CP1.1 from the registration cases of year Y.
    (n, ec, es, score) = _one(db, f"""
        WITH reg AS (
          SELECT subject FROM opened WHERE type = 'registration.completed' AND {PERIOD}),
        err AS (
          SELECT subject, MAX(cause = 'citizen') AS citizen, MAX(cause = 'staff') AS staff
          FROM events WHERE type = 'registration.error_found' AND t_us <= :as_of
          GROUP BY subject),
        ch AS (
          SELECT subject, MAX(channel = 'declined') AS declined, MAX(channel = 'hris') AS hris,
                 MAX(channel = 'non_hris') AS non_hris, MAX(channel = 'office') AS office
          FROM events WHERE type = 'cross_notice.recorded' AND t_us <= :as_of
          GROUP BY subject)
        SELECT COUNT(*),
               SUM(COALESCE(err.citizen, 0)),
               SUM(COALESCE(err.citizen, 0) = 0 AND COALESCE(err.staff, 0) = 1),
               -- score in hundredths, summed exactly as integers
               SUM(CASE WHEN ch.declined THEN 100
                        ELSE 65 * COALESCE(ch.hris, 0) + 30 * COALESCE(ch.non_hris, 0)
                             + 5 * COALESCE(ch.office, 0) END)
        FROM reg LEFT JOIN err USING (subject) LEFT JOIN ch USING (subject)""", p)  # fmt: skip
    out["AP2.1"] = _ratio(n - ec - es, n - ec)
    out["CP1.1"] = (score / n if n else None, score / 100, n)  # 100 × (score / 100) / n
    # BC1.1, TF1.1, TL1.1: progress counts of year Y.
    (visits,) = _one(
        db,
        f"""
        SELECT COUNT(*) FROM opened WHERE type = 'immigrant_visit.reported' AND {PERIOD}""",
        p,
    )
    out["BC1.1"] = (visits, None, None)
    (pages,) = _one(db, f"""
        SELECT SUM(pages) FROM opened
        WHERE type = 'survey.completed' AND mode = 'online' AND {PERIOD}""", p)  # fmt: skip
    out["TF1.1"] = (pages, None, None)
    (trained,) = _one(db, f"""
        SELECT COUNT(DISTINCT employee) FROM opened
        WHERE type = 'training.attended' AND {PERIOD}""", p)  # fmt: skip
    out["TL1.1"] = (100 * trained / HEADCOUNT, trained, HEADCOUNT)
    return out


def _ratio(num: int, den: int) -> tuple[float | None, int, int]:
    return (100 * num / den if den else None, num, den)


def _target(kpi: Kpi, year: int) -> float | None:
    stated = kpi.targets.get(year)
    if stated is None or kpi.floor_history is None:
        return stated
    known = [v for y, v in kpi.floor_history.items() if year - 3 <= y < year and v is not None]
    if not known:
        return stated
    mean = sum(known) / len(known)
    return max(stated, mean) if kpi.direction == "higher" else min(stated, mean)


def _status(kpi: Kpi, value: float | None, den: Any, target: float | None, *,
            elapsed: float, complete: bool, start: float = 0.0) -> str:  # fmt: skip
    if target is None:
        return "no_target"
    if kpi.kind == RATE:
        if not den:
            return "no_data"
        assert value is not None
        if value >= target if kpi.direction == "higher" else value <= target:
            return "met"
        if target == (100 if kpi.direction == "higher" else 0):
            return "breached"
        return "at_risk"
    assert value is not None
    if value >= target:
        return "met"
    if complete:
        return "breached"
    pace = start + (target - start) * elapsed
    return "at_risk" if value < pace - (target - start) / 12 else "on_track"


def recompute(year: Year, as_of_text: str, report_year: int | None) -> dict[str, Any]:
    """The report of spec/kpis.md, computed from the SQLite event tables."""
    db = year.db
    as_of = epoch_us(as_of_text)
    as_of_date = date.fromordinal(local_day(as_of) + _EPOCH_ORDINAL)
    y = as_of_date.year if report_year is None else report_year
    assert y <= as_of_date.year
    ys = local_midnight_us(day_number(date(y, 1, 1)))
    ye = local_midnight_us(day_number(date(y + 1, 1, 1)))
    p = {"as_of": as_of, "ys": ys, "ye": ye}
    _open(db, as_of)
    figures = _figures(db, p)
    cases = _deadline_cases(db, p)
    for kpi_id in ("BP1.1", "CC1.1"):
        mine = [c for c in cases if c["kpi"] == kpi_id and ys <= c["t_us"] < ye]
        states = [c["state"] for c in mine]
        if kpi_id == "BP1.1":  # overdue / applications not left out (open ones included)
            num = states.count("overdue") + states.count("late")
            den = len(states) - states.count("left_out")
        else:  # notified on time / (notified + open past due)
            num = states.count("on_time")
            den = num + states.count("late") + states.count("overdue")
        figures[kpi_id] = _ratio(num, den)
    complete = as_of >= ye - US  # as_of >= Y-12-31T23:59:59 local
    elapsed = (as_of - ys) / (ye - ys)
    kpis = {}
    for kpi_id, kpi in KPIS.items():
        value, num, den = figures[kpi_id]
        target = _target(kpi, y)
        start = figures["AC1.1 start"][0] if kpi_id == "AC1.1" else 0.0
        kpis[kpi_id] = {
            "value": value, "target": target, "direction": kpi.direction,
            "status": _status(kpi, value, den, target, elapsed=elapsed, complete=complete,
                              start=start),
            "numerator": num, "denominator": den, "owner": kpi.owner,
        }  # fmt: skip
    listed = sorted(
        (c for c in cases if c["state"] in ("due_soon", "overdue")),
        key=lambda c: (c["due"], c["subject"], c["kpi"]),
    )
    unmatched = db.execute(
        """
        WITH m(follow_up, opening) AS (VALUES {})
        SELECT COUNT(*) FROM events f JOIN m ON f.type = m.follow_up
        WHERE f.t_us <= :as_of AND NOT EXISTS (
          SELECT 1 FROM events o
          WHERE o.type = m.opening AND o.subject = f.subject AND o.t_us <= :as_of)
        """.format(", ".join(f"('{f}', '{o}')" for f, o in FOLLOW_UPS.items())),
        p,
    ).fetchone()[0]
    return {
        "as_of": as_of_text,
        "year": y,
        "kpis": kpis,
        "cases": [
            {
                "kpi": c["kpi"],
                "subject": c["subject"],
                "state": c["state"],
                "due": local_text(c["due"]),
            }
            for c in listed
        ],
        "rejected": year.invalid + year.conflicts,
        "unmatched": unmatched,
    }


# --------------------------------------------------------------------------------------
# Fixtures: each year generated once per module; each report computed once
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def years(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Year]]:
    folder = tmp_path_factory.mktemp("recompute")
    loaded = {}
    for seed in SEEDS:
        path = folder / f"datong-2017-seed{seed}.jsonl"
        with path.open("wb") as handle:
            write_jsonl(simulate(year=2017, seed=seed), handle)
        loaded[seed] = load(path, seed)
    yield loaded
    for year in loaded.values():
        year.db.close()


def evaluate(path: Path, as_of: str, year: int | None) -> dict[str, Any]:
    argv = ["evaluate", str(path), "--as-of", as_of, "--format", "json", "--matcher", "python"]
    if year is not None:
        argv += ["--year", str(year)]
    out = io.StringIO()
    code = main(argv, stdout=out)
    report: dict[str, Any] = json.loads(out.getvalue())
    assert code == (3 if report["rejected"] else 0)  # 3: ran, some lines rejected (kpis.md)
    return report


def reports(
    year: Year, as_of: str, report_year: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(expected, got) at one instant, cached per year."""
    key = (as_of, report_year)
    if key not in year.reports:
        year.reports[key] = (recompute(year, as_of, report_year),
                             evaluate(year.path, as_of, report_year))  # fmt: skip
    return year.reports[key]


def same(a: Any, b: Any) -> bool:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


seeds = pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
instants = pytest.mark.parametrize(("as_of", "report_year"), INSTANTS, ids=INSTANT_IDS)

# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


@seeds
def test_the_recomputation_self_checks(years: dict[int, Year], seed: int) -> None:
    """The generated year is clean, has exact duplicates, and the time parser is right."""
    year = years[seed]
    assert year.lines > 35_000
    assert year.invalid == 0
    assert year.conflicts == 0, "generated data must not hold (source, id) conflicts"
    assert year.duplicates > 0, "exact duplicates exercise the idempotency rule"
    # The same instant written in UTC and in local time.
    assert epoch_us("2017-03-15T02:23:00Z") == epoch_us("2017-03-15T10:23:00+08:00")
    assert epoch_us("2016-12-31T16:00:00+00:00") == local_midnight_us(day_number(date(2017, 1, 1)))
    assert local_text(epoch_us("2017-03-22T16:00:00Z")) == "2017-03-23T00:00:00+08:00"


@seeds
@instants
@pytest.mark.parametrize("kpi_id", list(KPIS))
def test_kpi_matches_the_recomputation(
    years: dict[int, Year], seed: int, as_of: str, report_year: int | None, kpi_id: str
) -> None:
    """value (1e-9 relative), numerator, denominator, status, target, direction, owner."""
    expected, got = reports(years[seed], as_of, report_year)
    want, have = expected["kpis"][kpi_id], got["kpis"][kpi_id]
    diffs = {k: (want[k], have.get(k)) for k in want if not same(want[k], have.get(k))}
    assert not diffs, f"{kpi_id} at {as_of}: {{field: (expected, got)}} = {diffs}"


@seeds
@instants
def test_cases_match_the_recomputation(
    years: dict[int, Year], seed: int, as_of: str, report_year: int | None
) -> None:
    """Every due-soon or overdue case, any year, ordered by due, subject, kpi."""
    expected, got = reports(years[seed], as_of, report_year)
    assert got["cases"] == expected["cases"]


@seeds
@instants
def test_report_frame_matches_the_recomputation(
    years: dict[int, Year], seed: int, as_of: str, report_year: int | None
) -> None:
    """as_of, year, the ten KPIs, unmatched, and no rejections (duplicates are none)."""
    expected, got = reports(years[seed], as_of, report_year)
    assert set(got) == set(expected)
    assert set(got["kpis"]) == set(KPIS)
    for key in ("as_of", "year", "unmatched", "rejected"):
        assert got[key] == expected[key], key
    assert got["rejected"] == 0


@seeds
def test_the_comparison_is_not_vacuous(years: dict[int, Year], seed: int) -> None:
    """Over the four instants the recomputation meets the outcomes it checks."""
    year = years[seed]
    seen_states, seen_status = set(), set()
    for as_of, report_year in INSTANTS:
        expected, _ = reports(year, as_of, report_year)
        seen_states |= {c["state"] for c in expected["cases"]}
        seen_status |= {k["status"] for k in expected["kpis"].values()}
    assert "overdue" in seen_states
    assert {"met", "breached", "on_track"} <= seen_status
    # Follow-ups that arrive before their case's opening event (held, then matched).
    early = year.db.execute(
        "SELECT COUNT(*) FROM events f JOIN events o ON o.subject = f.subject"
        " AND o.type = 'birth_subsidy.applied' AND f.type = 'birth_subsidy.paid'"
        " WHERE f.arrival < o.arrival"
    ).fetchone()[0]
    assert early > 0


# --------------------------------------------------------------------------------------
# A small hand-written log for the rules the generated years never meet
# --------------------------------------------------------------------------------------

_EDGE_IDS = iter(range(1, 1000))


def _e(type_: str, time: str, subject: str, data: dict[str, Any] | None = None,
       id_: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "specversion": "1.0", "id": id_ or f"edge-{next(_EDGE_IDS):04d}",
        "source": "/taipei/datong/test", "type": type_, "time": time, "subject": subject,
        "office": "datong", "data": data or {},
    }  # fmt: skip


def edge_lines() -> list[bytes]:
    """Boundaries of the spec: UTC times across local midnight, deadlines met exactly,
    repeated opening subjects, ties, follow-ups before their opening, bad lines."""
    applied, paid, rejected = (
        "birth_subsidy.applied",
        "birth_subsidy.paid",
        "birth_subsidy.rejected",
    )
    amount = {"amount": 20000}
    events = [
        # BP1.1: applied 23:30 local (written in UTC), due 03-23T00:00; paid exactly at due.
        _e(applied, "2017-03-15T15:30:00Z", "BS-A", amount),
        _e(paid, "2017-03-23T00:00:00+08:00", "BS-A"),
        # rejected before due: left out; rejected exactly at due: overdue.
        _e(applied, "2017-03-16T10:00:00+08:00", "BS-B", amount),
        _e(rejected, "2017-03-23T12:00:00+08:00", "BS-B", {"reason": "x"}),
        _e(applied, "2017-03-16T11:00:00+08:00", "BS-C", amount),
        _e(rejected, "2017-03-24T00:00:00+08:00", "BS-C", {"reason": "x"}),
        # paid, then rejected later: ended at its payment, on time.
        _e(applied, "2017-03-16T12:00:00+08:00", "BS-D", amount),
        _e(paid, "2017-03-20T12:00:00+08:00", "BS-D"),
        _e(rejected, "2017-04-20T12:00:00+08:00", "BS-D", {"reason": "x"}),
        # a payment timed before its application (keyed in late): unmatched until then.
        _e(paid, "2017-03-10T10:00:00+08:00", "BS-E"),
        _e(applied, "2017-03-12T09:00:00+08:00", "BS-E", amount),
        # opened in 2016 and again in 2017: a 2016 case, never paid; listed, not counted.
        # Its last day, Sat 2017-01-07, moves to Mon 01-09: due 2017-01-10T00:00.
        _e(applied, "2016-12-31T20:00:00+08:00", "BS-F", amount),
        _e(applied, "2017-01-05T09:00:00+08:00", "BS-F", amount),
        # never paid: due 2017-12-30T00:00, overdue at year end.
        _e(applied, "2017-12-21T16:00:00Z", "BS-G", amount),  # local 2017-12-22 00:00
        # applied on the last day: last day Sun 2018-01-07 → Mon 01-08, due 2018-01-09T00:00;
        # due_soon from Thu 2018-01-04T00:00 (Mon is the 2nd working day after Thu).
        _e(applied, "2017-12-31T10:00:00+08:00", "BS-H", amount),
        # never paid, deadlines moved by the office calendar (kpis.md): the spec's example,
        # 05-29 (調整放假) and 05-30 (端午節) → due 2017-06-01T00:00; a make-up Saturday
        # 2017-02-18 is a working day → due 02-19; 5/1 is a working day → due 05-02.
        _e(applied, "2017-05-22T10:00:00+08:00", "BS-I", amount),
        _e(applied, "2017-02-11T10:00:00+08:00", "BS-J", amount),
        _e(applied, "2017-04-24T10:00:00+08:00", "BS-K", amount),
        # CC1.1: identified 2017-01-31 local (UTC 15:59), due 02-11; notified exactly at due.
        _e(
            "care_case.identified", "2017-01-31T15:59:00Z", "CC-A", {"category": "elderly_marriage"}
        ),
        _e("care_case.notified", "2017-02-11T00:00:00+08:00", "CC-A"),
        # identified 2017-02-01 00:30 local (written 01-31 in UTC): due 03-11; on time.
        _e(
            "care_case.identified",
            "2017-01-31T16:30:00Z",
            "CC-B",
            {"category": "divorce_with_minor"},
        ),
        _e("care_case.notified", "2017-03-10T23:59:59+08:00", "CC-B"),
        # identified in December, never notified: due 2018-01-11.
        _e(
            "care_case.identified",
            "2017-12-05T10:00:00+08:00",
            "CC-C",
            {"category": "elderly_marriage"},
        ),
        # AP2.1 / CP1.1
        _e("registration.completed", "2017-03-01T10:00:00+08:00", "RG-A", {"kind": "birth"}),
        _e("registration.error_found", "2017-03-20T10:00:00+08:00", "RG-A", {"cause": "citizen"}),
        _e("registration.error_found", "2017-03-21T10:00:00+08:00", "RG-A", {"cause": "staff"}),
        _e("cross_notice.recorded", "2017-03-01T10:05:00+08:00", "RG-A", {"channel": "declined"}),
        _e("cross_notice.recorded", "2017-03-02T02:00:00+08:00", "RG-A", {"channel": "hris"}),
        _e("registration.completed", "2017-03-02T10:00:00+08:00", "RG-B", {"kind": "move_in"}),
        _e("registration.error_found", "2017-03-20T10:00:00+08:00", "RG-B", {"cause": "staff"}),
        _e("registration.error_found", "2017-03-22T10:00:00+08:00", "RG-B", {"cause": "staff"}),
        _e("cross_notice.recorded", "2017-03-02T10:10:00+08:00", "RG-B", {"channel": "hris"}),
        _e("cross_notice.recorded", "2017-03-09T10:10:00+08:00", "RG-B", {"channel": "hris"}),
        _e("registration.completed", "2017-03-03T10:00:00+08:00", "RG-C", {"kind": "death"}),
        _e("cross_notice.recorded", "2017-03-03T10:10:00+08:00", "RG-C", {"channel": "hris"}),
        _e("cross_notice.recorded", "2017-03-04T10:10:00+08:00", "RG-C", {"channel": "non_hris"}),
        _e("cross_notice.recorded", "2017-03-05T10:10:00+08:00", "RG-C", {"channel": "office"}),
        # an error timed before its registration: unmatched in between.
        _e("registration.error_found", "2017-03-05T10:00:00+08:00", "RG-D", {"cause": "staff"}),
        _e("registration.completed", "2017-03-13T10:00:00+08:00", "RG-D", {"kind": "other"}),
        # completed late on 12-31 local, written in UTC: a 2017 case; 2018-01-01 00:00 is not.
        _e("registration.completed", "2017-12-31T15:59:59Z", "RG-E", {"kind": "other"}),
        _e("registration.completed", "2017-12-31T16:00:00Z", "RG-F", {"kind": "other"}),
        # AP1.1
        _e("seal_certificate.issued", "2017-03-01T10:00:00+08:00", "SC-A"),
        _e("seal_certificate.error_found", "2018-01-10T10:00:00+08:00", "SC-A"),
        _e("seal_certificate.issued", "2017-03-01T11:00:00+08:00", "SC-B"),
        # AC1.1: a 2016 scan (the year's start value), then two scans of one batch at the
        # same instant: the first to arrive counts.
        _e("archive.scanned", "2016-06-01T10:00:00+08:00", "AS-A", {"forms": 1000}),
        _e("archive.scanned", "2017-03-01T10:00:00+08:00", "AS-B", {"forms": 300}),
        _e("archive.scanned", "2017-03-01T10:00:00+08:00", "AS-B", {"forms": 500}),
        # AC1.2
        _e(
            "archive.retrieved",
            "2017-03-01T10:00:00+08:00",
            "AR-A",
            {"mode": "online", "scanned": True},
        ),
        _e(
            "archive.retrieved",
            "2017-03-01T10:00:00+08:00",
            "AR-B",
            {"mode": "paper", "scanned": True},
        ),
        _e(
            "archive.retrieved",
            "2017-03-01T10:00:00+08:00",
            "AR-C",
            {"mode": "paper", "scanned": False},
        ),
        # BC1.1, TL1.1, TF1.1
        _e("immigrant_visit.reported", "2017-03-01T10:00:00+08:00", "NV-A", {"method": "home"}),
        _e("immigrant_visit.reported", "2016-12-31T15:00:00Z", "NV-B", {"method": "phone"}),
        _e(
            "training.attended",
            "2017-03-01T14:00:00+08:00",
            "TR-A",
            {"employee": "E001", "course": "c"},
        ),
        _e(
            "training.attended",
            "2017-05-01T14:00:00+08:00",
            "TR-B",
            {"employee": "E001", "course": "c"},
        ),
        _e(
            "training.attended",
            "2017-05-01T14:00:00+08:00",
            "TR-C",
            {"employee": "E002", "course": "c"},
        ),
        _e("survey.completed", "2017-03-01T10:00:00+08:00", "SV-A", {"mode": "online", "pages": 3}),
        _e("survey.completed", "2017-03-01T10:00:00+08:00", "SV-B", {"mode": "paper", "pages": 4}),
    ]
    lines = [json.dumps(e, ensure_ascii=False).encode() for e in events]
    conflict = {**events[0], "data": {"amount": 10000}}
    naive = _e("survey.completed", "2017-03-01T10:00:00", "SV-C", {"mode": "online", "pages": 9})
    lines += [
        lines[1],  # an exact duplicate: a no-op
        json.dumps(conflict).encode(),  # same (source, id), other content: rejected
        json.dumps(naive).encode(),  # a time without offset: rejected
    ]
    return lines


EDGE_INSTANTS = (
    ("2017-03-11T00:00:00+08:00", None),
    ("2017-03-23T00:00:00+08:00", None),
    ("2017-12-29T00:00:00+08:00", None),
    ("2017-12-31T23:59:59+08:00", None),
    ("2018-01-03T23:59:59+08:00", 2017),
    ("2018-01-04T00:00:00+08:00", 2017),
    ("2018-01-20T09:00:00+08:00", 2017),
)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Year]:
    path = tmp_path_factory.mktemp("recompute-edge") / "edge.jsonl"
    path.write_bytes(b"\n".join(edge_lines()) + b"\n")
    year = load(path, -1)
    yield year
    year.db.close()


def test_edge_log_is_what_it_claims(edge: Year) -> None:
    assert (edge.invalid, edge.conflicts, edge.duplicates) == (1, 1, 1)
    expected, _ = reports(edge, "2017-03-11T00:00:00+08:00", None)
    assert expected["unmatched"] == 2  # BS-E's payment, RG-D's error
    assert expected["rejected"] == 2


@pytest.mark.parametrize(
    ("as_of", "report_year"),
    EDGE_INSTANTS,
    ids=[a[:10] + ("-y" if y else "") for a, y in EDGE_INSTANTS],
)
def test_edge_log_matches_the_recomputation(
    edge: Year, as_of: str, report_year: int | None
) -> None:
    """Every KPI figure, the cases, unmatched and rejected, on the hand-written log."""
    expected, got = reports(edge, as_of, report_year)
    diffs = {
        (kpi_id, k): (want[k], got["kpis"][kpi_id].get(k))
        for kpi_id, want in expected["kpis"].items()
        for k in want
        if not same(want[k], got["kpis"][kpi_id].get(k))
    }
    for key in ("as_of", "year", "unmatched", "rejected", "cases"):
        if got[key] != expected[key]:
            diffs[(key, "")] = (expected[key], got[key])
    assert not diffs, f"at {as_of}: {{(kpi, field): (expected, got)}} = {diffs}"


@pytest.mark.parametrize(
    ("subject", "due"),
    [
        pytest.param("BS-F", "2017-01-10T00:00:00+08:00", id="saturday-to-monday"),
        pytest.param("BS-G", "2017-12-30T00:00:00+08:00", id="friday-stays"),
        pytest.param("BS-I", "2017-06-01T00:00:00+08:00", id="bridge-day-and-dragon-boat"),
        pytest.param("BS-J", "2017-02-19T00:00:00+08:00", id="make-up-saturday-stays"),
        pytest.param("BS-K", "2017-05-02T00:00:00+08:00", id="labour-day-is-working"),
    ],
)
def test_edge_dues_follow_the_office_calendar(edge: Year, subject: str, due: str) -> None:
    """The reference's own dues are the spec's (the comparison above then checks ours)."""
    expected, got = reports(edge, "2017-12-31T23:59:59+08:00", None)
    assert {c["subject"]: c["due"] for c in expected["cases"]}[subject] == due
    assert {c["subject"]: c["due"] for c in got["cases"]}[subject] == due


def test_edge_due_soon_counts_working_days(edge: Year) -> None:
    """BS-H (last day Mon 2018-01-08) is due soon from Thu 01-04 00:00, not before."""
    for as_of, state in (
        ("2018-01-03T23:59:59+08:00", None),
        ("2018-01-04T00:00:00+08:00", "due_soon"),
    ):
        expected, _ = reports(edge, as_of, 2017)
        states = {c["subject"]: c["state"] for c in expected["cases"]}
        assert states.get("BS-H") == state
