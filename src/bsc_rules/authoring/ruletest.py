"""Running rule tests: events in, the report and the alert pipeline out, diffs back.

Each expectation is checked against what the real code computes at its instant:
KPI fields and cases from the scorecard's report (the one ``bsc-rules evaluate``
prints), alerts from one evaluation of the alert pipeline over a fresh SQLite database
at that instant (what a service starting then would hold, and whom it would tell).
A mismatch lists only the fields that differ, per KPI, case and alert.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bsc_rules.authoring.testfile import (
    TOLERANCE,
    Expectation,
    KpiExpect,
    LoadedTests,
    TestCase,
    load_tests,
)
from bsc_rules.calendar import iso, to_us
from bsc_rules.errors import Problem, RuleFileError
from bsc_rules.measures.report import Report
from bsc_rules.rules.ruleset import RuleSet, load_ruleset
from bsc_rules.scorecard import Scorecard
from bsc_rules.settings import Settings, load_settings


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One expectation that did not hold: where it is written and what differs."""

    where: str
    at: str
    lines: tuple[str, ...]

    def __str__(self) -> str:
        return "\n".join([f"{self.where}: 於 {self.at}"] + [f"  {line}" for line in self.lines])


@dataclass(slots=True)
class CaseResult:
    """The outcome of one named test of one file."""

    file: Path
    name: str
    mismatches: list[Mismatch] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.error is None

    def explain(self) -> str:
        if self.error is not None:
            return f"無法執行：{self.error}"
        return "\n".join(str(m) for m in self.mismatches)


