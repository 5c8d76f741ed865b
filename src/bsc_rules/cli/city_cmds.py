"""The city's commands: ``digest --city``, the monthly digest comparing the offices of a
multi-office deployment KPI by KPI (bsc_rules.notify.city), to ``city.recipients``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsc_rules.calendar import month_bounds, to_us
from bsc_rules.cli._common import (
    OK,
    BadArguments,
    Context,
    binary_stdout,
    command,
    form_of,
    shown,
)
from bsc_rules.cli._output import out
from bsc_rules.errors import UsageError

if TYPE_CHECKING:
    from bsc_rules.notify.notices import Mail
    from bsc_rules.settings import Settings


def register(sub: Any) -> None:
    digest = command(
        sub,
        "digest",
        _digest,
        "the city's monthly digest (--city): the offices compared KPI by KPI, to city.recipients",
    )
    digest.add_argument(
        "--city", action="store_true", help="the city's digest (deployment.yaml: city)"
    )
    digest.add_argument(
        "--db", required=True, help="directory of per-office files, or postgresql:// URL"
    )
    digest.add_argument("--month", type=_month, required=True, help="the month, YYYY-MM")
    digest.add_argument(
        "--rules", type=Path, help="the multi-office rule folder (offices/, deployment.yaml)"
    )
    digest.add_argument("--matcher", choices=("auto", "durable", "python"), default="auto")
    digest.add_argument("--settings", type=Path, help="settings file (sender, templates)")
    target = digest.add_mutually_exclusive_group(required=True)
    target.add_argument("--smtp", help="HOST:PORT of an SMTP server")
    target.add_argument("--maildir", type=Path, help="write the mail into this Maildir")
    target.add_argument("--out", type=Path, help="write the message (.eml) here ('-': stdout)")


def _month(text: str) -> tuple[int, int]:
    found = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if found is None or not 1 <= int(found[2]) <= 12:
        raise argparse.ArgumentTypeError(f"expected a month as YYYY-MM, got {text!r}")
    return int(found[1]), int(found[2])


def _digest(args: argparse.Namespace, ctx: Context) -> int:
    from bsc_rules.notify.city import city_mail
    from bsc_rules.rules.offices import load_deployment
    from bsc_rules.settings import load_settings

    if not args.city:
        msg = "各戶所之月報由服務（bsc-rules run）寄送；此指令目前只產生市府月報，請加 --city"
        raise BadArguments(msg)
    if form_of(args.db) == "file":
        msg = f"--db {shown(args.db)}：市府月報需要多戶所資料庫（目錄或 postgresql:// URL）"
        raise BadArguments(msg)
    year, month = args.month
    end = month_bounds(year, month)[1]
    now = to_us(ctx.clock.now())
    if end > now:
        raise BadArguments(f"--month {year}-{month:02d}：該月尚未結束，無法產生月報")
    deployment = load_deployment(args.rules)
    if deployment.city is None:
        where = (args.rules or Path("rules")) / "deployment.yaml"
        raise UsageError(f"規則資料夾未描述市府（{where}：city），無市府月報之收件者")
    settings = load_settings(args.settings)
    mail = city_mail(deployment, args.db, year, month, sender=settings.sender, now=now,
                     matcher=args.matcher, templates=settings.templates)  # fmt: skip
    _deliver(args, ctx, mail, settings)
    return OK


def _deliver(args: argparse.Namespace, ctx: Context, mail: Mail, settings: Settings) -> None:
    from bsc_rules.notify.mailer import MaildirMailer, SmtpMailer
    from bsc_rules.notify.render import to_bytes
    from bsc_rules.rules.office import addr_spec

    data = to_bytes(mail)
    if args.out is not None:
        if str(args.out) == "-":
            binary_stdout(ctx.stdout).write(data)  # type: ignore[arg-type]
            return
        args.out.write_bytes(data)
        out(ctx.console, f"已寫入市府月報：{args.out}（{mail.subject}）")
        return
    if args.maildir is not None:
        mailer: MaildirMailer | SmtpMailer = MaildirMailer(args.maildir)
    else:
        host, _, port = args.smtp.rpartition(":")
        if not host or not port.isdigit():
            raise BadArguments(f"--smtp: expected HOST:PORT, got {args.smtp!r}")
        mailer = SmtpMailer(host, int(port), security="none")
    mailer.send(addr_spec(settings.sender), [addr_spec(t) for t in mail.to], data)
    out(ctx.console, f"已寄出市府月報：{mail.subject}（收件者：{'、'.join(mail.to)}）")
