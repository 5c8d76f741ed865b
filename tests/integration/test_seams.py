"""The seams that hold under concurrency: an acknowledgement is never lost to an
evaluation, a rolled-back write never hides another writer's event, and one database
has one scheduler (issue 9, "Safe seams")."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import orjson
import pytest

from bsc_rules.alerts.lifecycle import AlertRecord
from bsc_rules.alerts.pipeline import Pipeline, open_pipeline
from bsc_rules.alerts.table import AlertTable
from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.clock import FakeClock
from bsc_rules.errors import StoreError
from bsc_rules.events import parse_line
from bsc_rules.notify.mailer import MaildirMailer
from bsc_rules.notify.outbox import Outbox
from bsc_rules.scheduling.service import Service
from bsc_rules.scorecard import Scorecard
from bsc_rules.settings import load_settings
from bsc_rules.store.db import transaction
from bsc_rules.store.lock import DatabaseBusy
from bsc_rules.store.sqlite import SQLiteStore
from tests.conftest import event
from tests.smtp_server import SmtpServer

KEY = "case:BP1.1:BS-1"


def at(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


# ---------------------------------------------------------------- the lost ack


@pytest.fixture
def overdue(tmp_path: Path, rules) -> Iterator[Pipeline]:
    """A pipeline whose case alert BS-1 is overdue and notified once (due 9 May 00:00)."""
    settings = load_settings(None, database=tmp_path / "bsc.db", matcher="python")
    pipeline = open_pipeline(settings)
    applied = event("birth_subsidy.applied", "2017-05-01T10:00:00+08:00", "BS-1", {"amount": 1})
    assert pipeline.card.ingest(applied).ok
    assert pipeline.evaluate(at("2017-05-09T01:00:00+08:00"))
    assert pipeline.alerts.load()[KEY].state == "overdue"
    yield pipeline
    pipeline.card.close()


def test_an_ack_landing_while_evaluate_runs_is_not_lost(overdue: Pipeline) -> None:
    """Another process acknowledges right after evaluate has read the alert records (the
    moment of the old race): either the ack waits for evaluate's commit, or evaluate sees
    it; the record ends acknowledged either way, and the history says so."""
    db = Path(overdue.card.store.path)  # type: ignore[attr-defined]
    other = SQLiteStore(db)
    other.connection.execute("PRAGMA busy_timeout = 0")  # a blocked ack fails at once
    acker = AlertTable(other.connection)
    blocked: list[str] = []
    load = overdue.alerts.load

    def load_then_ack() -> dict[str, AlertRecord]:
        records = load()
        try:
            acker.acknowledge(KEY, "處理中", at("2017-05-10T00:30:00+08:00"))
        except StoreError as exc:  # evaluate holds the write lock: the ack comes after
            blocked.append(str(exc))
        return records

    overdue.alerts.load = load_then_ack  # type: ignore[method-assign]
    queued = overdue.evaluate(at("2017-05-10T01:00:00+08:00"))  # the daily repeat is due
    overdue.alerts.load = load  # type: ignore[method-assign]
    assert queued  # evaluate wrote the record back (a repeat notice)
    if blocked:  # the ack waited for evaluate's commit (what BEGIN IMMEDIATE does)
        assert "locked" in blocked[0]
        acker.acknowledge(KEY, "處理中", at("2017-05-10T01:30:00+08:00"))
    other.close()

    record = overdue.alerts.load()[KEY]
    assert (record.acknowledged, record.ack_note) == (True, "處理中")
    assert record.sent == 2  # listed at two mail instants
    events = [h[2] for h in overdue.alerts.history(case="BS-1")]
    assert events.count("acknowledged") == 1
    later = overdue.evaluate(at("2017-05-15T08:00:00+08:00"))  # 3 working days on
    kinds = {overdue.outbox.get(mid).kind for mid in later}  # type: ignore[union-attr]
    assert kinds == {"morning"}  # still listed to its section, never on the director's list


def test_an_evaluation_writes_only_the_columns_it_changed(overdue: Pipeline) -> None:
    """Even decided from a record read before an ack, the write-back keeps the ack: it
    updates the columns its step changed, never the whole row."""
    table = overdue.alerts
    old = table.load()[KEY]
    AlertTable(SQLiteStore(Path(overdue.card.store.path)).connection).acknowledge(  # type: ignore[attr-defined]
        KEY, "已處理", at("2017-05-09T02:00:00+08:00")
    )
    new = AlertRecord(KEY, old.state, old.since, old.notified + 1, old.told, sent=old.sent + 1)
    with transaction(overdue.conn):
        table.save(new, old)
    record = table.load()[KEY]
    assert (record.notified, record.sent) == (old.notified + 1, old.sent + 1)
    assert (record.acknowledged, record.ack_note) == (True, "已處理")


# ---------------------------------------------------------------- the skipped event


def visit(n: int) -> bytes:
    body = event("immigrant_visit.reported", f"2017-03-0{n}T10:00:00+08:00", f"NV{n}")
    return orjson.dumps({**body, "data": {"method": "phone"}})


def test_a_rolled_back_write_does_not_hide_another_writers_event(tmp_path: Path, rules) -> None:
    """Ours inserts seq 1 in a batch that rolls back; theirs then stores its event as seq
    1 (SQLite reuses the rowid): refresh must apply it (the old code applied 0)."""
    db = tmp_path / "office.db"
    with (
        Scorecard.open(db, rules, matcher="python") as ours,
        Scorecard.open(db, rules, matcher="python") as theirs,
    ):

        def failing() -> Iterator[object]:
            yield parse_line(visit(1))
            raise OSError("the stream broke")

        with pytest.raises(OSError, match="stream broke"):
            ours.store.append_batch(failing())  # type: ignore[arg-type]
        assert ours.store.own_writes() == frozenset()
        assert theirs.ingest(visit(2)).status == "accepted"
        seq = theirs.store.rows_after(0)
        assert [s for s, _ in seq] == [1]

        assert ours.refresh() == 1
        assert ours.report_at(at("2017-12-31T00:00:00+08:00")).kpis["BC1.1"].value == 1


# ---------------------------------------------------------------- one scheduler


def test_a_second_service_on_the_same_database_is_refused(tmp_path: Path) -> None:
    settings = load_settings(None, database=tmp_path / "bsc.db", matcher="python")
    clock = FakeClock(datetime(2017, 5, 10, 9, 30, tzinfo=TAIPEI))
    with Service(settings, clock, MaildirMailer(tmp_path / "mail")):
        with pytest.raises(DatabaseBusy) as caught:
            Service(settings, clock, MaildirMailer(tmp_path / "mail"))
        message = str(caught.value)
        assert f"程序 {os.getpid()}" in message
        assert f"主機 {socket.gethostname()}" in message
        assert "106年5月10日 09:30:00" in message
        assert str(settings.database) in message
    with Service(settings, clock, MaildirMailer(tmp_path / "mail")) as again:  # released
        assert again.pipeline.outbox.items() == []


def mail(n: int) -> bytes:
    message = EmailMessage()
    message["From"] = "bsc-rules@datong.example.org"
    message["To"] = "records@datong.example.org"
    message["Subject"] = f"測試 {n}"
    message["Message-ID"] = f"<seam{n}.overdue@bsc-rules.datong>"
    message.set_content(f"第 {n} 封")
    return bytes(message)


def settings_file(tmp_path: Path, smtp: SmtpServer) -> Path:
    path = tmp_path / "bsc-rules.toml"
    path.write_text(
        f'database = "{tmp_path / "bsc.db"}"\nmatcher = "python"\n'
        f'[smtp]\nhost = "{smtp.host}"\nport = {smtp.port}\nsecurity = "none"\n',
        encoding="utf-8",
    )
    return path


def start_run(settings: Path) -> subprocess.Popen[bytes]:
    """``python -m bsc_rules run`` as its own process (standard input left open)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bsc_rules", "run", "--settings", str(settings)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=settings.parent,
    )


