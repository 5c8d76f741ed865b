"""The morning mail and the director's list (spec/notifications.md, "When mail goes out"),
through a real SMTP server: missed mail, Message-IDs, acknowledgements, the year's end."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from bsc_rules.alerts.pipeline import Pipeline, open_pipeline
from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.notify.mailer import SmtpMailer
from bsc_rules.scheduling.schedule import Schedule, run_tick
from bsc_rules.settings import Settings, load_settings
from tests.conftest import event
from tests.smtp_server import SmtpServer

REGISTRATION = "registration@datong.example.org"
DIRECTOR = "director@datong.example.org"
CASE = "BS1060315001"
KEY = f"case:BP1.1:{CASE}"


def at(text: str) -> int:
    return to_us(datetime.fromisoformat(text).replace(tzinfo=TAIPEI))


@dataclass
class Office:
    """A pipeline over a SQLite file, ticked by hand into a real SMTP server."""

    settings: Settings
    db: Path
    server: SmtpServer
    start: int
    pipeline: Pipeline | None = None

    def open(self) -> Pipeline:
        if self.pipeline is None:
            self.pipeline = open_pipeline(self.settings, self.db)
        return self.pipeline

    def restart(self) -> None:
        """A new process: nothing kept in memory."""
        if self.pipeline is not None:
            self.pipeline.card.close()
        self.pipeline = None

    def ingest(self, *events: bytes) -> None:
        for e in events:
            assert self.open().card.ingest(e).ok

    def tick(self, when: str) -> list[EmailMessage]:
        pipeline = self.open()
        before = len(self.server.received)
        mailer = SmtpMailer(self.server.host, self.server.port, security="none")
        schedule = Schedule.of(pipeline, self.settings.tick_minutes)
        _, _, parked = run_tick(pipeline, schedule, mailer, at(when), self.start)
        assert parked == []
        return [r.message() for r in self.server.received[before:]]


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    settings_file = tmp_path / "bsc-rules.toml"
    settings_file.write_text("", encoding="utf-8")
    db = tmp_path / "office.db"
    settings = load_settings(settings_file, database=db, matcher="python")
    with SmtpServer() as server:
        o = Office(settings, db, server, at("2017-03-01T09:00"))
        yield o
        o.restart()


def applied(case: str = CASE, when: str = "2017-03-15T10:23:00+08:00") -> bytes:
    return event("birth_subsidy.applied", when, case, {"amount": 20000})


def plain(m: EmailMessage) -> str:
    body = m.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def kinds(mail: list[EmailMessage]) -> list[tuple[str, str]]:
    return sorted((str(m["X-BSC-Kind"]), str(m["To"])) for m in mail)


def test_a_missed_morning_mail_goes_out_once_on_return_the_same_day(office: Office) -> None:
    """Down at 08:00 on Thu 03-23, back at 10:15: the morning mail goes out then, once, with
    the Message-ID it would have had (office, kind, recipient, date); ticks and a restart
    later that day send nothing more; down all of Fri 03-24, back Mon 03-27 at 09:00: Friday's
    mail is never sent, Monday's is."""
    office.ingest(applied())
    assert office.tick("2017-03-22T08:00")  # due soon, listed
    back = office.tick("2017-03-23T10:15")
    [morning] = [m for m in back if m["X-BSC-Kind"] == "morning"]
    assert str(morning["Date"]) == "Thu, 23 Mar 2017 10:15:00 +0800"  # the content as of sending
    assert "已逾期1日" in plain(morning)
    assert office.tick("2017-03-23T11:00") == []
    office.restart()
    assert office.tick("2017-03-23T16:00") == []
    monday = office.tick("2017-03-27T09:00")
    days = {re.search(r"（(106年\d+月\d+日)", str(m["Subject"]))[1] for m in monday}  # type: ignore[index]
    assert days == {"106年3月27日"}  # never Friday's
    ids = [r.message_id for r in office.server.received]
    assert len(ids) == len(set(ids))


def test_message_ids_derive_from_office_kind_recipient_and_date(
    office: Office, tmp_path: Path
) -> None:
    """Two databases deciding the same day's morning mail give it the same Message-ID;
    another day or another recipient gives another."""
    office.ingest(applied())
    first = office.tick("2017-03-23T08:00")
    settings = load_settings(tmp_path / "bsc-rules.toml", database=tmp_path / "b.db",
                             matcher="python")  # fmt: skip
    other = Office(settings, tmp_path / "b.db", office.server, office.start)
    other.ingest(applied())
    second = other.tick("2017-03-23T08:00")
    other.restart()
    ids = {(str(m["X-BSC-Kind"]), str(m["To"])): str(m["Message-ID"]) for m in first}
    assert ids == {(str(m["X-BSC-Kind"]), str(m["To"])): str(m["Message-ID"]) for m in second}
    assert len(set(ids.values())) == len(ids)
    next_day = {str(m["Message-ID"]) for m in office.tick("2017-03-24T08:00")}
    assert not next_day & set(ids.values())


