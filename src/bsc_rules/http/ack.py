"""Acknowledging from the mail: ``GET /ack/<token>`` shows, ``POST`` acknowledges.

The link is its own authority (alerts/acklink.py: signed over office, alert key, state,
the instant the state began and the expiry). A ``GET`` never changes anything (mail
scanners open links): it shows the alert, masked, and a form asking for a name and a
note. Only the form's ``POST`` acknowledges, as ``bsc-rules ack --by NAME`` does. A
forged or expired link, an alert whose state ended or changed, or one already
acknowledged gets a page saying so, and nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from bsc_rules.alerts.acklink import AckClaim, AckLinkError, verify
from bsc_rules.alerts.table import AlertTable
from bsc_rules.calendar import to_us
from bsc_rules.clock import Clock
from bsc_rules.errors import UsageError
from bsc_rules.http.door import Door, by_office
from bsc_rules.notify.render import f_local_time
from bsc_rules.privacy import mask_text

MAX_FORM = 8 * 1024  # bytes: a name and a note
MAX_NOTE = 2000
STATE_NAMES = {
    "due_soon": "即將到期",
    "overdue": "已逾期",
    "at_risk": "落後",
    "breached": "未達成",
}
REFUSED = {
    "malformed": (400, "連結無效", "此確認連結不完整或已損毀，未作任何變更。"),
    "forged": (403, "連結無效", "此連結並非本系統核發，未作任何變更。"),
    "expired": (
        410,
        "連結已逾期",
        "確認連結自寄送起14日內有效，已逾期，未作任何變更。"
        "如仍需確認，請使用郵件所列之 bsc-rules ack 指令。",
    ),
}

_STYLE = """
body { margin: 0; background: #eef1f5; color: #1f2328;
       font-family: 'Noto Sans CJK TC', 'Microsoft JhengHei', sans-serif; }
