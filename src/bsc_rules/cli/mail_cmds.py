"""The notification commands: replay, render, outbox, ack, history, run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsc_rules.calendar import to_us
from bsc_rules.cli._common import (
    OK,
    BadArguments,
    Context,
    add_db,
    add_rules,
    add_settings,
    command,
    db_value,
    exit_for,
    form_of,
    instant,
    lines,
    load,
    open_db,
    pick_office,
    rule_sets_of,
)
from bsc_rules.cli._output import out, rejections, table, when
from bsc_rules.privacy import mask_text

if TYPE_CHECKING:
    from bsc_rules.notify.mailer import Mailer

KINDS = ("morning", "director", "digest")


def register(sub: Any) -> None:
    replay = command(sub, "replay", _replay, "replay events on their own time and send the mail")
    replay.add_argument("events", type=Path)
    replay.add_argument("--until", type=instant, required=True, help="RFC 3339 instant")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("--smtp", help="HOST:PORT of an SMTP server")
    target.add_argument("--maildir", type=Path, help="write the mail into this Maildir")
    replay.add_argument(
        "--db",
        help="state database: SQLite file, directory of per-office files, or postgresql:// URL"
        " (default: a temporary SQLite file)",
    )
    replay.add_argument("--office", help="office code, where the rules have several")
    add_rules(replay)
    add_settings(replay)
    render = command(sub, "render", _render, "preview a notification template")
    render.add_argument("kind", choices=KINDS)
    render.add_argument(
        "--example", action="store_true", required=True, help="with the shipped sample data"
    )
    render.add_argument("--part", choices=("text", "html"), default="text")
    outbox = command(sub, "outbox", _outbox, "list the outbox; retry undeliverable mail")
    outbox.add_argument("--status", choices=("pending", "sent", "parked"))
    outbox.add_argument(
        "--retry",
        nargs="?",
        const="*",
        metavar="MESSAGE_ID",
        help="put parked mail back in the queue (all, or one)",
    )
    _add_db(outbox)
    ack = command(sub, "ack", _ack, "acknowledge an alert: repeats and escalation stop")
    ack.add_argument("alert", help="alert key, e.g. case:BP1.1:BS1060412003 or kpi:2017:AP2.1")
    ack.add_argument("--note", required=True, help="what was done or why it waits")
    ack.add_argument("--by", required=True, help="who acknowledges (name and title)")
    _add_db(ack)
    history = command(sub, "history", _history, "alert transitions and notifications")
    history.add_argument("--kpi")
    history.add_argument("--case")
    _add_db(history)
    run = command(sub, "run", _run, "start the service (scheduler, ingest, alerts, mail)")
    add_settings(run)
    add_rules(run)
    _add_offices(run, "serve only this office of a directory or PostgreSQL")
    serve = command(sub, "serve", _serve, "the HTTP door (CloudEvents in) beside the service")
    add_settings(serve)
    add_rules(serve)
    _add_offices(serve, "serve (doors and mail) only this office of a directory or PostgreSQL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)


def _add_offices(cmd: argparse.ArgumentParser, office_help: str) -> None:
    """``--db`` of a service, and ``--office`` (repeatable) where it holds several."""
    cmd.add_argument(
        "--db",
        help="SQLite file (one office), directory of per-office files or postgresql:// URL"
        " (every office of the deployment, shared by leases on PostgreSQL)",
    )
    cmd.add_argument("--office", action="append", help=f"{office_help} (repeatable)")


def _add_db(cmd: argparse.ArgumentParser) -> None:
    """``--settings``, and ``--db`` in its three forms (default: the settings' database)
    with ``--office`` where it holds several offices."""
    add_settings(cmd)
    add_db(cmd, required=False)


def _mailer(args: argparse.Namespace) -> Mailer:
    from bsc_rules.notify.mailer import MaildirMailer, SmtpMailer

    if args.maildir is not None:
        return MaildirMailer(args.maildir)
    host, _, port = args.smtp.rpartition(":")
    if not host or not port.isdigit():
        msg = f"--smtp: expected HOST:PORT, got {args.smtp!r}"
        raise BadArguments(msg)
    return SmtpMailer(host, int(port), security="none")


def _replay(args: argparse.Namespace, ctx: Context) -> int:
    import tempfile

    from bsc_rules.alerts.pipeline import open_pipeline
    from bsc_rules.scheduling.replay import replay

    mailer = _mailer(args)
    settings = load(args)
    with tempfile.TemporaryDirectory() as tmp:
        db = db_value(args) if args.db is not None else str(Path(tmp) / "replay.db")
        office = args.office
        if office is None:  # the rules' one office; several: --office (naming them)
            codes = list(rule_sets_of([settings.rules]))
            office = pick_office(db, None, codes, listing=False)
        pipeline = open_pipeline(settings, db, office=office)
        try:
            summary = replay(lines(args.events), to_us(args.until), pipeline, mailer)
            pending = len(pipeline.outbox.items("pending"))  # queued, retried later
        finally:
            pipeline.card.close()
    ingest = summary.ingest
    out(
        ctx.console,
        f"重播完成：事件 {ingest.accepted} 筆（重複 {ingest.duplicates}、"
        f"退回 {ingest.rejected}），評估 {summary.ticks} 次，"
        f"寄出通知 {len(summary.sent)} 封，無法投遞 {len(summary.undeliverable)} 封，"
        f"待寄 {pending} 封。",
    )
    rejections(ctx.console, ingest.rejections, ingest.rejected)
    return exit_for(ingest.rejected)


def _render(args: argparse.Namespace, ctx: Context) -> int:
    from bsc_rules.notify.examples import example
    from bsc_rules.notify.render import inline_images

    mail = example(args.kind)  # built once, shown as text or as HTML with its images
    write = ctx.console.file.write
    if args.part == "text":
        write(mask_text(f"郵件主旨：{mail.subject}\n收件者：{', '.join(mail.to)}\n\n"))
    body = mail.text if args.part == "text" else inline_images(mail.html, mail.images)
    write(mask_text(body) + "\n")
    return OK


def _outbox(args: argparse.Namespace, ctx: Context) -> int:
    from bsc_rules.notify.outbox import Outbox

    _, store, db = open_db(args)
    try:
        outbox = Outbox(db)
        if args.retry is not None:  # what was put back, not the whole outbox
            only = None if args.retry == "*" else args.retry
            again = outbox.retry(only, now_us=to_us(ctx.clock.now()))
            out(ctx.console, f"已重新排入寄送佇列：{len(again)} 封。")
            for message_id in again:
                out(ctx.console, f"  {message_id}")
            return OK
        rows = [
            (i.status, when(i.created_us), i.message_id, i.subject, ", ".join(i.recipients),
             str(i.attempts), i.last_error or "")
            for i in outbox.items(args.status)
        ]  # fmt: skip
    finally:
        store.close()
    headers = ("狀態", "建立時間", "Message-ID", "主旨", "收件者", "嘗試", "錯誤")
    ctx.console.print(table(headers, rows, whole=("Message-ID",)))
    return OK


def _ack(args: argparse.Namespace, ctx: Context) -> int:
    from bsc_rules.alerts.table import AlertTable

    _, store, db = open_db(args)
    try:
        now = to_us(ctx.clock.now())
        done = AlertTable(db).acknowledge(args.alert, args.note, now, by=args.by)
    finally:
        store.close()
    rec = done.record
    if done.already:
        who = f"{done.by}，" if done.by else ""
        when_ = when(done.at) if done.at is not None else "先前"
        said = f"警示 {rec.key}（{rec.state}）已於 {when_} 確認（{who}{done.note}），未再變更。"
        out(ctx.console, said)
        return OK
    out(
        ctx.console,
        f"已確認警示 {rec.key}（{rec.state}）：{args.by}，{args.note}；不再重複通知及陳報。",
    )
    return OK


def _history(args: argparse.Namespace, ctx: Context) -> int:
    from bsc_rules.alerts.table import AlertTable

    _, store, db = open_db(args)
    try:
        found = AlertTable(db).history(args.kpi, args.case)
        rows = [
            (when(int(str(at))), str(key), str(event), str(state or ""),
             str(recipients or actor or ""), str(note or ""))
            for at, key, event, state, _mid, recipients, note, actor in found
        ]  # fmt: skip
    finally:
        store.close()
    ctx.console.print(table(("時間", "警示", "事件", "狀態", "收件者／確認者", "備註"), rows))
    return OK


def _serve(args: argparse.Namespace, ctx: Context) -> int:
    from bsc_rules.http.serve import serve_http  # needs the `http` extra

    serve_http(load(args), args.host, args.port, ctx.clock, db=db_value(args), offices=args.office)
    return OK


def _run(args: argparse.Namespace, ctx: Context) -> int:
    db = db_value(args)
    if form_of(db) != "file":
        from bsc_rules.scheduling.fleet import serve_fleet

        serve_fleet(load(args), db, clock=ctx.clock, offices=args.office)
        return OK
    from bsc_rules.scheduling.service import serve

    if args.office:
        raise BadArguments(f"--office: the SQLite file {db} holds one office")
    stdin = None if sys.stdin.isatty() else sys.stdin.buffer
    serve(load(args), clock=ctx.clock, stdin=stdin)
    return OK