@dataclass(slots=True)
class Suite:
    """Every file run: results, located problems of bad files, and coverage."""

    results: list[CaseResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    known: dict[str, set[str]] = field(default_factory=dict)  # rule folder -> KPI ids
    covered: dict[str, set[str]] = field(default_factory=dict)

    def uncovered(self) -> dict[str, list[str]]:
        """Per rule folder, the KPIs no expectation names."""
        return {
            folder: sorted(ids - self.covered.get(folder, set()))
            for folder, ids in self.known.items()
        }

    @property
    def exit_code(self) -> int:
        if self.problems:
            return 2
        return 0 if all(r.passed for r in self.results) else 1


# ------------------------------------------------------------------ discovery


def test_files(paths: Iterable[Path]) -> list[Path]:
    """The test files named, folders searched for ``*.test.yaml``."""
    found: list[Path] = []
    for path in paths:
        found += sorted(path.rglob("*.test.yaml")) if path.is_dir() else [path]
    return found


def selector(patterns: list[str] | None) -> re.Pattern[str] | None:
    """One regex from ``--run`` patterns (each a regex; plain text matches as a substring)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def covered_kpis(case: TestCase) -> set[str]:
    """The KPIs an expectation of ``case`` names (in ``kpis``, ``cases`` or ``alerts``)."""
    names: set[str] = set()
    for exp in case.expect:
        names |= set(exp.kpis)
        names |= {c.kpi for c in exp.cases or []}
        names |= {_alert_kpi(a.key) for a in exp.alerts or []}
    return names


def _alert_kpi(key: str) -> str:
    """``kpi:2017:CP1.1`` -> ``CP1.1``; ``case:BP1.1:BS1`` -> ``BP1.1``."""
    parts = key.split(":", 2)
    return parts[1] if parts[0] == "case" else parts[-1]


def _ingest(card: Scorecard, events: list[dict[str, Any]]) -> list[str]:
    """Store and apply the events in one batch; the rejections, as text."""
    lines = [(number, orjson.dumps(obj)) for number, obj in enumerate(events, 1)]
    return [str(r) for r in card.ingest_numbered(lines).rejections]


# ------------------------------------------------------------------ running


class Runner:
    """Runs test files, caching one rule set per folder."""

    def __init__(self, rules_override: Path | None = None) -> None:
        self.override = rules_override
        self._rules: dict[Path, RuleSet] = {}

    def rules_for(self, loaded: LoadedTests) -> RuleSet:
        folder = (self.override or loaded.rules_dir).resolve()
        if folder not in self._rules:
            self._rules[folder] = load_ruleset(folder)
        return self._rules[folder]

    def run(self, paths: Iterable[Path], only: re.Pattern[str] | None = None) -> Suite:
        suite = Suite()
        for path in test_files(paths):
            try:
                loaded = load_tests(path)
                rules = self.rules_for(loaded)
            except RuleFileError as exc:
                suite.problems += exc.problems
                continue
            folder = str(rules.directory)
            suite.known.setdefault(folder, set()).update(rules.kpis)
            for index, case in enumerate(loaded.model.tests):
                suite.covered.setdefault(folder, set()).update(covered_kpis(case))
                if only is None or only.search(case.name):
                    suite.results.append(self.run_case(loaded, index, rules))
        return suite

    def run_case(self, loaded: LoadedTests, index: int, rules: RuleSet | None = None) -> CaseResult:
        """Run the ``index``-th test of a loaded file."""
        rules = rules or self.rules_for(loaded)
        case = loaded.model.tests[index]
        result = CaseResult(loaded.path, case.name)
        started = time.perf_counter()
        events = [line.envelope(i, rules.code) for i, line in enumerate(case.events)]
        with Scorecard(rules) as card:
            rejected = _ingest(card, events)
            if rejected:
                result.error = "事件被拒：" + "；".join(rejected)
            for number, exp in enumerate(case.expect):
                lines = list(_check_report(exp, card.report_at(to_us(exp.at), exp.year)))
                if exp.alerts is not None:
                    got = _alerts_at(loaded, rules, events, to_us(exp.at))
                    scope = covered_kpis(case)
                    got = {k: v for k, v in got.items() if _alert_kpi(k) in scope}
                    lines += _check_alerts(exp, got)
                if lines:
                    where = loaded.where("tests", index, "expect", number)
                    result.mismatches.append(Mismatch(where, iso(to_us(exp.at)), tuple(lines)))
        result.seconds = time.perf_counter() - started
        return result


# ------------------------------------------------------------------ comparing


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, int | float) and isinstance(got, int | float):
        return abs(float(expected) - float(got)) <= TOLERANCE
    return bool(expected == got)


def _diff(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """``field：預期 X，實際 Y`` for each expected field that differs."""
    return [
        f"{name}：預期 {_show(want)}，實際 {_show(got.get(name))}"
        for name, want in expected.items()
        if not _same(want, got.get(name))
    ]


def _kpi_fields(want: KpiExpect) -> dict[str, Any]:
    return {
        name: getattr(want, name)
        for name in KpiExpect.model_fields
        if name in want.model_fields_set
    }


def _check_report(exp: Expectation, report: Report) -> Iterator[str]:
    data = report.as_dict()
    for kpi_id, want in exp.kpis.items():
        got = data["kpis"].get(kpi_id)
        if got is None:
            yield f"KPI {kpi_id}：規則中沒有這項 KPI（有：{', '.join(data['kpis'])}）"
            continue
        diffs = _diff(_kpi_fields(want), got)
        if diffs:
            yield f"KPI {kpi_id}：" + "；".join(diffs)
    for name in ("rejected", "unmatched"):
        want_count = getattr(exp, name)
        if want_count is not None and want_count != data[name]:
            yield f"{name}：預期 {want_count}，實際 {data[name]}"
    if exp.cases is not None:
        got_cases = {(c["kpi"], c["subject"]): c for c in data["cases"]}
        want_cases = {
            (c.kpi, c.subject): {"state": c.state}
            | ({"due": iso(to_us(c.due))} if c.due is not None else {})
            for c in exp.cases
        }
        yield from _compare_sets("案件", want_cases, got_cases, ("state", "due"))


def _compare_sets(
    label: str,
    want: dict[tuple[str, str], dict[str, Any]],
    got: dict[tuple[str, str], dict[str, Any]],
    shown: tuple[str, ...],
) -> Iterator[str]:
    for key in sorted(set(want) | set(got)):
        name = " ".join(part for part in key if part)
        if key not in got:
            yield f"{label} {name}：預期有（{_fields(want[key], shown)}），實際沒有"
        elif key not in want:
            yield f"{label} {name}：未預期（{_fields(got[key], shown)}）"
        else:
            diffs = _diff(want[key], got[key])
            if diffs:
                yield f"{label} {name}：" + "；".join(diffs)


def _fields(values: dict[str, Any], shown: tuple[str, ...]) -> str:
    return "，".join(f"{k} {_show(values[k])}" for k in shown if k in values)


def _check_alerts(exp: Expectation, got: dict[str, dict[str, Any]]) -> Iterator[str]:
    want = {
        (a.key, ""): {"state": a.state}
        | ({"recipients": sorted(a.recipients)} if a.recipients is not None else {})
        for a in exp.alerts or []
    }
    yield from _compare_sets(
        "警示", want, {(k, ""): v for k, v in got.items()}, ("state", "recipients")
    )


def _settings(loaded: LoadedTests, rules: RuleSet, db: Path) -> Settings:
    """The process settings (the test file's ``settings``, if any); the recipients and
    alert values are those of the rule folder's office file, as in the service."""
    path = loaded.settings_file
    if path is not None:
        return load_settings(path, rules=rules.directory, database=db)
    return Settings(rules=rules.directory, database=db)


def _alerts_at(
    loaded: LoadedTests, rules: RuleSet, events: list[dict[str, Any]], at: int
) -> dict[str, dict[str, Any]]:
    """The alerts one pipeline evaluation at ``at`` holds, over a fresh database."""
    from bsc_rules.alerts.pipeline import Pipeline
    from bsc_rules.store.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory(prefix="bsc-rule-test-") as tmp:
        db = Path(tmp) / "test.db"
        settings = _settings(loaded, rules, db)
        store = SQLiteStore(db)
        card = Scorecard(rules, store=store)
        try:
            _ingest(card, events)
            pipeline = Pipeline(card, settings, store.connection)
            pipeline.evaluate(at)
            told: dict[str, set[str]] = {}
            rows = store.connection.execute(
                "SELECT key, recipients FROM alert_history WHERE event = 'notified'"
            )
            for key, recipients in rows:
                told.setdefault(key, set()).update(filter(None, (recipients or "").split(",")))
            return {
                key: {"state": rec.state, "recipients": sorted(told.get(key, set()))}
                for key, rec in pipeline.alerts.load().items()
            }
        finally:
            card.close()
