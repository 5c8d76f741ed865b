"""Rendering alerts and the monthly digest into mail (spec/notifications.md, "Messages")."""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import replace
from datetime import date, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

import pytest
from PIL import Image

from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.errors import UsageError
from bsc_rules.notify import render
from bsc_rules.notify.charts import trend_png, value_range
from bsc_rules.notify.examples import example, example_digest, preview
from bsc_rules.notify.notices import (
    AckLine,
    CaseLine,
    CaseRow,
    DailyList,
    DigestData,
    KpiInfo,
    KpiRow,
    Mail,
    SentLine,
    TrendPoint,
    kpi_info,
)
from bsc_rules.notify.render import (
    KINDS,
    RenderError,
    render_digest,
    render_list,
    strategy_map,
    to_bytes,
)
from bsc_rules.privacy import find_ids
from bsc_rules.rules.ruleset import load_ruleset

PREFIXES = {"morning": "【KPI警示】", "director": "【KPI警示】", "digest": "【月報】"}
FOOTER = "內含公務資料，請勿轉寄"
BP = KpiInfo(
    "BP1.1", "生育獎勵金逾期核發案件比例", "BP1", "打造「樂婚、願生、能養」幸福臺北",
    "B", "營造多元幸福氛圍", "P", "內部流程", "registration", "戶籍登記課", "percent", "lower",
)  # fmt: skip
TF = replace(BP, id="TF1.1", name="節能減紙", unit="pages", direction="higher")


def at(text: str) -> int:
    """An Asia/Taipei local time as microseconds."""
    return to_us(datetime.fromisoformat(text).replace(tzinfo=TAIPEI))


DUE = at("2017-03-23T00:00")  # last allowed day 2017-03-22


def case_row(state: str = "due_soon", subject: str = "BS1060315001", **kw: object) -> CaseRow:
    """A BP1.1 case row: applied 2017-03-15, due 2017-03-23T00:00 (last day 03-22)."""
    fields: dict[str, object] = {
        "key": f"case:BP1.1:{subject}",
        "kpi": BP,
        "subject": subject,
        "state": state,
        "due": DUE,
        "opened": at("2017-03-15T09:30"),
        "year": 2017,
    }
    fields.update(kw)
    return CaseRow(**fields)  # type: ignore[arg-type]


def kpi_row(kpi: KpiInfo = TF, change: str = "began", **kw: object) -> KpiRow:
    """A KPI alert row: TF1.1 at risk, 310 of 1,250 pages."""
    fields: dict[str, object] = {
        "key": f"kpi:2017:{kpi.id}",
        "kpi": kpi,
        "change": change,
        "state": "at_risk",
        "status": "at_risk",
        "year": 2017,
        "value": 310.0,
        "target": 1250.0,
    }
    fields.update(kw)
    return KpiRow(**fields)  # type: ignore[arg-type]


def daily(
    *rows: CaseRow | KpiRow, kind: str = "morning", when: str = "2017-03-21T08:00", **kw: object
) -> DailyList:
    """A morning mail (or director's list) listing ``rows`` in their parts."""
    cases = [r for r in rows if isinstance(r, CaseRow)]
    audience = "director" if kind == "director" else "registration"
    fields: dict[str, object] = {
        "kind": kind,
        "office_name": "臺北市大同區戶政事務所",
        "office_code": "datong",
        "audience": audience,
        "audience_name": "主任" if kind == "director" else "戶籍登記課",
        "date": at(when),
        "overdue": tuple(r for r in cases if r.closed is None and r.state == "overdue"),
        "due_soon": tuple(r for r in cases if r.closed is None and r.state == "due_soon"),
        "closed": tuple(r for r in cases if r.closed is not None),
        "kpis": tuple(r for r in rows if isinstance(r, KpiRow)),
        "reply_by": date(2017, 3, 22),
    }
    fields.update(kw)
    return DailyList(**fields)  # type: ignore[arg-type]


def alert(data: DailyList, templates: Path | None = None, **kw: object) -> Mail:
    """Render ``data`` with a fixed envelope."""
    envelope: dict[str, object] = {
        "sender": "KPI <bsc@dthr.example>",
        "to": ("戶籍登記課 <registration@dthr.example>",),
        "message_id": "<m1@dthr.example>",
        "date": data.date,
        "templates": templates,
    }
    envelope.update(kw)
    return render_list(data, **envelope)  # type: ignore[arg-type]


