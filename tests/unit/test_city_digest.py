"""The city's digest built from the offices' reports (bsc_rules.notify.city): who is
furthest behind per KPI (ties named together; lower-is-better KPIs; progress KPIs by
their pace), each office's overdue cases, and the mail it renders to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bsc_rules.calendar import month_bounds
from bsc_rules.measures.report import Report
from bsc_rules.notify.city import CityDigest, build_city_digest, gap_of, render_city
from bsc_rules.rules.offices import Deployment, load_deployment
from bsc_rules.scorecard import Scorecard
from tests.conftest import event

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "taipei"
AS_OF = month_bounds(2017, 1)[1] - 1


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return load_deployment(EXAMPLE)


def _seals(office: str, issued: int, errors: int) -> list[dict[str, Any]]:
    source = f"/taipei/{office}/records"
    found = []
    for i in range(issued):
        subject = f"S{office}{i}"
        found.append(event("seal_certificate.issued", "2017-01-05T10:00:00+08:00", subject,
                           source=source, office=office))  # fmt: skip
        if i < errors:
            found.append(event("seal_certificate.error_found", "2017-01-06T10:00:00+08:00",
                               subject, source=source, office=office))  # fmt: skip
    return found


def _reports(deployment: Deployment, events: dict[str, list[dict[str, Any]]]) -> dict[str, Report]:
    reports = {}
    for office, mine in events.items():
        with Scorecard(deployment.offices[office], matcher="python") as card:
            for e in mine:
                assert card.ingest(e).status == "accepted"
            reports[office] = card.report_at(AS_OF, 2017)
    return reports


@pytest.fixture(scope="module")
def three(deployment: Deployment) -> tuple[CityDigest, dict[str, Report]]:
    """Songshan and Xinyi at 75% on AP1.1 (a tie), Da'an at 100% with a birth subsidy
    applied on 01-03 and never paid (overdue: BP1.1 at 100% against ≤0%)."""
    unpaid = event("birth_subsidy.applied", "2017-01-03T10:00:00+08:00", "BS1", {"amount": 1},
                   source="/taipei/daan/registration", office="daan")  # fmt: skip
    events = {
        "songshan": _seals("songshan", 4, 1),
        "xinyi": _seals("xinyi", 4, 1),
        "daan": [*_seals("daan", 4, 0), unpaid],
    }
    reports = _reports(deployment, events)
    city = deployment.city
    assert city is not None
    return build_city_digest(city, deployment.offices, reports, 2017, 1), reports


def _kpi(digest: CityDigest, kpi_id: str) -> Any:
    return next(k for k in digest.kpis if k.info.id == kpi_id)


def test_a_tie_for_furthest_behind_names_both_offices(three: Any) -> None:
    digest, _ = three
    ap = _kpi(digest, "AP1.1")
    assert (ap.furthest, ap.gap) == (("松山區", "信義區"), 25.0)
    assert ap.counts == {"breached": 2, "met": 1}
    assert ap.target == 100.0


def test_lower_is_better_counts_the_excess_and_the_overdue_case(three: Any) -> None:
    digest, reports = three
    bp = _kpi(digest, "BP1.1")
    assert (bp.furthest, bp.gap) == (("大安區",), 100.0)
    assert reports["daan"].kpis["BP1.1"].status == "breached"
    overdue = {o.code: (o.overdue, o.overdue_by_kpi) for o in digest.offices}
    assert overdue == {"songshan": (0, ()), "xinyi": (0, ()), "daan": (1, (("BP1.1", 1),))}


def test_a_progress_kpi_is_behind_its_pace(three: Any) -> None:
    """TF1.1 (pages saved, ≥1,250 a year) with no pages by January's end: behind the
    pace, by the pace itself."""
    digest, reports = three
    result = reports["xinyi"].kpis["TF1.1"]
    assert result.status == "at_risk"
    assert result.pace is not None
    assert gap_of(result) == pytest.approx(float(result.pace))
    assert _kpi(digest, "TF1.1").furthest == ("松山區", "信義區", "大安區")
    assert gap_of(reports["daan"].kpis["AP1.1"]) is None  # met: not behind


def test_the_rendered_mail_names_the_city_and_the_furthest_behind(
    three: Any, deployment: Deployment
) -> None:
    digest, _ = three
    assert deployment.city is not None
    mail = render_city(digest, sender="bsc-rules@example.org", to=tuple(deployment.city.recipients),
                       date=AS_OF + 1)  # fmt: skip
    assert mail.subject == "【月報】臺北市各戶政事務所106年度平衡計分卡KPI執行情形比較（106年1月）"
    assert "AP1.1 印鑑證明正確率（目標值 ≥100%）" in mail.text
    assert "落後最多：松山區、信義區（距目標值25個百分點）" in mail.text
    assert "落後最多：大安區（距目標值100個百分點）" in mail.text
    assert "各所已逾期之未結案件共1件（大安區1件）" in mail.text
    assert mail.html.count("<td title=") == 3 * len(digest.kpis)
    assert dict(mail.headers)["X-BSC-Kind"] == "city"
