"""A multi-office rule folder: the shared KPI files, one office file per office, and the
deployment (service.md, "Deployments and --db").

Layout::

    DIR/AC1.1.yaml …          the KPI files, shared by every office
    DIR/closures.yaml         city-wide closures, for every office (optional)
    DIR/deployment.yaml       the deployment: ``city`` (optional)
    DIR/offices/<code>.yaml   one office file per office

An office file has the keys of ``rules/office.yaml`` (:class:`~bsc_rules.rules.office.
OfficeFile`: ``office``, ``sections``, ``recipients``, ``alerts``, ``lists``, ``digest``,
``deadlines``, ``closures``, …); its ``office.code`` is its file name. Where its
scorecard differs from the shared KPI files, ``kpis`` states its own values, as the KPI
files state them::

    kpis:
      TL1.1:
        parameters: {headcount: 36}       # replaces the KPI file's parameters of that name
        targets: {2018: 95}               # replaces the target of 2018 only
        history: {2016: 98.5}             # replaces the final value of 2016 only

Only ``targets``, ``history`` and ``parameters`` can differ, year by year (name by name);
a KPI, or a parameter, that the shared files do not have is an error at its key, and so
is a value that leaves the KPI file invalid (e.g. a ``due_day`` of 31).

``deployment.yaml`` describes the deployment as a whole: ``city`` (``name``, the city's
name as headings show it, e.g. 臺北市; ``department``, who reads the city's view, e.g.
臺北市政府民政局; ``recipients``, the addresses of the city's monthly digest). It is a
separate file, not one of ``offices/``, so that ``offices/`` holds offices only, and
beside ``closures.yaml`` because, like it, it is about every office.

:func:`load_deployment` gives one :class:`~bsc_rules.rules.ruleset.RuleSet` per office
(the shared KPI files with that office's file) and the city; a one-office folder
(``office.yaml``, no ``offices/``) is a deployment of one office without a city. Every
problem of every file is reported at once, located ``file:line:col: field: …``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bsc_rules.errors import Problem, RuleFileError
from bsc_rules.rules.kpifile import KpiFile, Number
from bsc_rules.rules.office import Mailboxes, OfficeFile, Year
from bsc_rules.rules.ruleset import (
    DEPLOYMENT_FILE,
    OFFICE_FILE,
    RuleSet,
    Shared,
    compile_ruleset,
    cross_problems,
    default_rules_dir,
    folder_problems,
    load_closing,
    load_ruleset,
    load_shared,
)
from bsc_rules.rules.sourcemap import Located, load_and_validate, load_yaml

OFFICES_DIR = "offices"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KpiValues(_Strict):
    """An office's own values of a KPI, where its scorecard differs from the shared file."""

    targets: dict[Year, Number] = {}
    history: dict[Year, Number | None] = {}
    parameters: dict[str, Number] = {}


class DeploymentOffice(OfficeFile):
    """``offices/<code>.yaml``: an office file, with the office's own KPI values."""

    kpis: dict[str, KpiValues] = Field(default_factory=dict)


class City(_Strict):
    """``city`` of ``deployment.yaml``: who receives the city's monthly digest."""

    name: str  # 臺北市
    department: str  # 臺北市政府民政局
    recipients: Mailboxes
    order: list[str] = []  # the offices in the order the city's table lists them


class DeploymentFile(_Strict):
    city: City | None = None


@dataclass(frozen=True)
class Deployment:
    """The offices of a rule folder, each with its rule set (by code, sorted), and the city."""

    directory: Path
    offices: dict[str, RuleSet]
    city: City | None = None
    multi_office: bool = False

    def ordered(self) -> list[str]:
        """The office codes in the city's order (``city.order``), the others after, sorted."""
        first = [code for code in (self.city.order if self.city else []) if code in self.offices]
        return [*first, *sorted(set(self.offices) - set(first))]


def is_multi_office(directory: Path) -> bool:
    """Whether a rule folder describes several offices (it has ``offices/``)."""
    return (directory / OFFICES_DIR).is_dir()


def load_deployment(directory: Path | None = None) -> Deployment:
    """The rule sets of every office of a rule folder, and its city; a one-office folder
    gives its one office. Raise RuleFileError with every problem of every file."""
    directory = directory or default_rules_dir()
    if not is_multi_office(directory):
        rules = load_ruleset(directory)
        return Deployment(directory, {rules.code: rules})
    problems = folder_problems(directory)
    shared = load_shared(directory, problems)
    problems += cross_problems(None, shared.kpis)
    paths = sorted((directory / OFFICES_DIR).glob("*.yaml"))
    if not paths:
        where = str(directory / OFFICES_DIR)
        problems.append(Problem(where, None, None, "", "no office files (<code>.yaml) found"))
    if (directory / OFFICE_FILE).exists():
        problems.append(_single_office_file(directory))
    sets = {path.stem: _office(directory, path, shared, problems) for path in paths}
    city = _city(directory, set(sets), problems)
    if problems:
        raise RuleFileError(problems)
    offices = {code: rules for code, rules in sets.items() if rules is not None}
    return Deployment(directory, offices, city, multi_office=True)