def parts(mail: Mail) -> dict[str, str]:
    """Subject, text, HTML and the decoded RFC 5322 message of ``mail``."""
    parsed = BytesParser(policy=default).parsebytes(to_bytes(mail))
    assert isinstance(parsed, EmailMessage)
    decoded = "\n".join(
        p.get_content() for p in parsed.walk() if p.get_content_maintype() == "text"
    )
    return {
        "subject": mail.subject,
        "text": mail.text,
        "html": mail.html,
        "bytes": to_bytes(mail).decode("ascii"),
        "decoded": str(parsed["Subject"]) + decoded,
    }


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A copy of the project's notification templates, free to break."""
    folder = tmp_path / "notifications"
    shutil.copytree(render.DEFAULT_TEMPLATES, folder)
    return folder


# --- every kind -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_both_parts(kind: str) -> None:
    """Each example has the kind's prefix, ROC dates, the footer, text and mail-safe HTML."""
    mail = example(kind)
    assert mail.subject.startswith(PREFIXES[kind])
    assert "\n" not in mail.subject
    for body in (mail.text, mail.html):
        assert FOOTER in body
        assert "106年" in body
        assert "2017" not in re.sub(r"kpi:\d{4}:", "", body)  # ROC years, keys aside
    assert "主旨：" in mail.text
    assert "說明：" in mail.text
    assert "一、" in mail.text
    assert "三、" in mail.text
    assert "max-width:760px" in mail.html
    assert not re.search(r"<script|<link|@import|(?:src|href)=\"https?:", mail.html, re.I)


@pytest.mark.parametrize("kind", KINDS)
def test_example_is_repeatable(kind: str) -> None:
    """The same example gives the same mail and the same bytes."""
    assert example(kind) == example(kind)
    assert to_bytes(example(kind)) == to_bytes(example(kind))


def test_unknown_kind_is_refused() -> None:
    """An unknown kind names the valid ones."""
    with pytest.raises(UsageError, match="morning"):
        example("reminder")


OVERDUE = case_row("overdue", days_overdue=1, working_days=1)
CLOSED = case_row(
    "overdue", closed=at("2017-03-24T10:00"), days_overdue=2,
    ack=AckLine("林科員", at("2017-03-23T09:00"), "帳戶待補正"),
)  # fmt: skip
BREACHED = kpi_row(BP, state="breached", status="breached", value=0.31, target=0.0)


@pytest.mark.parametrize(
    ("data", "prefix", "words"),
    [
        (daily(case_row()), "【KPI預警】", ["即將到期1件", "106年3月22日（含）前", "完成撥款"]),
        (
            daily(OVERDUE, case_row(subject="BS1060316002"), when="2017-03-23T08:00"),
            "【KPI警示】",
            ["逾期1件、即將到期1件", "已逾期1日", "bsc-rules ack case:BP1.1:BS1060315001"],
        ),
        (daily(CLOSED), "【已解除】", ["已於106年3月24日10時辦結", "逾期辦結2日", "林科員"]),
        (daily(kpi_row()), "【KPI預警】", ["310頁", "1,250頁", "推動以系統調查取代紙本問卷"]),
        (daily(BREACHED), "【KPI警示】", ["0.31%", "≤0%", "未達年度目標值", "kpi:2017:BP1.1"]),
        (
            daily(kpi_row(change="ended", value=520.0, status="on_track")),
            "【已解除】",
            ["已回復進度正常", "落後預警解除", "無須確認"],
        ),
        (
            daily(kpi_row(BP, "year_end", state="breached", status="breached", value=0.31)),
            "【已解除】",
            ["106年度結束，本項警示結案"],
        ),
        (
            daily(replace(OVERDUE, working_days=3), BREACHED, kind="director",
                  cc_names=("戶籍登記課",)),
            "【KPI警示】逾期案件陳核（106年3月21日，逾期1件、KPI未達成1項）",
            ["副本：戶籍登記課", "陳報主任", "生育獎勵金申請案"],
        ),
    ],
    ids=["due_soon", "overdue", "closed", "at_risk", "breached", "ended", "year_end", "director"],
)  # fmt: skip
def test_list_wording(data: DailyList, prefix: str, words: list[str]) -> None:
    """Prefix, the rows' KPI, what is due, the key and how to acknowledge, the footer."""
    mail = alert(data)
    assert mail.subject.startswith(prefix)
    for body in (mail.text, mail.html):
        for word in [FOOTER, "主旨：", "說明：", *words]:
            assert word in body, word


