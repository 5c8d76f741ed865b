"""The city's view (service.md, "Deployments and --db"; issue 12): one monthly digest for
the city (e.g. 臺北市政府民政局) comparing its offices KPI by KPI.

Given each office's report as of the last instant of a month (and its rule set), it
builds :class:`CityDigest`: a table of offices × KPIs coloured by status, per KPI the
office(s) furthest behind, and each office's overdue cases counted; and renders it with
``city.txt.j2`` / ``city.html.j2`` of the templates folder (the HTML frame is
``_base.html.j2``, the words and colours ``_labels.j2``, as for the offices' mail).

Furthest behind: among the offices whose KPI is at risk or breached, the largest gap
to what was expected of it, in the KPI's unit and direction: its target, or for a
progress KPI its pace (the value expected by now). The city's digest names no case, so
it holds no personal data; every string is masked all the same.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsc_rules.calendar import month_bounds, roc_year
from bsc_rules.errors import UsageError
from bsc_rules.measures.report import KpiResult, Report
from bsc_rules.notify.notices import KpiInfo, Mail, kpi_info
from bsc_rules.notify.render import one_line, render_named
from bsc_rules.privacy import mask_text
from bsc_rules.rules.offices import City, Deployment
from bsc_rules.rules.ruleset import RuleSet

BEHIND = ("at_risk", "breached")


@dataclass(frozen=True, slots=True)
class CityCell:
    """One office's KPI as of the month's end."""

    value: float | None
    target: float | None
    status: str
    gap: float | None = None  # how far behind what was expected (at risk or breached)


@dataclass(frozen=True, slots=True)
class CityOffice:
    """One row of the city's table."""

    code: str
    name: str  # the office's full name
    short: str  # 松山區: the name without the city and 戶政事務所
    cells: tuple[CityCell, ...]  # in the order of CityDigest.kpis
    overdue: int  # cases overdue at the month's end
    overdue_by_kpi: tuple[tuple[str, int], ...]  # (KPI id, cases), those with any
    behind: int  # KPIs at risk or breached


@dataclass(frozen=True, slots=True)
class CityKpi:
    """One column of the city's table, with who is furthest behind on it."""

    info: KpiInfo
    target: float | None  # the offices' target, where they share one (else None)
    furthest: tuple[str, ...]  # short names of the office(s) furthest behind; () if none
    gap: float | None
    counts: dict[str, int]  # status → offices


@dataclass(frozen=True, slots=True)
class CityDigest:
    city: str  # 臺北市
    department: str  # 臺北市政府民政局
    year: int
    month: int
    as_of: int  # the last instant of the month
    kpis: tuple[CityKpi, ...]
    offices: tuple[CityOffice, ...]

    @property
    def heading(self) -> str:
        """「臺北市各戶政事務所106年度平衡計分卡KPI執行情形比較（106年5月）」."""
        year = roc_year(self.year)
        return (
            f"{self.city}各戶政事務所{year}年度平衡計分卡KPI執行情形比較（{year}年{self.month}月）"
        )


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def gap_of(result: KpiResult) -> float | None:
    """How far an at-risk or breached KPI is behind its pace (progress) or target."""
    if result.status not in BEHIND or result.value is None:
        return None
    expected = result.pace if result.kpi.spec.kind == "progress" else result.target
    if expected is None:
        return None
    short = (
        result.value - expected if result.kpi.spec.direction == "lower" else expected - result.value
    )
    return float(short)


def _short(name: str, city: str) -> str:
    return name.removeprefix(city).removesuffix("戶政事務所") or name


def _office(code: str, rules: RuleSet, report: Report, ids: list[str], city: str) -> CityOffice:
    cells = []
    for kpi_id in ids:
        result = report.kpis.get(kpi_id)
        if result is None:  # a KPI this office's scorecard does not have
            cells.append(CityCell(None, None, "no_target"))
            continue
        value, target = _float(result.value), _float(result.target)
        cells.append(CityCell(value, target, result.status, gap_of(result)))
    overdue = Counter(c.kpi for c in report.cases if c.state == "overdue")
    name = rules.office.office.name
    return CityOffice(
        code,
        name,
        _short(name, city),
        tuple(cells),
        sum(overdue.values()),
        tuple((k, overdue[k]) for k in ids if overdue[k]),
        sum(1 for c in cells if c.status in BEHIND),
    )


