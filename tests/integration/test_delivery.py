"""Outbox and delivery against a real SMTP server (aiosmtpd), a real database (a SQLite
file, and a PostgreSQL database: the outbox tests run on both) and a fake clock: time
moves only when a test sets it, and nothing sleeps."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

import pytest

from bsc_rules.calendar import TAIPEI, US_PER_DAY, from_us, iso, to_us
from bsc_rules.clock import FakeClock
from bsc_rules.errors import UsageError
from bsc_rules.notify.mailer import (
    DeliveryError,
    DeliveryReport,
    MaildirMailer,
    Mailer,
    SmtpMailer,
    deliver_due,
    maildir_name,
)
from bsc_rules.notify.notices import Mail
from bsc_rules.notify.outbox import Outbox, RetryPolicy
from bsc_rules.store.sqlconn import Db
from bsc_rules.store.sqlite import SQLiteStore
from tests.smtp_server import Received, SmtpServer

T0 = datetime(2017, 3, 22, 9, 0, tzinfo=TAIPEI)
T0_US = to_us(T0)
MINUTE = 60_000_000
SENDER = "bsc-rules@datong.test"
OWNER = "registration@datong.test"
DIRECTOR = "director@datong.test"
BODY_TEXT = "說明：案件 BP1.1-0042 已逾期，請儘速辦理。內含公務資料，請勿轉寄"
NO_JITTER = RetryPolicy(jitter=0)
LONG = "a" * 300 + "@x"


def render(mail: Mail) -> bytes:
    """Stand-in for bsc_rules.render.to_bytes: multipart/alternative, deterministic."""
    msg = EmailMessage()
    msg["Message-ID"] = mail.message_id
    msg["Date"] = format_datetime(from_us(mail.date))
    msg["From"] = mail.sender
    msg["To"] = ", ".join(mail.to)
    msg["Subject"] = mail.subject
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    msg.set_boundary(hashlib.sha256(mail.message_id.encode()).hexdigest())
    return msg.as_bytes(policy=SMTP)


def mail(n: int, to: Sequence[str] = (OWNER,), date: int = T0_US) -> Mail:
    """An overdue notice with Message-ID ``<n{n}.overdue@bsc-rules.test>``."""
    return Mail(
        message_id=mid(n),
        sender=f"大同戶所KPI監控 <{SENDER}>",
        to=tuple(to),
        subject=f"【KPI警示】BP1.1 案件逾期 #{n}",
        text=BODY_TEXT,
        html=f"<p>{BODY_TEXT}</p>",
        date=date,
    )


def mid(n: int) -> str:
    return f"<n{n}.overdue@bsc-rules.test>"


def open_db(path: Path) -> sqlite3.Connection:
    """The event log's file (created by the store), opened as the store opens it."""
    SQLiteStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


Opener = Callable[[], Db]  # a new connection to the same office's database
ENGINES = ("sqlite", "postgres")


@pytest.fixture(params=ENGINES)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Connections to one office's database: a SQLite file, or an office in PostgreSQL."""
    opened: list[Db] = []

    def sqlite() -> Db:
        opened.append(Db(open_db(tmp_path / "office.db")))
        return opened[-1]

    def postgres() -> Db:
        from bsc_rules.store.postgres import connect

        opened.append(Db(connect(url), office="datong"))
        return opened[-1]

    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
    yield postgres if request.param == "postgres" else sqlite
    for db in opened:
        db.connection.close()


@dataclass
class Rig:
    """An outbox on a real database, a mailer and a fake clock."""

    outbox: Outbox
    mailer: Mailer
    clock: FakeClock
    reopen: Opener
    policy: RetryPolicy = NO_JITTER

    def enqueue(self, *mails: Mail | bytes) -> list[bool]:
        return self.enqueue_into(self.outbox, *mails)

    def enqueue_into(self, outbox: Outbox, *mails: Mail | bytes) -> list[bool]:
        """Enqueue ``mails`` as overdue notices, now, in one transaction."""
        with outbox.db.transaction():
            now = to_us(self.clock.now())
            return [outbox.enqueue(m, kind="overdue", now_us=now) for m in mails]

    def at(self, us: int) -> DeliveryReport:
        """Move the clock to ``us`` and run one delivery pass."""
        self.clock.set(from_us(us))
        return deliver_due(self.outbox, self.mailer, self.clock, self.policy)


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    """A running SMTP server on a free port."""
    with SmtpServer() as smtp:
        yield smtp


