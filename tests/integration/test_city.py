"""The Taipei example deployment end to end: ``check`` of its twelve office files (and a
located error in one), ``status --all-offices`` with each office's own rule set, and the
city's monthly digest (``digest --city``) as mail: offices × KPIs coloured by status, the
office furthest behind per KPI, each office's overdue cases, through a real SMTP server
and as headless Chromium draws it."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import orjson
import pytest

from bsc_rules.calendar import TAIPEI
from bsc_rules.cli import main
from bsc_rules.clock import FakeClock
from bsc_rules.dev.simulate import simulate
from bsc_rules.privacy import mask_text
from tests.conftest import no_browser
from tests.smtp_server import SmtpServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "taipei"
CODES = (
    "songshan",
    "xinyi",
    "daan",
    "zhongshan",
    "zhongzheng",
    "datong",
    "wanhua",
    "wenshan",
    "nangang",
    "neihu",
    "shilin",
    "beitou",
)  # the city's order, as deployment.yaml lists it
AS_OF = "2017-01-31T23:59:59.999999+08:00"
LATER = FakeClock(datetime(2017, 2, 1, 8, 0, tzinfo=TAIPEI))
PLANTED = "A123456789"  # a valid national id
COLOUR = {"met": "#dafbe1", "on_track": "#dafbe1", "at_risk": "#fff8c5", "breached": "#ffebe9"}
CHROMIUM = Path(os.environ.get("BSC_RULES_CHROMIUM", "/usr/bin/chromium"))


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdout=out, clock=LATER)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """January 2017 of the twelve offices in the directory form; the example's rules
    copied, with Xinyi's own CP1.1 target and an ID planted in the department's name."""
    root = tmp_path_factory.mktemp("taipei")
    rules = root / "rules"
    shutil.copytree(EXAMPLE, rules)
    xinyi = rules / "offices" / "xinyi.yaml"
    text = xinyi.read_text(encoding="utf-8")
    xinyi.write_text(text.replace("kpis: {}", "kpis: {CP1.1: {targets: {2017: 95}}}"), "utf-8")
    deployment = rules / "deployment.yaml"
    text = deployment.read_text(encoding="utf-8")
    deployment.write_text(text.replace("民政局\n", f"民政局{PLANTED}\n", 1), encoding="utf-8")
    events = root / "taipei.jsonl"
    with events.open("wb") as handle:
        for event in simulate(year=2017, seed=11, offices=CODES):
            if event["time"] >= "2017-02":
                break
            handle.write(orjson.dumps(event) + b"\n")
    db = f"{root / 'db'}/"
    argv = ["ingest", str(events), "--db", db, "--rules", str(EXAMPLE), "--matcher", "python"]
    assert run(argv)[0] == 0
    return {"rules": rules, "db": db, "root": root}


def status(city: dict[str, Any], *more: str) -> tuple[int, str]:
    rules = ["--rules", str(city["rules"]), "--matcher", "python"]
    return run(["status", "--db", city["db"], "--as-of", AS_OF, *rules, *more])


# ---------------------------------------------------------------- check


def test_check_reports_every_office_of_the_example() -> None:
    code, text = run(["check", "--rules", str(EXAMPLE)])
    assert code == 0
    lines = text.splitlines()
    assert [line.split("（")[1].split("）")[0] for line in lines[:12]] == list(CODES)
    assert lines[0].startswith("規則檔檢查通過：臺北市松山區戶政事務所（songshan），KPI 10 項")
    assert "多戶所部署：共 12 個戶所；市府月報收件者：臺北市政府民政局" in lines[12]


def test_check_locates_an_error_in_one_office_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(EXAMPLE, rules)
    wanhua = rules / "offices" / "wanhua.yaml"
    text = wanhua.read_text(encoding="utf-8")
    wanhua.write_text(text.replace("<records@wanhua.example.org>", "records at wanhua"), "utf-8")
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "records@wanhua" in s)
    code, out = run(["check", "--rules", str(rules)])
    err = capsys.readouterr().err
    assert (code, out) == (1, "")
    assert f"{wanhua}:{line}:13: recipients.records[0]: expected an address" in err
    assert "1 problem in the rule files" in err


# ---------------------------------------------------------------- status


def test_status_all_offices_is_each_offices_report_with_its_own_rules(
    city: dict[str, Any],
) -> None:
    code, text = status(city, "--all-offices", "--format", "json")
    assert code == 0
    reports = json.loads(text)
    assert sorted(reports) == sorted(CODES)
    for office in ("xinyi", "wanhua"):
        one = json.loads(status(city, "--office", office, "--format", "json")[1])
        assert reports[office] == one
    assert reports["xinyi"]["kpis"]["CP1.1"]["target"] == 95  # offices/xinyi.yaml's own
    assert reports["songshan"]["kpis"]["CP1.1"]["target"] == 80  # the shared file's
    assert len({json.dumps(r["kpis"]) for r in reports.values()}) == 12  # each its own data


def test_status_all_offices_in_text_is_one_block_per_office(city: dict[str, Any]) -> None:
    code, text = status(city, "--all-offices")
    assert code == 0
    heads = [line for line in text.splitlines() if line.startswith("【")]
    assert len(heads) == 12
    assert "【臺北市信義區戶政事務所（xinyi）】" in heads


# ---------------------------------------------------------------- the city's digest


def digest(city: dict[str, Any], *target: str) -> tuple[int, str]:
    rules = ["--rules", str(city["rules"]), "--matcher", "python"]
    return run(["digest", "--city", "--db", city["db"], "--month", "2017-01", *rules, *target])


@pytest.fixture(scope="module")
def mail(city: dict[str, Any]) -> EmailMessage:
    path = city["root"] / "city.eml"
    code, text = digest(city, "--out", str(path))
    assert code == 0
    assert "已寫入市府月報" in text
    message = message_from_bytes(path.read_bytes(), policy=default)
    assert isinstance(message, EmailMessage)
    return message


def parts(mail: EmailMessage) -> tuple[str, str]:
    html, plain = mail.get_body(("html",)), mail.get_body(("plain",))
    assert html is not None
    assert plain is not None
    return str(html.get_content()), str(plain.get_content())


def test_the_city_digest_goes_to_the_city_headed_in_chinese(mail: EmailMessage) -> None:
    heading = "臺北市各戶政事務所106年度平衡計分卡KPI執行情形比較（106年1月）"
    assert str(mail["Subject"]) == f"【月報】{heading}"
    to = "臺北市政府民政局戶籍行政科 <household@civil-affairs.taipei.example.org>"
    assert str(mail["To"]) == to
    html, text = parts(mail)
    for body in (html, text):
        assert heading in body
        assert "內含公務資料，請勿轉寄" in body
        assert "資料截至" in body
    assert "106年1月31日23時59分" in text
    assert len(html.encode()) < 100_000


def test_no_id_number_is_left_unmasked(mail: EmailMessage) -> None:
    html, text = parts(mail)
    for body in (html, text, str(mail["Subject"])):
        assert PLANTED not in body
    assert mask_text(PLANTED) in html


def _cells(html: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(office, KPI) → (status words, background colour) of the HTML table."""
    found = re.findall(r'<td title="(\S+) (\S+)：(\S+)" style="[^"]*background-color:(#\w+);', html)
    return {(office, kpi): (words, colour) for office, kpi, words, colour in found}


