"""Replay on event time, read back from a real SMTP server (aiosmtpd) and a Maildir:
what the office would have received, checked against spec/notifications.md."""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from bsc_rules.alerts.pipeline import Pipeline, open_pipeline
from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.cli import main
from bsc_rules.dev.simulate import simulate, write_jsonl
from bsc_rules.notify.mailer import SmtpMailer
from bsc_rules.officecal import OfficeCalendar
from bsc_rules.privacy import find_ids
from bsc_rules.scheduling.replay import replay
from bsc_rules.scheduling.schedule import Schedule, run_tick
from bsc_rules.settings import load_settings
from tests.conftest import event, jsonl
from tests.smtp_server import Received, SmtpServer

UNTIL = "2018-01-31T23:59:59+08:00"
SEED = 11
SECTIONS = ("registration", "records", "general_affairs", "director")
ADDRESS = {s: f"{s}@datong.example.org" for s in SECTIONS}
DIRECTOR = ADDRESS["director"]
OWNER = {
    **dict.fromkeys(("BP1.1", "CC1.1", "AP2.1", "CP1.1", "BC1.1"), "registration"),
    **dict.fromkeys(("AC1.1", "AC1.2", "AP1.1"), "records"),
    **dict.fromkeys(("TL1.1", "TF1.1"), "general_affairs"),
}
PREFIXES = ("【KPI警示】", "【KPI預警】", "【已解除】")
FOOTER = "內含公務資料，請勿轉寄"
ROC_DATE = re.compile(r"1\d\d年\d{1,2}月\d{1,2}日")
TRANSPORT = {"received", "x-peer", "x-mailfrom", "x-rcptto", "return-path", "delivered-to"}
NATIONAL_ID, RESIDENT_ID = "A123456789", "AA00000009"
DAY = timedelta(days=1)
# The first working day of each month a 2017 digest goes out in (the office calendar):
# 02-02 after 春節 (to Feb 1), 04-05 after 兒童節/清明節, 10-02 after Sunday Oct 1, 01-02
# after 元旦; 05-01 (Labour Day) is a working day for a government office.
FIRST_WORKING_DAY = {
    (2017, 2): 2, (2017, 3): 1, (2017, 4): 5, (2017, 5): 1, (2017, 6): 1, (2017, 7): 3,
    (2017, 8): 1, (2017, 9): 1, (2017, 10): 2, (2017, 11): 1, (2017, 12): 1, (2018, 1): 2,
}  # fmt: skip


def at(text: str) -> datetime:
    """A local instant, Asia/Taipei, from ``YYYY-MM-DD HH:MM``."""
    return datetime.fromisoformat(text).replace(tzinfo=TAIPEI)


def at_iso(text: str) -> datetime:
    """An RFC 3339 instant with its own offset."""
    return datetime.fromisoformat(text)


# ------------------------------------------------------------------ reading mail back


@dataclass(frozen=True)
class Delivered:
    """One message as the SMTP server took it, parsed with ``policy.default``."""

    rcpt: tuple[str, ...]
    raw: bytes
    msg: EmailMessage

    @classmethod
    def of(cls, received: Received) -> Delivered:
        return cls(received.rcpt_tos, received.content, received.message())

    @property
    def kind(self) -> str:
        return str(self.msg["X-BSC-Kind"])

    @property
    def keys(self) -> list[str]:
        """The alert keys of the rows that can be acknowledged, as the text part lists them."""
        return re.findall(r"警示代碼：(\S+)", self.part("plain"))

    @property
    def cc(self) -> set[str]:
        return {a.addr_spec for a in self.msg["Cc"].addresses} if self.msg["Cc"] else set()

    @property
    def subject(self) -> str:
        return str(self.msg["Subject"])

    @property
    def date(self) -> datetime:
        return parsedate_to_datetime(str(self.msg["Date"]))

    @property
    def to(self) -> set[str]:
        return {a.addr_spec for a in self.msg["To"].addresses}

    @property
    def message_id(self) -> str:
        return str(self.msg["Message-ID"])

    def part(self, subtype: str) -> str:
        body = self.msg.get_body(preferencelist=(subtype,))
        assert body is not None, f"{self.message_id}: no text/{subtype} part"
        return str(body.get_content())


