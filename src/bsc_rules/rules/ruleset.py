"""Rule files: the office and its KPIs as data, validated with pydantic.

``rules/office.yaml`` describes the office and holds its own values
(:mod:`bsc_rules.rules.office`); every other ``rules/*.yaml`` describes one KPI: what the seed says
of it (objective, owner, formula, targets, history, action plans, budgets) and its
``measure``: the declared per-event conditions and how they aggregate. Conditions are
data (event type + field values); the aggregation kinds are a small fixed vocabulary
implemented in :mod:`bsc_rules.measures.cases`.

:func:`load_ruleset` reads a folder, reports *every* problem of every file at once as a
:class:`~bsc_rules.errors.RuleFileError`, and compiles the conditions for the matchers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from bsc_rules.calendar import roc_year
from bsc_rules.errors import Problem, RuleFileError
from bsc_rules.events import EVENT_TYPES, FOLLOW_UP_OF, PERIOD_TYPES, FieldSpec
from bsc_rules.matching.condition import Condition, Scalar
from bsc_rules.officecal import OfficeCalendar
from bsc_rules.rules.office import (
    Closure,
    ClosuresFile,
    OfficeFile,
    SectionCode,
    Year,
    misplaced,
    without_misplaced,
)
from bsc_rules.rules.sourcemap import load_and_validate, load_yaml, validate
from bsc_rules.types import Direction, KpiKind, Unit

Number = StrictInt | Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- KPI files

Value = StrictStr | StrictBool | StrictInt


class When(_Strict):
    """An event condition: a type and, per data field, the value (or values) that count."""

    type: str
    where: dict[str, Value | list[Value]] = {}

    @model_validator(mode="after")
    def _known(self) -> When:
        if self.type not in EVENT_TYPES:
            known = ", ".join(sorted(EVENT_TYPES))
            msg = f"type: unknown event type {self.type!r}; expected one of {known}"
            raise ValueError(msg)
        fields = EVENT_TYPES[self.type]
        for name, value in self.where.items():
            if name not in fields:
                allowed = ", ".join(sorted(fields)) or "none"
                msg = f"where.{name}: {self.type} has no data field {name!r} (fields: {allowed})"
                raise ValueError(msg)
            for v in value if isinstance(value, list) else [value]:
                _check_value(f"where.{name}", fields[name], v)
        return self

    def values(self) -> tuple[tuple[str, tuple[Scalar, ...]], ...]:
        return tuple(
            (name, tuple(v) if isinstance(v, list) else (v,)) for name, v in self.where.items()
        )


def _check_value(where: str, spec: FieldSpec, value: Scalar) -> None:
    ok = {
        "enum": isinstance(value, str) and value in spec.values,
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[spec.kind]
    if not ok:
        expected = {
            "enum": "one of " + ", ".join(map(repr, spec.values)),
            "int": "an integer",
            "bool": "true or false",
            "str": "a string",
        }[spec.kind]
        msg = f"{where}: expected {expected}, got {value!r}"
        raise ValueError(msg)


class Credit(When):
    weight: Annotated[float, Field(gt=0, le=1)]


class RatioMeasure(_Strict):
    """Share of cases handled right: each case scores 0..1, some are left out."""

    kind: Literal["ratio"]
    population: When
    exclude: list[When] = []
    fail: list[When] = []
    credit: list[Credit] = []


class DeadlineRule(_Strict):
    rule: Literal["days_after", "next_month"]
    days: Annotated[int, Field(ge=0, le=366)] | None = None
    day_parameter: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> DeadlineRule:
        if self.rule == "days_after" and self.days is None:
            raise ValueError("days: required with rule 'days_after'")
        if self.rule == "next_month" and self.day_parameter is None:
            raise ValueError("day_parameter: required with rule 'next_month'")
        return self


class DeadlineMeasure(_Strict):
    """Cases with a due instant: the share overdue, or the share handled on time."""

    kind: Literal["deadline"]
    count: Literal["overdue", "on_time"]
    population: When
    closed_by: list[When]
    cancelled_by: list[When] = []
    due: DeadlineRule


class CountMeasure(_Strict):
    kind: Literal["count"]
    population: When


class SumMeasure(_Strict):
    kind: Literal["sum"]
    population: When
    field: str
    cumulative: bool = False
    per: str | None = None


class DistinctMeasure(_Strict):
    kind: Literal["distinct"]
    population: When
    field: str
    per: str | None = None


Measure = Annotated[
    RatioMeasure | DeadlineMeasure | CountMeasure | SumMeasure | DistinctMeasure,
    Field(discriminator="kind"),
]


class Objective(_Strict):
    code: str
    name: str
    city_objectives: list[str] = []


class ActionPlan(_Strict):
    code: str
    name: str
    owner: SectionCode
    budget: dict[Year, Annotated[int, Field(ge=0)]] = {}
    program: str | None = None


class KpiFile(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Z]{2}\d+\.\d+$")]
    name: str
    label: str | None = None  # a short label where the scorecard's name is long
    name_en: str
    objective: Objective
    theme: str
    perspective: Literal["C", "P", "L", "F"]
    owner: SectionCode
    formula: str
    unit: Unit
    kind: KpiKind
    direction: Direction
    targets: dict[Year, Number]
    history: dict[Year, Number | None] = {}
    floor: Literal["three_year_mean"] | None = None
    minimum: Number | None = None
    parameters: dict[str, Number] = {}
    measure: Measure
    action_plans: list[ActionPlan] = []
    notes: list[str] = []

    @model_validator(mode="after")
    def _consistent(self) -> KpiFile:
        for problem in _measure_problems(self):
            raise ValueError(problem)
        return self


def _follow_up_ok(type_: str, opening: str) -> bool:
    return type_ == opening or FOLLOW_UP_OF.get(type_) == opening


def _condition_problems(m: Any) -> list[str]:
    opening = m.population.type
    problems = []
    if opening not in PERIOD_TYPES:
        problems.append(f"measure.population.type: {opening!r} does not open or count cases")
    for role in ("exclude", "fail", "credit", "closed_by", "cancelled_by"):
        for i, cond in enumerate(getattr(m, role, [])):
            if not _follow_up_ok(cond.type, opening):
                problems.append(
                    f"measure.{role}[{i}].type: {cond.type!r} is not a follow-up of {opening!r}"
                )
    return problems


def _field_problems(kpi: KpiFile) -> list[str]:
    m = kpi.measure
    problems = []
    if isinstance(m, SumMeasure | DistinctMeasure):
        spec = EVENT_TYPES[m.population.type].get(m.field)
        if spec is None or (isinstance(m, SumMeasure) and spec.kind != "int"):
            problems.append(f"measure.field: {m.population.type} has no integer field {m.field!r}")
        if m.per is not None and m.per not in kpi.parameters:
            problems.append(f"measure.per: parameter {m.per!r} is not set in parameters")
    if isinstance(m, DeadlineMeasure) and m.due.day_parameter is not None:
        day = kpi.parameters.get(m.due.day_parameter)
        if not isinstance(day, int) or not 1 <= day <= 28:
            problems.append(
                f"measure.due.day_parameter: parameters.{m.due.day_parameter} must be a day 1-28"
            )
    return problems


def _measure_problems(kpi: KpiFile) -> list[str]:
    m = kpi.measure
    problems = _condition_problems(m) + _field_problems(kpi)
    rate = isinstance(m, RatioMeasure | DeadlineMeasure)
    if (kpi.kind == "rate") != rate:
        problems.append(f"kind: {kpi.kind!r} does not fit a {m.kind!r} measure")
    if kpi.kind == "progress" and kpi.direction != "higher":
        problems.append("direction: a progress KPI must be 'higher'")
    if kpi.floor is not None and not kpi.history:
        problems.append("floor: a floor needs the history of earlier years")
    return problems


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
    calendar: OfficeCalendar = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        days = [c.date for c in (*self.city_closures, *self.office.closures)]
        object.__setattr__(self, "calendar", OfficeCalendar(days))

    @property
    def code(self) -> str:
        return self.office.office.code

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


def default_rules_dir() -> Path:
    """The shipped rule files: the package data ``bsc_rules/data/rules`` (in a checkout, a
    symlink to the repo's ``rules/``, which it resolves to)."""
    return Path(str(files("bsc_rules") / "data" / "rules")).resolve()


def load_ruleset(directory: Path | None = None) -> RuleSet:
    """Load and validate a rule folder; raise RuleFileError with every problem found."""
    directory = directory or default_rules_dir()
    if not directory.is_dir():
        problem = Problem(str(directory), None, None, "", "rule folder not found")
        raise RuleFileError([problem])
    problems: list[Problem] = []
    office_path = directory / OFFICE_FILE
    office = _load_closing(OfficeFile, office_path, problems) if office_path.exists() else None
    if office is None and not office_path.exists():
        problems.append(Problem(str(office_path), None, None, "", "office file is missing"))
    closures_path = directory / CLOSURES_FILE
    city = _load_closing(ClosuresFile, closures_path, problems) if closures_path.exists() else None
    loaded = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name not in (OFFICE_FILE, CLOSURES_FILE):
            spec = _load(KpiFile, path, problems)
            if spec is not None:
                loaded.append((spec, path))
    problems += _cross_problems(office, loaded)
    if problems or office is None:
        raise RuleFileError(problems)
    compiler = _Compiler()
    kpis = {
        spec.id: compiler.kpi(spec, path) for spec, path in sorted(loaded, key=lambda x: x[0].id)
    }
    closures = tuple(city.closures) if city is not None else ()
    fields = _field_needs(kpis)
    return RuleSet(office, kpis, tuple(compiler.conditions), directory, fields, closures)


def _load_closing(model: Any, path: Path, problems: list[Problem]) -> Any:
    """Load a file with a ``closures`` list; a date listed twice is a located problem."""
    wrong: list[Problem] = []
    try:
        located = load_yaml(path)
        if model is OfficeFile:  # values that belong elsewhere, each named with its place
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


def _cross_problems(office: OfficeFile | None, loaded: list[tuple[KpiFile, Path]]) -> list[Problem]:
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
