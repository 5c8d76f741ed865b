"""``make demo``: a Datong year through the whole pipeline into a local mail sink.

Generates the office's 2017 events, starts a local SMTP server (aiosmtpd on 127.0.0.1)
that stores what it receives in a Maildir under ``out/``, replays the year on its own
time through the pipeline into that server, and prints a summary read back from the
Maildir: events, alerts by kind and KPI, mails per recipient, and where the December
digest is.
"""

from __future__ import annotations

import email
import re
import socket
import sys
from collections import Counter
from email.message import EmailMessage
from email.policy import default
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from rich.console import Console
from rich.table import Table

from bsc_rules.alerts.pipeline import open_pipeline
from bsc_rules.calendar import parse_instant, to_us
from bsc_rules.dev.simulate import simulate, write_jsonl
from bsc_rules.notify.mailer import MaildirMailer, SmtpMailer, maildir_name
from bsc_rules.notify.render import previewable_html
from bsc_rules.scheduling.replay import replay
from bsc_rules.settings import load_settings

UNTIL = "2018-01-31T23:59:59+08:00"


class MaildirSink:
    """An aiosmtpd handler that stores every accepted message in a Maildir."""

    def __init__(self, folder: Path) -> None:
        self.maildir = MaildirMailer(folder)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.maildir.send(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)
        return "250 stored"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _messages(folder: Path) -> list[EmailMessage]:
    files = sorted((folder / "new").glob("*"))
    return [email.message_from_bytes(f.read_bytes(), policy=default) for f in files]


def _kind(message: EmailMessage) -> str:
    return str(message["X-BSC-Kind"] or "?")


def summarise(folder: Path, console: Console) -> None:
    """Print what the Maildir holds: mails by kind, by KPI, per recipient."""
    messages = _messages(folder)
    kinds = Counter(_kind(m) for m in messages)
    kpis = Counter(
        (
            m.group(0) if (m := re.search(r"[A-Z]{2}\d\.\d", str(msg["Subject"]))) else "—",
            _kind(msg),
        )
        for msg in messages
        if _kind(msg) != "digest"
    )
    recipients = Counter(
        address
        for msg in messages
        for _, address in getaddresses([str(v) for v in msg.get_all("To", [])])
    )
    table = Table(title="通知（依種類）")
    table.add_column("種類")
    table.add_column("封數", justify="right")
    for kind, count in sorted(kinds.items()):
        table.add_row(kind, str(count))
    console.print(table)
    by_kpi = Table(title="警示通知（依KPI）")
    for header in ("KPI", "種類", "封數"):
        by_kpi.add_column(header)
    for (kpi, kind), count in sorted(kpis.items()):
        by_kpi.add_row(kpi, kind, str(count))
    console.print(by_kpi)
    per = Table(title="收件者")
    per.add_column("收件者")
    per.add_column("封數", justify="right")
    for who, count in sorted(recipients.items()):
        per.add_row(who, str(count))
    console.print(per)
    _december(messages, folder, console)


def _december(messages: list[EmailMessage], folder: Path, console: Console) -> None:
    for message in messages:
        if (
            _kind(message) == "digest"
            and "106年12月份" in str(message["Subject"])
            and "director" in str(message["To"])
        ):
            path = folder.parent / "digest-106-12-director.html"
            path.write_text(previewable_html(message), encoding="utf-8")
            eml = folder / "new" / maildir_name(str(message["Message-ID"]))
            console.print(f"12月月報（主任）：{eml}\nHTML：{path}", highlight=False)
            return
    console.print("找不到12月月報。", highlight=False)


def main(out: Path = Path("out")) -> int:
    console = Console()
    out.mkdir(exist_ok=True)
    events = out / "datong-2017.jsonl"
    with events.open("wb") as handle:
        count = write_jsonl(simulate(year=2017, seed=1), handle)
    console.print(f"已產生 {count} 筆事件：{events}", highlight=False)
    maildir, db = out / "maildir", out / "demo.db"
    for stale in (db, db.with_name("demo.db-wal"), db.with_name("demo.db-shm")):
        stale.unlink(missing_ok=True)
    for old in (maildir / "new").glob("*") if maildir.exists() else ():
        old.unlink()
    port = _free_port()
    controller = Controller(MaildirSink(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = load_settings(None, database=db)
        pipeline = open_pipeline(settings, db)
        console.print(
            f"重播 106年 全年事件至 {UNTIL}，郵件寄至本機 SMTP 127.0.0.1:{port} …", highlight=False
        )
        with events.open("rb") as lines:
            summary = replay(
                lines,
                to_us(parse_instant(UNTIL)),
                pipeline,
                SmtpMailer("127.0.0.1", port, security="none"),
            )
        pipeline.card.close()
    finally:
        controller.stop()
    console.print(
        f"事件：接收 {summary.ingest.accepted} 筆、重複 {summary.ingest.duplicates} 筆、"
        f"退回 {summary.ingest.rejected} 筆；評估 {summary.ticks} 次；"
        f"寄出 {len(summary.sent)} 封，無法投遞 {len(summary.undeliverable)} 封。",
        highlight=False,
    )
    summarise(maildir, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