def load_office(directory: Path, code: str) -> RuleSet:
    """The rule set of one office of a multi-office folder (its file and the shared ones)."""
    problems = folder_problems(directory)
    shared = load_shared(directory, problems)
    path = directory / OFFICES_DIR / f"{code}.yaml"
    if not path.exists():
        problems.append(Problem(str(path), None, None, "", "office file is missing"))
        raise RuleFileError(problems)
    rules = _office(directory, path, shared, problems)
    if problems or rules is None:
        raise RuleFileError(problems)
    return rules


def reload_rules(rules: RuleSet) -> RuleSet:
    """The rule set of the same office read again from its folder."""
    if rules.office_path is not None:
        return load_office(rules.directory, rules.code)
    return load_ruleset(rules.directory)


def _single_office_file(directory: Path) -> Problem:
    text = (
        f"a rule folder with {OFFICES_DIR}/ describes each office in "
        f"{OFFICES_DIR}/<code>.yaml; move this file there"
    )
    return Problem(str(directory / OFFICE_FILE), None, None, "", text)


def _office(directory: Path, path: Path, shared: Shared, problems: list[Problem]) -> RuleSet | None:
    """One office's rule set: its file with the shared KPI files and its own KPI values."""
    before = len(problems)
    office = load_closing(DeploymentOffice, path, problems)
    if office is None:
        return None
    located = load_yaml(path)  # loaded fine just now: for the positions of its keys
    if office.office.code != path.stem:
        line, col = located.position(("office", "code"))
        text = f"expected {path.stem!r}, the name of the file, got {office.office.code!r}"
        problems.append(Problem(str(path), line, col, "office.code", text))
    problems += _theme_problems(office, shared.kpis, located, path)
    kpis = _own_values(office, shared.kpis, located, path, problems)
    if len(problems) > before:
        return None
    return compile_ruleset(office, kpis, directory, shared.closures, path)


def _theme_problems(
    office: OfficeFile, kpis: list[tuple[KpiFile, Path]], located: Located, path: Path
) -> list[Problem]:
    problems = []
    for spec, kpi_path in kpis:
        if spec.theme not in office.themes:
            line, col = located.key_position(("themes",))
            text = f"{spec.id} ({kpi_path.name}) has theme {spec.theme!r}, not described here"
            problems.append(Problem(str(path), line, col, "themes", text))
    return problems


def _own_values(
    office: DeploymentOffice,
    kpis: list[tuple[KpiFile, Path]],
    located: Located,
    path: Path,
    problems: list[Problem],
) -> list[tuple[KpiFile, Path]]:
    """The shared KPI files with the office's own values written over them."""
    by_id = {spec.id: (spec, kpi_path) for spec, kpi_path in kpis}
    for kpi_id, own in office.kpis.items():
        where = ("kpis", kpi_id)
        if kpi_id not in by_id:
            line, col = located.key_position(where)
            text = f"no KPI file defines {kpi_id!r} (KPIs: {', '.join(sorted(by_id))})"
            problems.append(Problem(str(path), line, col, f"kpis.{kpi_id}", text))
            continue
        spec, kpi_path = by_id[kpi_id]
        merged = _merged(spec, own, located, path, problems)
        if merged is not None:
            by_id[kpi_id] = (merged, kpi_path)
    return list(by_id.values())


def _merged(
    spec: KpiFile, own: KpiValues, located: Located, path: Path, problems: list[Problem]
) -> KpiFile | None:
    """``spec`` with ``own`` written over it, validated again as a KPI file."""
    for name in own.parameters:
        if name not in spec.parameters:
            loc = ("kpis", spec.id, "parameters", name)
            line, col = located.key_position(loc)
            known = ", ".join(sorted(spec.parameters)) or "none"
            text = f"{spec.id} has no parameter {name!r} (its parameters: {known})"
            problems.append(Problem(str(path), line, col, ".".join(loc), text))
            return None
    data: dict[str, Any] = spec.model_dump()
    for key in ("targets", "history", "parameters"):
        data[key] = {**data[key], **getattr(own, key)}
    try:
        return KpiFile.model_validate(data)
    except ValidationError as exc:
        line, col = located.key_position(("kpis", spec.id))
        for error in exc.errors():
            text = str(error["msg"]).removeprefix("Value error, ")
            problems.append(Problem(str(path), line, col, f"kpis.{spec.id}", text))
        return None


def _city(directory: Path, codes: set[str], problems: list[Problem]) -> City | None:
    path = directory / DEPLOYMENT_FILE
    if not path.exists():
        return None
    result = load_and_validate(DeploymentFile, path)
    if isinstance(result, list):
        problems.extend(result)
        return None
    city = result.city
    for i, code in enumerate(city.order if city else []):
        if code not in codes:
            line, col = load_yaml(path).position(("city", "order", i))
            text = f"{code!r} has no office file ({OFFICES_DIR}/{code}.yaml)"
            problems.append(Problem(str(path), line, col, f"city.order[{i}]", text))
    return city
