"""The report: KPI values, effective targets, statuses and open cases at an instant.

Pure functions of the case book, the rules and ``(year, as_of)``; the JSON shape is the
one ``spec/kpis.md`` fixes for ``bsc-rules evaluate --format json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import orjson

from bsc_rules.calendar import iso, year_bounds, year_complete_at, year_of
from bsc_rules.errors import UsageError
from bsc_rules.measures.cases import CaseBook, CaseState, Figures, aggregate, open_cases
from bsc_rules.privacy import mask_value
from bsc_rules.rules.ruleset import SCORE_SCALE, DeadlineMeasure, Kpi, RatioMeasure, RuleSet

STATUSES = ("met", "on_track", "at_risk", "breached", "no_data", "no_target")


@dataclass(frozen=True, slots=True)
class KpiResult:
    """One KPI at an instant. ``value``/``target``/``pace`` are exact fractions."""

    kpi: Kpi
    value: Fraction | None
    target: Fraction | None
    status: str
    numerator: Fraction | None
    denominator: Fraction | None
    pace: Fraction | None = None

    @property
    def id(self) -> str:
        return self.kpi.id

    def as_dict(self) -> dict[str, Any]:
        """This KPI's entry of the report's ``kpis`` (spec/kpis.md)."""
        spec = self.kpi.spec
        return {
            "value": _number(self.value),
            "target": _number(self.target),
            "direction": spec.direction,
            "status": self.status,
            "numerator": _number(self.numerator),
            "denominator": _number(self.denominator),
            "owner": spec.owner,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """The scorecard of one year at one instant."""

    as_of: int
    year: int
    kpis: dict[str, KpiResult]
    cases: list[CaseState]
    rejected: int
    unmatched: int

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data in the shape of spec/kpis.md (case subjects unmasked)."""
        return {
            "as_of": iso(self.as_of),
            "year": self.year,
            "kpis": {k: r.as_dict() for k, r in self.kpis.items()},
            "cases": [
                {"kpi": c.kpi, "subject": c.subject, "state": c.state, "due": iso(c.due)}
                for c in self.cases
            ],
            "rejected": self.rejected,
            "unmatched": self.unmatched,
        }

    def as_json(self) -> str:
        """The report as JSON text, as ``evaluate --format json`` prints it: indented,
        Unicode as is, ID numbers in case subjects masked (bsc_rules.privacy)."""
        return orjson.dumps(mask_value(self.as_dict()), option=orjson.OPT_INDENT_2).decode()


def _number(value: Fraction | None) -> int | float | None:
    if value is None:
        return None
    if value.denominator == 1:
        return int(value)
    return float(value)


def effective_target(kpi: Kpi, year: int) -> Fraction | None:
    """The year's target, made stricter by the three-year floor where the KPI has one."""
    spec = kpi.spec
    stated = spec.targets.get(year)
    if stated is None:
        return None
    target = Fraction(str(stated))
    if spec.floor == "three_year_mean":
        prior = [spec.history.get(y) for y in range(year - 3, year)]
        known = [Fraction(str(v)) for v in prior if v is not None]
        if known:
            mean = sum(known, Fraction(0)) / len(known)
            target = max(target, mean) if spec.direction == "higher" else min(target, mean)
    return target


def _meets(kpi: Kpi, value: Fraction, target: Fraction) -> bool:
    return value >= target if kpi.spec.direction == "higher" else value <= target


def _value(kpi: Kpi, fig: Figures) -> tuple[Fraction | None, Fraction | None, Fraction | None]:
    """``(value, numerator, denominator)`` in the KPI's unit."""
    if isinstance(kpi.spec.measure, RatioMeasure | DeadlineMeasure):
        den = fig.denominator or 0
        num = Fraction(fig.numerator, SCORE_SCALE)
        denominator = Fraction(den, SCORE_SCALE)
        value = 100 * Fraction(fig.numerator, den) if den else None
        return value, num, denominator
    if fig.denominator is not None:  # a share of an office parameter, in percent
        return (
            100 * Fraction(fig.numerator, fig.denominator),
            Fraction(fig.numerator),
            Fraction(fig.denominator),
        )
    return Fraction(fig.numerator), None, None


def start_value(kpi: Kpi, fig: Figures) -> Fraction:
    """The value reached before the year began (0 for yearly KPIs; AC1.1's scans before)."""
    if fig.denominator is not None and not isinstance(
        kpi.spec.measure, RatioMeasure | DeadlineMeasure
    ):
        return 100 * Fraction(fig.start, fig.denominator)
    return Fraction(fig.start)


def pace_line(start: Fraction, target: Fraction, year: int, as_of: int) -> Fraction:
    """``start + (target - start) * elapsed`` with elapsed the share of the year passed."""
    lo, hi = year_bounds(year)
    elapsed = min(Fraction(1), max(Fraction(0), Fraction(as_of - lo, hi - lo)))
    return start + (target - start) * elapsed


def kpi_status(kpi: Kpi, fig: Figures, year: int, as_of: int) -> KpiResult:
    """Value, effective target and status of one KPI (kpis.md, "Status")."""
    value, num, den = _value(kpi, fig)
    target = effective_target(kpi, year)
    rate = kpi.spec.kind == "rate"
    start = start_value(kpi, fig)
    # what a progress KPI is expected to have reached by now (shown whatever its status)
    pace = None if rate or target is None else pace_line(start, target, year, as_of)

    def result(status: str) -> KpiResult:
        return KpiResult(kpi, value, target, status, num, den, pace)

    if target is None:
        return result("no_target")
    if value is None:
        return result("no_data")
    if _meets(kpi, value, target):
        return result("met")
    if rate:
        absolute = target == (100 if kpi.spec.direction == "higher" else 0)
        return result("breached" if absolute else "at_risk")
    if as_of >= year_complete_at(year):
        return result("breached")
    behind = pace is not None and value < pace - (target - start) / 12
    return result("at_risk" if behind else "on_track")


def check_year(year: int | None, as_of: int) -> int:
    """The report's year: by default the year of ``as_of``; never a later one."""
    current = year_of(as_of)
    if year is None:
        return current
    if year > current:
        msg = f"--year {year} is after the year of --as-of ({current}); a report cannot look ahead"
        raise UsageError(msg)
    return year


def build_report(
    rules: RuleSet, book: CaseBook, as_of: int, year: int | None, rejected: int
) -> Report:
    """The whole report of ``spec/kpis.md`` for ``year`` at ``as_of``."""
    year = check_year(year, as_of)
    results = {}
    cases: list[CaseState] = []
    for kpi_id, kpi in rules.kpis.items():
        results[kpi_id] = kpi_status(kpi, aggregate(book, kpi, year, as_of), year, as_of)
        if isinstance(kpi.spec.measure, DeadlineMeasure):
            cases += open_cases(book, kpi, as_of, rules.warning_window_days(kpi))
    cases.sort(key=lambda c: (c.due, c.subject, c.kpi))
    return Report(as_of, year, results, cases, rejected, book.unmatched(as_of))
