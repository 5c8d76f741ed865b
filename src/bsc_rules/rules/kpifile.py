"""A KPI rule file (``rules/<id>.yaml``) as data: what the seed says of the KPI (objective,
owner, formula, targets, history, action plans, budgets) and its ``measure``: the
declared per-event conditions and how they aggregate, validated with pydantic.
"""

from __future__ import annotations

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

from bsc_rules.events import EVENT_TYPES, FOLLOW_UP_OF, PERIOD_TYPES, FieldSpec
from bsc_rules.matching.condition import Scalar
from bsc_rules.rules.office import SectionCode, Year
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