def delivered(server: SmtpServer) -> list[Delivered]:
    return [Delivered.of(r) for r in server.received]


def without_transport(content: bytes) -> bytes:
    """The message with LF line ends and without headers a receiving server adds."""
    data = content.replace(b"\r\n", b"\n")
    head, sep, body = data.partition(b"\n\n")
    fields: list[list[bytes]] = []  # each header field with its folded continuation lines
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = [
        b"\n".join(lines)
        for lines in fields
        if lines[0].split(b":", 1)[0].strip().lower().decode("ascii", "replace") not in TRANSPORT
    ]
    return b"\n".join(kept) + sep + body


def everything_readable(m: Delivered) -> list[str]:
    """Every place a person or a program could read text in a message."""
    texts = [m.raw.decode("utf-8", "replace"), m.subject]
    texts += [f"{name}: {value}" for name, value in m.msg.items()]
    for part in m.msg.walk():
        if part.get_content_maintype() == "text":
            texts.append(str(part.get_content()))
    return texts


# ------------------------------------------------------------------ running the pipeline


@pytest.fixture(scope="module", autouse=True)
def _hermetic() -> Iterator[None]:
    """No office's own BSC_RULES_* environment leaks into these replays."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("BSC_RULES_")]:
            mp.delenv(name)
        yield


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty settings file: the shipped defaults, whatever ./bsc-rules.toml says."""
    path = tmp_path_factory.mktemp("settings") / "bsc-rules.toml"
    path.write_text("", encoding="utf-8")
    return path


def replay_events(
    tmp_path: Path, settings_file: Path, events: list[dict[str, Any]], until: str, **overrides: Any
) -> list[Delivered]:
    """Replay hand-made events through the library into a real SMTP server."""
    settings = load_settings(
        settings_file, database=tmp_path / "replay.db", matcher="python", **overrides
    )
    pipeline = open_pipeline(settings, tmp_path / "replay.db")
    try:
        with SmtpServer() as server:
            mailer = SmtpMailer(server.host, server.port, security="none")
            summary = replay(jsonl(events).splitlines(), to_us(at_iso(until)), pipeline, mailer)
            mail = delivered(server)
    finally:
        pipeline.card.close()
    assert summary.undeliverable == []
    assert len(summary.sent) == len(mail)
    return mail


def cli_replay(events: Path, target: list[str], settings_file: Path) -> str:
    """``bsc-rules replay EVENTS --until UNTIL TARGET`` through :func:`main`; what it printed."""
    out = io.StringIO()
    argv = ["replay", str(events), "--until", UNTIL, *target, "--matcher", "python"]
    code = main([*argv, "--settings", str(settings_file)], stdout=out)
    assert code == 0, out.getvalue()
    return out.getvalue()


@dataclass(frozen=True)
class YearReplay:
    first_event: datetime
    mail: list[Delivered]
    output: str


@pytest.fixture(scope="module")
def year_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated Datong 2017 as JSON Lines (the only generated year of this module)."""
    path = tmp_path_factory.mktemp("year") / "datong-2017.jsonl"
    with path.open("wb") as handle:
        write_jsonl(simulate(year=2017, seed=SEED), handle)
    return path


@pytest.fixture(scope="module")
def smtp_year(year_file: Path, settings_file: Path) -> YearReplay:
    """The year replayed by the CLI up to 2018-01-31 into a real SMTP server."""
    with SmtpServer() as server:
        output = cli_replay(year_file, ["--smtp", f"127.0.0.1:{server.port}"], settings_file)
        mail = delivered(server)
    with year_file.open("rb") as handle:
        first = min(datetime.fromisoformat(orjson.loads(line)["time"]) for line in handle)
    return YearReplay(first, mail, output)


@pytest.fixture(scope="module")
def maildir_year(
    year_file: Path, settings_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The same year replayed a second time, by the CLI, into a Maildir."""
    folder = tmp_path_factory.mktemp("maildir") / "mail"
    cli_replay(year_file, ["--maildir", str(folder)], settings_file)
    return folder


# ------------------------------------------------------------------ a generated year


