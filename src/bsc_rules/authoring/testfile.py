"""The rule test file: its schema, and loading it with located errors.

A test file (``rules/tests/*.test.yaml``) names a rule folder, input events and
expectations at instants, in the spirit of Prometheus' ``promtool test rules``::

    rule_files: ..            # the rule folder, relative to this file (default: ..)
    tests:
      - name: paid on the 7th day is on time
        events:
          - {type: birth_subsidy.applied, subject: BS1, time: "2017-03-15T10:00:00+08:00",
             data: {amount: 20000}}
        expect:
          - at: "2017-03-31T23:59:59+08:00"
            kpis: {BP1.1: {value: 0, status: met}}      # any subset of the fields
            cases: []                                   # exactly these cases (here: none)
            alerts: []                                  # exactly these alerts (here: none)

An event line needs ``type``, ``subject`` and ``time`` (with an explicit offset); the
envelope's ``specversion``, ``id``, ``source`` and ``office`` are filled in when absent.
Every event is checked against the event contract when the file is loaded, so a bad
event is reported at its line like any other mistake in the file. Numbers compare
within :data:`TOLERANCE` (the two decimals every report shows).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bsc_rules.errors import Problem, RuleFileError
from bsc_rules.events import Rejection, parse_object
from bsc_rules.rules.sourcemap import Located, load_yaml, validate
from bsc_rules.types import AlertState, CaseStateName, Direction, KpiStatus

TOLERANCE = 0.005
DEFAULT_SOURCE = "/rule-tests"
Status = KpiStatus
NonEmpty = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        msg = "expected a time with an explicit offset, e.g. 2017-03-31T23:59:59+08:00"
        raise ValueError(msg)
    return value


class EventLine(_Strict):
    """One input event; the envelope's other attributes get defaults."""

    type: NonEmpty
    subject: NonEmpty
    time: NonEmpty
    data: dict[str, Any] | None = None
    id: NonEmpty | None = None
    source: NonEmpty | None = None
    office: NonEmpty | None = None
    specversion: Literal["1.0"] = "1.0"

    def envelope(self, index: int, office: str | None) -> dict[str, Any]:
        """The full CloudEvent of this line (the ``index``-th of its test)."""
        obj = self.model_dump(exclude_none=True)
        obj.setdefault("id", f"test-{index + 1:04d}")
        obj.setdefault("source", DEFAULT_SOURCE)
        if office is not None:
            obj.setdefault("office", office)
        return obj


class KpiExpect(_Strict):
    """Any subset of a KPI's reported fields (``value: null`` expects no value)."""

    value: float | None = None
    target: float | None = None
    status: Status | None = None
    numerator: float | None = None
    denominator: float | None = None
    direction: Direction | None = None
    owner: str | None = None


class CaseExpect(_Strict):
    """A case listed by the report: open and ``due_soon`` or ``overdue``."""

    kpi: NonEmpty
    subject: NonEmpty
    state: CaseStateName
    due: datetime | None = None

    _due = field_validator("due")(lambda v: v if v is None else _aware(v))


class AlertExpect(_Strict):
    """An alert the pipeline holds at the instant (e.g. ``kpi:2017:CP1.1``, ``case:BP1.1:BS1``)."""

    key: Annotated[str, Field(pattern=r"^(kpi:\d{4}:|case:)[^:]+(:.+)?$")]
    state: AlertState
    recipients: list[str] | None = None


class Expectation(_Strict):
    """What must hold at one instant.

    ``cases``, when given, is the exact list of the report's cases (``[]``: none);
    ``alerts``, when given, the exact list of the alerts held for the KPIs that the
    test names anywhere (alerts of other KPIs, e.g. progress KPIs without data, are
    not compared).
    """

    at: datetime
    year: int | None = None
    kpis: dict[str, KpiExpect] = Field(default_factory=dict)
    cases: list[CaseExpect] | None = None
    alerts: list[AlertExpect] | None = None
    rejected: Annotated[int, Field(ge=0)] | None = None
    unmatched: Annotated[int, Field(ge=0)] | None = None

    _at = field_validator("at")(_aware)


class TestCase(_Strict):
    """One named scenario: events in, expectations out."""

    __test__ = False  # not a pytest class

    name: NonEmpty
    events: list[EventLine] = Field(default_factory=list)
    expect: Annotated[list[Expectation], Field(min_length=1)]


class TestFile(_Strict):
    """A whole test file."""

    __test__ = False

    rule_files: NonEmpty = ".."
    settings: NonEmpty | None = None
    tests: Annotated[list[TestCase], Field(min_length=1)]


class LoadedTests:
    """A validated test file, with where each of its parts is written."""

    def __init__(self, path: Path, model: TestFile, located: Located) -> None:
        self.path, self.model, self.located = path, model, located

    @property
    def rules_dir(self) -> Path:
        return (self.path.parent / self.model.rule_files).resolve()

    @property
    def settings_file(self) -> Path | None:
        name = self.model.settings
        return None if name is None else (self.path.parent / name).resolve()

    def where(self, *loc: str | int) -> str:
        """``file:line:col`` of the value at ``loc`` (e.g. ``("tests", 0, "expect", 1)``)."""
        line, col = self.located.position(loc)
        return f"{shown(self.path)}:{line}:{col}"


def shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_tests(path: Path) -> LoadedTests:
    """Load and validate one test file; raise ``RuleFileError`` with every problem found."""
    located = load_yaml(path)
    problems = _event_problems(path, located)
    try:
        model = validate(TestFile, located, path)
    except RuleFileError as exc:
        problems = sorted(exc.problems + problems, key=lambda p: (p.line or 0, p.col or 0))
        raise RuleFileError(problems) from None
    if problems:
        raise RuleFileError(problems)
    return LoadedTests(path, model, located)


def _event_problems(path: Path, located: Located) -> list[Problem]:
    """Each event line checked against the event contract, located at its line."""
    problems = []
    tests = located.data.get("tests")
    for index, case in enumerate(tests if isinstance(tests, list) else []):
        events = case.get("events") if isinstance(case, dict) else None
        for number, line in enumerate(events if isinstance(events, list) else []):
            if not isinstance(line, dict) or not {"type", "subject", "time"} <= set(line):
                continue  # the schema says what is missing
            envelope = {"specversion": "1.0", "id": "test", "source": DEFAULT_SOURCE} | line
            parsed = parse_object(envelope)
            if isinstance(parsed, Rejection):
                loc: tuple[str | int, ...] = ("tests", index, "events", number)
                field = parsed.field.split(".")[0]
                row, col = located.position((*loc, field) if field in line else loc)
                where = f"tests[{index}].events[{number}]" + (f".{field}" if field else "")
                problems.append(Problem(str(path), row, col, where, parsed.message))
    return problems