@pytest.fixture
def rig(opener: Opener, server: SmtpServer) -> Rig:
    """An outbox in the event log's database, delivering to ``server``."""
    mailer = SmtpMailer(server.host, server.port, security="none", timeout=2.0)
    return Rig(Outbox(opener(), render=render), mailer, FakeClock(T0), opener)


def ids(received: Sequence[Received]) -> Counter[str]:
    """How many times each Message-ID arrived."""
    return Counter(r.message_id for r in received)


def test_sent_once_and_parsed_back(rig: Rig, server: SmtpServer) -> None:
    """A message reaches every recipient once, with its Message-ID, and is never resent."""
    assert rig.enqueue(mail(1, to=(OWNER, f"秘書室 <{DIRECTOR}>"))) == [True]
    report = rig.at(T0_US)
    assert report.sent == [mid(1)]
    [got] = server.received
    assert got.mail_from == SENDER
    assert got.rcpt_tos == (OWNER, DIRECTOR)
    message = got.message()
    assert message["Message-ID"] == mid(1)
    assert message["Subject"] == "【KPI警示】BP1.1 案件逾期 #1"
    plain = message.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().strip() == BODY_TEXT
    item = rig.outbox.get(mid(1))
    assert item is not None
    assert (item.status, item.sent_us, item.attempts) == ("sent", T0_US, 1)
    sessions = server.sessions
    assert rig.at(T0_US + US_PER_DAY).attempted == 0
    assert (server.sessions, len(server.received)) == (sessions, 1)  # not even a connection


def test_duplicate_enqueue_is_a_noop(rig: Rig, server: SmtpServer) -> None:
    """The same Message-ID enqueued again (as Mail or bytes, before or after sending) is ignored."""
    assert rig.enqueue(mail(1)) == [True]
    assert rig.enqueue(mail(1), render(mail(1))) == [False, False]
    assert len(rig.outbox.items()) == 1
    assert rig.at(T0_US).sent == [mid(1)]
    assert rig.enqueue(mail(1)) == [False]
    assert rig.outbox.items("sent")[0].message_id == mid(1)
    assert rig.at(T0_US + MINUTE).attempted == 0
    assert ids(server.received) == {mid(1): 1}