def test_year_summary_counts_what_the_server_received(smtp_year: YearReplay) -> None:
    """The CLI's summary names the mail sent, and the server received exactly that many."""
    match = re.search(r"寄出通知 (\d+) 封，無法投遞 (\d+) 封", smtp_year.output)
    assert match, smtp_year.output
    assert int(match[1]) == len(smtp_year.mail) > 100
    assert int(match[2]) == 0
    assert find_ids(smtp_year.output) == []


def test_year_morning_mail_goes_to_its_section_and_the_list_to_the_director(
    smtp_year: YearReplay,
) -> None:
    """A morning mail goes to one section; the director's list to the director with the
    sections of its rows in Cc; each lists only its own KPIs' rows."""
    mornings = [m for m in smtp_year.mail if m.kind == "morning"]
    lists = [m for m in smtp_year.mail if m.kind == "director"]
    assert mornings
    assert lists
    sections = set()
    for m in mornings:
        [section] = [s for s in SECTIONS if m.to == {ADDRESS[s]}]
        sections.add(section)
        assert m.cc == set()
        for key in m.keys:
            kpi = key.split(":")[1] if key.startswith("case:") else key.split(":")[2]
            assert OWNER[kpi] == section, (m.subject, key)
    assert sections == {"registration", "records", "general_affairs"}, "the year is not vacuous"
    for m in lists:
        assert m.to == {DIRECTOR}, m.subject
        assert m.cc
        assert m.cc <= {ADDRESS[s] for s in SECTIONS if s != "director"}
        assert set(m.rcpt) == m.to | m.cc


def test_year_subject_prefixes_by_severity(smtp_year: YearReplay) -> None:
    """Every subject starts with the prefix of its most severe part (警示/預警/已解除) or
    【月報】; a morning mail names its section and day."""
    for m in smtp_year.mail:
        if m.kind == "digest":
            assert m.subject.startswith("【月報】"), m.subject
            continue
        assert m.subject.startswith(PREFIXES), m.subject
        warning = "逾期" in m.subject.split("：", 1)[-1] or "KPI未達成" in m.subject
        if m.subject.startswith("【已解除】"):
            assert "即將到期" not in m.subject
            assert not re.search(r"逾期\d", m.subject)
        if m.kind == "morning":
            assert re.search(r"課每日提醒（1\d\d年\d{1,2}月\d{1,2}日）：", m.subject), m.subject
        if re.search(r"逾期\d+件", m.subject):
            assert m.subject.startswith("【KPI警示】"), m.subject
        del warning


def test_year_no_address_gets_more_than_three_messages_a_day(smtp_year: YearReplay) -> None:
    """The volume goal: no address receives more than 3 messages on a day (To and Cc, by
    the Asia/Taipei date of Date:), the digest aside; one morning mail per section and one
    director's list per day; nothing at night, at weekends or on days off."""
    calendar = load_settings_rules_calendar()
    per_day: Counter[tuple[str, object]] = Counter()
    kinds: Counter[tuple[str, str, object]] = Counter()
    for m in smtp_year.mail:
        if m.kind == "digest":
            continue
        day = m.date.astimezone(TAIPEI).date()
        assert (m.date.astimezone(TAIPEI).hour, m.date.minute) == (8, 0), m.subject
        assert calendar.is_working_day(day), (m.subject, day)
        for address in m.to | m.cc:
            per_day[(address, day)] += 1
        kinds[(m.kind, ",".join(sorted(m.to)), day)] += 1
    assert max(per_day.values()) <= 3
    assert max(kinds.values()) == 1
    assert len({day for _, day in per_day}) > 150  # the year is not vacuous


def test_year_every_row_shows_its_key_and_how_to_acknowledge(smtp_year: YearReplay) -> None:
    """Each row that can be acknowledged shows its key and the ack command for that key,
    in both parts; a replay renders no links."""
    rows = 0
    for m in smtp_year.mail:
        if m.kind == "digest":
            continue
        text, html = m.part("plain"), m.part("html")
        keys = m.keys
        commands = re.findall(r"確認方式：bsc-rules ack (\S+) --by 姓名 --note 處理情形", text)
        assert commands == keys, m.subject
        for key in keys:
            assert f"bsc-rules ack {key} --by" in html, (m.subject, key)
        assert "/ack/" not in text + html
        rows += len(keys)
    assert rows > 500