def test_every_open_row_shows_its_key_and_how_to_acknowledge() -> None:
    """Each row that can be acknowledged carries its key, the ack command and the link
    where one is given; closed and ended rows carry neither."""
    link = "https://kpi.datong.example/ack/t0k3n"
    data = daily(
        replace(OVERDUE, ack_url=link), case_row(subject="BS1060316002"), CLOSED,
        kpi_row(), kpi_row(BP, "ended", status="met"),
    )  # fmt: skip
    mail = alert(data)
    for body in (mail.text, mail.html):
        for key in ("case:BP1.1:BS1060315001", "case:BP1.1:BS1060316002", "kpi:2017:TF1.1"):
            assert f"bsc-rules ack {key} --by 姓名" in body
        assert "bsc-rules ack case:BP1.1:BS1060315001 --by" in body
        assert body.count("bsc-rules ack") == 3
        assert link in body
    assert body.count("確認方式：") >= 3


@pytest.mark.parametrize(
    ("value", "target", "direction", "shown"),
    [
        pytest.param(99.996, 100.0, "higher", "99.99%", id="just-below-100"),
        pytest.param(99.999999, 100.0, "higher", "99.99%", id="float-noise-below-100"),
        pytest.param(100.0, 100.0, "higher", "100%", id="met-exactly"),
        pytest.param(79.996, 80.0, "higher", "79.99%", id="just-below-80"),
        pytest.param(85.006, 80.0, "higher", "85.01%", id="met-rounds-normally"),
        pytest.param(0.004, 0.0, "lower", "0.01%", id="lower-is-better-just-above-0"),
        pytest.param(0.0, 0.0, "lower", "0%", id="lower-is-better-met"),
        pytest.param(None, 100.0, "higher", "—", id="no-value"),
    ],
)
def test_a_value_is_never_rounded_onto_its_target(
    value: float | None, target: float, direction: str, shown: str
) -> None:
    """A value that misses its target is shown cut towards the worse side (notifications.md,
    "Figures agree with statuses"), in the alert's body and in the digest's tables."""
    kpi = replace(BP, direction=direction)
    assert render.f_measured(value, target, kpi) == shown
    if value is None:
        return
    status = "met" if shown in ("100%", "0%", "85.01%") else "breached"
    row = kpi_row(kpi, state="breached", status=status, value=value, target=target)
    mail = alert(daily(row))
    for body in (mail.text, mail.html):
        assert shown in body


def test_deadline_is_the_last_allowed_day() -> None:
    """Due 2017-03-23T00:00+08:00 shows as 106年3月22日（含）前, never as the 23rd."""
    mail = alert(daily(case_row()))
    for body in (mail.text, mail.html):
        assert "106年3月22日（含）前" in body
        assert "3月23日" not in body


def test_digest_shows_due_dates_in_table_form() -> None:
    """Open cases in the digest: last allowed day as 106/05/26, days overdue counted."""
    mail = example("digest")
    assert "106/05/26（含）前" in mail.html
    assert "106/05/26（含）前，已逾期5日" in mail.text
    heading = "臺北市大同區戶政事務所106年度平衡計分卡KPI執行情形月報（106年5月）"
    assert heading in mail.text
    assert heading in mail.html
    assert mail.subject == "【月報】本所106年5月份KPI執行情形，敬請查閱"


def test_digest_content() -> None:
    """Every KPI with values, status labels and a chart; cases, notices, bounces listed."""
    mail = example("digest")
    for kpi in ("AC1.1", "AC1.2", "AP1.1", "AP2.1", "BC1.1", "BP1.1", "CC1.1", "CP1.1"):
        assert f'src="cid:chart-{kpi}@bsc-rules"' in mail.html
    assert len(mail.images) == 10
    for word in ("達成", "進度正常", "落後", "未達成", "99.95%", "≥1,250頁", "152件"):
        assert word in mail.html
    assert "#cf222e" in mail.html  # red for 未達成
    assert "#9a6700" in mail.html  # amber for 落後
    assert "BS1060519004" in mail.text
    assert "收件信箱已滿" in mail.html
    assert "表四、本月通知統計（列出警示6件，尚未確認3件）" in mail.text


