"""What the commands print: the scorecard tables, rejections, progress; always masked.

What a person reads is Traditional Chinese with ROC dates; technical details of a bad
event or rule file (field, expected value) stay as the validators word them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bsc_rules.calendar import from_us, last_allowed_day, roc_date, roc_year
from bsc_rules.events import Rejection
from bsc_rules.measures.report import Report
from bsc_rules.notify.render import f_local_time
from bsc_rules.privacy import mask_text, mask_value
from bsc_rules.rules.ruleset import RuleSet

STATUS_LABELS = {
    "met": ("達成", "green"),
    "on_track": ("進度正常", "green"),
    "at_risk": ("落後", "yellow"),
    "breached": ("未達成", "bold red"),
    "no_data": ("無資料", "dim"),
    "no_target": ("無目標值", "dim"),
}
CASE_LABELS = {"due_soon": ("即將到期", "yellow"), "overdue": ("已逾期", "bold red")}
UNITS = {"percent": "%", "count": "件", "pages": "頁"}
SHOWN_REJECTIONS = 20


class PipeConsole(Console):
    """A console that lets a closed pipe surface as ``BrokenPipeError`` (rich would exit 1
    on its own); :func:`bsc_rules.cli.main` ends quietly with the documented code."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def out(console: Console, text: str = "") -> None:
    """One line, masked, printed as is (no markup, no highlighting, never wrapped: a long
    path must not cut a summary in two for the scripts reading it; a terminal wraps it
    on screen)."""
    console.print(mask_text(text), highlight=False, markup=False, soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)


def write_json(console: Console, value: Any) -> None:
    data = mask_value(value)
    console.file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], whole: Sequence[str] = ()
) -> Table:
    """A plain table; every cell is masked. Columns named in ``whole`` (identifiers people
    copy, such as Message-IDs) are never wrapped or cut."""
    cells = [[mask_text(cell) for cell in row] for row in rows]
    result = Table()
    for index, header in enumerate(headers):
        if header in whole:
            width = max((len(r[index]) for r in cells), default=len(header))
            result.add_column(header, no_wrap=True, min_width=max(width, len(header)))
        else:
            result.add_column(header)
    for row in cells:
        result.add_row(*row)
    return result


def when(us: int) -> str:
    """An instant as an ROC date and a Taipei time (``106/03/23 08:00``), as tables in
    the mail write it."""
    return f_local_time(us, "slash")


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    number = float(value)
    text = f"{number:,.2f}".rstrip("0").rstrip(".") if number != int(number) else f"{int(number):,}"
    return text + unit


def rejections(console: Console, found: Sequence[Rejection], total: int) -> None:
    """The first rejections, located (line, id, field, reason); the rest counted."""
    for rejection in found[:SHOWN_REJECTIONS]:
        out(console, f"  退回：{rejection}")
    if total > SHOWN_REJECTIONS:
        out(console, f"  …另有 {total - SHOWN_REJECTIONS} 筆退回。")


# ---------------------------------------------------------------- the report


def _kpi_table(report: Report, rules: RuleSet) -> Table:
    result = Table(title=None, show_lines=False)
    for header in ("KPI", "名稱", "主責科室", "實際值", "目標值", "狀態", "分子 / 分母"):
        result.add_column(header, justify="right" if header in ("實際值", "目標值") else "left")
    for kpi_id, kpi in report.kpis.items():
        spec = kpi.kpi.spec
        unit = UNITS[spec.unit]
        label, style = STATUS_LABELS[kpi.status]
        ratio = "—" if kpi.numerator is None else f"{fmt(kpi.numerator)} / {fmt(kpi.denominator)}"
        comparator = "≥" if spec.direction == "higher" else "≤"
        target = "—" if kpi.target is None else comparator + fmt(kpi.target, unit)
        result.add_row(
            kpi_id,
            spec.label or spec.name,
            rules.office.sections[spec.owner].name,
            fmt(kpi.value, unit),
            target,
            f"[{style}]{label}[/]",
            ratio,
        )
    return result


def _case_table(report: Report) -> Table:
    result = Table()
    for header in ("KPI", "案號", "狀態", "期限"):
        result.add_column(header)
    for case in report.cases:
        label, style = CASE_LABELS[case.state]
        deadline = roc_date(last_allowed_day(case.due)) + "（含）前"
        result.add_row(case.kpi, mask_text(case.subject), f"[{style}]{label}[/]", deadline)
    return result


def print_report(report: Report, rules: RuleSet, form: str, console: Console) -> None:
    """The report as the tables of a person, or as the JSON of spec/kpis.md."""
    if form == "json":
        write_json(console, report.as_dict())
        return
    moment = from_us(report.as_of)
    title = (
        f"{rules.office.office.name} {roc_year(report.year)}年度平衡計分卡"
        f"（截至{roc_date(moment.date())} {moment:%H:%M:%S}）"
    )
    out(console, title)
    console.print(_kpi_table(report, rules))
    if report.cases:
        out(console, f"即將到期或已逾期之案件：{len(report.cases)}件")
        console.print(_case_table(report))
    else:
        out(console, "無即將到期或已逾期之案件。")
    out(console, f"退回事件：{report.rejected}筆；尚無對應受理事件之後續事件：{report.unmatched}筆")


# ---------------------------------------------------------------- progress


class FileProgress:
    """Progress through a file on standard error: a bar on a terminal, otherwise one
    plain line (``匯入中 10%``) at each tenth, which a log or a supervisor can follow."""

    def __init__(self, total: int, label: str = "匯入中", stream: IO[str] | None = None) -> None:
        self.total, self.label = max(total, 1), label
        self.stream = stream if stream is not None else sys.stderr
        self._tenth = 0
        self._bar: Progress | None = None
        if self.stream.isatty():
            self._bar = Progress(
                TextColumn(label),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._task = self._bar.add_task("read", total=self.total)

    def __call__(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        tenth = done * 10 // self.total
        if tenth > self._tenth and tenth < 10:
            self._tenth = tenth
            self.stream.write(f"{self.label} {tenth * 10}%\n")
            self.stream.flush()

    def __enter__(self) -> FileProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