main { max-width: 640px; margin: 24px auto; background: #fff; border: 1px solid #d0d7de; }
h1 { margin: 0; padding: 14px 20px; background: #0b4f8a; color: #fff; font-size: 19px; }
.body { padding: 16px 20px; line-height: 1.7; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 6px; text-align: left; }
th { background: #f6f8fa; width: 7em; }
label { display: block; margin: 8px 0 2px; font-weight: bold; }
input, textarea { width: 100%; padding: 6px; font-size: 15px; box-sizing: border-box; }
button { margin-top: 10px; padding: 8px 18px; background: #0b4f8a; color: #fff; border: 0;
         border-radius: 4px; font-size: 15px; font-weight: bold; }
"""
_PAGE = Environment(autoescape=select_autoescape(default=True)).from_string(
    """<!DOCTYPE html>
<html lang="zh-Hant"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}｜平衡計分卡KPI監控系統</title><style>{{ style }}</style></head>
<body><main><h1>{{ title }}</h1><div class="body">
<p>{{ message }}</p>
{% if alert %}<table>
<tr><th>警示代碼</th><td>{{ alert.key }}</td></tr>
<tr><th>狀態</th><td>{{ alert.state }}（自{{ alert.since }}起）</td></tr>
{% if alert.by %}<tr><th>確認</th><td>{{ alert.by }}，{{ alert.at }}：{{ alert.note }}</td></tr>
{% endif %}</table>{% endif %}
{% if form %}<form method="post">
<label for="name">姓名（職稱）</label><input id="name" name="name" required maxlength="60">
<label for="note">處理情形</label>
<textarea id="note" name="note" required maxlength="2000" rows="4"></textarea>
<button type="submit">確認此警示</button>
</form>{% endif %}
</div></main></body></html>"""
)


@dataclass(frozen=True, slots=True)
class _Shown:
    key: str
    state: str
    since: str
    by: str | None = None
    at: str | None = None
    note: str | None = None


def _page(status: int, title: str, message: str, **context: Any) -> HTMLResponse:
    html = _PAGE.render(title=title, message=mask_text(message), style=_STYLE, **context)
    return HTMLResponse(mask_text(html), status, headers={"Cache-Control": "no-store"})


def _when(us: int) -> str:
    return f_local_time(us)  # 106年3月23日0時: the mails' way of writing a time


class AckPages:
    """The two handlers over the doors (each office's database and lock), the secret and
    a clock."""

    def __init__(self, doors: Door | Iterable[Door], secret: bytes, clock: Clock) -> None:
        self.doors = by_office(doors)
        self.secret, self.clock = secret, clock

    def _check(self, token: str) -> tuple[AckClaim, Door] | HTMLResponse:
        try:
            claim = verify(token, self.secret, to_us(self.clock.now()))
        except AckLinkError as exc:
            status, title, message = REFUSED[exc.reason]
            return _page(status, title, message)
        door = self.doors.get(claim.office)
        if door is None:
            return _page(403, "連結無效", "此連結屬於其他戶政事務所，未作任何變更。")
        return claim, door

    def _standing(self, claim: AckClaim, door: Door) -> tuple[_Shown, bool] | HTMLResponse:
        """The alert as it stands, and whether it was acknowledged; or why the link no
        longer applies (read under the door's lock)."""
        with door.lock:
            door.heal()
            row = door.store.db.execute(
                "SELECT state, since_us, acknowledged, ack_by, ack_at_us, ack_note"
                " FROM alerts WHERE {office} AND key = ?",
                (claim.key,),
            ).fetchone()
        shown = _Shown(claim.key, STATE_NAMES.get(claim.state, claim.state), _when(claim.since))
        if row is None or row[0] != claim.state or row[1] != claim.since:
            message = "此警示之狀態已結束或已變更，無須再確認，未作任何變更。"
            return _page(409, "警示已結束", message, alert=shown)
        if row[2]:
            done = _Shown(shown.key, shown.state, shown.since, row[3] or "（未具名）",
                          _when(row[4]) if row[4] else "先前", row[5] or "")  # fmt: skip
            return done, True
        return shown, False

    async def show(self, request: Request) -> HTMLResponse:
        checked = self._check(request.path_params["token"])
        if isinstance(checked, HTMLResponse):
            return checked
        standing = await run_in_threadpool(self._standing, *checked)
        if isinstance(standing, HTMLResponse):
            return standing
        shown, acknowledged = standing
        if acknowledged:
            return _page(200, "警示已確認", "此警示已經確認，無須再次確認。", alert=shown)
        message = "請填寫姓名及處理情形後確認。確認後不再重複通知，並不列入逾期案件陳核。"
        return _page(200, "確認警示", message, alert=shown, form=True)

    async def acknowledge(self, request: Request) -> HTMLResponse:
        checked = self._check(request.path_params["token"])
        if isinstance(checked, HTMLResponse):
            return checked
        body = await request.body()
        if len(body) > MAX_FORM:
            return _page(413, "內容過長", "姓名及處理情形過長，未作任何變更。")
        form = parse_qs(body.decode("utf-8", "replace"))
        name = (form.get("name") or [""])[0].strip()
        note = (form.get("note") or [""])[0].strip()
        if not name or not note or len(name) > 60 or len(note) > MAX_NOTE:
            message = "請填寫姓名（60字內）及處理情形（2000字內），未作任何變更。"
            return _page(400, "資料不全", message)
        return await run_in_threadpool(self._acknowledge, *checked, name, note)

    def _acknowledge(self, claim: AckClaim, door: Door, name: str, note: str) -> HTMLResponse:
        # the check and the write at once: under the door's lock, in one transaction of the
        # office (its writers in turn: no tick of the service between them)
        with door.lock:
            door.heal()
            db = door.store.db
            with db.transaction():
                standing = self._standing(claim, door)
                if isinstance(standing, HTMLResponse):
                    return standing
                if standing[1]:
                    message = "此警示已經確認，未再變更。"
                    return _page(200, "警示已確認", message, alert=standing[0])
                now = to_us(self.clock.now())
                try:
                    done = AlertTable(db).acknowledge(claim.key, note, now, by=name)
                except UsageError:
                    return _page(409, "警示已結束", "此警示之狀態已結束，未作任何變更。")
        shown = _Shown(claim.key, STATE_NAMES.get(claim.state, claim.state), _when(claim.since),
                       done.by, _when(now), done.note)  # fmt: skip
        message = "已確認此警示：不再重複通知，並不列入逾期案件陳核。"
        return _page(200, "已確認", message, alert=shown)


def ack_routes(doors: Door | Iterable[Door], secret: bytes, clock: Clock) -> list[Route]:
    """The routes of acknowledging from the mail, for :func:`~bsc_rules.http.app.create_app`."""
    pages = AckPages(doors, secret, clock)
    return [
        Route("/ack/{token}", pages.show, methods=["GET"]),
        Route("/ack/{token}", pages.acknowledge, methods=["POST"]),
    ]