def test_digest_is_a_briefing_book() -> None:
    """Per KPI: the 103–105 baseline, the pace figure, the rule file's action plans with
    their budget, the section's note for the month, and the owner of every open case."""
    mail = example("digest")
    for body in (mail.text, mail.html):
        assert "103–105年" in body
        assert "99.98%" in body  # AP2.1's 103 value, from the rule file's history
        assert "157.7件" in body  # BC1.1 expected by now (the pace line)
        assert "TL1.1.1 由各戶所自訂計畫" in body
        assert "預算新臺幣38,400元" in body  # TL1.1's 2017 budget in its rule file
        assert "因申請人帳戶資料待補正致逾期" in body  # the section's note, with who
        assert "戶籍登記課 王課長" in body
        assert "本月尚未填報" in body  # a KPI without a note says so
    cases = mail.html[mail.html.index("表三、未結案件") :]
    assert cases.index("BS1060519004") < cases.index("戶籍登記課") < cases.index("已逾期")


def test_strategy_map_puts_objectives_above_their_kpis() -> None:
    """In the map each objective heads its KPIs: AC1 above AC1.1 and AC1.2, in that order."""
    html = example("digest").html
    start = html.index("策略地圖")
    objective = html.index("AC1 建置身分登記原始文件數位化檔案", start)
    assert objective < html.index("<strong>AC1.1</strong>", start)
    assert html.index("<strong>AC1.1</strong>", start) < html.index("<strong>AC1.2</strong>", start)
    assert html.index("AP1 建置印鑑數位化", start) < html.index("<strong>AP1.1</strong>", start)


def test_notifications_are_counted_per_kind_and_section() -> None:
    """表四 counts the alerts the month's messages listed, per kind and receiving section,
    instead of listing every message: an alert listed in five messages counts once; one
    told to two sections counts in each, once in the total."""
    data = example_digest()
    counts = render.sent_counts(data)
    assert counts.kinds == ["overdue", "due_soon", "breached", "at_risk"]
    assert counts.sections == ["戶籍登記課", "行政庶務課", "主任"]
    assert counts.cells[("overdue", "戶籍登記課")] == 1  # one case, listed in five messages
    assert counts.cells[("overdue", "主任")] == 1
    assert counts.totals == {"overdue": 1, "due_soon": 2, "breached": 1, "at_risk": 2}
    assert counts.messages == 10  # two alerts in one morning mail
    assert counts.open.get(("at_risk", "戶籍登記課"), 0) == 0  # acknowledged
    assert counts.open[("overdue", "戶籍登記課")] == 1
    mail = example("digest")
    assert "案件逾期：戶籍登記課1件（未確認1）、主任1件（未確認1）；合計1件" in mail.text
    bounced = {line.subject for line in data.undeliverable}  # 表五 still lists those
    for line in data.notified:  # no row per message any more
        assert line.subject in bounced or line.subject not in mail.html


def test_digest_html_stays_under_the_clipping_size() -> None:
    """The decoded HTML part stays under 100,000 bytes (mail clients clip longer ones)."""
    assert len(example("digest").html.encode()) < 100_000


def test_digest_charts_are_inline_and_sharp() -> None:
    """Charts are inline parts (not attachments) at twice their display size."""
    mail = example("digest")
    message = message_from_bytes(to_bytes(mail), policy=default)
    pngs = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert len(pngs) == 10
    for part in pngs:
        assert part.get_content_disposition() == "inline"
        image = Image.open(io.BytesIO(part.get_payload(decode=True)))
        assert image.size == (2 * 260, 2 * 96)
    assert 'width="260" height="96"' in mail.html


def test_digest_for_a_section_names_it() -> None:
    """A section's digest says whose KPIs it covers."""
    data = example_digest()
    rows = tuple(r for r in data.rows if r.kpi.owner == "records")
    section = replace(data, audience="records", audience_name="戶籍資料課", rows=rows)
    mail = render_digest(section, sender="a@b.example", to=(), message_id="<d@x>", date=0)
    assert mail.subject == "【月報】本所106年5月份KPI執行情形（戶籍資料課），敬請查閱"
    assert len(mail.images) == 3