def test_every_failed_attempt_is_logged_as_a_warning(
    rig: Rig, server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failed attempt is a warning naming the attempt, the Message-ID and the next retry
    (service.md, "Operating"), not only the final parking."""
    server.stop()
    rig.enqueue(mail(1))
    with caplog.at_level(logging.WARNING, logger="bsc_rules"):
        first = rig.at(T0_US).deferred[0]
        rig.at(first.next_attempt_us or 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "第1次嘗試" in warnings[0]
    assert "第2次嘗試" in warnings[1]
    assert all(mid(1) in w and "connection refused" in w for w in warnings)
    assert iso(first.next_attempt_us or 0) in warnings[0]


def test_server_absent_all_day_parks_at_the_end_of_the_day(rig: Rig, server: SmtpServer) -> None:
    """With the server down, attempts back off 1, 2, 4 … 60 min until the end of the day
    the message was due; then it is parked (reported the next morning); put back, it is
    sent once the server is back."""
    server.stop()
    rig.enqueue(mail(1))
    now, waits = T0_US, []
    while True:
        report = rig.at(now)
        if report.parked:
            break
        [failure] = report.deferred
        assert f"{server.host}:{server.port}" in failure.error
        assert "connection refused" in failure.error
        assert failure.next_attempt_us is not None
        assert rig.at(failure.next_attempt_us - 1).attempted == 0  # not a moment early
        waits.append((failure.next_attempt_us - now) // MINUTE)
        now = failure.next_attempt_us
    assert waits[:8] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert set(waits[6:]) == {60}
    assert from_us(now).date() == T0.date()  # the last attempt on the message's own day
    assert from_us(now + 60 * MINUTE).date() > T0.date()
    assert rig.outbox.parked()[0].message_id == mid(1)
    server.start()
    assert rig.at(now + US_PER_DAY).attempted == 0  # parked: nothing goes by itself
    assert rig.outbox.retry(now_us=now + US_PER_DAY) == [mid(1)]
    assert rig.at(now + US_PER_DAY).sent == [mid(1)]
    assert ids(server.received) == {mid(1): 1}


def test_without_the_day_limit_it_retries_until_the_server_is_back(
    rig: Rig, server: SmtpServer
) -> None:
    """`within_day=False`: the attempts go on past midnight; sent once it is back."""
    server.stop()
    rig.policy = RetryPolicy(jitter=0, within_day=False)
    rig.enqueue(mail(1))
    now = T0_US
    while now < T0_US + US_PER_DAY:
        [failure] = rig.at(now).deferred
        assert failure.next_attempt_us is not None
        now = failure.next_attempt_us
    server.start()
    assert rig.at(now).sent == [mid(1)]
    assert ids(server.received) == {mid(1): 1}


@pytest.mark.parametrize(
    ("refuse", "fail_next"),
    [
        pytest.param({}, ["451 4.3.0 try again later"], id="data-451"),
        pytest.param({DIRECTOR: "451 4.7.1 greylisted, come back later"}, [], id="rcpt-451"),
    ],
)
def test_temporary_refusal_is_retried(
    rig: Rig, server: SmtpServer, refuse: dict[str, str], fail_next: list[str]
) -> None:
    """A 4xx reply defers the message (to nobody, not half the recipients) and retries it."""
    server.behaviour.refuse.update(refuse)
    server.behaviour.fail_next.extend(fail_next)
    rig.enqueue(mail(1, to=(OWNER, DIRECTOR)))
    [failure] = rig.at(T0_US).deferred
    assert "451" in failure.error
    assert f"{server.host}:{server.port}" in failure.error
    assert failure.next_attempt_us == T0_US + MINUTE
    assert server.received == []
    server.behaviour.refuse.clear()
    assert rig.at(T0_US + MINUTE).sent == [mid(1)]
    [got] = server.received
    assert got.rcpt_tos == (OWNER, DIRECTOR)


@pytest.mark.parametrize(
    ("refuse", "fail_next", "code"),
    [
        pytest.param({DIRECTOR: "550 5.1.1 no such user"}, [], "550", id="rcpt-550"),
        pytest.param({}, ["554 5.6.0 message rejected"], "554", id="data-554"),
    ],
)
def test_permanent_refusal_parks_at_once(
    rig: Rig, server: SmtpServer, refuse: dict[str, str], fail_next: list[str], code: str
) -> None:
    """A 5xx reply parks the message at the first attempt; it is reported, never retried."""
    server.behaviour.refuse.update(refuse)
    server.behaviour.fail_next.extend(fail_next)
    rig.enqueue(mail(1, to=(OWNER, DIRECTOR)), mail(2, to=(OWNER,)))
    report = rig.at(T0_US)
    assert report.sent == [mid(2)]
    [failure] = report.parked
    assert (failure.message_id, failure.next_attempt_us) == (mid(1), None)
    assert code in failure.error
    assert f"{server.host}:{server.port}" in failure.error
    [parked] = rig.outbox.parked()
    assert parked.message_id == mid(1)
    assert parked.last_error == failure.error
    assert BODY_TEXT not in failure.error
    assert "案件逾期" not in failure.error
    assert mid(1) not in ids(server.received)
    assert rig.at(T0_US + US_PER_DAY).attempted == 0


@pytest.mark.parametrize(
    ("policy", "attempts"),
    [
        pytest.param(RetryPolicy(jitter=0, max_attempts=3), 3, id="attempts"),
        pytest.param(RetryPolicy(jitter=0, max_age_us=10 * MINUTE), 5, id="age"),
    ],
)
def test_retry_budget_spent_parks(
    rig: Rig, server: SmtpServer, policy: RetryPolicy, attempts: int
) -> None:
    """A message that keeps failing is parked after its attempts or its age run out."""
    server.stop()
    rig.policy = policy
    rig.enqueue(mail(1))
    now, tries = T0_US, 0
    while True:
        report = rig.at(now)
        tries += 1
        if report.parked:
            break
        [failure] = report.deferred
        assert failure.next_attempt_us is not None
        now = failure.next_attempt_us
    assert tries == attempts
    [parked] = rig.outbox.parked()
    assert (parked.message_id, parked.attempts) == (mid(1), attempts)
    assert rig.at(now + US_PER_DAY).attempted == 0


def test_retry_puts_parked_mail_back(rig: Rig, server: SmtpServer) -> None:
    """``retry`` re-queues one parked message or all of them, with a fresh budget."""
    server.behaviour.refuse[OWNER] = "550 5.2.1 mailbox disabled"
    rig.enqueue(mail(1), mail(2))
    assert len(rig.at(T0_US).parked) == 2
    server.behaviour.refuse.clear()
    later = T0_US + 2 * US_PER_DAY
    assert rig.outbox.retry(mid(1), now_us=later) == [mid(1)]
    assert [(i.message_id, i.attempts) for i in rig.outbox.items("pending")] == [(mid(1), 0)]
    assert rig.at(later).sent == [mid(1)]
    assert rig.outbox.retry(now_us=later) == [mid(2)]
    assert rig.at(later).sent == [mid(2)]
    assert rig.outbox.retry(now_us=later) == []
    with pytest.raises(UsageError, match="is sent, not parked"):
        rig.outbox.retry(mid(1), now_us=later)
    with pytest.raises(UsageError, match="not in the outbox"):
        rig.outbox.retry("<nobody@bsc-rules.test>", now_us=later)
    assert ids(server.received) == {mid(1): 1, mid(2): 1}


def test_retry_on_the_wall_clock_is_due_on_simulated_time(rig: Rig, server: SmtpServer) -> None:
    """Mail parked in a replay and put back by ``outbox --retry`` (wall clock, years later)
    is delivered by the next replay pass at the simulated time, not years from then."""
    server.behaviour.refuse[OWNER] = "550 5.2.1 mailbox disabled"
    rig.enqueue(mail(1))
    assert len(rig.at(T0_US).parked) == 1
    server.behaviour.refuse.clear()
    wall = T0_US + 3_000 * US_PER_DAY
    assert rig.outbox.retry(now_us=wall) == [mid(1)]
    assert rig.at(T0_US + US_PER_DAY).sent == [mid(1)]
    assert ids(server.received) == {mid(1): 1}


def test_connection_closed_mid_data_is_retried(rig: Rig, server: SmtpServer) -> None:
    """A connection dropped during DATA is a temporary failure; the retry delivers once."""
    server.behaviour.drop_next = 1
    rig.enqueue(mail(1))
    [failure] = rig.at(T0_US).deferred
    assert "closed the connection" in failure.error
    assert server.received == []
    assert failure.next_attempt_us is not None
    assert rig.at(failure.next_attempt_us).sent == [mid(1)]
    assert ids(server.received) == {mid(1): 1}


def test_no_duplicates_under_mixed_failures(rig: Rig, server: SmtpServer) -> None:
    """Refusals, drops and an outage over three hours: every message arrives exactly once."""
    rig.policy = RetryPolicy()  # with jitter
    server.behaviour.fail_next.extend(["451 4.3.0 busy", "421 4.4.2 timeout"])
    server.behaviour.drop_next = 2
    server.behaviour.refuse[DIRECTOR] = "452 4.2.2 mailbox full"
    rig.enqueue(*(mail(n, to=(OWNER, DIRECTOR) if n % 2 else (OWNER,)) for n in range(8)))
    for step in range(0, 3 * 60 * 2):  # a pass every 30 s
        now = T0_US + step * MINUTE // 2
        if step == 20:
            server.stop()
        elif step == 100:
            server.start()
        elif step == 150:
            server.behaviour.refuse.clear()
        rig.at(now)
    assert ids(server.received) == {mid(n): 1 for n in range(8)}
    assert {i.status for i in rig.outbox.items()} == {"sent"}


class Crash(BaseException):
    """The process dies."""


@dataclass
class CrashAfterSend:
    """Sends, then dies before the outbox can record it."""

    inner: Mailer

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        self.inner.send(sender, recipients, message)
        raise Crash


def test_crash_after_send_resends_with_the_same_message_id(rig: Rig, server: SmtpServer) -> None:
    """A crash between sending and marking sent resends once, with the same Message-ID."""
    rig.enqueue(mail(1))
    with pytest.raises(Crash):
        deliver_due(rig.outbox, CrashAfterSend(rig.mailer), rig.clock)
    restarted = Outbox(rig.reopen(), render=render)
    assert deliver_due(restarted, rig.mailer, rig.clock).sent == [mid(1)]
    assert ids(server.received) == {mid(1): 2}
    assert deliver_due(restarted, rig.mailer, rig.clock).attempted == 0


def record_overdue(outbox: Outbox, *, crash: bool) -> None:
    """What the alert pipeline does: a transition row and its notice, in one transaction."""
    with outbox.db.transaction() as db:
        db.execute("INSERT INTO alert_transitions VALUES ('BP1.1/42', 'overdue')")
        outbox.enqueue(mail(1), kind="overdue", alert_key="BP1.1/42", now_us=T0_US)
        if crash:
            msg = "crash before commit"
            raise RuntimeError(msg)


def test_rolled_back_transaction_leaves_no_outbox_row(rig: Rig) -> None:
    """The outbox row commits or rolls back with the alert transition written beside it."""
    db = rig.outbox.db
    db.execute("CREATE TABLE alert_transitions (alert_key TEXT, state TEXT)")
    with pytest.raises(RuntimeError, match="before commit"):
        record_overdue(rig.outbox, crash=True)
    assert rig.outbox.items() == []
    assert db.execute("SELECT count(*) FROM alert_transitions").fetchone() == (0,)
    record_overdue(rig.outbox, crash=False)
    other = rig.reopen()  # another connection sees what was committed
    assert other.execute("SELECT alert_key, status FROM outbox WHERE {office}").fetchall() == [
        ("BP1.1/42", "pending")
    ]
    assert other.execute("SELECT count(*) FROM alert_transitions").fetchone() == (1,)


def test_messages_without_a_usable_message_id_are_refused(rig: Rig) -> None:
    """The outbox keys on the Message-ID: none, or one the renderer changed, is an error."""
    headless = render(mail(1)).replace(f"Message-ID: {mid(1)}\r\n".encode(), b"")
    with pytest.raises(UsageError, match="no Message-ID"), rig.outbox.db.transaction():
        rig.outbox.enqueue(headless, kind="overdue", now_us=T0_US)
    renamed = Outbox(rig.outbox.db, render=lambda m: render(mail(2)))
    with pytest.raises(UsageError, match="rendered message has Message-ID"):
        rig.enqueue_into(renamed, mail(1))
    assert rig.outbox.items() == []


def test_enqueue_outside_a_transaction_is_refused(rig: Rig) -> None:
    """``enqueue`` never commits on its own, so it refuses to run without a transaction."""
    with pytest.raises(UsageError, match="transaction"):
        rig.outbox.enqueue(mail(1), kind="overdue", now_us=T0_US)


def maildir_run(tmp_path: Path, name: str) -> dict[str, bytes]:
    """Enqueue and deliver three messages into a fresh Maildir; return its new/ files."""
    conn = open_db(tmp_path / f"{name}.db")
    target = tmp_path / name
    rig = Rig(Outbox(conn, render=render), MaildirMailer(target), FakeClock(T0), lambda: Db(conn))
    rig.enqueue(*(mail(n, date=T0_US + n * MINUTE) for n in range(3)))
    assert len(rig.at(T0_US).sent) == 3
    conn.close()
    assert list((target / "tmp").iterdir()) == []
    return {p.name: p.read_bytes() for p in sorted((target / "new").iterdir())}


def test_maildir_output_is_deterministic(tmp_path: Path) -> None:
    """Two runs write identical files, named after the Message-IDs."""
    first = maildir_run(tmp_path, "one")
    assert first == maildir_run(tmp_path, "two")
    assert sorted(first) == sorted(maildir_name(mid(n)) for n in range(3))
    assert mid(0).encode() in first[maildir_name(mid(0))]
    assert not any(b"\r\n" in body for body in first.values())  # Maildir files end lines in LF


def test_maildir_into_an_existing_empty_folder(tmp_path: Path) -> None:
    """An existing empty folder (e.g. made by the operator) becomes a Maildir and takes mail."""
    folder = tmp_path / "mail"
    folder.mkdir()
    mailer = MaildirMailer(folder)
    mailer.send(SENDER, [OWNER], render(mail(1)))
    assert [p.name for p in (folder / "new").iterdir()] == [maildir_name(mid(1))]


def test_maildir_resend_rewrites_the_same_file(tmp_path: Path) -> None:
    """Sending a message again leaves one file with the same bytes."""
    mailer = MaildirMailer(tmp_path / "mail")
    for _ in range(2):
        mailer.send(SENDER, [OWNER], render(mail(1)))
    [only] = (tmp_path / "mail" / "new").iterdir()
    assert only.name == "n1.overdue@bsc-rules.test.eml"
    assert only.read_bytes() == render(mail(1)).replace(b"\r\n", b"\n")


@pytest.mark.parametrize(
    ("message_id", "name"),
    [
        pytest.param("<a/b:c@x>", "a%2Fb%3Ac@x.eml", id="separators"),
        pytest.param("<.hidden@x>", "%2Ehidden@x.eml", id="dot"),
        pytest.param("<案@x>", "%E6%A1%88@x.eml", id="non-ascii"),
        pytest.param(
            f"<{LONG}>",
            f"{LONG[:160]}-{hashlib.sha256(LONG.encode()).hexdigest()[:32]}.eml",
            id="long",
        ),
    ],
)
def test_maildir_names_are_safe(message_id: str, name: str) -> None:
    """Maildir names keep no path separator, info separator or leading dot."""
    assert maildir_name(message_id) == name


def test_backoff_jitter_is_deterministic_and_bounded() -> None:
    """Jitter takes at most 10% off each wait, the same for the same message and attempt."""
    policy = RetryPolicy()
    schedule = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    for n in range(20):
        delays = [policy.delay_us(mid(n), a) for a in range(1, 10)]
        assert delays == [policy.delay_us(mid(n), a) for a in range(1, 10)]
        for delay, minutes in zip(delays, schedule, strict=True):
            assert 0.9 * minutes * MINUTE <= delay <= minutes * MINUTE
    assert len({policy.delay_us(mid(n), 1) for n in range(20)}) > 1


def test_starttls_unsupported_is_a_temporary_error(server: SmtpServer) -> None:
    """A server without STARTTLS fails the send temporarily, naming the server."""
    mailer = SmtpMailer(server.host, server.port, security="starttls", timeout=2.0)
    with pytest.raises(DeliveryError, match=f"{server.host}:{server.port}") as caught:
        mailer.send(SENDER, [OWNER], render(mail(1)))
    assert not caught.value.permanent
    assert server.received == []


def test_slow_server_past_the_timeout_is_a_temporary_error() -> None:
    """A server that accepts the connection but never greets times out: temporary, retried."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # connections are accepted by the kernel, nothing is ever said
        port = silent.getsockname()[1]
        mailer = SmtpMailer("127.0.0.1", port, security="none", timeout=0.3)
        with pytest.raises(DeliveryError) as info:
            mailer.send("a@x", ["b@x"], b"Subject: t\r\n\r\nbody\r\n")
    assert not info.value.permanent
    assert f"127.0.0.1:{port}" in str(info.value)
