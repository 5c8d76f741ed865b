"""The ``bsc-rules`` command line: check, evaluate, ingest, status, simulate.

What a person reads here is in Traditional Chinese with ROC dates; technical details of
a bad event or rule file (field, expected value) stay as the validators word them.
Everything printed passes through :func:`bsc_rules.privacy.mask_text`.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bsc_rules.calendar import (
    from_us,
    last_allowed_day,
    parse_instant,
    roc_date,
    roc_slash,
    roc_year,
    to_us,
)
from bsc_rules.clock import Clock, SystemClock
from bsc_rules.errors import BscRulesError, StoreError, UsageError
from bsc_rules.measures.report import Report
from bsc_rules.privacy import mask_text, mask_value
from bsc_rules.rules.ruleset import RuleSet, load_ruleset
from bsc_rules.scorecard import IngestSummary, Scorecard
from bsc_rules.settings import Settings, load_settings

if TYPE_CHECKING:
    from bsc_rules.notify.mailer import Mailer

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


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bsc-rules", description="A public office's balanced scorecard as live rules."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a rule folder and report every problem")
    check.add_argument(
        "rules", nargs="?", type=Path, help="rule folder (default: the project's rules/)"
    )
    for name, helptext in (
        ("evaluate", "report on a JSON Lines file of events"),
        ("status", "report on the events stored in a database"),
    ):
        cmd = sub.add_parser(name, help=helptext)
        if name == "evaluate":
            cmd.add_argument("events", type=Path, help="CloudEvents JSON Lines file")
            cmd.add_argument("--as-of", type=_instant, required=True, help="RFC 3339 instant")
        else:
            cmd.add_argument("--db", type=Path, required=True, help="SQLite event log")
            cmd.add_argument("--as-of", type=_instant, help="RFC 3339 instant (default: now)")
        cmd.add_argument(
            "--year", type=int, help="the year to report (default: the year of --as-of)"
        )
        cmd.add_argument("--format", choices=("table", "json"), default="table")
        _common(cmd)
    ingest = sub.add_parser("ingest", help="store a JSON Lines file of events (idempotent)")
    ingest.add_argument("events", type=Path)
    ingest.add_argument("--db", type=Path, required=True)
    _common(ingest)
    simulate = sub.add_parser("simulate", help="write a realistic year of events as JSON Lines")
    simulate.add_argument(
        "--office", action="append", help="office code (repeatable; default datong)"
    )
    simulate.add_argument("--year", type=int, default=2017)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--out", type=Path, help="output file (default: standard output)")
    _notification_commands(sub)
    return parser


def _notification_commands(sub: Any) -> None:
    replay = sub.add_parser("replay", help="replay events on their own time and send the mail")
    replay.add_argument("events", type=Path)
    replay.add_argument("--until", type=_instant, required=True, help="RFC 3339 instant")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("--smtp", help="HOST:PORT of an SMTP server")
    target.add_argument("--maildir", type=Path, help="write the mail into this Maildir")
    replay.add_argument("--db", type=Path, help="state database (default: a temporary one)")
    _common(replay)
    _settings(replay)
    render = sub.add_parser("render", help="preview a notification template")
    render.add_argument(
        "kind", choices=("due_soon", "overdue", "at_risk", "breached", "resolved", "digest")
    )
    render.add_argument(
        "--example", action="store_true", required=True, help="with the shipped sample data"
    )
    render.add_argument("--part", choices=("text", "html"), default="text")
    outbox = sub.add_parser("outbox", help="list the outbox; retry undeliverable mail")
    outbox.add_argument("--status", choices=("pending", "sent", "parked"))
    outbox.add_argument(
        "--retry",
        nargs="?",
        const="*",
        metavar="MESSAGE_ID",
        help="put parked mail back in the queue (all, or one)",
    )
    _settings(outbox, db=True)
    ack = sub.add_parser("ack", help="acknowledge an alert: repeats and escalation stop")
    ack.add_argument("alert", help="alert key, e.g. case:BP1.1:BS1060412003 or kpi:2017:AP2.1")
    ack.add_argument("--note", required=True)
    _settings(ack, db=True)
    history = sub.add_parser("history", help="alert transitions and notifications")
    history.add_argument("--kpi")
    history.add_argument("--case")
    _settings(history, db=True)
    run = sub.add_parser("run", help="start the service (scheduler, ingest, alerts, mail)")
    _settings(run, db=True)


def _settings(cmd: argparse.ArgumentParser, db: bool = False) -> None:
    cmd.add_argument("--settings", type=Path, help="settings file (default: ./bsc-rules.toml)")
    if db:
        cmd.add_argument("--db", type=Path, help="database (default: from the settings)")


def _common(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--rules", type=Path, help="rule folder (default: the project's rules/)")
    cmd.add_argument("--matcher", choices=("auto", "durable", "python"), default="auto")


# ---------------------------------------------------------------- output


def _out(console: Console, text: str = "") -> None:
    console.print(mask_text(text), highlight=False, markup=False)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    number = float(value)
    text = f"{number:,.2f}".rstrip("0").rstrip(".") if number != int(number) else f"{int(number):,}"
    return text + unit


def _kpi_table(report: Report, rules: RuleSet) -> Table:
    table = Table(title=None, show_lines=False)
    for header in ("KPI", "名稱", "主責科室", "實際值", "目標值", "狀態", "分子 / 分母"):
        table.add_column(header, justify="right" if header in ("實際值", "目標值") else "left")
    for kpi_id, result in report.kpis.items():
        spec = result.kpi.spec
        unit = UNITS[spec.unit]
        label, style = STATUS_LABELS[result.status]
        ratio = (
            "—"
            if result.numerator is None
            else f"{_fmt(result.numerator)} / {_fmt(result.denominator)}"
        )
        comparator = "≥" if spec.direction == "higher" else "≤"
        target = "—" if result.target is None else comparator + _fmt(result.target, unit)
        table.add_row(
            kpi_id,
            spec.name,
            rules.office.sections[spec.owner].name,
            _fmt(result.value, unit),
            target,
            f"[{style}]{label}[/]",
            ratio,
        )
    return table


def _case_table(report: Report, rules: RuleSet) -> Table:
    table = Table()
    for header in ("KPI", "案號", "狀態", "期限"):
        table.add_column(header)
    for case in report.cases:
        label, style = CASE_LABELS[case.state]
        deadline = roc_date(last_allowed_day(case.due)) + "（含）前"
        table.add_row(case.kpi, mask_text(case.subject), f"[{style}]{label}[/]", deadline)
    return table


def print_report(report: Report, rules: RuleSet, fmt: str, console: Console) -> None:
    if fmt == "json":
        data = mask_value(report.as_dict())
        console.file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    moment = from_us(report.as_of)
    title = (
        f"{rules.office.office.name} {roc_year(report.year)}年度平衡計分卡"
        f"（截至{roc_date(moment.date())} {moment:%H:%M:%S}）"
    )
    _out(console, title)
    console.print(_kpi_table(report, rules))
    if report.cases:
        _out(console, f"即將到期或已逾期之案件：{len(report.cases)}件")
        console.print(_case_table(report, rules))
    else:
        _out(console, "無即將到期或已逾期之案件。")
    _out(
        console, f"退回事件：{report.rejected}筆；尚無對應受理事件之後續事件：{report.unmatched}筆"
    )


# ---------------------------------------------------------------- commands


def _lines(path: Path, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}"
        raise UsageError(msg) from None
    with handle:
        done = 0
        for raw in handle:
            done += len(raw)
            if progress is not None:
                progress(done)
            yield raw


def _cmd_check(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    rules = load_ruleset(args.rules)
    _out(
        console,
        f"規則檔檢查通過：{rules.office.office.name}（{rules.code}），"
        f"KPI {len(rules.kpis)} 項，事件條件 {len(rules.conditions)} 條。",
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    rules = load_ruleset(args.rules)
    with Scorecard(rules, matcher=args.matcher) as card:
        card.ingest_lines(_lines(args.events), origin=args.events.name)
        report = card.report(args.as_of, args.year)
    print_report(report, rules, args.format, console)
    return 0


def _cmd_status(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    rules = load_ruleset(args.rules)
    if not args.db.exists():
        hint = f"create it with: bsc-rules ingest FILE --db {args.db}"
        msg = f"database {args.db} does not exist ({hint})"
        raise UsageError(msg)
    with Scorecard.open(args.db, rules, matcher=args.matcher) as card:
        report = card.report(args.as_of or clock.now(), args.year)
    print_report(report, rules, args.format, console)
    return 0


def _cmd_ingest(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    rules = load_ruleset(args.rules)
    size = args.events.stat().st_size if args.events.exists() else 0
    progress = Progress(
        TextColumn("匯入中"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress, Scorecard.open(args.db, rules, matcher=args.matcher) as card:
        task = progress.add_task("ingest", total=max(size, 1))
        lines = _lines(args.events, lambda done: progress.update(task, completed=done))
        summary = card.ingest_lines(lines, origin=args.events.name)
    _ingest_summary(summary, args.db, console)
    return 0


def _ingest_summary(summary: IngestSummary, db: Path, console: Console) -> None:
    _out(
        console,
        f"匯入完成（{db}）：新增 {summary.accepted} 筆，重複 {summary.duplicates} 筆（已略過），"
        f"退回 {summary.rejected} 筆。",
    )
    for rejection in summary.rejections[:20]:
        _out(console, f"  退回：{rejection}")
    if summary.rejected > 20:
        _out(console, f"  …另有 {summary.rejected - 20} 筆退回，均已保存於資料庫。")


def _cmd_simulate(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    from bsc_rules.dev.simulate import simulate, write_jsonl

    events = simulate(year=args.year, seed=args.seed, offices=tuple(args.office or ["datong"]))
    if args.out is None:
        count = write_jsonl(events, sys.stdout.buffer)
    else:
        with args.out.open("wb") as handle:
            count = write_jsonl(events, handle)
        _out(Console(stderr=True), f"已產生 {count} 筆事件：{args.out}")
    return 0


def _load(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "rules", None) is not None:
        overrides["rules"] = args.rules
    if getattr(args, "matcher", None) not in (None, "auto"):
        overrides["matcher"] = args.matcher
    if getattr(args, "db", None) is not None:
        overrides["database"] = args.db
    return load_settings(args.settings, **overrides)


def _mailer(args: argparse.Namespace) -> Mailer:
    from bsc_rules.notify.mailer import MaildirMailer, SmtpMailer

    if args.maildir is not None:
        return MaildirMailer(args.maildir)
    host, _, port = args.smtp.rpartition(":")
    if not host or not port.isdigit():
        msg = f"--smtp: expected HOST:PORT, got {args.smtp!r}"
        raise UsageError(msg)
    return SmtpMailer(host, int(port), security="none")


def _cmd_replay(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    import tempfile

    from bsc_rules.alerts.pipeline import open_pipeline
    from bsc_rules.scheduling.replay import replay

    settings = _load(args)
    mailer = _mailer(args)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "replay.db"
        pipeline = open_pipeline(settings, db)
        try:
            summary = replay(_lines(args.events), to_us(args.until), pipeline, mailer)
        finally:
            pipeline.card.close()
    _out(
        console,
        f"重播完成：事件 {summary.ingest.accepted} 筆（重複 {summary.ingest.duplicates}、"
        f"退回 {summary.ingest.rejected}），評估 {summary.ticks} 次，"
        f"寄出通知 {len(summary.sent)} 封，無法投遞 {len(summary.undeliverable)} 封。",
    )
    return 0


def _cmd_render(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    from bsc_rules.notify.examples import example, preview

    mail = example(args.kind)
    if args.part == "text":
        console.file.write(mask_text(f"郵件主旨：{mail.subject}\n收件者：{', '.join(mail.to)}\n\n"))
    console.file.write(mask_text(preview(args.kind, args.part)) + "\n")
    return 0


def _open_db(args: argparse.Namespace) -> tuple[Settings, Any]:
    from bsc_rules.store.sqlite import SQLiteStore

    settings = _load(args)
    if not settings.database.exists():
        msg = f"database {settings.database} does not exist"
        raise UsageError(msg)
    return settings, SQLiteStore(settings.database)


def _cmd_outbox(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    from bsc_rules.notify.outbox import Outbox

    _, store = _open_db(args)
    outbox = Outbox(store.connection)
    if args.retry is not None:
        count = outbox.retry(None if args.retry == "*" else args.retry, now_us=to_us(clock.now()))
        _out(console, f"已重新排入寄送佇列：{count} 封。")
    table = Table()
    for header in ("狀態", "建立時間", "主旨", "收件者", "嘗試", "錯誤"):
        table.add_column(header)
    for item in outbox.items(args.status):
        table.add_row(
            item.status,
            _when(item.created_us),
            mask_text(item.subject),
            ", ".join(item.recipients),
            str(item.attempts),
            mask_text(item.last_error or ""),
        )
    console.print(table)
    store.close()
    return 0


def _when(us: int) -> str:
    moment = from_us(us)
    return f"{roc_slash(moment.date())} {moment:%H:%M}"


def _cmd_ack(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    from bsc_rules.alerts.table import AlertTable

    _, store = _open_db(args)
    rec = AlertTable(store.connection).acknowledge(args.alert, args.note, to_us(clock.now()))
    _out(console, f"已確認警示 {rec.key}（{rec.state}）：{args.note}；不再重複通知及陳報。")
    store.close()
    return 0


def _cmd_history(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    from bsc_rules.alerts.table import AlertTable

    _, store = _open_db(args)
    table = Table()
    for header in ("時間", "警示", "事件", "狀態", "收件者", "備註"):
        table.add_column(header)
    for at, key, event, state, _mid, recipients, note in AlertTable(store.connection).history(
        args.kpi, args.case
    ):
        table.add_row(
            _when(int(str(at))),
            mask_text(str(key)),
            str(event),
            str(state or ""),
            str(recipients or ""),
            mask_text(str(note or "")),
        )
    console.print(table)
    store.close()
    return 0


def _cmd_run(args: argparse.Namespace, console: Console, clock: Clock) -> int:
    from bsc_rules.scheduling.service import serve

    serve(_load(args), clock=clock, stdin=None if sys.stdin.isatty() else sys.stdin.buffer)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Console, Clock], int]] = {
    "replay": _cmd_replay,
    "render": _cmd_render,
    "outbox": _cmd_outbox,
    "ack": _cmd_ack,
    "history": _cmd_history,
    "run": _cmd_run,
    "check": _cmd_check,
    "evaluate": _cmd_evaluate,
    "status": _cmd_status,
    "ingest": _cmd_ingest,
    "simulate": _cmd_simulate,
}


def _with_db(text: str, args: argparse.Namespace) -> str:
    """The message, naming the database file when it does not already."""
    db = getattr(args, "db", None)
    return text if db is None or str(db) in text else f"{text} [database: {db}]"


def main(
    argv: Sequence[str] | None = None, *, clock: Clock | None = None, stdout: IO[str] | None = None
) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    console = Console(file=stdout or sys.stdout, width=160, soft_wrap=False)
    try:
        return COMMANDS[args.command](args, console, clock or SystemClock())
    except sqlite3.Error as exc:  # a database fault outside the store's own checks
        text = _with_db(f"database error: {exc} (nothing partial was kept)", args)
    except StoreError as exc:
        text = _with_db(str(exc), args)
    except BscRulesError as exc:
        text = str(exc)
    errors = Console(stderr=True, soft_wrap=True)
    errors.print(
        mask_text(f"bsc-rules {args.command}: 錯誤：{text}"), highlight=False, markup=False
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