def test_strategy_map_layout() -> None:
    """Themes A/B/C as columns; perspectives C/P as cells per theme, L/F spanning."""
    columns, rows = strategy_map(example_digest())
    assert [code for code, _ in columns] == ["A", "B", "C"]
    assert [(r.code, r.common, len(r.cells)) for r in rows] == [
        ("C", False, 3),
        ("P", False, 3),
        ("L", True, 1),
        ("F", True, 1),
    ]
    process = rows[1]
    assert [[row.kpi.id for row in cell] for cell in process.cells] == [
        ["AP1.1", "AP2.1"],
        ["BP1.1"],
        ["CP1.1"],
    ]


# --- personal data, escaping, headers -------------------------------------------------


def test_ids_are_masked_everywhere() -> None:
    """A123456789 / AA00000009 planted in event fields appear only masked, in every part."""
    row = replace(CLOSED, key="case:BP1.1:A123456789", subject="A123456789",
                  ack=AckLine("王A123456788", None, "申請人AA00000009已撥款"))  # fmt: skip
    mail = alert(daily(row, OVERDUE), message_id="<resolved.A123456789@dthr.example>")
    for name, body in parts(mail).items():
        assert find_ids(body) == [], name
        assert "A123456789" not in body
        assert "AA00000009" not in body
    assert "A12345****" in mail.text
    assert "AA0000****" in mail.text
    assert "AA0000****" in mail.html


def test_digest_masks_ids() -> None:
    """IDs in open cases, notification subjects and errors of a digest are masked."""
    data = example_digest()
    line = SentLine(at("2017-05-02T08:00"), "案件A123456789", ("x@y.example",), error="AA00000009")
    planted = replace(
        data,
        open_cases=(CaseLine("BP1.1", "A123456789", "overdue", at("2017-05-20T00:00")),),
        notified=(line,),
        undeliverable=(line,),
    )
    mail = render_digest(
        planted, sender="a@b.example", to=("c@d.example",), message_id="<d@x>", date=0
    )
    for name, body in parts(mail).items():
        assert find_ids(body) == [], name
    assert "A12345****" in mail.html
    assert "AA0000****" in mail.text


def test_html_escapes_event_values() -> None:
    """A case id with markup is escaped in the HTML part and kept literal in the text."""
    mail = alert(daily(case_row(subject="<script>alert(1)</script>")))
    assert "<script" not in mail.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert "<script>alert(1)</script>" in mail.text


@pytest.mark.parametrize("field", ["subject", "key"])
def test_event_values_cannot_add_headers(field: str) -> None:
    """CR/LF in a case id or alert key never reaches a header: no Bcc is added."""
    row = replace(case_row(), **{field: "BS1\r\nBcc: x@y.example\nX-Evil: 1"})
    raw = to_bytes(alert(daily(row)))
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["Bcc"] is None
    assert parsed["X-Evil"] is None
    assert b"\nBcc:" not in raw
    assert b"\nX-Evil" not in raw


def test_mail_fields_cannot_add_headers() -> None:
    """CR/LF in any Mail field (subject, ids, addresses, extra header values) is flattened."""
    evil = "\r\nBcc: x@y.example"
    mail = Mail(
        message_id=f"<m@x>{evil}",
        sender=f"a@b.example{evil}",
        to=(f"c@d.example{evil}",),
        subject=f"【KPI預警】x{evil}",
        text="t",
        html="<p>h</p>",
        date=0,
        headers=(("X-BSC-Alert-Key", f"k{evil}"),),
    )
    raw = to_bytes(mail)
    assert message_from_bytes(raw, policy=default)["Bcc"] is None
    assert b"\nBcc:" not in raw


@pytest.mark.parametrize("name", ["X-Bad: y", "X-Bad\r\nBcc", "Subject", "Bad Name", ""])
def test_bad_header_names_are_refused(name: str) -> None:
    """An extra header's name must be a plain field name other than the core ones."""
    mail = replace(example("morning"), headers=((name, "v"),))
    with pytest.raises(UsageError, match="header name"):
        to_bytes(mail)


# --- templates ------------------------------------------------------------------------


def test_missing_variable_names_the_template(templates: Path) -> None:
    """StrictUndefined: a variable the template was not given fails, naming file and line."""
    path = templates / "morning.txt.j2"
    source = path.read_text(encoding="utf-8").replace("受文者：", "{{ no_such_value }}")
    path.write_text(source, encoding="utf-8")
    with pytest.raises(RenderError, match=r"morning\.txt\.j2.*line \d+.*no_such_value"):
        alert(daily(kpi_row()), templates=templates)


