"""The scorecard commands: check, evaluate, status, ingest, rejected, simulate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bsc_rules.calendar import TAIPEI
from bsc_rules.cli._common import (
    INTERRUPTED,
    OK,
    BadArguments,
    Context,
    Interrupt,
    add_db,
    add_rule_sets,
    add_rules,
    binary_stdout,
    check_year,
    command,
    exit_for,
    form_of,
    instant,
    lines,
    matcher,
    open_store,
    pick_office,
    require_db,
    rule_sets,
)
from bsc_rules.cli._offices import OfficesSummary, RoutedIngest, ingest_in_workers, rules_for
from bsc_rules.cli._output import (
    FileProgress,
    out,
    print_report,
    rejections,
    stderr,
    table,
    write_json,
)
from bsc_rules.errors import UsageError
from bsc_rules.measures.report import Report
from bsc_rules.rules.ruleset import RuleSet, load_ruleset
from bsc_rules.scorecard import IngestSummary, Scorecard
from bsc_rules.store.dbform import held_offices, shown
from bsc_rules.store.dbform import rejections as kept_rejections
from bsc_rules.store.directory import REJECTED


def register(sub: Any) -> None:
    check = command(sub, "check", _check, "validate a rule folder and report every problem")
    check.add_argument(
        "rules",
        nargs="?",
        type=Path,
        help="rule folder, of one office or of several (offices/<code>.yaml);"
        " default: the project's rules/",
    )
    check.add_argument("--rules", dest="rules_option", type=Path, help="the same, as an option")
    evaluate = command(sub, "evaluate", _evaluate, "report on a JSON Lines file of events")
    evaluate.add_argument("events", type=Path, help="CloudEvents JSON Lines file")
    evaluate.add_argument("--as-of", type=instant, required=True, help="RFC 3339 instant")
    status = command(sub, "status", _status, "report on the events stored in a database")
    add_db(status)
    status.add_argument(
        "--all-offices", action="store_true", help="one report per office of the database"
    )
    status.add_argument("--as-of", type=instant, help="RFC 3339 instant (default: now)")
    for cmd in (evaluate, status):
        cmd.add_argument(
            "--year", type=int, help="the year to report (default: the year of --as-of)"
        )
        cmd.add_argument("--format", choices=("table", "json"), default="table")
    add_rules(evaluate)
    add_rule_sets(status)
    ingest = command(sub, "ingest", _ingest, "store a JSON Lines file of events (idempotent)")
    ingest.add_argument("events", type=Path)
    add_db(ingest)
    add_rule_sets(ingest)
    ingest.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing a many-office file by office (a directory or postgresql:// --db)",
    )
    rejected = command(sub, "rejected", _rejected, "list the rejected events kept in a database")
    add_db(rejected)
    rejected.add_argument("--format", choices=("table", "json"), default="table")
    simulate = command(sub, "simulate", _simulate, "write a realistic year of events (JSONL)")
    simulate.add_argument(
        "--office", action="append", help="office code (repeatable; default datong)"
    )
    simulate.add_argument("--year", type=int, default=2017)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--out", type=Path, help="output file ('-' or none: standard output)")


def _check(args: argparse.Namespace, ctx: Context) -> int:
    """One line per office of the folder (a multi-office folder: every offices/<code>.yaml,
    all validated before anything is printed), the city, then the calendar warnings."""
    from bsc_rules.rules.offices import load_deployment

    if args.rules is not None and args.rules_option is not None:
        raise BadArguments("give the rule folder once: as an argument or as --rules")
    deployment = load_deployment(args.rules or args.rules_option)
    for rules in map(deployment.offices.__getitem__, deployment.ordered()):
        out(
            ctx.console,
            f"規則檔檢查通過：{rules.office.office.name}（{rules.code}），"
            f"KPI {len(rules.kpis)} 項，事件條件 {len(rules.conditions)} 條。",
        )
    if deployment.multi_office:
        city = deployment.city
        whom = (
            f"；市府月報收件者：{city.department}（{len(city.recipients)} 個地址）" if city else ""
        )
        out(ctx.console, f"多戶所部署：共 {len(deployment.offices)} 個戶所{whom}。")
    today = ctx.clock.now().astimezone(TAIPEI).year
    warnings: dict[str, None] = {}  # years of the rules and this one, each said once
    for rules in deployment.offices.values():
        warnings.update(dict.fromkeys(rules.calendar_warnings([today])))
    for warning in warnings:
        out(ctx.console, f"警告：{warning}")
    return OK


def _evaluate(args: argparse.Namespace, ctx: Context) -> int:
    check_year(args, args.as_of)
    rules = load_ruleset(args.rules)
    with Scorecard(rules, matcher=matcher(args)) as card:
        summary = card.ingest_lines(lines(args.events), origin=args.events.name)
        report = card.report(args.as_of, args.year)
    print_report(report, rules, args.format, ctx.console)
    rejections(
        ctx.console if args.format == "table" else stderr(), summary.rejections, summary.rejected
    )
    return exit_for(report.rejected)


def _status(args: argparse.Namespace, ctx: Context) -> int:
    as_of = args.as_of or ctx.clock.now()
    check_year(args, as_of)
    sets = rule_sets(args)
    if args.all_offices and args.office is not None:
        raise BadArguments("--office and --all-offices cannot go together")
    offices = _status_offices(args, sets)
    reports: dict[str, Report] = {}
    for office in offices:
        store = open_store(args.db, office, create=False)
        with Scorecard(rules_for(sets, office), store=store, matcher=matcher(args)) as card:
            reports[office] = card.report(as_of, args.year)
    if not args.all_offices:
        report = reports[offices[0]]
        print_report(report, sets[offices[0]], args.format, ctx.console)
    elif args.format == "json":
        write_json(ctx.console, {code: r.as_dict() for code, r in reports.items()})
    else:
        for code, report in reports.items():
            out(ctx.console, f"【{sets[code].office.office.name}（{code}）】")
            print_report(report, sets[code], args.format, ctx.console)
            out(ctx.console, "")
    rejected = sum(r.rejected for r in reports.values())
    if rejected and args.format == "table":
        out(ctx.console, f"退回明細：bsc-rules rejected --db {_where(args.db, offices)}")
    return exit_for(rejected)


def _where(db: str, offices: list[str]) -> str:
    """``--db`` (and ``--office``) for a hint that names one office's database."""
    if form_of(db) == "file":
        return shown(db)
    return f"{shown(db)} --office {offices[0] if len(offices) == 1 else 'CODE'}"