def test_every_office_and_kpi_is_a_cell_coloured_by_its_status(
    mail: EmailMessage, city: dict[str, Any]
) -> None:
    reports = json.loads(status(city, "--all-offices", "--format", "json")[1])
    cells = _cells(parts(mail)[0])
    assert len(cells) == 12 * 10
    words = {"met": "達成", "on_track": "進度正常", "at_risk": "落後", "breached": "未達成"}
    for code, report in reports.items():
        short = _short(city, code)
        for kpi, result in report["kpis"].items():
            assert cells[(short, kpi)] == (words[result["status"]], COLOUR[result["status"]])
    assert {s for r in reports.values() for s in (k["status"] for k in r["kpis"].values())} >= {
        "met",
        "breached",
    }  # the table shows more than one colour


def _short(city: dict[str, Any], code: str) -> str:
    text = (city["rules"] / "offices" / f"{code}.yaml").read_text(encoding="utf-8")
    name = re.search(r"\n  name: (\S+)", text)
    assert name is not None
    return name[1].removeprefix("臺北市").removesuffix("戶政事務所")


def test_the_furthest_behind_and_the_overdue_cases_are_those_of_the_reports(
    mail: EmailMessage, city: dict[str, Any]
) -> None:
    """For the rate KPIs (behind = short of the target), the office with the largest gap;
    each office's overdue cases as its report lists them."""
    reports = json.loads(status(city, "--all-offices", "--format", "json")[1])
    text = parts(mail)[1]
    checked = 0
    for kpi in ("AC1.2", "AP1.1", "AP2.1", "BP1.1", "CC1.1", "CP1.1"):
        gaps = {}
        for code, report in reports.items():
            r = report["kpis"][kpi]
            if r["status"] in ("at_risk", "breached"):
                gap = r["target"] - r["value"]
                gaps[_short(city, code)] = -gap if r["direction"] == "lower" else gap
        line = next(s for s in text.splitlines() if s.startswith(f"{kpi} ") and "落後最多" in s)
        if not gaps:
            assert line.endswith("落後最多：無")
            continue
        worst = max(gaps.values())
        names = "、".join(n for n, g in gaps.items() if g == worst)
        assert f"落後最多：{names}（距目標值" in line
        checked += 1
    assert checked >= 2
    for code, report in reports.items():
        overdue = sum(1 for c in report["cases"] if c["state"] == "overdue")
        assert f"{_short(city, code)}：" in text
        block = text.split(f"\n{_short(city, code)}：", 1)[1]
        assert block.splitlines()[1].strip().startswith(f"逾期案件 {overdue}件")