def end(proc: subprocess.Popen[bytes], signum: int) -> int:
    """Signal the process, wait for its end and close its pipes; its exit status."""
    proc.send_signal(signum)
    status = proc.wait(timeout=120)
    for pipe in (proc.stdin, proc.stderr):
        if pipe is not None:
            pipe.close()
    return status


def wait_for(proc: subprocess.Popen[bytes], text: str, limit: float = 120) -> str:
    """Read the process's standard error until a line holds ``text`` (or it ends)."""
    assert proc.stderr is not None
    seen = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while selector.select(limit):
            line = proc.stderr.readline().decode()
            seen.append(line)
            if text in line or not line:
                break
    output = "".join(seen)
    assert text in output, output
    return output


def test_two_run_processes_never_send_a_message_twice(tmp_path: Path) -> None:
    """Four messages in the outbox; a second `run` refuses while the first holds the
    database, naming it; once the first is SIGKILLed a third starts; each message went
    out exactly once (the trial without the lock sent 6 messages for 4 rows)."""
    with SmtpServer() as smtp:
        settings = settings_file(tmp_path, smtp)
        store = SQLiteStore(tmp_path / "bsc.db")
        with transaction(store.connection):
            outbox = Outbox(store.connection)
            for n in range(4):
                outbox.enqueue(mail(n), kind="overdue", now_us=at("2017-05-10T09:00:00+08:00"))
        store.close()

        first = start_run(settings)
        try:
            assert "啟動時寄出 4 件" in wait_for(first, "服務已啟動")
            second = subprocess.run(
                [sys.executable, "-m", "bsc_rules", "run", "--settings", str(settings)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=tmp_path,
                timeout=120,
                check=False,
            )
            refused = second.stderr.decode()
            assert second.returncode == 1, refused
            assert "已有服務在執行" in refused
            assert f"程序 {first.pid}" in refused
            assert f"主機 {socket.gethostname()}" in refused
            assert str(tmp_path / "bsc.db") in refused
        finally:
            end(first, signal.SIGKILL)

        third = start_run(settings)
        try:
            assert "啟動時寄出 0 件" in wait_for(third, "服務已啟動")
        finally:
            assert end(third, signal.SIGTERM) == 0
        sent = Counter(r.message_id for r in smtp.received)
    assert sent == Counter({f"<seam{n}.overdue@bsc-rules.datong>": 1 for n in range(4)})


def test_an_acknowledgement_belongs_to_its_state(tmp_path: Path) -> None:
    """Acknowledged while due soon, a case that becomes overdue is unacknowledged again:
    who and when are cleared with the state (notifications.md, "Acknowledging")."""
    store = SQLiteStore(tmp_path / "office.db")
    table = AlertTable(store.connection)
    key, since = "case:BP1.1:BS-9", at("2017-03-20T00:00:00+08:00")
    soon = AlertRecord(key, "due_soon", since, 1, frozenset({"owner"}))
    with transaction(store.connection):
        table.save(soon)
    done = table.acknowledge(key, "已聯繫", at("2017-03-21T09:00:00+08:00"), by="林課員")
    assert (done.by, done.already) == ("林課員", False)
    acked = table.load()[key]
    overdue = AlertRecord(key, "overdue", at("2017-03-23T00:00:00+08:00"), 0, acked.told)
    with transaction(store.connection):
        table.save(overdue, acked)
    row = store.connection.execute(
        "SELECT acknowledged, ack_note, ack_by, ack_at_us FROM alerts WHERE key = ?", (key,)
    ).fetchone()
    assert row == (0, None, None, None)
    again = table.acknowledge(key, "改期撥款", at("2017-03-23T09:00:00+08:00"), by="王課長")
    assert (again.by, again.already, again.record.state) == ("王課長", False, "overdue")
    store.close()
