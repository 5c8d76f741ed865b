"""A slow SMTP server holds up only the mail, never the HTTP door.

Real components: the service over a SQLite file, its mailer talking to aiosmtpd, and the
door on a real uvicorn server sharing the service's lock (as ``bsc-rules serve`` wires
them). The SMTP server keeps the tick's message waiting in DATA until the test sets an
event; meanwhile events are POSTed and must be answered 201 at once. Nothing sleeps:
the test waits on the server's own signal that a message is held.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import orjson

from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.clock import FakeClock
from bsc_rules.http.app import create_app
from bsc_rules.http.auth import TokenBook
from bsc_rules.http.door import Door
from bsc_rules.notify.mailer import SmtpMailer
from bsc_rules.scheduling.service import Service, TickResult
from tests.integration.test_http_door import start_server
from tests.integration.test_service import applied, count_events, make_settings, registration
from tests.smtp_server import HOLD_LIMIT_S, SmtpServer

TOKEN = "tok-datong"
MAY_10 = datetime(2017, 5, 10, 9, 0, tzinfo=TAIPEI)
#: A POST is "prompt" well within this; with delivery under the lock it would wait for the
#: held mail (up to HOLD_LIMIT_S) and time out instead.
PROMPT_S = 15.0


def test_events_are_answered_while_the_smtp_server_holds_the_ticks_mail(
    tmp_path: Path,
) -> None:
    hold = threading.Event()
    with SmtpServer() as smtp:
        settings = make_settings(tmp_path, smtp)
        mailer = SmtpMailer(smtp.host, smtp.port, "none", timeout=HOLD_LIMIT_S + 30)
        clock = FakeClock(MAY_10)
        with Service(settings, clock, mailer) as service:
            # a BP1.1 case due on 9 May and never paid: the morning mail of 11 May lists it
            late = orjson.dumps(applied("BS-SLOW-SMTP", "2017-05-01T10:00:00+08:00"))
            assert service.ingest(late).ok
            now = to_us(clock.advance(timedelta(hours=23)))  # 05-11 08:00
            smtp.behaviour.hold = hold
            ticked: list[TickResult] = []
            tick = threading.Thread(target=lambda: ticked.append(service.tick(now)))
            door = Door(service.pipeline.card, service.lock, 16)
            app = create_app(door, TokenBook({"datong": (TOKEN,)}, None), clock)
            server, thread, url = start_server(app)
            try:
                tick.start()
                assert smtp.behaviour.holding.wait(HOLD_LIMIT_S), "the tick sent no mail"
                answers = _post_events(url, 5)
                assert tick.is_alive()  # the mail is still held by the server
                assert smtp.received == []
            finally:
                hold.set()
                tick.join(HOLD_LIMIT_S)
                server.should_exit = True
                thread.join(30)
                door.close()
            assert not tick.is_alive()
            assert answers == [201] * 5
            [result] = ticked
            assert result.queued
            assert sorted(result.sent) == sorted(result.queued)  # every mail delivered, once
            again = service.tick(to_us(clock.advance(timedelta(minutes=15))))
            outbox = service.pipeline.outbox.items()
            stored = count_events(settings.database)
    sent = Counter(r.message_id for r in smtp.received)
    assert set(sent) == {*result.queued, *again.queued}  # (the later tick's new mail too)
    assert set(sent.values()) == {1}  # each Message-ID once
    assert not set(again.sent) & set(result.queued)
    assert {(i.status, i.attempts) for i in outbox} == {("sent", 1)}
    assert stored == 6  # the late application and the five POSTed events


def _post_events(url: str, n: int) -> list[int]:
    """POST ``n`` registrations one by one; their status codes (a timeout fails the test)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/cloudevents+json"}
    codes = []
    with httpx.Client(base_url=url, headers=headers, timeout=PROMPT_S) as client:
        for day in range(2, 2 + n):
            body = orjson.dumps(registration(f"2017-05-0{day}T09:00:00+08:00"))
            codes.append(client.post("/events", content=body).status_code)
    return codes
