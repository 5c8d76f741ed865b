"""What-if output for people: a terminal table (rich, CJK-aware) and an HTML report.

Labels are in Traditional Chinese, dates in the ROC calendar. The HTML report is one
self-contained file (inline CSS, no script) from an inline Jinja2 template.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment
from rich.console import Console
from rich.table import Table

from bsc_rules.authoring.whatif import Cell, WhatIf
from bsc_rules.notify.render import f_local_time
from bsc_rules.privacy import mask_text

STATUS = {
    "met": ("達成", "green"),
    "on_track": ("進度正常", "green"),
    "at_risk": ("落後", "yellow"),
    "breached": ("未達成", "red"),
    "no_data": ("無資料", "dim"),
    "no_target": ("無目標值", "dim"),
}
CASE_STATE = {"due_soon": "即將到期", "overdue": "已逾期", None: "—"}
MAIL_KIND = {
    "due_soon": "即將到期",
    "overdue": "已逾期",
    "at_risk": "落後警示",
    "breached": "未達成警示",
    "resolved": "已解除",
    "digest": "月報",
}


def _when(us: int) -> str:
    return f_local_time(us, "slash")


def _number(value: Any) -> str:
    if value is None:
        return "—"
    number = float(value)
    return f"{number:,.2f}".rstrip("0").rstrip(".") if number != int(number) else f"{int(number):,}"


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "（無此KPI）"
    label = STATUS.get(cell["status"], (cell["status"], ""))[0]
    return f"{label} {_number(cell['value'])}／目標 {_number(cell['target'])}"


def _cell_style(cell: Cell | None) -> str:
    return "" if cell is None else STATUS.get(cell["status"], ("", ""))[1]


def print_table(result: WhatIf, console: Console) -> None:
    """KPIs that differ (all their months), identical KPIs named; mail and case tables."""
    a, b = f"A：{result.a.rules}", f"B：{result.b.rules}"
    console.print(mask_text(f"假設分析（截至 {_when(result.until)}）"), markup=False)
    console.print(mask_text(f"{a}\n{b}"), markup=False, highlight=False)
    rows = result.kpi_rows()
    same = [kpi for kpi, cells in rows.items() if all(ca == cb for _, ca, cb in cells)]
    table = Table(title="KPI 各月狀態（月底）")
    for header in ("KPI", "名稱", "月底", "A", "B", "差異"):
        table.add_column(header)
    names = result.a.names | result.b.names
    for kpi, cells in rows.items():
        if kpi in same:
            continue
        for at, ca, cb in cells:
            mark = "≠" if ca != cb else ""
            table.add_row(
                kpi,
                names.get(kpi, ""),
                _when(at),
                f"[{_cell_style(ca)}]{_cell_text(ca)}[/]",
                f"[{_cell_style(cb)}]{_cell_text(cb)}[/]",
                mark,
            )
    console.print(table)
    console.print("各月相同的KPI：" + ("、".join(same) or "無"), markup=False)
    _mail_table(result, console)
    _alert_table(result, console)
    _case_table(result, console)


def _mail_table(result: WhatIf, console: Console) -> None:
    table = Table(title="通知郵件（依類別及收件者，封數）")
    for header in ("類別", "收件者", "A", "B", "差異"):
        table.add_column(header, justify="right" if header in ("A", "B") else "left")
    for kind, to, na, nb in result.mail_rows():
        diff = "" if na == nb else f"{nb - na:+d}"
        table.add_row(MAIL_KIND.get(kind, kind), to, str(na), str(nb), diff)
    console.print(table)


def _alert_table(result: WhatIf, console: Console) -> None:
    rows = result.alert_rows()
    if not rows:
        console.print("警示通知：兩組規則相同。", markup=False)
        return
    table = Table(title="通知次數不同的警示")
    for header in ("警示", "類別", "A", "B"):
        table.add_column(header, justify="right" if header in ("A", "B") else "left")
    for key, kind, na, nb in rows:
        table.add_row(mask_text(key), MAIL_KIND.get(kind, kind), str(na), str(nb))
    console.print(table)


def _case_table(result: WhatIf, console: Console) -> None:
    rows = result.case_rows()
    if not rows:
        console.print("案件狀態：兩組規則於各月底均相同。", markup=False)
        return
    table = Table(title="狀態不同的案件（月底）")
    for header in ("月底", "KPI", "案號", "A", "B"):
        table.add_column(header)
    for at, kpi, subject, sa, sb in rows:
        table.add_row(_when(at), kpi, mask_text(subject), CASE_STATE[sa], CASE_STATE[sb])
    console.print(table)


_TEMPLATE = """<!DOCTYPE html>
<html lang="zh-Hant"><head><meta charset="utf-8">
<title>假設分析：{{ a }} 與 {{ b }}</title>
<style>
body { font-family: "Noto Sans CJK TC", "Microsoft JhengHei", sans-serif;
       margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; font-size: .9em; text-align: left; }
