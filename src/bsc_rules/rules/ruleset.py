"""Rule files: the office and its KPIs as data, validated with pydantic.

``rules/office.yaml`` describes the office and holds its own values
(:mod:`bsc_rules.rules.office`); every other ``rules/*.yaml`` describes one KPI
(:mod:`bsc_rules.rules.kpifile`): what the seed says of it and its ``measure``, the
declared per-event conditions and how they aggregate. Conditions are data (event type +
field values); the aggregation kinds are a small fixed vocabulary implemented in
:mod:`bsc_rules.measures.cases`. A multi-office rule folder (``offices/<code>.yaml``) is
loaded by :mod:`bsc_rules.rules.offices` with the same pieces.

:func:`load_ruleset` reads a folder, reports *every* problem of every file at once as a
:class:`~bsc_rules.errors.RuleFileError`, and compiles the conditions for the matchers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from importlib.resources import files
from pathlib import Path
from typing import Any

from bsc_rules.calendar import roc_year
from bsc_rules.errors import Problem, RuleFileError
from bsc_rules.matching.condition import Condition
from bsc_rules.officecal import OfficeCalendar
from bsc_rules.rules.kpifile import (
    DeadlineMeasure,
    DistinctMeasure,
    KpiFile,
    RatioMeasure,
    SumMeasure,
    When,
)
from bsc_rules.rules.office import Closure, ClosuresFile, OfficeFile, misplaced, without_misplaced
from bsc_rules.rules.sourcemap import load_and_validate, load_yaml, validate

__all__ = [  # the KPI file's measures, as the measures stage imports them from here
    "SCORE_SCALE",
    "DeadlineMeasure",
    "DistinctMeasure",
    "Kpi",
    "KpiFile",
    "RatioMeasure",
    "RuleSet",
    "SumMeasure",
    "default_rules_dir",
    "load_ruleset",
]


# ---------------------------------------------------------------- compiled rule set

SCORE_SCALE = 10_000  # case scores are integers in 1/10000 (0.65 → 6500)


@dataclass(frozen=True, slots=True)
class Kpi:
    """A KPI file with its conditions compiled to match bits."""

    spec: KpiFile
    path: Path
    population: Condition
    exclude: tuple[Condition, ...] = ()
    fail: tuple[Condition, ...] = ()
    credit: tuple[tuple[Condition, int], ...] = ()
    closed_by: tuple[Condition, ...] = ()
    cancelled_by: tuple[Condition, ...] = ()
    masks: dict[str, int] = field(init=False, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.spec.id

    def mask(self, role: str) -> int:
        """The combined match mask of the conditions of one role (e.g. ``closed_by``)."""
        return self.masks[role]

    def __post_init__(self) -> None:
        roles = ("exclude", "fail", "closed_by", "cancelled_by")
        masks = {role: sum(c.mask for c in getattr(self, role)) for role in roles}
        masks["credit"] = sum(c.mask for c, _w in self.credit)
        follow_ups = 0
        for mask in masks.values():  # OR, not sum: a condition may serve in two roles
            follow_ups |= mask
        masks["follow_ups"] = follow_ups  # every condition a follow-up can meet
        object.__setattr__(self, "masks", masks)


@dataclass(frozen=True)
class RuleSet:
    """The office and its KPIs, ready to evaluate."""

    office: OfficeFile
    kpis: dict[str, Kpi]
    conditions: tuple[Condition, ...]
    directory: Path
    field_needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    city_closures: tuple[Closure, ...] = ()  # closures.yaml beside the rules
    office_path: Path | None = None  # offices/<code>.yaml in a multi-office rule folder
    calendar: OfficeCalendar = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        days = [c.date for c in (*self.city_closures, *self.office.closures)]
        object.__setattr__(self, "calendar", OfficeCalendar(days))

    @property
    def code(self) -> str:
        return self.office.office.code

    @property
    def office_file(self) -> Path:
        """The file the office comes from: ``office.yaml``, or ``offices/<code>.yaml``."""
        return self.office_path or self.directory / OFFICE_FILE

    @property
    def deadline_calendar(self) -> OfficeCalendar | None:
        """The calendar a last allowed day moves by (``working_day_end``), else None."""
        return self.calendar if self.office.deadlines == "working_day_end" else None

    def calendar_years(self) -> set[int]:
        """The years the rules speak of: the strategy year, targets, closures."""
        years = {self.office.office.strategy_year}
        years.update(day.year for day in self.calendar.closures)
        for kpi in self.kpis.values():
            years.update(kpi.spec.targets)
        return years

    def calendar_warnings(self, years: Iterable[int] = ()) -> list[str]:
        """One warning per year (of the rules, and ``years``) without calendar data."""
        unknown = sorted(
            y for y in self.calendar_years() | set(years) if not OfficeCalendar.known(y)
        )
        return [
            f"{roc_year(y)}年（{y}）的行事曆資料不明：國定假日照常放假，"
            "但調整放假日與補行上班日未知，期限可能不正確。"
            for y in unknown
        ]

    def warning_window_days(self, kpi: Kpi) -> int:
        value = kpi.spec.parameters.get("warning_window_days")
        return int(value) if value is not None else self.office.alerts.warning_window_days


class _Compiler:
    def __init__(self) -> None:
        self.conditions: list[Condition] = []

    def add(self, kpi_id: str, role: str, when: When) -> Condition:
        index = sum(1 for c in self.conditions if c.name.startswith(f"{kpi_id}/{role}/"))
        cond = Condition(len(self.conditions), f"{kpi_id}/{role}/{index}", when.type, when.values())
        self.conditions.append(cond)
        return cond

    def kpi(self, spec: KpiFile, path: Path) -> Kpi:
        m, add = spec.measure, self.add
        return Kpi(
            spec=spec,
            path=path,
            population=add(spec.id, "population", m.population),
            exclude=tuple(add(spec.id, "exclude", w) for w in getattr(m, "exclude", [])),
            fail=tuple(add(spec.id, "fail", w) for w in getattr(m, "fail", [])),
            credit=tuple(
                (add(spec.id, "credit", w), round(w.weight * SCORE_SCALE))
                for w in getattr(m, "credit", [])
            ),
            closed_by=tuple(add(spec.id, "closed_by", w) for w in getattr(m, "closed_by", [])),
            cancelled_by=tuple(
                add(spec.id, "cancelled_by", w) for w in getattr(m, "cancelled_by", [])
            ),
        )


def _field_needs(kpis: dict[str, Kpi]) -> dict[str, tuple[str, ...]]:
    needs: dict[str, set[str]] = {}
    for kpi in kpis.values():
        m = kpi.spec.measure
        if isinstance(m, SumMeasure | DistinctMeasure):
            needs.setdefault(m.population.type, set()).add(m.field)
    return {t: tuple(sorted(f)) for t, f in needs.items()}


OFFICE_FILE = "office.yaml"
CLOSURES_FILE = "closures.yaml"
DEPLOYMENT_FILE = "deployment.yaml"  # multi-office folders: see bsc_rules.rules.offices


def default_rules_dir() -> Path:
    """The shipped rule files: the package data ``bsc_rules/data/rules`` (in a checkout, a
    symlink to the repo's ``rules/``, which it resolves to)."""
    return Path(str(files("bsc_rules") / "data" / "rules")).resolve()


def load_ruleset(directory: Path | None = None) -> RuleSet:
    """Load and validate a rule folder; raise RuleFileError with every problem found."""
    directory = directory or default_rules_dir()
    problems = folder_problems(directory)
    if problems:
        raise RuleFileError(problems)
    office_path = directory / OFFICE_FILE
    office = load_closing(OfficeFile, office_path, problems) if office_path.exists() else None
    if office is None and not office_path.exists():
        problems.append(Problem(str(office_path), None, None, "", "office file is missing"))
    shared = load_shared(directory, problems)
    problems += cross_problems(office, shared.kpis)
    if (directory / DEPLOYMENT_FILE).exists():
        text = "a deployment file belongs to a multi-office rule folder (with offices/<code>.yaml)"
        problems.append(Problem(str(directory / DEPLOYMENT_FILE), None, None, "", text))
    if problems or office is None:
        raise RuleFileError(problems)
    return compile_ruleset(office, shared.kpis, directory, shared.closures)


def folder_problems(directory: Path) -> list[Problem]:
    """The folder itself: it must exist."""
    if directory.is_dir():
        return []
    return [Problem(str(directory), None, None, "", "rule folder not found")]


@dataclass(frozen=True)
class Shared:
    """What every office of a rule folder shares: the KPI files, the city's closures."""

    kpis: list[tuple[KpiFile, Path]]
    closures: tuple[Closure, ...]


NOT_KPI_FILES = (OFFICE_FILE, CLOSURES_FILE, DEPLOYMENT_FILE)


def load_shared(directory: Path, problems: list[Problem]) -> Shared:
    """The KPI files (every ``*.yaml`` but the office, closures and deployment files) and
    ``closures.yaml``; their problems added to ``problems``."""
    closures_path = directory / CLOSURES_FILE
    city = load_closing(ClosuresFile, closures_path, problems) if closures_path.exists() else None
    loaded = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name not in NOT_KPI_FILES:
            spec = _load(KpiFile, path, problems)
            if spec is not None:
                loaded.append((spec, path))
    return Shared(loaded, tuple(city.closures) if city is not None else ())


def compile_ruleset(
    office: OfficeFile,
    loaded: list[tuple[KpiFile, Path]],
    directory: Path,
    closures: tuple[Closure, ...],
    office_path: Path | None = None,
) -> RuleSet:
    """The rule set of one office: its KPI files' conditions compiled for the matchers."""
    compiler = _Compiler()
    kpis = {
        spec.id: compiler.kpi(spec, path) for spec, path in sorted(loaded, key=lambda x: x[0].id)
    }
    fields = _field_needs(kpis)
    conditions = tuple(compiler.conditions)
    return RuleSet(office, kpis, conditions, directory, fields, closures, office_path)


def load_closing(model: Any, path: Path, problems: list[Problem]) -> Any:
    """Load a file with a ``closures`` list; a date listed twice is a located problem."""
    wrong: list[Problem] = []
    try:
        located = load_yaml(path)
        if issubclass(model, OfficeFile):  # values that belong elsewhere, named with their place
            wrong = misplaced(located, path)
            located = without_misplaced(located)
        result = validate(model, located, path)
    except RuleFileError as exc:
        problems.extend(sorted([*wrong, *exc.problems], key=lambda p: (p.line or 0, p.col or 0)))
        return None
    if wrong:
        problems.extend(wrong)
        return None
    seen: dict[date, int] = {}
    before = len(problems)
    for i, closure in enumerate(result.closures):
        if closure.date in seen:
            line, col = located.position(("closures", i))
            first = located.position(("closures", seen[closure.date]))[0]
            text = f"{closure.date} is listed twice (first on line {first})"
            problems.append(Problem(str(path), line, col, f"closures[{i}]", text))
        seen.setdefault(closure.date, i)
    return result if len(problems) == before else None


def _load(model: Any, path: Path, problems: list[Problem]) -> Any:
    result = load_and_validate(model, path)
    if isinstance(result, list):
        problems.extend(result)
        return None
    return result


def cross_problems(office: OfficeFile | None, loaded: list[tuple[KpiFile, Path]]) -> list[Problem]:
    problems = []
    seen: dict[str, Path] = {}
    for spec, path in loaded:
        if spec.id in seen:
            problems.append(
                Problem(str(path), 1, 1, "id", f"{spec.id} is also defined in {seen[spec.id]}")
            )
        seen[spec.id] = path
        if office is not None and spec.theme not in office.themes:
            themes = ", ".join(sorted(office.themes))
            problems.append(
                Problem(
                    str(path),
                    None,
                    None,
                    "theme",
                    f"expected one of the office's themes ({themes}), got {spec.theme!r}",
                )
            )
    if not loaded:
        problems.append(Problem("rules", None, None, "", "no KPI files (*.yaml) found"))
    return problems
