"""The service on a real SQLite file, a real SMTP server (aiosmtpd) or a Maildir, and a fake
clock: jobs are called directly at the fake clock's time, nothing sleeps or waits for the
scheduler to fire; the scheduler itself is checked through its triggers' next fire times."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.clock import FakeClock
from bsc_rules.dev.simulate import simulate
from bsc_rules.notify.digest import digest_message_id
from bsc_rules.notify.mailer import MaildirMailer
from bsc_rules.officecal import OfficeCalendar
from bsc_rules.rules.office import SECTIONS
from bsc_rules.scheduling.schedule import Schedule
from bsc_rules.scheduling.service import (
    Service,
    digest_trigger,
    missed_months,
    serve,
    tick_trigger,
)
from bsc_rules.scorecard import Scorecard
from bsc_rules.settings import Settings, load_settings
from tests.conftest import event, jsonl
from tests.smtp_server import SmtpServer

MAY_10 = datetime(2017, 5, 10, 9, 0, tzinfo=TAIPEI)
AUG_15 = datetime(2017, 8, 15, 10, 0, tzinfo=TAIPEI)
OFFICE = "datong"


def at(text: str) -> int:
    """An instant in microseconds from local ISO text."""
    return to_us(datetime.fromisoformat(text))


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A running aiosmtpd server on a free port."""
    with SmtpServer() as server:
        yield server


def make_settings(tmp_path: Path, smtp: SmtpServer | None = None, **extra: Any) -> Settings:
    """Settings over a SQLite file in ``tmp_path`` (and the test SMTP server, if any)."""
    if smtp is not None:
        extra["smtp"] = {"host": smtp.host, "port": smtp.port, "security": "none"}
    return load_settings(None, database=tmp_path / "bsc.db", matcher="python", **extra)


def may_lines(seed: int = 7) -> list[bytes]:
    """The simulated events of 1-9 May 2017, in arrival order."""
    lo, hi = at("2017-05-01T00:00+08:00"), at("2017-05-10T00:00+08:00")
    kept = [e for e in simulate(year=2017, seed=seed) if lo <= at(e["time"]) < hi]
    return [orjson.dumps(e) for e in kept]


def applied(subject: str, time: str) -> dict[str, Any]:
    """A BP1.1 opening: a birth subsidy application (due 00:00 of the 8th day after)."""
    return event("birth_subsidy.applied", time, subject, {"amount": 20000})


def registration(time: str) -> dict[str, Any]:
    return event("registration.completed", time, f"RG-{time[:13]}", {"kind": "birth"})


def orphan(time: str) -> dict[str, Any]:
    """A follow-up whose case never opened: counted in ``unmatched`` each time it is applied."""
    return event("cross_notice.recorded", time, f"RG-NONE-{time[:13]}", {"channel": "hris"})


def digest_ids(months: list[tuple[int, int]]) -> set[str]:
    return {digest_message_id(y, m, a, OFFICE) for y, m in months for a in SECTIONS}


# ---------------------------------------------------------------- the scheduler's triggers


def test_digest_trigger_fires_every_day_at_the_digest_hour() -> None:
    """From 2017-05-31T12:00+08:00 the digest job runs 2017-06-01T08:00+08:00, then daily:
    whether a day is the digest's working day is the tick's to decide (missed_months)."""
    trigger = digest_trigger(hour=8)
    fire = trigger.get_next_fire_time(None, datetime(2017, 5, 31, 12, tzinfo=TAIPEI))
    assert fire == datetime(2017, 6, 1, 8, tzinfo=TAIPEI)
    assert fire.utcoffset() == timedelta(hours=8)
    after = trigger.get_next_fire_time(None, fire + timedelta(seconds=1))
    assert after == datetime(2017, 6, 2, 8, tzinfo=TAIPEI)


