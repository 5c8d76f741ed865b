"""The status page as a person sees it: a real uvicorn on a loopback port over a SQLite file
of four simulated months, opened in Debian's headless Chromium (Playwright, the system
browser: no browser download), with the token as HTTP Basic credentials. Screenshots go
to the test's tmp folder. In CI (CI=true) a missing browser fails instead of skipping."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from bsc_rules.calendar import TAIPEI
from bsc_rules.clock import FakeClock
from bsc_rules.dev.simulate import simulate
from bsc_rules.http.app import create_app
from bsc_rules.http.auth import TokenBook
from bsc_rules.http.door import Door
from bsc_rules.http.page import STATUS
from bsc_rules.privacy import mask_text
from bsc_rules.scorecard import Scorecard
from tests.conftest import event, no_browser
from tests.integration.test_http_door import start_server

CHROMIUM = Path(os.environ.get("BSC_RULES_CHROMIUM", "/usr/bin/chromium"))
TOKEN = "browser-datong-token"
PLANTED = "A123456789"  # a valid national id, as a (bad) case subject
UNTIL = "2017-05"  # four simulated months: January to April 2017
NOW = datetime(2017, 4, 30, 17, 0, tzinfo=TAIPEI)

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]


@dataclass
class Site:
    url: str
    tmp: Path


@pytest.fixture
def site(tmp_path: Path, rules: Any) -> Iterator[Site]:
    card = Scorecard.open(tmp_path / "bsc.db", rules, matcher="python")
    lines = []
    for ev in simulate(year=2017, seed=5, offices=("datong",)):
        if ev["time"] >= UNTIL:
            break
        lines.append(orjson.dumps(ev))
    planted = event("birth_subsidy.applied", "2017-01-16T09:00:00+08:00", PLANTED, {"amount": 1})
    card.ingest_lines([*lines, orjson.dumps(planted)])
    door = Door(card)
    app = create_app(door, TokenBook({"datong": (TOKEN,)}, None), FakeClock(NOW))
    server, thread, url = start_server(app)
    yield Site(url, tmp_path)
    server.should_exit = True
    thread.join(30)
    door.close()
    card.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        no_browser("playwright is not installed")
    if not CHROMIUM.exists():
        no_browser(f"{CHROMIUM}: no Chromium (apt-get install chromium fonts-noto-cjk)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


def _open(browser: Browser, site: Site, javascript: bool, width: int = 1280) -> Page:
    context = browser.new_context(
        http_credentials={"username": "office", "password": TOKEN},
        java_script_enabled=javascript,
        viewport={"width": width, "height": 900},
        locale="zh-TW",
    )
    page = context.new_page()
    answer = page.goto(f"{site.url}/status")
    assert answer is not None
    assert answer.status == 200
    return page


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _luminance(rgb: str) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(int(x)) for x in re.findall(r"\d+", rgb)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: str, bg: str) -> float:
    """The WCAG contrast ratio of two computed ``rgb(...)`` colours."""
    hi, lo = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_tiles_show_their_status_colours_with_readable_contrast(
    browser: Browser, site: Site
) -> None:
    page = _open(browser, site, javascript=True)
    page.screenshot(path=str(site.tmp / "status.png"), full_page=True)
    if os.environ.get("BSC_RULES_SCREENSHOT"):  # a copy to look at by hand
        page.screenshot(path=os.environ["BSC_RULES_SCREENSHOT"], full_page=True)
    tiles = page.locator(".tile")
    assert tiles.count() == 10
    by_label = {label: (fg, bg) for label, fg, bg in STATUS.values()}
    seen = set()
    for i in range(tiles.count()):
        tile = tiles.nth(i)
        label = tile.locator("strong").inner_text()
        fg, bg = by_label[label]
        seen.add(label)
        assert tile.evaluate("e => getComputedStyle(e).backgroundColor") == _rgb(bg)
        shown = tile.locator("strong").evaluate("e => getComputedStyle(e).color")
        assert shown == _rgb(fg)
        assert contrast(shown, _rgb(bg)) >= 4.5, label  # WCAG AA for normal text
    assert len(seen) >= 2  # four months in, not every KPI has the same status
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], "the page overflows sideways at 1280 px"


def test_overdue_cases_with_their_owner_section_and_no_unmasked_id(
    browser: Browser, site: Site
) -> None:
    page = _open(browser, site, javascript=False)
    text = page.locator("body").inner_text()
    assert PLANTED not in page.content()
    assert PLANTED not in text
    headers = page.locator("table").first.locator("th").all_inner_texts()
    assert headers == ["KPI", "案號", "狀態", "期限", "主責科室"]
    rows = page.locator("table").first.locator("tr")
    overdue = [
        rows.nth(i).locator("td").all_inner_texts()
        for i in range(1, rows.count())
        if rows.nth(i).locator("td").nth(2).inner_text() == "已逾期"
    ]
    assert overdue, "four months in, some cases are overdue"
    assert all(row[4].strip() for row in overdue)  # each names its owner section
    assert mask_text(PLANTED) in [row[1] for row in overdue]


def test_labels_in_traditional_chinese_without_javascript(browser: Browser, site: Site) -> None:
    page = _open(browser, site, javascript=False)
    page.screenshot(path=str(site.tmp / "status-nojs.png"), full_page=True)
    assert page.locator("html").get_attribute("lang") == "zh-Hant-TW"
    assert "平衡計分卡" in page.title()
    headings = page.locator("h2").all_inner_texts()
    assert headings[0] == "KPI"
    assert any(h.startswith("即將到期或已逾期之案件") for h in headings)
    assert any(h.startswith("未確認之警示") for h in headings)
    assert "郵件寄送佇列" in headings
    assert page.locator(".tile").count() == 10  # rendered by the server, not by scripts
    assert page.locator("script").count() == 0


def test_a_narrow_screen_does_not_overflow_sideways(browser: Browser, site: Site) -> None:
    page = _open(browser, site, javascript=True, width=390)
    page.screenshot(path=str(site.tmp / "status-narrow.png"), full_page=True)
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"the page is {scroll} px wide on a {inner} px screen"


READER = "browser-city-reader"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "taipei"


@pytest.fixture
def city(tmp_path: Path) -> Iterator[Site]:
    """Two offices of the Taipei example (Datong, Zhongshan) behind one app, each on its
    own SQLite file with its first four months, and a read token for the city."""
    from bsc_rules.rules.offices import load_deployment

    deployment = load_deployment(EXAMPLE)
    codes = ("datong", "zhongshan")
    lines: dict[str, list[bytes]] = {code: [] for code in codes}
    for ev in simulate(year=2017, seed=5, offices=codes):
        if ev["time"] >= UNTIL:
            break
        lines[ev["office"]].append(orjson.dumps(ev))
    cards = []
    for code in codes:
        card = Scorecard.open(tmp_path / f"{code}.db", deployment.offices[code], matcher="python")
        card.ingest_lines(lines[code])
        cards.append(card)
    doors = [Door(card) for card in cards]
    tokens = TokenBook({code: (f"token-{code}",) for code in codes}, READER)
    server, thread, url = start_server(create_app(doors, tokens, FakeClock(NOW)))
    yield Site(url, tmp_path)
    server.should_exit = True
    thread.join(30)
    for door, card in zip(doors, cards, strict=True):
        door.close()
        card.close()


def test_the_city_reader_goes_from_the_offices_list_to_an_office_s_page(
    browser: Browser, city: Site
) -> None:
    """With the read token, /status lists the offices; a click on one opens its page."""
    context = browser.new_context(
        http_credentials={"username": "city", "password": READER},
        java_script_enabled=False,
        viewport={"width": 1280, "height": 900},
        locale="zh-TW",
    )
    page = context.new_page()
    answer = page.goto(f"{city.url}/status")
    assert answer is not None
    assert answer.status == 200
    page.screenshot(path=str(city.tmp / "offices.png"), full_page=True)
    if os.environ.get("BSC_RULES_SCREENSHOT_CITY"):  # a copy to look at by hand
        page.screenshot(path=os.environ["BSC_RULES_SCREENSHOT_CITY"], full_page=True)
    assert page.locator("h1").inner_text().startswith("各戶政事務所")
    headers = page.locator("th").all_inner_texts()
    assert headers[0] == "戶政事務所"
    assert headers[-1] == "即將到期或已逾期案件"
    links = page.locator("td a").all_inner_texts()
    assert sorted(links) == ["臺北市中山區戶政事務所", "臺北市大同區戶政事務所"]
    page.get_by_role("link", name="臺北市中山區戶政事務所").click()
    assert page.url == f"{city.url}/offices/zhongshan/status"
    assert page.locator("h1").inner_text().startswith("臺北市中山區戶政事務所")
    assert page.locator(".tile").count() == 10
    context.close()