def test_an_acknowledged_case_stays_in_its_section_mail_leaves_the_list_and_its_note_closes_it(
    office: Office,
) -> None:
    """Listed on the director's list from Mon 03-27; acknowledged that day by 林科員: on Tue
    it is marked 已確認 with the note in the section's mail and off the director's list; its
    closing on Wed quotes the note."""
    office.ingest(applied())
    monday = office.tick("2017-03-27T08:00")
    assert "director" in {str(m["X-BSC-Kind"]) for m in monday}
    pipeline = office.open()
    done = pipeline.alerts.acknowledge(KEY, "帳戶待補正，預定3月29日撥款", at("2017-03-27T10:00"),
                                       by="林科員")  # fmt: skip
    assert not done.already
    tuesday = office.tick("2017-03-28T08:00")
    assert [k for k, _ in kinds(tuesday)].count("director") == 0 or all(
        CASE not in plain(m) for m in tuesday if m["X-BSC-Kind"] == "director"
    )
    [morning] = [m for m in tuesday if m["X-BSC-Kind"] == "morning" and CASE in plain(m)]
    text = plain(morning)
    assert "已確認（林科員，106/03/27）：帳戶待補正，預定3月29日撥款" in text
    assert f"確認方式：bsc-rules ack {KEY}" not in text  # nothing left to acknowledge
    office.ingest(event("birth_subsidy.paid", "2017-03-28T15:30:00+08:00", CASE))
    wednesday = office.tick("2017-03-29T08:00")
    [closing] = [m for m in wednesday if m["X-BSC-Kind"] == "morning" and CASE in plain(m)]
    assert "已於106年3月28日15時30分辦結（逾期辦結6日）" in plain(closing)
    assert "帳戶待補正，預定3月29日撥款" in plain(closing)
    [listed] = [m for m in wednesday if m["X-BSC-Kind"] == "director"]
    assert str(listed["Subject"]).startswith("【已解除】逾期案件陳核")  # it had been on a list


def test_the_years_kpi_alerts_end_with_the_year_and_december_still_lists_them(
    office: Office,
) -> None:
    """AP2.1 breached in December 106, never acknowledged: the December digest (first
    working day of 107, 08:00) lists it unacknowledged; the morning mail and the director's
    list of that day say 「106年度結束，本項警示結案」; nothing about it afterwards."""
    office.start = at("2017-12-01T09:00")
    office.ingest(
        event("registration.completed", "2017-12-11T10:00:00+08:00", "RG1061211001",
              {"kind": "birth"}),
        event("cross_notice.recorded", "2017-12-11T10:05:00+08:00", "RG1061211001",
              {"channel": "declined"}),
        event("registration.error_found", "2017-12-12T14:20:00+08:00", "RG1061211001",
              {"cause": "staff"}),
    )  # fmt: skip
    december = office.tick("2017-12-13T08:00")
    assert any("kpi:2017:AP2.1" in plain(m) for m in december)
    january = office.tick("2018-01-02T08:00")  # 01-01 is 元旦
    digest = next(
        m for m in january if m["X-BSC-Kind"] == "digest" and str(m["To"]).endswith(f"<{DIRECTOR}>")
    )
    assert "106年12月" in str(digest["Subject"])
    assert re.search(r"KPI未達成：戶籍登記課1件（未確認1）", plain(digest)), plain(digest)
    ended = [m for m in january if m["X-BSC-Kind"] in ("morning", "director")]
    about = [m for m in ended if "AP2.1" in plain(m)]
    assert {str(m["X-BSC-Kind"]) for m in about} == {"morning", "director"}
    for m in about:
        assert "106年度結束，本項警示結案" in plain(m)
        assert "kpi:2017:AP2.1" not in plain(m)  # nothing to acknowledge any more
    later = office.tick("2018-01-03T08:00")
    assert all("AP2.1" not in plain(m) for m in later)


def test_the_first_start_owes_no_morning_mail_of_its_own_day(office: Office) -> None:
    """A service first started at 09:00 does not send that day's 08:00 mail (it was not
    down, it was not there); the next working day's goes out at 08:00."""
    office.ingest(applied())
    office.start = at("2017-03-23T09:00")
    assert office.tick("2017-03-23T09:00") == []
    assert office.tick("2017-03-23T15:00") == []
    friday = office.tick("2017-03-24T08:00")
    assert {str(m["X-BSC-Kind"]) for m in friday} >= {"morning"}


def test_mail_parked_on_its_day_is_reported_in_the_next_morning_mail(office: Office) -> None:
    """The section's mailbox refuses the 03-22 morning mail (a permanent error: parked at
    once); the 03-23 morning mail says so, with the subject and the server's reason."""
    office.ingest(applied())
    office.server.behaviour.refuse[REGISTRATION] = "550 5.2.1 mailbox disabled"
    pipeline = office.open()
    mailer = SmtpMailer(office.server.host, office.server.port, security="none")
    schedule = Schedule.of(pipeline, office.settings.tick_minutes)
    _, _, parked = run_tick(pipeline, schedule, mailer, at("2017-03-22T08:00"), office.start)
    assert len(parked) == 1
    office.server.behaviour.refuse.clear()
    [morning] = [m for m in office.tick("2017-03-23T08:00") if m["X-BSC-Kind"] == "morning"]
    text = plain(morning)
    assert "前次提醒後無法投遞之通知（1則" in text
    assert "106/03/22 08:00　【KPI預警】戶籍登記課每日提醒（106年3月22日）" in text
    assert re.search(r"原因：SMTP \S+ sending: 550 recipient \S+: 5.2.1 mailbox disabled", text)
    assert "無法投遞1則" in str(morning["Subject"])
    later = office.tick("2017-03-24T08:00")
    assert all("無法投遞" not in plain(m) for m in later)  # reported once