def load_settings_rules_calendar() -> OfficeCalendar:
    """The office calendar of the shipped rules (holidays TW and closures)."""
    from bsc_rules.rules.ruleset import load_ruleset

    return load_ruleset().calendar


def test_year_messages_are_multipart_with_roc_dates_and_the_footer(smtp_year: YearReplay) -> None:
    """multipart/alternative with text and HTML, ROC dates and the footer in both parts."""
    for m in smtp_year.mail:
        assert m.msg.get_content_type() == "multipart/alternative", m.subject
        types = [p.get_content_type() for p in m.msg.walk()]
        assert "text/plain" in types, (m.subject, types)
        assert "text/html" in types, (m.subject, types)
        for subtype in ("plain", "html"):
            body = m.part(subtype)
            assert ROC_DATE.search(body), (m.subject, subtype)
            assert FOOTER in body, (m.subject, subtype)


def test_year_no_message_id_is_delivered_twice(smtp_year: YearReplay) -> None:
    """Every Message-ID reaches the server once."""
    counts = Counter(m.message_id for m in smtp_year.mail)
    assert [mid for mid, n in counts.items() if n > 1] == []
    assert all(re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", mid) for mid in counts)


def test_year_dates_are_simulated_taipei_times(smtp_year: YearReplay) -> None:
    """Date: is the simulated sending time, in 2017/2018, +0800, between first event and T."""
    until = at_iso(UNTIL)
    for m in smtp_year.mail:
        raw_date = str(m.msg["Date"])
        assert raw_date.endswith("+0800"), raw_date
        assert m.date.year in (2017, 2018), raw_date
        assert smtp_year.first_event <= m.date <= until, (raw_date, m.subject)
    dates = [m.date for m in smtp_year.mail]
    assert dates == sorted(dates), "mail goes out in simulated time order"
    assert dates[-1] - dates[0] > timedelta(days=300)


def test_year_one_digest_per_month_and_recipient(smtp_year: YearReplay) -> None:
    """One digest per month passed per recipient, at 08:00 on the month's first working
    day (office calendar); none before the data."""
    digests = [m for m in smtp_year.mail if m.kind == "digest"]
    months: Counter[tuple[int, int, str]] = Counter()
    for m in digests:
        (rcpt,) = m.to
        year, month = (int(x) for x in re.search(r"(1\d\d)年(\d{1,2})月", m.subject).groups())  # type: ignore[union-attr]
        months[(year + 1911, month, rcpt)] += 1
        sent = m.date
        due_month = (year + 1911, month + 1) if month < 12 else (year + 1912, 1)
        first = FIRST_WORKING_DAY[due_month]
        assert (sent.year, sent.month, sent.day, sent.hour, sent.minute) == (
            *due_month,
            first,
            8,
            0,
        )
        heading = f"{year}年度平衡計分卡KPI執行情形月報（{year}年{month}月）"
        assert heading in m.part("plain"), (m.subject, heading)
        last_day = (at(f"{due_month[0]}-{due_month[1]:02d}-01 00:00") - DAY).day
        as_of = f"{year}年{month}月{last_day}日23時59分"  # the last instant of the month reported
        assert as_of in m.part("plain"), (m.subject, as_of)
    first = smtp_year.first_event
    assert (first.year, first.month) == (2017, 1)
    expected = Counter((2017, month, ADDRESS[s]) for month in range(1, 13) for s in SECTIONS)
    assert months == expected


def test_year_every_digest_is_a_briefing_book_under_the_clipping_size(
    smtp_year: YearReplay,
) -> None:
    """Every digest of the replayed year: HTML part under 100,000 bytes decoded (mail
    clients clip longer ones), inline charts, the baseline, plans and notes sections, and
    表四 as counts (not one row per message)."""
    digests = [m for m in smtp_year.mail if m.kind == "digest"]
    assert len(digests) == 48
    for m in digests:
        html = m.part("html")
        assert len(html.encode()) < 100_000, (m.subject, m.to, len(html.encode()))
        assert "表四、本月通知統計" in html
        assert "分析與改進說明" in html
        assert "103–105年" in html
        images = [p for p in m.msg.walk() if p.get_content_type() == "image/png"]
        assert images
        assert all(p.get_content_disposition() == "inline" for p in images)
    december = next(m for m in digests if "106年12月" in m.subject and m.to == {DIRECTOR})
    assert "TL1.1.1" in december.part("plain")  # every KPI's action plans for the director


def test_year_director_list_starts_on_the_third_working_day_overdue(
    smtp_year: YearReplay,
) -> None:
    """A case is on the director's list only once it is overdue for 3 working days
    (counting the day of the list); before that it is in its section's morning mail."""
    calendar = load_settings_rules_calendar()
    due = re.compile(r"(\S+?)（\d+年\d+月\d+日受理，列入\d+年度\S+管考）依本所KPI管考作業應於"
                     r"(\d+)年(\d+)月(\d+)日（含）前\S*?，尚未辦結")  # fmt: skip
    listed = 0
    for m in (m for m in smtp_year.mail if m.kind == "director"):
        today = m.date.astimezone(TAIPEI).date()
        for _, y, mo, d in due.findall(m.part("plain")):
            last = datetime(int(y) + 1911, int(mo), int(d)).date()
            assert calendar.working_days_between(last, today, 3) == 3, (m.subject, last)
            listed += 1
    assert listed > 5


def test_two_replays_deliver_identical_bytes(smtp_year: YearReplay, maildir_year: Path) -> None:
    """A second replay (into a Maildir) writes byte for byte what the first sent by SMTP."""
    files = {p.name: p.read_bytes() for p in (maildir_year / "new").iterdir()}
    assert len(files) == len(smtp_year.mail)
    from_maildir = {
        str(message_from_bytes(b, policy=default)["Message-ID"]): b for b in files.values()
    }
    from_smtp = {m.message_id: without_transport(m.raw) for m in smtp_year.mail}
    assert from_maildir.keys() == from_smtp.keys()
    different = [mid for mid in from_smtp if from_smtp[mid] != from_maildir[mid]]
    assert different == [], f"{len(different)} messages differ, e.g. {different[:3]}"


# ------------------------------------------------------------------ hand-made scenarios


def rows_about(mail: list[Delivered], case: str) -> list[tuple[str, str, datetime, set[str]]]:
    """(kind, the row's sentence, date, recipients) of every message that lists ``case``."""
    found = []
    for m in (m for m in mail if m.kind != "digest"):
        for line in m.part("plain").splitlines():
            if case in line and "警示代碼" not in line and "確認方式" not in line:
                found.append((m.kind, line.strip(), m.date, m.to | m.cc))
    return found


def test_unpaid_subsidy_warns_escalates_and_closes(tmp_path: Path, settings_file: Path) -> None:
    """BP1.1 paid late: listed due soon each morning from Mon 03-20 (its last allowed day
    Wed 03-22 is the 2nd working day after), overdue from Thu 03-23, on the director's list
    from Mon 03-27 (Thu, Fri, Mon), nothing at the weekend; paid Tue 03-28 15:30, the
    closing is listed on Wed 03-29 to the section and on the director's list."""
    case = "BS1060315001"
    events = [
        event("birth_subsidy.applied", "2017-03-15T10:23:00+08:00", case, {"amount": 20000}),
        event("birth_subsidy.paid", "2017-03-28T15:30:00+08:00", case),
    ]
    mail = replay_events(tmp_path, settings_file, events, "2017-03-30T12:00:00+08:00")
    owner = {ADDRESS["registration"]}
    both = owner | {DIRECTOR}
    rows = sorted(rows_about(mail, case), key=lambda r: (r[2], r[0] == "director"))
    seen = [(kind, date, to) for kind, _, date, to in rows]
    morning = [(d.date(), k) for k, d, _ in seen]
    assert morning == [
        (datetime(2017, 3, day).date(), kind)
        for day, kind in [
            (20, "morning"), (21, "morning"), (22, "morning"), (23, "morning"), (24, "morning"),
            (27, "morning"), (27, "director"), (28, "morning"), (28, "director"),
            (29, "morning"), (29, "director"),
        ]
    ]  # fmt: skip
    assert all(d.hour == 8 and d.minute == 0 for _, d, _ in seen)
    assert all(to == (owner if k == "morning" else both) for k, _, to in seen)
    lines = [line for _, line, _, _ in rows]
    assert "請於期限內辦結" in lines[0]
    assert "106年3月22日（含）前完成撥款" in lines[0]
    assert "已逾期1日" in lines[3]  # Thu 03-23: one calendar date after the last allowed day
    assert "已逾期5日" in lines[5]  # Mon 03-27
    assert "已於106年3月28日15時30分辦結（逾期辦結6日）" in lines[9]  # the payment's own time
    [closing_list] = [m for m in mail if m.kind == "director" and m.date.day == 29]
    assert closing_list.subject.startswith("【已解除】逾期案件陳核（106年3月29日，已辦結1件）")
    first_list = next(m for m in mail if m.kind == "director" and case in m.part("plain"))
    assert first_list.subject == "【KPI警示】逾期案件陳核（106年3月27日，逾期1件）"
    assert first_list.cc == owner
    assert f"case:BP1.1:{case}" in first_list.keys


def test_breached_kpi_is_told_once_to_owner_and_director(
    tmp_path: Path, settings_file: Path
) -> None:
    """An AP2.1 staff error breaches the KPI: listed at the next morning mail to the
    section and on the director's list, and not repeated (the digest carries it)."""
    events = [
        event("registration.completed", "2017-04-10T10:00:00+08:00", "RG1060410001",
              {"kind": "birth"}),
        event("cross_notice.recorded", "2017-04-10T10:05:00+08:00", "RG1060410001",
              {"channel": "declined"}),
        event("registration.error_found", "2017-04-12T14:20:00+08:00", "RG1060410001",
              {"cause": "staff"}),
    ]  # fmt: skip
    mail = replay_events(tmp_path, settings_file, events, "2017-05-04T00:00:00+08:00")
    mine = [m for m in mail if "kpi:2017:AP2.1" in m.keys]
    assert [(m.kind, m.date) for m in mine] == [
        ("morning", at("2017-04-13 08:00")),
        ("director", at("2017-04-13 08:00")),
    ]
    assert mine[0].to == {ADDRESS["registration"]}
    assert mine[1].to == {DIRECTOR}
    assert mine[1].cc == {ADDRESS["registration"]}
    assert mine[1].subject == "【KPI警示】逾期案件陳核（106年4月13日，KPI未達成1項）"
    for m in mine:
        assert "AP2.1「戶籍登記案件正確率」" in m.part("plain")
        assert "未達年度目標值（≥100%）" in m.part("plain")


def test_personal_data_never_leaves_unmasked(
    tmp_path: Path, settings_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """IDs planted in event fields appear only masked in every message and in CLI output."""
    events = [
        event("birth_subsidy.applied", "2017-03-10T09:00:00+08:00", NATIONAL_ID,
              {"amount": 20000, "applicant": NATIONAL_ID, "resident": RESIDENT_ID}),
        event("birth_subsidy.applied", "2017-03-13T11:00:00+08:00", RESIDENT_ID,
              {"amount": 20000, "note": f"申請人居留證{RESIDENT_ID}"}),
        event("care_case.identified", "2017-03-14T09:30:00+08:00", "CC1060314001",
              {"category": "divorce_with_minor", "contact": f"身分證{NATIONAL_ID}"}),
        event("birth_subsidy.unknown", "2017-03-15T09:00:00+08:00", NATIONAL_ID),
    ]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(events))
    capsys.readouterr()
    with SmtpServer() as server:
        target = ["--smtp", f"127.0.0.1:{server.port}"]
        # to past March's digest: 04-05, the first working day after 兒童節/清明節
        argv = ["replay", str(path), "--until", "2017-04-05T09:00:00+08:00", *target]
        out = io.StringIO()
        code = main([*argv, "--matcher", "python", "--settings", str(settings_file)], stdout=out)
        mail = delivered(server)
    captured = capsys.readouterr()
    printed = out.getvalue() + captured.out + captured.err
    assert code == 3, printed  # it ran to the end with a rejected line (spec/kpis.md)
    assert "退回 1" in printed, printed
    assert find_ids(printed) == []
    assert NATIONAL_ID not in printed
    assert RESIDENT_ID not in printed
    kinds = Counter(m.kind for m in mail)
    assert kinds["morning"] > 0, kinds
    assert kinds["director"] > 0, kinds
    assert kinds["digest"] == 4, kinds
    for m in mail:
        for text in everything_readable(m):
            assert find_ids(text) == [], (m.subject, find_ids(text))
            assert NATIONAL_ID not in text, m.subject
            assert RESIDENT_ID not in text, m.subject
    texts = " ".join(m.part("plain") for m in mail)
    for masked in ("A12345****", "AA0000****"):
        assert masked in texts
        director_digest = next(m for m in mail if m.kind == "digest" and m.to == {DIRECTOR})
        assert masked in director_digest.part("plain")
        assert masked in director_digest.part("html")


def test_missed_digests_are_sent_once_on_return(tmp_path: Path, settings_file: Path) -> None:
    """Down from April to 2017-06-15: each missed digest is sent once on return, never twice."""
    db = tmp_path / "service.db"
    settings = load_settings(settings_file, database=db, matcher="python")
    events = [
        event("registration.completed", "2017-04-03T09:10:00+08:00", "RG1060403001",
              {"kind": "move_in"}),
        event("cross_notice.recorded", "2017-04-03T09:20:00+08:00", "RG1060403001",
              {"channel": "declined"}),
        event("seal_certificate.issued", "2017-04-03T09:30:00+08:00", "SC1060403001"),
    ]  # fmt: skip
    start = to_us(at("2017-04-06 10:00"))  # after March's digest (04-05 08:00)

    def tick(pipeline: Pipeline, server: SmtpServer, when: str) -> list[Delivered]:
        before = len(server.received)
        mailer = SmtpMailer(server.host, server.port, security="none")
        schedule = Schedule.of(pipeline, settings.tick_minutes)
        _, _, parked = run_tick(pipeline, schedule, mailer, to_us(at(when)), start)
        assert parked == []
        return [Delivered.of(r) for r in server.received[before:]]

    def digests(mail: list[Delivered]) -> Counter[tuple[str, str]]:
        return Counter(
            (re.search(r"1\d\d年\d{1,2}月", m.subject)[0], next(iter(m.to)))  # type: ignore[index]
            for m in mail
            if m.kind == "digest"
        )

    with SmtpServer() as server:
        pipeline = open_pipeline(settings, db)
        try:
            for e in events:
                assert pipeline.card.ingest(e).ok
            april = tick(pipeline, server, "2017-04-06 10:00")
            april += tick(pipeline, server, "2017-04-20 10:00")
            back = tick(pipeline, server, "2017-06-15 10:00")
            again = tick(pipeline, server, "2017-06-15 11:00")
        finally:
            pipeline.card.close()
        pipeline = open_pipeline(settings, db)  # a restart after the return
        try:
            restarted = tick(pipeline, server, "2017-06-15 12:00")
        finally:
            pipeline.card.close()
        all_ids = Counter(m.message_id for m in delivered(server))

    assert digests(april) == Counter(), "no digest for March: the service began in April"
    expected = Counter((month, ADDRESS[s]) for month in ("106年4月", "106年5月") for s in SECTIONS)
    assert digests(back) == expected
    assert digests(again) == Counter(), "ticking again sends nothing new"
    assert digests(restarted) == Counter(), "nor does a restart"
    for m in (m for m in back if m.kind == "digest"):
        month = re.search(r"106年(\d)月", m.subject)[1]  # type: ignore[index]
        last = {"4": "106年4月30日23時59分", "5": "106年5月31日23時59分"}[month]
        assert last in m.part("plain"), (m.subject, last)
    assert [mid for mid, n in all_ids.items() if n > 1] == []


def test_event_values_are_escaped_and_add_no_header(tmp_path: Path, settings_file: Path) -> None:
    """A case id with markup and CR/LF is HTML-escaped and cannot add a mail header."""
    case = "BS<b>1</b>\r\nBcc: evil@example.org"
    events = [
        event("birth_subsidy.applied", "2017-03-15T10:23:00+08:00", case, {"amount": 20000}),
    ]
    mail = replay_events(tmp_path, settings_file, events, "2017-03-24T12:00:00+08:00")
    mine = [m for m in mail if any(k.startswith("case:BP1.1:") for k in m.keys)]
    assert [m.date.day for m in mine] == [20, 21, 22, 23, 24]
    for m in mail:
        assert m.msg["Bcc"] is None
        assert "evil@example.org" not in m.rcpt
        head = m.raw.split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"^Bcc:", head, re.MULTILINE | re.IGNORECASE)
        for name, value in m.msg.items():
            assert not re.search(r"[\r\n]", str(value)), name
        assert "<b>1</b>" not in m.part("html")
    assert all("&lt;b&gt;1&lt;/b&gt;" in m.part("html") for m in mine)