def _status_offices(args: argparse.Namespace, sets: dict[str, RuleSet]) -> list[str]:
    """The office of the report, or every office the database holds (--all-offices)."""
    if form_of(args.db) == "file":
        require_db(Path(args.db))
    if not args.all_offices:
        return [pick_office(args.db, args.office, list(sets))]
    return held_offices(args.db) or [pick_office(args.db, None, list(sets))]


def _ingest(args: argparse.Namespace, ctx: Context) -> int:
    sets = rule_sets(args)
    size = args.events.stat().st_size if args.events.exists() else 0
    if args.workers < 1:
        raise BadArguments(f"--workers {args.workers}: expected a number of processes, 1 or more")
    if form_of(args.db) != "file":
        return _ingest_offices(args, ctx, sets, size)
    if args.workers > 1:
        msg = "--workers: a SQLite file holds one office; give a directory or a postgresql:// URL"
        raise BadArguments(msg)
    rules = rules_for(sets, pick_office(args.db, args.office, list(sets)))
    with (
        Interrupt() as interrupt,
        FileProgress(size) as progress,
        Scorecard(rules, store=open_store(args.db, rules.code), matcher=matcher(args)) as card,
    ):
        source = lines(args.events, progress, stop=interrupt)
        summary = card.ingest_lines(source, origin=args.events.name)
    return _ingested(args, ctx, summary, interrupt.requested)