def _kpi(info: KpiInfo, column: list[tuple[CityOffice, CityCell]]) -> CityKpi:
    gaps = [(cell.gap, office.short) for office, cell in column if cell.gap is not None]
    worst = max((g for g, _ in gaps), default=None)
    targets = {cell.target for _, cell in column if cell.target is not None}
    return CityKpi(
        info,
        targets.pop() if len(targets) == 1 else None,
        tuple(name for g, name in gaps if g == worst),
        worst,
        dict(Counter(cell.status for _, cell in column)),
    )


def build_city_digest(
    city: City,
    sets: Mapping[str, RuleSet],
    reports: Mapping[str, Report],
    year: int,
    month: int,
) -> CityDigest:
    """The city's digest of ``month`` from each office's report as of its last instant;
    offices in ``reports``' order, KPIs in the order of the first office's rules."""
    as_of = month_bounds(year, month)[1] - 1
    first = sets[next(iter(reports))]
    ids = list(first.kpis)
    for code in reports:
        ids += [k for k in sets[code].kpis if k not in ids]
    offices = [
        _office(code, sets[code], report, ids, city.name) for code, report in reports.items()
    ]
    kpis = []
    for i, kpi_id in enumerate(ids):
        owner = next(sets[o.code] for o in offices if kpi_id in sets[o.code].kpis)
        column = [(o, o.cells[i]) for o in offices]
        kpis.append(_kpi(kpi_info(owner, owner.kpis[kpi_id]), column))
    return CityDigest(city.name, city.department, year, month, as_of, tuple(kpis), tuple(offices))


def city_message_id(city: str, year: int, month: int) -> str:
    """One message per city and month: a resend has the same ``Message-ID``."""
    digest = hashlib.sha256(f"city|{city}|{year}-{month:02d}".encode()).hexdigest()[:32]
    return f"<{digest}.city@bsc-rules>"


def render_city(
    digest: CityDigest,
    *,
    sender: str,
    to: tuple[str, ...],
    date: int,
    templates: Path | None = None,
) -> Mail:
    """The city's digest as mail: subject, plain text and HTML (no images)."""
    subject = mask_text(one_line(f"【月報】{digest.heading}"))
    context: dict[str, Any] = {
        "kind": "city",
        "office": digest.department,
        "digest": digest,
        "kpis": digest.kpis,
        "offices": digest.offices,
        "heading": digest.heading,
        "year": roc_year(digest.year),
        "month": digest.month,
        "as_of": digest.as_of,
        "mail_subject": subject,
        "date": date,
        "behind_offices": sum(1 for o in digest.offices if o.behind),
        "overdue_total": sum(o.overdue for o in digest.offices),
    }
    return Mail(
        message_id=city_message_id(digest.city, digest.year, digest.month),
        sender=mask_text(one_line(sender)),
        to=tuple(mask_text(one_line(t)) for t in to),
        subject=subject,
        text=render_named("city.txt.j2", context, templates),
        html=render_named("city.html.j2", context, templates),
        date=date,
        headers=(("Auto-Submitted", "auto-generated"), ("X-BSC-Kind", "city")),
    )


def city_reports(
    deployment: Deployment, db: str, year: int, month: int, matcher: str = "auto"
) -> dict[str, Report]:
    """Each office's report as of the last instant of (year, month), from its log in the
    multi-office database ``db`` (a directory or a PostgreSQL URL), in the city's order;
    an office the database does not hold yet reports no data. Read only: nothing written."""
    from bsc_rules.scorecard import Scorecard
    from bsc_rules.store.dbform import held_offices, open_store

    as_of = month_bounds(year, month)[1] - 1
    held = set(held_offices(db))
    reports = {}
    for code in deployment.ordered():
        store = open_store(db, code) if code in held else None
        with Scorecard(deployment.offices[code], store=store, matcher=matcher) as card:
            reports[code] = card.report_at(as_of, year)
    return reports


def city_mail(
    deployment: Deployment,
    db: str,
    year: int,
    month: int,
    *,
    sender: str,
    now: int,
    matcher: str = "auto",
    templates: Path | None = None,
) -> Mail:
    """The city's digest of (year, month) as mail to ``city.recipients`` (the deployment
    must describe its city): what ``digest --city`` sends and the service queues."""
    city = deployment.city
    if city is None:
        raise UsageError(f"{deployment.directory / 'deployment.yaml'}: no city described")
    reports = city_reports(deployment, db, year, month, matcher)
    digest = build_city_digest(city, deployment.offices, reports, year, month)
    to = tuple(city.recipients)
    return render_city(digest, sender=sender, to=to, date=now, templates=templates)
