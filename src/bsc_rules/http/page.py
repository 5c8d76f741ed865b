"""``GET /status``: the office's scorecard as an HTML page for people.

Traditional Chinese, ROC dates and Taipei times, no JavaScript. Every string shown passes
through :func:`bsc_rules.privacy.mask_text` (subjects, alert keys, delivery errors). The
template lives here, not in a file, so that it ships with the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from jinja2 import Environment, select_autoescape

from bsc_rules.alerts.table import AlertTable
from bsc_rules.calendar import from_us, last_allowed_day, roc_date
from bsc_rules.measures.report import Report
from bsc_rules.notify.outbox import Outbox
from bsc_rules.privacy import mask_text
from bsc_rules.rules.ruleset import RuleSet
from bsc_rules.store.sqlconn import Db

STATUS = {
    "met": ("達成", "#1a7f37", "#dafbe1"),
    "on_track": ("進度正常", "#1a7f37", "#dafbe1"),
    "at_risk": ("落後", "#9a6700", "#fff8c5"),
    "breached": ("未達成", "#cf222e", "#ffebe9"),
    "no_data": ("無資料", "#57606a", "#eaeef2"),
    "no_target": ("無目標值", "#57606a", "#eaeef2"),
}
CASE_STATE = {"due_soon": "即將到期", "overdue": "已逾期"}
UNITS = {"percent": "%", "count": "件", "pages": "頁"}
OPEN_ALERTS = ("due_soon", "overdue", "at_risk", "breached")

TEMPLATE = """<!doctype html>
<html lang="zh-Hant-TW"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ p.office }} 平衡計分卡</title>
<style>
body{font-family:"Noto Sans TC","Microsoft JhengHei",sans-serif;margin:1.5rem;color:#1f2328}
.tiles{display:flex;flex-wrap:wrap;gap:.6rem}
.tile{border:1px solid #d0d7de;border-radius:6px;padding:.6rem .8rem;width:14rem;
box-sizing:border-box;max-width:100%}
@media (max-width:40rem){.tile{width:100%}}
.nw{white-space:nowrap} .scroll{overflow-x:auto;max-width:100%}
.tile h3{margin:0 0 .3rem;font-size:1rem} .num{font-size:1.4rem;font-weight:bold}
table{border-collapse:collapse;margin:.5rem 0 1.2rem}
td,th{border:1px solid #d0d7de;padding:.3rem .6rem;white-space:nowrap}
td.wrap{white-space:normal;min-width:12rem}
th{background:#f6f8fa} .muted{color:#57606a}
</style></head><body>
<h1>{{ p.office }} {{ p.year_roc }}年度平衡計分卡</h1>
<p class="muted">截至 {{ p.as_of }}；最後收到之事件：{{ p.last_event or "尚無事件" }}</p>
<h2>KPI</h2>
<div class="tiles">
{% for k in p.kpis %}<div class="tile" style="background:{{ k.bg }};border-color:{{ k.fg }}">
<h3>{{ k.id }} {{ k.name }}</h3>
<div class="num" style="color:{{ k.fg }}">{{ k.value }}</div>
<div><span class="nw">目標 {{ k.target }}</span>{% if k.pace %}；<span class="nw">進度目標
{{- " " }}{{ k.pace }}</span>{% endif %}</div>
<div><strong style="color:{{ k.fg }}">{{ k.label }}</strong> · {{ k.section }}</div>
</div>{% endfor %}
</div>
<h2>即將到期或已逾期之案件（{{ p.cases|length }} 件）</h2>
{% if p.cases %}<div class="scroll"><table>
<tr><th>KPI</th><th>案號</th><th>狀態</th><th>期限</th><th>主責科室</th></tr>
{% for c in p.cases %}<tr><td>{{ c.kpi }}</td><td>{{ c.subject }}</td><td>{{ c.state }}</td>
<td>{{ c.due }}</td><td>{{ c.section }}</td></tr>{% endfor %}</table></div>
{% else %}<p>無。</p>{% endif %}
<h2>未確認之警示（{{ p.alerts|length }} 件）</h2>
{% if p.alerts %}<div class="scroll"><table><tr><th>警示</th><th>狀態</th><th>起始</th></tr>
{% for a in p.alerts %}<tr><td>{{ a.key }}</td><td>{{ a.state }}</td><td>{{ a.since }}</td></tr>
{% endfor %}</table></div>{% else %}<p>無。</p>{% endif %}
<h2>郵件寄送佇列</h2>
<p>待寄 {{ p.outbox.pending }} 封（其中重試中 {{ p.outbox.failing }} 封）；
無法投遞 {{ p.outbox.parked }} 封。</p>
{% if p.outbox.troubles %}<div class="scroll"><table>
<tr><th>狀態</th><th>主旨</th><th>嘗試</th><th>最後錯誤</th></tr>
{% for m in p.outbox.troubles %}<tr><td>{{ m.status }}</td><td>{{ m.subject }}</td>
<td>{{ m.attempts }}</td><td class="wrap">{{ m.error }}</td></tr>{% endfor %}</table></div>
{% endif %}
</body></html>
"""

INDEX = """<!doctype html>
<html lang="zh-Hant-TW"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>各戶政事務所平衡計分卡</title>
<style>
body{font-family:"Noto Sans TC","Microsoft JhengHei",sans-serif;margin:1.5rem;color:#1f2328}
table{border-collapse:collapse;margin:.5rem 0 1.2rem}
td,th{border:1px solid #d0d7de;padding:.3rem .6rem;white-space:nowrap;text-align:center}
td.name{text-align:left} th{background:#f6f8fa} .muted{color:#57606a}
.scroll{overflow-x:auto;max-width:100%}
</style></head><body>
<h1>各戶政事務所 {{ year_roc }}年度平衡計分卡</h1>
<p class="muted">截至 {{ as_of }}；共 {{ rows|length }} 所，依未達成、落後之 KPI 數排列。</p>
<div class="scroll"><table>
<tr><th>戶政事務所</th>{% for s in statuses %}<th style="color:{{ s.fg }}">{{ s.label }}</th>
{% endfor %}<th>即將到期或已逾期案件</th></tr>
{% for r in rows %}<tr><td class="name"><a href="offices/{{ r.code }}/status">{{ r.name }}</a>
<span class="muted">{{ r.code }}</span></td>
{% for s in statuses %}<td{% if r.counts[s.key] and s.key in ("breached", "at_risk") %}
 style="background:{{ s.bg }};color:{{ s.fg }};font-weight:bold"{% endif %}>
{{- r.counts[s.key] }}</td>{% endfor %}<td>{{ r.cases }}</td></tr>
{% endfor %}</table></div>
</body></html>
"""

_ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_PAGE = _ENV.from_string(TEMPLATE)
_INDEX = _ENV.from_string(INDEX)


@dataclass
class Page:
    """What the page shows, every string already masked."""

    office: str
    year_roc: int
    as_of: str
    last_event: str | None
    kpis: list[dict[str, Any]] = field(default_factory=list)
    cases: list[dict[str, str]] = field(default_factory=list)
    alerts: list[dict[str, str]] = field(default_factory=list)
    outbox: dict[str, Any] = field(default_factory=dict)


def _when(us: int) -> str:
    moment = from_us(us)
    return f"{roc_date(moment.date())} {moment:%H:%M}"


def _fmt(value: Fraction | None, unit: str) -> str:
    if value is None:
        return "—"
    number = float(value)
    text = f"{number:,.2f}".rstrip("0").rstrip(".") if number != int(number) else f"{int(number):,}"
    return text + unit


def build_page(rules: RuleSet, report: Report, db: Db) -> Page:
    """The page's contents from a report and the office's alert, outbox and event tables."""
    sections = {code: s.name for code, s in rules.office.sections.items()}
    last = "SELECT type, time_us FROM events WHERE {office} ORDER BY seq DESC LIMIT 1"
    row = db.execute(last).fetchone()
    page = Page(
        mask_text(rules.office.office.name),
        report.year - 1911,
        _when(report.as_of),
        None if row is None else f"{row[0]}（{_when(int(row[1]))}）",
    )
    owners: dict[str, str] = {}
    for kpi_id, r in report.kpis.items():
        spec, unit = r.kpi.spec, UNITS.get(r.kpi.spec.unit, "")
        owners[kpi_id] = sections.get(spec.owner, spec.owner)
        label, fg, bg = STATUS[r.status]
        comparator = "≥" if spec.direction == "higher" else "≤"
        target = "—" if r.target is None else comparator + _fmt(r.target, unit)
        pace = None if r.pace is None else _fmt(r.pace, unit)
        page.kpis.append(
            {
                "id": kpi_id,
                "name": spec.name,
                "value": _fmt(r.value, unit),
                "target": target,
                "pace": pace,
                "label": label,
                "fg": fg,
                "bg": bg,
                "section": owners[kpi_id],
            }
        )
    for c in report.cases:
        page.cases.append(
            {
                "kpi": c.kpi,
                "subject": mask_text(c.subject),
                "state": CASE_STATE[c.state],
                "due": roc_date(last_allowed_day(c.due)) + "（含）前",
                "section": owners.get(c.kpi, ""),
            }
        )
    page.alerts = _alerts(db)
    page.outbox = _outbox(db)
    return page


def _alerts(db: Db) -> list[dict[str, str]]:
    labels = {**CASE_STATE, **{k: v[0] for k, v in STATUS.items()}}
    return [
        {
            "key": mask_text(rec.key),
            "state": labels.get(rec.state, rec.state),
            "since": _when(rec.since),
        }
        for rec in sorted(AlertTable(db).load().values(), key=lambda r: r.since)
        if rec.state in OPEN_ALERTS and not rec.acknowledged
    ]


def _outbox(db: Db) -> dict[str, Any]:
    outbox = Outbox(db)
    pending, parked = outbox.items("pending"), outbox.items("parked")
    failing = [m for m in pending if m.attempts > 0]
    troubles = [
        {
            "status": "無法投遞" if m.status == "parked" else "重試中",
            "subject": mask_text(m.subject),
            "attempts": m.attempts,
            "error": mask_text(m.last_error or ""),
        }
        for m in [*failing, *parked]
    ]
    return {
        "pending": len(pending),
        "failing": len(failing),
        "parked": len(parked),
        "troubles": troubles,
    }


def render_page(page: Page) -> str:
    return mask_text(_PAGE.render(p=page))


def render_index(offices: list[tuple[str, str, Report]], now_us: int) -> str:
    """The offices' list (code, name, report each): their KPIs counted by status and their
    open cases, the furthest behind first, each linking to its own page."""
    shown = ("breached", "at_risk", "on_track", "met", "no_data")
    rows: list[dict[str, Any]] = []
    for code, name, report in offices:
        counts = {key: 0 for key in shown}
        for r in report.kpis.values():
            key = "no_data" if r.status == "no_target" else r.status
            counts[key] += 1
        rows.append({"code": code, "name": name, "counts": counts, "cases": len(report.cases)})
    rows.sort(key=lambda r: (-r["counts"]["breached"], -r["counts"]["at_risk"], r["code"]))
    statuses = [
        {"key": key, "label": STATUS[key][0], "fg": STATUS[key][1], "bg": STATUS[key][2]}
        for key in shown
    ]
    year = offices[0][2].year if offices else from_us(now_us).year
    html = _INDEX.render(rows=rows, statuses=statuses, year_roc=year - 1911, as_of=_when(now_us))
    return mask_text(html)