def _ingest_offices(
    args: argparse.Namespace, ctx: Context, sets: dict[str, RuleSet], size: int
) -> int:
    """A many-office file into the directory form or PostgreSQL, routed by office."""
    if args.office is not None and args.office not in sets:
        raise BadArguments(f"--office {args.office}: no rule set for it (--rules)")
    if args.workers > 1:
        with Interrupt() as interrupt:
            _readable(args.events)  # said here, not by each worker
            done = ingest_in_workers(
                args.db, args.rules or [None], args.events, args.office, args.workers
            )
        return _offices_ingested(args, ctx, done, interrupt.requested)
    with (
        Interrupt() as interrupt,
        FileProgress(size) as progress,
        RoutedIngest(args.db, sets, args.events.name) as routed,
    ):
        numbered = enumerate(lines(args.events, progress, stop=interrupt), 1)
        done = routed.run(numbered, office=args.office)
    return _offices_ingested(args, ctx, done, interrupt.requested)


def _readable(path: Path) -> None:
    try:
        path.open("rb").close()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _offices_ingested(
    args: argparse.Namespace, ctx: Context, done: OfficesSummary, interrupted: bool
) -> int:
    code = _ingested(args, ctx, done.total(), interrupted)
    for office, each in sorted(done.offices.items()):
        out(ctx.console, f"  {office}：{_counts(each)}")
    if done.unknown:
        out(ctx.console, f"  不屬本部署之戶所：退回 {len(done.unknown)} 筆（均已保存）")
    return code


def _ingested(
    args: argparse.Namespace, ctx: Context, summary: IngestSummary, interrupted: bool
) -> int:
    if interrupted:
        out(
            ctx.console,
            f"已中斷（{shown(args.db)}）：{_counts(summary)}，均已存入；其餘各行未匯入。",
        )
        return INTERRUPTED
    out(ctx.console, f"匯入完成（{shown(args.db)}）：{_counts(summary)}。")
    rejections(ctx.console, summary.rejections, summary.rejected)
    if summary.rejected:
        where = shown(args.db) + ("" if form_of(args.db) == "file" else " --office CODE")
        out(ctx.console, f"  退回事件均已保存於資料庫：bsc-rules rejected --db {where}")
    return exit_for(summary.rejected)


def _counts(summary: IngestSummary) -> str:
    return (
        f"新增 {summary.accepted} 筆，重複 {summary.duplicates} 筆（已略過），"
        f"退回 {summary.rejected} 筆"
    )


def _rejected(args: argparse.Namespace, ctx: Context) -> int:
    """The rejections of the file, or of one office (``--office _rejected``: of the
    offices outside the deployment)."""
    office = ""
    if form_of(args.db) == "file":
        require_db(Path(args.db))
    elif args.office == REJECTED:
        office = REJECTED
    else:
        office = pick_office(args.db, args.office, [])
    store = open_store(args.db, office, create=False)
    try:
        rows = kept_rejections(store)
    finally:
        store.close()
    if args.format == "json":
        keys = ("origin", "line", "id", "field", "reason")
        write_json(ctx.console, [dict(zip(keys, (o, ln or None, i, f, r), strict=True))
                                 for o, ln, i, f, r in rows])  # fmt: skip
        return OK
    headers = ("來源", "行", "事件編號", "欄位", "原因")
    shown = [(o, str(ln or "—"), i or "—", f or "—", r) for o, ln, i, f, r in rows]
    ctx.console.print(table(headers, shown))
    out(ctx.console, f"退回事件：{len(rows)}筆（{_where(args.db, [office])}）")
    return OK


def _simulate(args: argparse.Namespace, ctx: Context) -> int:
    from bsc_rules.dev.simulate import simulate, write_jsonl

    events = simulate(year=args.year, seed=args.seed, offices=tuple(args.office or ["datong"]))
    if args.out is None or str(args.out) == "-":
        write_jsonl(events, binary_stdout(ctx.stdout))  # type: ignore[arg-type]
        return OK
    with args.out.open("wb") as handle:
        count = write_jsonl(events, handle)
    out(stderr(), f"已產生 {count} 筆事件：{args.out}")
    return OK
