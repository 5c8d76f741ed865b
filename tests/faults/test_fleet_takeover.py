"""Two ``bsc-rules run --db postgresql://…`` processes sharing the Taipei example's twelve
offices (scheduling/fleet.py, spec/service.md "Leases"): one is SIGKILLed in the middle
of sending; the other takes every office over within the ttl and the renew interval,
and every message of the outbox goes out, none twice but the one whose sending the dead
service could not record (same Message-ID: the one resend service.md allows). A SIGTERM
then releases every lease at once. Also ``run --db DIR/`` starts and stops cleanly.

The ttl and renew interval are shortened (2 s and 0.5 s; the spec's 20 s and 5 s are the
defaults); waits are polls with a deadline, on leases that expire by the database's clock.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import psycopg

from bsc_rules.calendar import to_us
from bsc_rules.notify.outbox import Outbox
from bsc_rules.store import postgres as pg_store
from bsc_rules.store.sqlconn import Db
from tests.faults.harness import clean_env, wait_until
from tests.smtp_server import SmtpServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "taipei"
OFFICES = sorted(p.stem for p in (EXAMPLE / "offices").glob("*.yaml"))
TTL, RENEW = 2.0, 0.5
PER_OFFICE = 2


def message(office: str, n: int) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"bsc-rules@{office}.example.org"
    mail["To"] = f"records@{office}.example.org"
    mail["Subject"] = f"測試 {office} {n}"
    mail["Message-ID"] = f"<fleet{n}.{office}.overdue@bsc-rules.{office}>"
    mail.set_content(f"第 {n} 封")
    return bytes(mail)


def queue_mail(url: str) -> set[str]:
    """Two messages due now in every office's outbox; their Message-IDs."""
    conn = pg_store.connect(url)
    ids = set()
    try:
        for office in OFFICES:
            db = Db(conn, office)
            with db.transaction():
                for n in range(PER_OFFICE):
                    Outbox(db).enqueue(message(office, n), kind="overdue", now_us=to_us_2017())
                    ids.add(f"<fleet{n}.{office}.overdue@bsc-rules.{office}>")
    finally:
        conn.close()
    return ids


def to_us_2017() -> int:
    from datetime import datetime

    from bsc_rules.calendar import TAIPEI

    return to_us(datetime(2017, 5, 10, 9, 0, tzinfo=TAIPEI))


class Run:
    """``python -m bsc_rules run`` on the database; its standard error kept as it comes."""

    def __init__(self, db: str, folder: Path, smtp: SmtpServer) -> None:
        env = clean_env(
            BSC_RULES_LEASE_TTL_SECONDS=str(TTL),
            BSC_RULES_LEASE_RENEW_SECONDS=str(RENEW),
            BSC_RULES_TICK_MINUTES="1440",  # no tick in the test: gains deliver
            BSC_RULES_MATCHER="python",
            BSC_RULES_SMTP__HOST=smtp.host,
            BSC_RULES_SMTP__PORT=str(smtp.port),
            BSC_RULES_SMTP__SECURITY="none",
        )
        settings = folder / "settings.toml"
        settings.write_text("", encoding="utf-8")
        argv = [sys.executable, "-m", "bsc_rules", "run", "--db", db, "--rules", str(EXAMPLE)]
        self.proc = subprocess.Popen(
            [*argv, "--settings", str(settings)],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            self.lines.append(raw.decode())

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def holder(self) -> str:
        return f":{self.proc.pid}:"

    def end(self, signum: int) -> int:
        """Signal the process (unless it has ended), reap it, close its pipe; its status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        status = self.proc.wait(timeout=120)
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return status


def held_by(url: str) -> dict[str, str | None]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT office, holder, expires_at > now() FROM leases").fetchall()
    return {office: holder if live else None for office, holder, live in rows}


def pending(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE status <> 'sent'").fetchone()
    return int(row[0]) if row else -1


def test_a_killed_service_s_offices_pass_to_the_other_and_every_message_goes_once(
    tmp_path: Path, pg_url: str
) -> None:
    """A holds everything and is stuck in the middle of a delivery; B starts and gets its
    share; A is SIGKILLed; B holds all thirteen (twelve offices and the city) within
    ttl + renew (+ slack), sends every message, the one A was sending at most twice."""
    ids = queue_mail(pg_url)
    with SmtpServer() as smtp:
        smtp.behaviour.hold = threading.Event()  # DATA waits: A is caught mid-send
        a = Run(pg_url, tmp_path, smtp)
        b: Run | None = None
        try:
            wait_until(smtp.behaviour.holding.is_set, 120, "A sending its first message")
            b = Run(pg_url, tmp_path, smtp)
            wait_until(lambda: b is not None and b.said("多戶所服務已啟動"), 120, "B started")
            wait_until(
                lambda: any(b.holder() in (h or "") for h in held_by(pg_url).values()),
                30,
                "B holding its share",
            )
            a.end(signal.SIGKILL)
            killed = time.monotonic()
            smtp.behaviour.hold.set()
            wait_until(
                lambda: all(b.holder() in (h or "") for h in held_by(pg_url).values()),
                30,
                "B holding every office",
            )
            took = time.monotonic() - killed
            wait_until(lambda: pending(pg_url) == 0, 60, "every message sent")
            sent = Counter(r.message_id for r in smtp.received)
            assert b.end(signal.SIGTERM) == 0, "".join(b.lines)
            b_lines = b.lines
            b = None
        finally:
            a.end(signal.SIGKILL)
            if b is not None:
                b.end(signal.SIGKILL)
    assert took < TTL + RENEW + 5, took  # the spec's 30 s, with its own ttl of 20 s
    assert set(sent) == ids  # none lost
    assert sum(sent.values()) - len(ids) <= 1, sent  # the one resend, at most
    assert all(holder is None for holder in held_by(pg_url).values())  # SIGTERM released
    assert any("開始服務本所" in line and "租約第" in line for line in b_lines)


def test_run_on_a_directory_serves_every_office_and_stops_on_sigterm(tmp_path: Path) -> None:
    """``run --db DIR/`` creates every office's file, logs the offices it serves, and
    stops cleanly on SIGTERM, the office named in each office's log lines."""
    with SmtpServer() as smtp:
        run = Run(f"{tmp_path / 'offices'}/", tmp_path, smtp)
        try:
            wait_until(lambda: run.said("多戶所服務已啟動"), 120, "the service started")
        finally:
            status = run.end(signal.SIGTERM)
    assert status == 0, "".join(run.lines)
    files = sorted(p.stem for p in (tmp_path / "offices").glob("*.db"))
    assert files == ["_city", *OFFICES]  # the city's outbox and runs beside the offices
    started = [line for line in run.lines if "開始服務本所" in line]
    assert sorted(line.split()[2] for line in started) == OFFICES
    assert run.said("服務已停止")
