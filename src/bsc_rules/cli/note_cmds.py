"""``bsc-rules comment``: the owner section's analysis and improvement note for a KPI's
month, shown in that month's digest; without ``--text``, the notes kept (all versions)."""

from __future__ import annotations

import argparse
from typing import Any

from bsc_rules.calendar import to_us
from bsc_rules.cli._common import (
    OK,
    Context,
    add_db,
    add_settings,
    command,
    load,
    open_db,
    rule_sets_of,
)
from bsc_rules.cli._output import out, table, when
from bsc_rules.errors import UsageError


def register(sub: Any) -> None:
    comment = command(
        sub, "comment", _comment, "a section's analysis and improvement note for a KPI's month"
    )
    comment.add_argument("kpi", help="KPI id, e.g. BP1.1")
    comment.add_argument("--month", required=True, help="the month the note is about: YYYY-MM")
    comment.add_argument("--by", help="who writes it (name and title), required with --text")
    comment.add_argument("--text", help="the note; without it, the notes kept are listed")
    add_settings(comment)
    add_db(comment, required=False)


def _comment(args: argparse.Namespace, ctx: Context) -> int:
    from bsc_rules.alerts.notes import Notes, check_month

    check_month(args.month)
    sets = rule_sets_of([load(args).rules])
    _, store, db = open_db(args, list(sets))
    try:
        rules = sets.get(db.office or "") or next(iter(sets.values()))
        if args.kpi not in rules.kpis:
            known = ", ".join(rules.kpis)
            msg = f"kpi: no KPI {args.kpi!r} in the rules (known: {known})"
            raise UsageError(msg)
        notes = Notes(db)
        if args.text is None:
            rows = [(when(n.at), n.author, n.text) for n in notes.history(args.kpi, args.month)]
            ctx.console.print(table(("填報時間", "填報人", "分析與改進說明"), rows))
            return OK
        if args.by is None:
            raise UsageError("--by: who writes the note is required with --text")
        note = notes.add(args.kpi, args.month, args.by, args.text, to_us(ctx.clock.now()))
    finally:
        store.close()
    year, month = note.month.split("-")
    out(
        ctx.console,
        f"已記錄{note.kpi}「{int(year) - 1911}年{int(month)}月」分析與改進說明（{note.author}），"
        "將列入該月月報。",
    )
    return OK