th { background: #f0f0f0; } td.num { text-align: right; }
tr.differs td { background: #fff6d6; } .same { color: #888; }
td.chg { font-weight: bold; text-decoration: underline; } .summary { font-weight: bold; }
.met, .on_track { color: #1a7f37; } .at_risk { color: #9a6700; font-weight: bold; }
.breached { color: #cf222e; font-weight: bold; } .no_data, .no_target { color: #888; }
</style></head><body>
<h1>假設分析（截至 {{ until }}）</h1>
<p>事件檔：{{ events }}<br>A：{{ a }}<br>B：{{ b }}</p>
<p class="summary">有差異的KPI：{{ changed | join("、") or "無" }}；
通知郵件不同：{{ mails | selectattr("differs") | list | length }} 列；
狀態不同的案件：{{ cases | length }} 件。</p>
<h2>KPI 各月狀態（月底）</h2>
<table><tr><th>KPI</th><th>名稱</th><th>月底</th><th>A 狀態</th><th>A 實際值</th>
<th>A 目標值</th><th>B 狀態</th><th>B 實際值</th><th>B 目標值</th></tr>
{% for row in kpis %}<tr class="{{ 'differs' if row.differs else '' }}"><td>{{ row.kpi }}</td>
<td>{{ row.name }}</td><td>{{ row.when }}</td>
{% for c in (row.a, row.b) %}<td class="{{ c.status }}">{{ c.label }}</td>
<td class="num{{ ' chg' if row.differs and row.a.value != row.b.value }}">{{ c.value }}</td>
<td class="num{{ ' chg' if row.differs and row.a.target != row.b.target }}">{{ c.target }}</td>
{% endfor %}</tr>
{% endfor %}</table>
<h2>通知郵件（依類別及收件者，封數）</h2>
<table><tr><th>類別</th><th>收件者</th><th>A</th><th>B</th></tr>
{% for m in mails %}<tr class="{{ 'differs' if m.differs else '' }}"><td>{{ m.kind }}</td>
<td>{{ m.to }}</td><td class="num">{{ m.a }}</td><td class="num">{{ m.b }}</td></tr>
{% endfor %}</table>
<h2>通知次數不同的警示</h2>
{% if alerts %}<table><tr><th>警示</th><th>類別</th><th>A</th><th>B</th></tr>
{% for x in alerts %}<tr class="differs"><td>{{ x.key }}</td><td>{{ x.kind }}</td>
<td class="num">{{ x.a }}</td><td class="num">{{ x.b }}</td></tr>{% endfor %}</table>
{% else %}<p class="same">兩組規則相同。</p>{% endif %}
<h2>狀態不同的案件（月底）</h2>
{% if cases %}<table><tr><th>月底</th><th>KPI</th><th>案號</th><th>A</th><th>B</th></tr>
{% for c in cases %}<tr><td>{{ c.when }}</td><td>{{ c.kpi }}</td><td>{{ c.subject }}</td>
<td>{{ c.a }}</td><td>{{ c.b }}</td></tr>{% endfor %}</table>
{% else %}<p class="same">兩組規則於各月底均相同。</p>{% endif %}
</body></html>
"""


def _html_cell(cell: Cell | None) -> dict[str, str]:
    if cell is None:
        return {"status": "", "label": "（無此KPI）", "value": "", "target": ""}
    label = STATUS.get(cell["status"], (cell["status"], ""))[0]
    return {
        "status": cell["status"],
        "label": label,
        "value": _number(cell["value"]),
        "target": _number(cell["target"]),
    }


def render_html(result: WhatIf) -> str:
    """The whole comparison as one self-contained HTML page."""
    names = result.a.names | result.b.names
    kpis = [
        {
            "kpi": kpi,
            "name": names.get(kpi, ""),
            "when": _when(at),
            "a": _html_cell(ca),
            "b": _html_cell(cb),
            "differs": ca != cb,
        }
        for kpi, cells in result.kpi_rows().items()
        for at, ca, cb in cells
    ]
    mails = [
        {"kind": MAIL_KIND.get(k, k), "to": to, "a": na, "b": nb, "differs": na != nb}
        for k, to, na, nb in result.mail_rows()
    ]
    cases = [
        {"when": _when(at), "kpi": k, "subject": s, "a": CASE_STATE[x], "b": CASE_STATE[y]}
        for at, k, s, x, y in result.case_rows()
    ]
    alerts = [
        {"key": key, "kind": MAIL_KIND.get(kind, kind), "a": na, "b": nb}
        for key, kind, na, nb in result.alert_rows()
    ]
    template = Environment(autoescape=True).from_string(_TEMPLATE)
    page = template.render(
        a=str(result.a.rules),
        b=str(result.b.rules),
        events=str(result.events),
        until=_when(result.until),
        kpis=kpis,
        changed=sorted({row["kpi"] for row in kpis if row["differs"]}),
        mails=mails,
        alerts=alerts,
        cases=cases,
    )
    return mask_text(page)