def test_the_city_digest_through_a_real_smtp_server(city: dict[str, Any]) -> None:
    with SmtpServer() as server:
        code, text = digest(city, "--smtp", f"{server.host}:{server.port}")
        (received,) = server.received
    assert code == 0
    assert "已寄出市府月報" in text
    assert received.rcpt_tos == ("household@civil-affairs.taipei.example.org",)
    again = city["root"] / "again.eml"
    assert digest(city, "--out", str(again))[0] == 0
    first = received.message()
    resent = message_from_bytes(again.read_bytes(), policy=default)
    assert first["Message-ID"] == resent["Message-ID"]  # one message per city and month


def test_on_postgresql_with_two_workers_the_same_reports_and_the_same_mail(
    pg_url: str, city: dict[str, Any], mail: EmailMessage
) -> None:
    """The same month ingested into PostgreSQL by two worker processes (each loading the
    multi-office folder): the same reports, and byte for byte the same city digest."""
    rules = ["--rules", str(city["rules"]), "--matcher", "python"]
    events = str(city["root"] / "taipei.jsonl")
    code, text = run(["ingest", events, "--db", pg_url, *rules, "--workers", "2"])
    assert code == 0
    assert "  beitou：新增" in text
    directory = json.loads(status(city, "--all-offices", "--format", "json")[1])
    argv = ["status", "--db", pg_url, "--as-of", AS_OF, *rules, "--all-offices", "--format", "json"]
    assert json.loads(run(argv)[1]) == directory
    path = city["root"] / "pg.eml"
    argv = ["digest", "--city", "--db", pg_url, "--month", "2017-01", *rules, "--out", str(path)]
    assert run(argv)[0] == 0
    assert path.read_bytes() == (city["root"] / "city.eml").read_bytes()


@pytest.mark.parametrize(
    ("change", "code", "fragment"),
    [
        ({"--month": "2017-02"}, 2, "該月尚未結束"),
        ({"--db": "one.db"}, 2, "市府月報需要多戶所資料庫"),
        ({"--city": None}, 2, "請加 --city"),
        ({"--rules": str(EXAMPLE.parent.parent / "rules")}, 1, "未描述市府"),
    ],
)
def test_what_the_city_digest_refuses(
    city: dict[str, Any],
    change: dict[str, str | None],
    code: int,
    fragment: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = {"--city": "", "--db": city["db"], "--month": "2017-01", "--rules": str(EXAMPLE)}
    args.update({k: v for k, v in change.items() if v is not None})
    argv = ["digest", "--out", str(city["root"] / "refused.eml"), "--matcher", "python"]
    for key, value in args.items():
        if key not in change or change[key] is not None:
            argv += [key] if value == "" else [key, value]
    assert run(argv)[0] == code
    assert fragment in capsys.readouterr().err


# ---------------------------------------------------------------- as a browser draws it


def test_the_table_fits_the_mail_and_shows_its_colours(mail: EmailMessage, tmp_path: Path) -> None:
    """In headless Chromium at a desktop mail width: nothing overflows, every office's row
    is one line high, the cells carry their status colours; on a phone's width the frame
    still fits and the table scrolls sideways inside it (its figures not squeezed)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extra installs it
        no_browser("playwright is not installed")
    if not CHROMIUM.exists():
        no_browser(f"{CHROMIUM}: no Chromium (apt-get install chromium fonts-noto-cjk)")
    page_file = tmp_path / "city.html"
    page_file.write_text(parts(mail)[0], encoding="utf-8")
    seen = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        for width in (800, 480):
            page = browser.new_page(viewport={"width": width, "height": 1200})
            page.goto(page_file.as_uri())
            page.screenshot(path=str(tmp_path / f"city-{width}.png"), full_page=True)
            seen[width] = page.evaluate(LOOK)
        browser.close()
    wide, narrow = seen[800], seen[480]
    assert wide["page"] <= 800
    assert wide["table"] <= wide["box"]  # the whole table in view
    assert len(wide["rows"]) == 12
    assert max(wide["rows"]) < 1.6 * min(wide["rows"])  # no row wrapped onto two lines
    assert "rgb(255, 235, 233)" in wide["colours"]  # 未達成
    assert "rgb(218, 251, 225)" in wide["colours"]  # 達成
    assert narrow["page"] <= 480
    assert narrow["table"] > narrow["box"]  # scrolls inside its box
    assert max(narrow["rows"]) < 1.6 * min(narrow["rows"])


LOOK = """() => {
  const cells = [...document.querySelectorAll('td[title]')];
  const table = cells[0].closest('table');
  const rows = [...new Set(cells.map(td => td.parentElement))].map(tr => tr.offsetHeight);
  return {
    page: document.documentElement.scrollWidth,
    table: table.scrollWidth,
    box: table.parentElement.clientWidth,
    rows: rows,
    colours: [...new Set(cells.map(td => getComputedStyle(td).backgroundColor))],
  };
}"""
