"""Acknowledging from the mail on a real uvicorn server: a GET shows and changes nothing,
the form's POST acknowledges with a name and a note; forged, expired, ended and already
acknowledged links say so and change nothing (service.md, notifications.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bsc_rules.alerts.acklink import VALID_FOR, AckClaim, sign
from bsc_rules.alerts.lifecycle import AlertRecord
from bsc_rules.alerts.table import AlertTable
from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.clock import FakeClock
from bsc_rules.http.ack import ack_routes
from bsc_rules.http.app import create_app
from bsc_rules.http.auth import TokenBook
from bsc_rules.http.door import Door
from bsc_rules.scorecard import Scorecard
from bsc_rules.store.db import transaction
from tests.integration.test_http_door import start_server

SECRET = b"office-secret"
KEY = "case:BP1.1:A123456789"  # a case id shaped like an ID number: shown masked
SENT = datetime(2017, 3, 24, 8, 0, tzinfo=TAIPEI)
SINCE = to_us(datetime(2017, 3, 23, 0, 0, tzinfo=TAIPEI))


@dataclass
class Site:
    url: str
    door: Door
    clock: FakeClock

    def link(self, secret: bytes = SECRET, **change: Any) -> str:
        fields = {"office": "datong", "key": KEY, "state": "overdue", "since": SINCE,
                  "expires": to_us(SENT) + VALID_FOR} | change  # fmt: skip
        return f"{self.url}/ack/{sign(AckClaim(**fields), secret)}"

    def row(self) -> tuple[Any, ...]:
        with self.door.lock:
            return tuple(
                self.door.store.connection.execute(
                    "SELECT state, acknowledged, ack_by, ack_note FROM alerts WHERE key = ?",
                    (KEY,),
                ).fetchone()
            )


@pytest.fixture
def site(tmp_path: Path, rules: Any) -> Iterator[Site]:
    card = Scorecard.open(tmp_path / "bsc.db", rules, matcher="python")
    table = AlertTable(card.store.connection)  # type: ignore[attr-defined]
    with transaction(card.store.connection):  # type: ignore[attr-defined]
        table.save(AlertRecord(KEY, "overdue", SINCE, 1, frozenset({"owner"})))
    door = Door(card, queue_size=4)
    clock = FakeClock(SENT + timedelta(hours=2))
    app = create_app(door, TokenBook({"datong": ("tok",)}, None), clock,
                     extra_routes=ack_routes(door, SECRET, clock))  # fmt: skip
    server, thread, url = start_server(app)
    yield Site(url, door, clock)
    server.should_exit = True
    thread.join(30)
    door.close()
    card.close()


def test_get_shows_the_alert_masked_and_changes_nothing(site: Site) -> None:
    page = httpx.get(site.link())
    assert page.status_code == 200
    assert "確認警示" in page.text
    assert "A12345****" in page.text
    assert "A123456789" not in page.text
    assert '<form method="post">' in page.text
    assert site.row() == ("overdue", 0, None, None)  # a mail scanner opening it acks nothing


def test_the_form_acknowledges_once_with_who_and_the_note(site: Site) -> None:
    done = httpx.post(site.link(), data={"name": "戶籍登記課 林課員", "note": "已聯繫申請人補件"})
    assert done.status_code == 200
    assert "已確認此警示" in done.text
    assert site.row() == ("overdue", 1, "戶籍登記課 林課員", "已聯繫申請人補件")
    again = httpx.post(site.link(), data={"name": "主任", "note": "再確認"})
    assert "已經確認" in again.text
    assert "戶籍登記課 林課員" in again.text
    assert site.row()[2:] == ("戶籍登記課 林課員", "已聯繫申請人補件")  # unchanged
    shown = httpx.get(site.link())
    assert "已經確認" in shown.text
    assert "<form" not in shown.text


@pytest.mark.parametrize(
    ("change", "secret", "status", "words"),
    [
        pytest.param({}, b"another-secret", 403, "並非本系統核發", id="forged"),
        pytest.param({"expires": to_us(SENT)}, SECRET, 410, "已逾期", id="expired"),
        pytest.param({"office": "zhongshan"}, SECRET, 403, "其他戶政事務所", id="other-office"),
        pytest.param({"state": "due_soon"}, SECRET, 409, "已結束或已變更", id="state-ended"),
        pytest.param({"since": SINCE - 1}, SECRET, 409, "已結束或已變更", id="earlier-state"),
    ],
)
def test_refused_links_say_why_and_change_nothing(
    site: Site, change: dict[str, Any], secret: bytes, status: int, words: str
) -> None:
    for answer in (
        httpx.get(site.link(secret, **change)),
        httpx.post(site.link(secret, **change), data={"name": "林課員", "note": "處理中"}),
    ):
        assert answer.status_code == status
        assert words in answer.text
    assert site.row() == ("overdue", 0, None, None)


def test_a_damaged_link_or_an_empty_form_changes_nothing(site: Site) -> None:
    assert httpx.get(f"{site.url}/ack/not-a-token").status_code == 400
    empty = httpx.post(site.link(), data={"name": "林課員", "note": "  "})
    assert empty.status_code == 400
    assert "處理情形" in empty.text
    too_long = httpx.post(site.link(), data={"name": "林課員", "note": "x" * 9000})
    assert too_long.status_code == 413
    assert site.row() == ("overdue", 0, None, None)


# ---------------------------------------------------------------- in a real browser


def test_a_person_acknowledges_from_the_link_in_chromium(site: Site, tmp_path: Path) -> None:
    """Headless Chromium (JavaScript off, as some mail clients' browsers are): open the link,
    see the alert masked and the form, fill it in and submit; the page says it is done, the
    alert is acknowledged with the name and note typed, and opening the link again says so."""
    from tests.conftest import no_browser
    from tests.integration.test_http_browser import CHROMIUM

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("playwright is not installed")
    if not CHROMIUM.exists():
        no_browser(f"{CHROMIUM}: no Chromium (apt-get install chromium fonts-noto-cjk)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_context(java_script_enabled=False, locale="zh-TW").new_page()
        answer = page.goto(site.link())
        assert answer is not None
        assert answer.status == 200
        assert "A12345****" in page.inner_text("body")
        assert site.row() == ("overdue", 0, None, None)  # opening it changed nothing
        page.fill("#name", "戶籍登記課 林課員")
        page.fill("#note", "已電請申請人補正帳戶資料")
        page.screenshot(path=str(tmp_path / "ack-form.png"), full_page=True)
        page.click("button[type=submit]")
        assert "已確認此警示" in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "ack-done.png"), full_page=True)
        page.goto(site.link())
        assert "已經確認" in page.inner_text("body")
        assert page.locator("form").count() == 0
        browser.close()
    assert site.row() == ("overdue", 1, "戶籍登記課 林課員", "已電請申請人補正帳戶資料")
    if shots := os.environ.get("BSC_RULES_SCREENSHOT"):
        for name in ("ack-form.png", "ack-done.png"):
            (Path(shots) / name).write_bytes((tmp_path / name).read_bytes())