@pytest.mark.parametrize(
    "include",
    ["../../etc/passwd", "/etc/passwd", "../outside.j2", "sub/../../outside.j2"],
)
def test_templates_come_only_from_the_folder(templates: Path, include: str) -> None:
    """An include that leaves the templates folder is not found."""
    (templates.parent / "outside.j2").write_text("SECRET", encoding="utf-8")
    (templates / "morning.txt.j2").write_text(f"{{% include '{include}' %}}", encoding="utf-8")
    with pytest.raises(RenderError, match="not found in the notification templates folder"):
        alert(daily(case_row()), templates=templates)


def test_templates_are_sandboxed(templates: Path) -> None:
    """A template cannot reach Python internals."""
    (templates / "morning.txt.j2").write_text("{{ data.__class__.__mro__ }}", encoding="utf-8")
    with pytest.raises(RenderError, match="unsafe"):
        alert(daily(case_row()), templates=templates)


def test_an_edited_template_is_used(templates: Path) -> None:
    """The office edits a template; the next mail uses it."""
    path = templates / "subjects.txt.j2"
    path.write_text(path.read_text(encoding="utf-8").replace("每日提醒", "今日待辦"), "utf-8")
    assert "戶籍登記課今日待辦" in alert(daily(case_row()), templates=templates).subject


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    """A templates folder that does not exist is a clear error."""
    with pytest.raises(RenderError, match="templates folder"):
        alert(daily(case_row()), templates=tmp_path / "nowhere")


# --- RFC 5322 -------------------------------------------------------------------------


def test_digest_bytes_parse_back() -> None:
    """multipart/alternative: text, then multipart/related with the HTML and every PNG."""
    mail = example("digest")
    raw = to_bytes(mail)
    assert raw == to_bytes(mail)
    parsed = BytesParser(policy=default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    text, related = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, *images = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert [i.get_content_type() for i in images] == ["image/png"] * len(mail.images)
    cids = [str(i["Content-ID"]).strip("<>") for i in images]
    assert cids == [name for name, _ in mail.images]
    for cid in cids:
        assert f"cid:{cid}" in html.get_content()
    assert images[0].get_content() == mail.images[0][1]
    assert str(parsed["Subject"]) == mail.subject
    assert str(parsed["Date"]) == "Thu, 01 Jun 2017 08:00:00 +0800"
    assert str(parsed["Message-ID"]) == "<digest.2017-05@bsc-rules.dthr.example>"
    assert parsed["MIME-Version"] == "1.0"
    assert text.get_content().replace("\r\n", "\n") == mail.text


def test_list_bytes_parse_back() -> None:
    """A director's list without images: text/plain and text/html directly under
    alternative; the sections in Cc."""
    mail = example("director")
    raw = to_bytes(mail)
    parsed = BytesParser(policy=default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert str(parsed["To"]) == "主任 <director@dthr.example>"
    assert str(parsed["Cc"]) == "戶籍登記課 <registration@dthr.example>"
    assert b"=?utf-8?" in raw.split(b"\r\n\r\n", 1)[0]  # encoded words in the headers
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_bytes_depend_only_on_the_mail() -> None:
    """Boundaries come from the Message-ID: another id, other bytes; same id, same bytes."""
    mail = example("digest")
    other = replace(mail, message_id="<other@x>")
    assert to_bytes(mail) != to_bytes(other)
    boundary = re.search(rb'boundary="([^"]+)"', to_bytes(mail))
    assert boundary is not None
    assert boundary.group(1) in to_bytes(replace(mail, text="changed"))


def test_preview_inlines_images() -> None:
    """The HTML preview carries the charts as data: URIs a browser can show."""
    html = preview("digest", "html")
    assert "cid:" not in html
    assert html.count("data:image/png;base64,") == 10
    assert preview("morning", "text").startswith("臺北市大同區戶政事務所")


# --- filters and charts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (99.95, "percent", "99.95%"),
        (100.0, "percent", "100%"),
        (78.6, "percent", "78.6%"),
        (0.0, "percent", "0%"),
        (-0.0, "percent", "0%"),
        (379, "count", "379件"),
        (1250, "pages", "1,250頁"),
        (None, "percent", "—"),
    ],
)
def test_number_filter(value: float | None, unit: str, shown: str) -> None:
    """Numbers carry their unit; a missing value is a dash."""
    assert render.f_number(value, unit) == shown


