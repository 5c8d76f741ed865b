"""The office file's values drive the mail (service.md "Where values live"): recipients
with names and a secretary, the escalation delay, the digest's working day and hour; all
through the replay into a real SMTP server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from bsc_rules.alerts.pipeline import open_pipeline
from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.notify.mailer import SmtpMailer
from bsc_rules.rules.ruleset import default_rules_dir
from bsc_rules.scheduling.replay import replay
from bsc_rules.scheduling.schedule import Schedule, run_tick
from bsc_rules.settings import load_settings
from tests.conftest import event, jsonl
from tests.smtp_server import Received, SmtpServer

SECRETARY = "secretary@datong.example.org"
DIRECTOR = "director@datong.example.org"
REGISTRATION = "registration@datong.example.org"
DEPUTY = "deputy.registration@datong.example.org"


@pytest.fixture(autouse=True)
def _hermetic() -> Iterator[None]:
    """No BSC_RULES_* environment leaks into these replays."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("BSC_RULES_")]:
            mp.delenv(name)
        yield


def office_rules(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """The shipped rules with lines of the office file replaced (``(old, new)`` each)."""
    folder = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), folder)
    office = folder / "office.yaml"
    text = office.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    office.write_text(text, encoding="utf-8")
    return folder


def run(tmp_path: Path, rules: Path, events: list[dict[str, Any]], until: str) -> list[Received]:
    settings_file = tmp_path / "bsc-rules.toml"
    settings_file.write_text("", encoding="utf-8")
    db = tmp_path / "replay.db"
    settings = load_settings(settings_file, database=db, matcher="python", rules=rules)
    pipeline = open_pipeline(settings, db)
    try:
        with SmtpServer() as server:
            mailer = SmtpMailer(server.host, server.port, security="none")
            until_us = to_us(datetime.fromisoformat(until))
            summary = replay(jsonl(events).splitlines(), until_us, pipeline, mailer)
            received = list(server.received)
    finally:
        pipeline.card.close()
    assert summary.undeliverable == []
    return received


def sent_at(r: Received) -> datetime:
    return parsedate_to_datetime(str(r.message()["Date"])).astimezone(TAIPEI)


def to_header(r: Received) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in r.message()["To"].addresses]


SECRETARY_LINE = (
    '  # secretary: ["秘書 <secretary@datong.example.org>"]',
    '  secretary: ["秘書 <secretary@datong.example.org>"]',
)


def test_recipients_secretary_and_escalation_come_from_the_office_file(tmp_path: Path) -> None:
    """A never-paid BP1.1 case: the office file's two registration mailboxes get every
    overdue mail; from one day overdue (escalation_days: 1) the director and the secretary
    too, with the names the office file gives them."""
    rules = office_rules(
        tmp_path,
        SECRETARY_LINE,
        (
            '["戶籍登記課 <registration@datong.example.org>"]',
            f'["戶籍登記課 <registration@datong.example.org>", "{DEPUTY}"]',
        ),
        ("  escalation_days: 3 ", "  escalation_days: 1 "),
    )
    events = [event("birth_subsidy.applied", "2017-03-15T10:23:00+08:00", "BS1", {"amount": 1})]
    mail = run(tmp_path, rules, events, "2017-03-24T12:00:00+08:00")
    mornings = [
        r for r in mail
        if r.message()["X-BSC-Kind"] == "morning"
        and "BS1（" in r.message().get_body(("plain",)).get_content()  # type: ignore[union-attr]
    ]  # fmt: skip
    assert [sent_at(r).strftime("%m-%d %H:%M") for r in mornings] == [
        "03-20 08:00", "03-21 08:00", "03-22 08:00", "03-23 08:00", "03-24 08:00",
    ]  # fmt: skip
    assert all(set(r.rcpt_tos) == {REGISTRATION, DEPUTY} for r in mornings)
    lists = [r for r in mail if r.message()["X-BSC-Kind"] == "director"]
    assert [sent_at(r).strftime("%m-%d") for r in lists] == ["03-23", "03-24"]  # from day 1
    for r in lists:
        assert set(r.rcpt_tos) == {REGISTRATION, DEPUTY, DIRECTOR, SECRETARY}
        assert to_header(r) == [("主任", DIRECTOR), ("秘書", SECRETARY)]
        cc = [(a.display_name, a.addr_spec) for a in r.message()["Cc"].addresses]
        assert cc == [("戶籍登記課", REGISTRATION), ("", DEPUTY)]
        assert "逾期滿1個工作日" in r.message().get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_the_digest_goes_on_the_office_files_working_day_and_hour(tmp_path: Path) -> None:
    """digest: {working_day: 2, hour: 9}: May's digests on Friday 2017-06-02 at 09:00, the
    director's to the secretary too; none on 06-01 (the first working day)."""
    rules = office_rules(
        tmp_path,
        SECRETARY_LINE,
        ("  working_day: 1 ", "  working_day: 2 "),
        ("  hour: 8                  # at 08:00", "  hour: 9                  # at 09:00"),
    )
    events = [
        event("seal_certificate.issued", "2017-05-22T09:30:00+08:00", "SC1060522001"),
    ]
    mail = run(tmp_path, rules, events, "2017-06-05T23:00:00+08:00")
    digests = [r for r in mail if r.message()["X-BSC-Kind"] == "digest"]
    assert {sent_at(r).isoformat() for r in digests} == {"2017-06-02T09:00:00+08:00"}
    assert sorted(tuple(sorted(r.rcpt_tos)) for r in digests) == sorted(
        [
            (DIRECTOR, SECRETARY),
            (REGISTRATION,),
            ("records@datong.example.org",),
            ("general_affairs@datong.example.org",),
        ]
    )


def test_januarys_digest_waits_for_the_first_working_day_of_february(tmp_path: Path) -> None:
    """2017-02-01 is a day off (春節): January's digests go on Thursday 02-02 at 08:00, once,
    also across a restart; a tick at 08:00 on the day off or at 07:59 sends none."""
    db = tmp_path / "service.db"
    settings = load_settings(None, database=db, matcher="python")
    start = to_us(datetime(2017, 1, 20, 10, tzinfo=TAIPEI))

    def tick(server: SmtpServer, when: datetime) -> list[Received]:
        pipeline = open_pipeline(settings, db)  # a fresh process each time: the runs table
        try:
            before = len(server.received)
            mailer = SmtpMailer(server.host, server.port, security="none")
            schedule = Schedule.of(pipeline, settings.tick_minutes)
            run_tick(pipeline, schedule, mailer, to_us(when), start)
            return [r for r in server.received[before:] if r.message()["X-BSC-Kind"] == "digest"]
        finally:
            pipeline.card.close()

    with SmtpServer() as server:
        sent = [
            len(tick(server, datetime(2017, 2, d, h, m, tzinfo=TAIPEI)))
            for d, h, m in ((1, 8, 0), (2, 7, 59), (2, 8, 0), (2, 9, 0), (3, 8, 0))
        ]
        subjects = {
            str(r.message()["Subject"])
            for r in server.received
            if r.message()["X-BSC-Kind"] == "digest"
        }
    assert sent == [0, 0, 4, 0, 0]
    assert all("106年1月" in s for s in subjects), subjects