@pytest.mark.parametrize("minutes", [1, 7, 15, 60, 90, 1440], ids=lambda m: f"{m}min")
def test_tick_trigger_fires_at_the_replay_schedule_instants(minutes: int) -> None:
    """Ticks restart at local midnight, exactly where replay's Schedule puts them."""
    calendar = OfficeCalendar()
    schedule = Schedule(minutes, 1, 8, lambda: calendar)  # no digest on 10-12 May
    trigger = tick_trigger(minutes)
    now = datetime(2017, 5, 10, 22, 59, 30, tzinfo=TAIPEI)
    expected, fired = to_us(now), []
    for _ in range(min(300, 2 * 1440 // minutes + 2)):
        expected = schedule.tick_after(expected)
        now = trigger.get_next_fire_time(None, now + timedelta(seconds=1))
        fired.append(to_us(now))
        assert fired[-1] == expected, now


@pytest.mark.parametrize(
    ("start", "now", "months"),
    [
        ("2017-05-10T09:00", "2017-05-31T23:00", []),
        ("2017-05-10T09:00", "2017-06-01T08:00", [(2017, 5)]),
        ("2017-05-10T09:00", "2017-08-15T10:00", [(2017, 5), (2017, 6), (2017, 7)]),
        ("2017-06-01T08:00", "2017-06-01T08:00", [(2017, 5)]),
        ("2017-06-01T08:01", "2017-07-01T07:59", []),
        ("2017-11-20T00:00", "2018-02-01T08:00", [(2017, 11), (2017, 12), (2018, 1)]),
        ("2017-12-20T00:00", "2018-01-01T08:00", []),  # 元旦: December's goes on 01-02
        ("2017-12-20T00:00", "2018-01-02T08:00", [(2017, 12)]),
        ("2017-09-20T00:00", "2017-10-01T23:00", []),  # Sunday: September's goes on 10-02
        ("2017-09-20T00:00", "2017-10-02T08:00", [(2017, 9)]),
    ],
    ids=[
        "none-yet",
        "at-instant",
        "outage",
        "started-at-instant",
        "started-after",
        "new-year",
        "new-year-day-off",
        "new-year-first-working-day",
        "sunday",
        "monday",
    ],
)
def test_missed_months(start: str, now: str, months: list[tuple[int, int]]) -> None:
    """The months whose digest instant (1st working day, 08:00) falls in [first start, now]."""
    calendar = OfficeCalendar()
    assert missed_months(at(start + "+08:00"), at(now + "+08:00"), calendar, 1, 8) == months


def test_start_configures_the_jobs_and_shutdown_leaves_no_thread(tmp_path: Path) -> None:
    """start() schedules tick and digest from the settings; shutdown() joins every thread."""
    before = set(threading.enumerate())
    settings = make_settings(tmp_path, tick_minutes=30)
    service = Service(settings, FakeClock(MAY_10), MaildirMailer(tmp_path / "mail"))
    service.start()
    assert service.scheduler.running
    jobs = {job.id: job for job in service.scheduler.get_jobs()}
    assert set(jobs) == {"tick", "at-8"}
    for job in jobs.values():
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 1800)
        assert job.func == service.scheduled
    assert str(jobs["tick"].trigger) == str(tick_trigger(30))
    assert str(jobs["at-8"].trigger) == str(digest_trigger(8))
    service.close()
    assert service.scheduler is None
    assert set(threading.enumerate()) <= before


# ---------------------------------------------------------------- events from elsewhere


def test_events_written_by_another_process_are_picked_up_on_the_next_tick(
    tmp_path: Path,
) -> None:
    """Rows another Scorecard appends to the log are applied once, at the next tick."""
    settings = make_settings(tmp_path)
    with Scorecard.open(settings.database, matcher="python") as earlier:  # before the start
        earlier.ingest(orphan("2017-05-01T09:00:00+08:00"))
    clock = FakeClock(MAY_10)
    with Service(settings, clock, MaildirMailer(tmp_path / "mail")) as service:
        service.catch_up(to_us(clock.now()))
        assert service.ingest(orjson.dumps(registration("2017-05-02T09:00:00+08:00"))).ok
        with Scorecard.open(settings.database, matcher="python") as other:
            other.ingest_lines(
                jsonl(
                    [
                        applied("BS-OTHER", "2017-05-01T10:00:00+08:00"),
                        orphan("2017-05-03T09:00:00+08:00"),
                    ]
                ).splitlines()
            )
        assert service.ingest(orjson.dumps(registration("2017-05-04T09:00:00+08:00"))).ok
        now = to_us(clock.advance(timedelta(hours=23)))  # the next morning mail, 05-11 08:00
        card = service.pipeline.card
        assert "BS-OTHER" not in {c.subject for c in card.report_at(now).cases}

        result = service.tick(now)

        assert result.picked_up == 2
        with Scorecard.open(settings.database, matcher="python") as fresh:
            assert card.report_at(now).as_dict() == fresh.report_at(now).as_dict()
        assert card.report_at(now).unmatched == 2  # each row applied exactly once
        overdue = [h for h in service.pipeline.alerts.history(case="BS-OTHER")]
        events = [h[2:4] for h in overdue]
        assert events[0] == ("entered", "overdue")
        assert ("notified", "overdue") in events
        notified = next(h for h in overdue if h[2] == "notified")
        assert notified[4] in result.sent
        assert service.tick(now).picked_up == 0


# ---------------------------------------------------------------- digests and outages


def test_outage_sends_each_missed_digest_once(tmp_path: Path, smtp: SmtpServer) -> None:
    """Down from 20 May to 15 August: the May, June and July digests go out once each."""
    settings = make_settings(tmp_path, smtp)
    clock = FakeClock(MAY_10)
    with Service(settings, clock) as service:
        service.ingest_stream(may_lines(), origin="may.jsonl")
        service.catch_up(to_us(clock.now()))
        service.tick(to_us(clock.advance(timedelta(days=10))))
    before = {r.message_id for r in smtp.received}
    assert not before & digest_ids([(2017, 5)])

    clock.set(AUG_15)
    with Service(settings, clock) as service:
        result = service.catch_up(to_us(clock.now()))
    months = [(2017, 5), (2017, 6), (2017, 7)]
    sent = Counter(r.message_id for r in smtp.received)
    assert {m for m in sent if ".digest@" in m} == digest_ids(months)
    assert digest_ids(months) <= set(result.sent)
    assert max(sent.values()) == 1

    count = len(smtp.received)
    clock.advance(timedelta(hours=1))
    with Service(settings, clock) as service:
        again = service.catch_up(to_us(clock.now()))
    assert (again.queued, again.sent) == ((), ())
    assert len(smtp.received) == count


def test_the_first_start_owes_no_earlier_digest(tmp_path: Path) -> None:
    """Started on 15 August: no digest for July or before; August's goes out on 1 September."""
    settings = make_settings(tmp_path)
    clock = FakeClock(AUG_15)
    with Service(settings, clock, MaildirMailer(tmp_path / "mail")) as service:
        service.ingest_stream(may_lines(), origin="may.jsonl")
        service.catch_up(to_us(clock.now()))
        outbox = service.pipeline.outbox
        assert [i for i in outbox.items() if i.kind == "digest"] == []
        assert service.started(to_us(clock.now())) == to_us(AUG_15)

        clock.set(datetime(2017, 9, 1, 8, tzinfo=TAIPEI))
        service.scheduled()  # what the digest job runs

        digests = {i.message_id: i.status for i in outbox.items() if i.kind == "digest"}
    assert digests == dict.fromkeys(digest_ids([(2017, 8)]), "sent")
    mail = {p.name for p in (tmp_path / "mail" / "new").iterdir()}
    assert len([name for name in mail if ".digest@" in name]) == len(SECTIONS)


def test_a_later_start_keeps_the_first_start(tmp_path: Path) -> None:
    """The first start is recorded once and read back by every later start."""
    settings = make_settings(tmp_path)
    clock = FakeClock(MAY_10)
    with Service(settings, clock, MaildirMailer(tmp_path / "mail")) as service:
        service.catch_up(to_us(clock.now()))
    clock.set(AUG_15)
    with Service(settings, clock, MaildirMailer(tmp_path / "mail")) as service:
        assert service.started(to_us(clock.now())) == to_us(MAY_10)


# ---------------------------------------------------------------- standard input


def stdin_lines() -> list[bytes]:
    """Four good events around a bad one (no time; its id is a national ID number)."""
    bad = event("registration.completed", "x", "RG-BAD", {"kind": "birth"}, id="A123456789")
    del bad["time"]
    good = [registration(f"2017-05-0{d}T09:00:00+08:00") for d in range(1, 5)]
    return [*jsonl(good[:2]).splitlines(), orjson.dumps(bad), b"", *jsonl(good[2:]).splitlines()]


def count_events(db: Path) -> int:
    """Rows in the log, read through a connection of its own (another process's view)."""
    with closing(sqlite3.connect(db)) as conn:  # (a with-block alone does not close it)
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def test_stdin_keeps_a_bad_line_as_rejected_and_accepts_the_lines_after(tmp_path: Path) -> None:
    """Each line is committed before the next is read; a bad one is kept as rejected."""
    settings = make_settings(tmp_path)
    db = settings.database
    visible: list[int] = []

    def stream() -> Iterator[bytes]:
        for raw in stdin_lines():
            yield raw
            visible.append(count_events(db))

    with Service(settings, FakeClock(MAY_10), MaildirMailer(tmp_path / "mail")) as service:
        summary = service.ingest_stream(stream())
        rejections = service.pipeline.card.store.rejections()  # type: ignore[attr-defined]
    assert (summary.accepted, summary.rejected) == (4, 1)
    assert summary.rejections[0].line == 3
    assert visible == [1, 2, 2, 2, 3, 4]
    assert [(r[0], r[1], r[3]) for r in rejections] == [("stdin", 3, "time")]


def test_serve_runs_until_stopped_and_logs_in_chinese_masked(
    tmp_path: Path, smtp: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bsc-rules run``: start, stdin to its end, stop, shut down; logs never show an ID."""
    settings = make_settings(tmp_path, smtp)
    stop = threading.Event()
    stop.set()  # stop as soon as standard input has been read
    threads, handler = set(threading.enumerate()), signal.getsignal(signal.SIGTERM)

    serve(settings, clock=FakeClock(MAY_10), stdin=io.BytesIO(b"\n".join(stdin_lines())), stop=stop)

    err = capsys.readouterr().err
    assert "服務已啟動" in err
    assert "服務已停止" in err
    assert "第 3 行" in err
    assert "A12345****" in err
    assert "A123456789" not in err
    assert count_events(settings.database) == 4
    assert set(threading.enumerate()) <= threads
    assert signal.getsignal(signal.SIGTERM) == handler


def test_sigterm_stops_serve_in_the_middle_of_standard_input(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """SIGTERM while standard input is still open: serve stops, shuts down, restores."""
    settings = make_settings(tmp_path, smtp)
    stop = threading.Event()
    handler = signal.getsignal(signal.SIGTERM)

    def stdin() -> Iterator[bytes]:
        yield from stdin_lines()[:2]
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this (the main) thread
        yield from stdin_lines()[2:]  # never read: the service stopped

    serve(settings, clock=FakeClock(MAY_10), stdin=stdin(), stop=stop)

    assert stop.is_set()
    assert count_events(settings.database) == 2
    assert signal.getsignal(signal.SIGTERM) == handler


# ---------------------------------------------------------------- acknowledgement links


def test_alerts_carry_a_signed_ack_link_where_the_office_has_a_public_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `public_url` and BSC_RULES_ACK_SECRET, each alert notice carries a link signed
    for its office, key and state, valid 14 days; closings carry none; without a public
    address (or in a replay) there is no link, only the `bsc-rules ack` command."""
    from email import message_from_bytes
    from email.policy import default

    from bsc_rules.alerts.acklink import VALID_FOR, verify

    monkeypatch.setenv("BSC_RULES_ACK_SECRET", "s3cret")
    settings = make_settings(tmp_path, public_url="https://kpi.dthr.example/bsc")
    clock = FakeClock(MAY_10)
    with Service(settings, clock, MaildirMailer(tmp_path / "mail")) as service:
        service.ingest(orjson.dumps(applied("BS-LINK", "2017-05-01T10:00:00+08:00")))
        service.tick(to_us(clock.now()))  # the first start: today's morning mail is not owed
        now = to_us(clock.advance(timedelta(hours=23)))  # 05-11 08:00
        service.tick(now)
        bodies = [i.body for i in service.pipeline.outbox.items() if i.kind == "morning"]
    texts = [
        message_from_bytes(body, policy=default).get_body(("plain",)).get_content()  # type: ignore[union-attr]
        for body in bodies
    ]
    texts = [text for text in texts if "BS-LINK" in text]
    assert texts
    for text in texts:
        assert "bsc-rules ack case:BP1.1:BS-LINK --by 姓名 --note 處理情形" in text
        token = text.split("https://kpi.dthr.example/bsc/ack/", 1)[1].split()[0]
        claim = verify(token, b"s3cret", now)
        assert (claim.key, claim.state) == ("case:BP1.1:BS-LINK", "overdue")
        assert claim.office == "datong"
        assert claim.expires == now + VALID_FOR
    monkeypatch.delenv("BSC_RULES_ACK_SECRET")
    plain = make_settings(tmp_path / "plain")
    (tmp_path / "plain").mkdir()
    with Service(plain, FakeClock(MAY_10), MaildirMailer(tmp_path / "mail2")) as service:
        service.ingest(orjson.dumps(applied("BS-NOLINK", "2017-05-01T10:00:00+08:00")))
        service.tick(now)
        texts = [
            message_from_bytes(i.body, policy=default).get_body(("plain",)).get_content()
            for i in service.pipeline.outbox.items()
            if i.kind == "morning"
        ]
    texts = [text for text in texts if "BS-NOLINK" in text]
    assert texts
    assert all("bsc-rules ack case:BP1.1:BS-NOLINK" in text for text in texts)
    assert not any("/ack/" in text for text in texts)