@pytest.mark.parametrize(
    ("due", "text", "slash"),
    [
        ("2017-03-23T00:00", "106年3月22日", "106/03/22"),
        ("2017-03-23T00:00:00.000001", "106年3月23日", "106/03/23"),
        ("2018-01-01T00:00", "106年12月31日", "106/12/31"),
    ],
)
def test_due_day_filter(due: str, text: str, slash: str) -> None:
    """An exclusive due instant shows as the day before it (the last allowed day)."""
    assert render.f_due_day(at(due)) == text
    assert render.f_due_day(at(due), "slash") == slash


def test_date_filters() -> None:
    """ROC dates and Asia/Taipei times, from instants or dates."""
    assert render.f_roc_date(date(2017, 3, 22)) == "106年3月22日"
    assert render.f_roc_slash(at("2017-03-22T23:59")) == "106/03/22"
    late = to_us(datetime.fromisoformat("2017-03-22T16:05:00+00:00"))
    assert render.f_local_time(late) == "106年3月23日0時5分"  # prose: 「0時」, not 「00:00」
    assert render.f_local_time(late, "slash") == "106/03/23 00:05"  # tables
    assert render.f_local_time(at("2017-03-23T08:00")) == "106年3月23日8時"
    quoted = render.f_quoted("打造「樂婚、願生、能養」幸福臺北")
    assert quoted == "「打造『樂婚、願生、能養』幸福臺北」"
    assert render.f_goal(None, BP) == "未訂定"
    assert render.f_goal(0.0, BP) == "≤0%"
    assert render.f_recipient("戶籍登記課 <r@x>") == "戶籍登記課"
    assert render.f_recipient("r@x") == "r@x"


def test_chart_is_a_small_deterministic_png() -> None:
    """A 520×192 PNG (260×96 at 2×); the same input gives the same bytes; status changes
    the colour."""
    points = [TrendPoint(m, v, 80.0) for m, v in enumerate([81.2, 80.4, 79.5, 79.0], 1)]
    png = trend_png(points, status="at_risk")
    assert png == trend_png(points, status="at_risk")
    assert png != trend_png(points, status="met")
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (520, 192))


@pytest.mark.parametrize(
    ("values", "target", "unit", "scale"),
    [
        pytest.param([100, 99.97, 99.95], 100, "percent", (99.9, 100), id="accuracy-near-100"),
        pytest.param([100, 100, 100], 100, "percent", (99.9, 100), id="all-100"),
        pytest.param([99.5, 99.2], 100, "percent", (99.0, 100), id="accuracy-99"),
        pytest.param([81.2, 78.6], 80, "percent", (50.0, 100), id="ratio-around-80"),
        pytest.param([35, 62.5], 100, "percent", (0.0, 100), id="progress-to-100"),
        pytest.param([0, 0.31, 0.47], 0, "percent", (0.0, 1.0), id="small-lower-rate"),
        pytest.param([0, 1.2, 3.5], 0, "percent", (0.0, 5.0), id="lower-rate-to-5"),
        pytest.param([30, 152], 379, "count", (0.0, 500.0), id="count-to-round-ceiling"),
        pytest.param([0, 310], 1250, "pages", (0.0, 2000.0), id="pages"),
        pytest.param([], None, "percent", (0.0, 100.0), id="no-data-percent"),
    ],
)
def test_chart_scale_is_fixed_by_rule(
    values: list[float], target: float | None, unit: str, scale: tuple[float, float]
) -> None:
    """The vertical scale is chosen by rule (round ends), not stretched to the data, so
    a month's chart compares with the next and 99.95 % does not look like 0."""
    points = [TrendPoint(m, float(v), target) for m, v in enumerate(values, 1)]
    assert value_range(points, unit) == scale


@pytest.mark.parametrize(
    "points",
    [
        [],
        [TrendPoint(1, None, None)],
        [TrendPoint(1, 5.0, 5.0)],
        [TrendPoint(1, 1.0, 10.0), TrendPoint(2, None, 20.0), TrendPoint(3, 3.0, 30.0)],
        [TrendPoint(13, 1.0, None)],
    ],
    ids=["empty", "no-values", "flat", "gap-and-moving-target", "out-of-range-month"],
)
def test_chart_edge_cases(points: list[TrendPoint]) -> None:
    """Missing values, a flat line, gaps and stray months still draw a PNG."""
    png = trend_png(points, status="no_data")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_digest_without_target_or_data() -> None:
    """Grey statuses and missing numbers render (無資料 / 無目標值)."""
    data = example_digest()
    row = replace(data.rows[0], status="no_target", target=None, ytd_value=None, month_value=None)
    empty = replace(data, rows=(row, replace(data.rows[1], status="no_data")), month=1)
    mail = render_digest(empty, sender="a@b.example", to=(), message_id="<d@x>", date=0)
    assert "無目標值" in mail.html
    assert "無資料" in mail.text
    assert "未訂定" in mail.html
    assert "（106年1月）" in mail.html
    assert isinstance(empty, DigestData)