def test_after_an_outage_retry_then_replay_again_delivers_what_was_queued(
    tmp_path: Path, settings_file: Path
) -> None:
    """The mail server refuses the section's mailbox during a replay: the mail is parked
    and the summary says so. `outbox --retry` (on the wall clock) and the same replay again
    deliver it, each message once, with its simulated Date."""
    case = "BS1060315001"
    events = tmp_path / "e.jsonl"
    applied = event("birth_subsidy.applied", "2017-03-15T10:23:00+08:00", case, {"amount": 20000})
    events.write_bytes(jsonl([applied]))
    db = tmp_path / "state.db"
    with SmtpServer() as server:
        server.behaviour.refuse[ADDRESS["registration"]] = "550 5.2.1 mailbox disabled"
        argv = ["replay", str(events), "--until", "2017-03-24T12:00:00+08:00", "--db", str(db),
                "--smtp", f"127.0.0.1:{server.port}", "--matcher", "python",
                "--settings", str(settings_file)]  # fmt: skip
        first = io.StringIO()
        assert main(argv, stdout=first) == 0
        earlier = len(delivered(server))  # the other sections' mail went through
        assert all(ADDRESS["registration"] not in m.to for m in delivered(server))
        parked = int(re.search(r"無法投遞 (\d+) 封", first.getvalue()).group(1))  # type: ignore[union-attr]
        assert parked >= 2  # the morning mails of 03-20 to 03-24
        server.behaviour.refuse.clear()
        retried = io.StringIO()
        outbox = ["outbox", "--retry", "--db", str(db), "--settings", str(settings_file)]
        assert main(outbox, stdout=retried) == 0
        assert f"已重新排入寄送佇列：{parked} 封" in retried.getvalue()
        again = io.StringIO()
        assert main(argv, stdout=again) == 0
        assert "待寄 0 封" in again.getvalue()
        mail = delivered(server)[earlier:]
    assert len(mail) == parked
    assert all(ADDRESS["registration"] in m.to | m.cc for m in mail)
    assert len({m.message_id for m in mail}) == parked
    assert any(case in m.part("plain") for m in mail)
    assert all(m.date < at("2017-03-25 00:00") for m in mail)  # simulated, not the wall clock


def test_a_case_carried_into_the_new_year_is_shown_in_its_own_year(
    tmp_path: Path, settings_file: Path
) -> None:
    """Applied 106/12/27 and never paid in 106: its rows in 107's morning mails speak of
    106's scorecard (「列入106年度BP1.1管考」), not 107's; its closing too."""
    case = "BS1061227001"
    events = [
        event("birth_subsidy.applied", "2017-12-27T10:00:00+08:00", case, {"amount": 20000}),
        event("birth_subsidy.paid", "2018-01-12T10:00:00+08:00", case),
    ]
    mail = replay_events(tmp_path, settings_file, events, "2018-01-15T12:00:00+08:00")
    rows = rows_about(mail, case)
    late = [line for kind, line, date, _ in rows if date.year == 2018 and "已逾期" in line]
    assert late
    for line in [line for _, line, _, _ in rows]:
        assert "列入106年度BP1.1管考" in line
        assert "107年度" not in line
    [closing] = [line for _, line, _, _ in rows if "已於" in line][:1]
    assert "已於107年1月12日10時辦結" in closing