def test_seed_names_with_short_labels() -> None:
    """TL1.1 and TF1.1 carry the seed's own names; subjects and tables use the short label
    and the body gives both (issue: 「加強戶政法令、資安管理與服務禮儀相關教育訓練…」)."""
    rules = load_ruleset()
    tl = kpi_info(rules, rules.kpis["TL1.1"])
    assert tl.name == "加強戶政法令、資安管理與服務禮儀相關教育訓練，維持高品質之為民服務"
    assert tl.label == "教育訓練參與率"
    tf = kpi_info(rules, rules.kpis["TF1.1"])
    assert tf.name == "內外部顧客問卷滿意度問卷抽樣與調查減少紙本頁數"
    assert kpi_info(rules, rules.kpis["BP1.1"]).label == "生育獎勵金逾期核發案件比例"
    mail = alert(daily(kpi_row(tl, value=40.0, target=100.0)))
    for body in (mail.text, mail.html):
        assert "TL1.1" in body
        assert "「教育訓練參與率」" in body


def test_digest_month_is_the_month_own_change_and_pace_is_shown_when_met() -> None:
    """「本月」 is the month's own change: for a progress KPI what the month added (AC1.1:
    Feb's scans alone, not the cumulative value); the pace line shows for a KPI that is met
    too (notifications.md, the digest)."""
    from bsc_rules.notify.digest import DigestBuilder, DigestInputs
    from bsc_rules.scorecard import Scorecard
    from tests.conftest import event

    card = Scorecard(load_ruleset(), matcher="python")
    for n, (when, forms) in enumerate(
        [("2016-12-20", 10_000), ("2017-01-10", 1_000), ("2017-02-10", 2_000)]
    ):
        at = f"{when}T10:00:00+08:00"
        card.ingest(event("archive.scanned", at, f"SCAN{n}", {"forms": forms}))
    for n in range(40):  # the whole headcount trained in January: TL1.1 met
        data = {"employee": f"E{n}", "course": "資安"}
        card.ingest(event("training.attended", "2017-01-12T10:00:00+08:00", f"TR{n}", data))
    inputs = DigestInputs(card=card, recipients={}, items=(), unacknowledged=frozenset())
    rows = {r.kpi.id: r for r in DigestBuilder(inputs, 2017, 2).build("director").rows}
    assert rows["AC1.1"].ytd_value == pytest.approx(6.5)  # (10,000 + 1,000 + 2,000) / 200,000
    assert rows["AC1.1"].month_value == pytest.approx(1.0)  # February's 2,000 alone
    assert rows["TL1.1"].status == "met"
    assert rows["TL1.1"].month_value == pytest.approx(0.0)  # nobody new in February
    assert rows["TL1.1"].pace is not None  # expected by now, shown beside 達成 too
    january = DigestBuilder(inputs, 2017, 1).build("director").rows
    [jan] = [r for r in january if r.kpi.id == "AC1.1"]
    assert jan.month_value == pytest.approx(0.5)  # January's 1,000, not the 10,000 before


def test_at_risk_says_what_kind_of_behind() -> None:
    """A rate KPI at risk is below its target (「低於年度目標值80%」, not 「進度落後」); a
    progress KPI says what was expected by now, the pace line; both ask for a concrete date."""
    cp = replace(BP, id="CP1.1", name="跨機關通報比率", direction="higher", kind="rate")
    rate = alert(daily(kpi_row(cp, value=79.5, target=80.0)))
    assert "低於年度目標值80%" in rate.text
    assert "進度落後" not in rate.subject + rate.text
    tf = replace(TF, kind="progress")
    progress = alert(daily(kpi_row(tf, pace=520.1)))
    for body in (progress.text, progress.html):
        assert "低於依進度應達之520.1頁（年度目標值≥1,250頁）" in body
        assert "106年3月22日前" in body  # the next working day, as a date
