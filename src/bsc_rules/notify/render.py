"""Render alerts and the monthly digest into mail (spec/notifications.md, "Messages").

Templates are Jinja2 files in one folder, by default the project's ``notifications/``
beside ``src/``; the office edits them without touching code. Per kind there is
``KIND.txt.j2`` and ``KIND.html.j2``; the subject lines of all kinds are in
``subjects.txt.j2``. Only that folder is searched (no ``..``, no other loader), templates
run sandboxed with :class:`jinja2.StrictUndefined`, and ``.html`` templates autoescape.

Personal data: every string taken from a notice is masked before a template sees it, and
every rendered string (subject, text, HTML) is masked again as a last line of defence.
:func:`to_bytes` makes the RFC 5322 message; no CR or LF reaches a header.
"""

from __future__ import annotations

import base64
import hashlib
import re
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
)
from jinja2 import select_autoescape as _select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from bsc_rules.calendar import (
    TAIPEI,
    US_PER_DAY,
    days_late,
    from_us,
    last_allowed_day,
    local_date,
    roc_date,
    roc_slash,
    roc_year,
    year_of,
)
from bsc_rules.errors import BscRulesError, UsageError
from bsc_rules.notify.charts import trend_png
from bsc_rules.notify.notices import DailyList, DigestData, DigestRow, KpiInfo, Mail
from bsc_rules.privacy import mask_text

__all__ = [
    "DEFAULT_TEMPLATES",
    "KINDS",
    "RenderError",
    "environment",
    "inline_images",
    "one_line",
    "render_digest",
    "render_list",
    "strategy_map",
    "to_bytes",
]

# The shipped templates: package data (in a checkout, a symlink to the repo's notifications/).
DEFAULT_TEMPLATES = Path(str(files("bsc_rules") / "data" / "notifications")).resolve()
KINDS = ("morning", "director", "digest")
UNIT_SUFFIX = {"percent": "%", "count": "件", "pages": "頁"}
_T = TypeVar("_T")


class RenderError(BscRulesError):
    """A notification template is missing, invalid or uses a value it was not given."""


# --- filters ------------------------------------------------------------------------


def _day(value: int | date) -> date:
    """A calendar date from an instant (µs, read in Asia/Taipei) or a date."""
    if isinstance(value, datetime):
        return value.astimezone(TAIPEI).date()
    return local_date(value) if isinstance(value, int) else value


def f_roc_date(value: int | date) -> str:
    """``106年3月22日``."""
    return roc_date(_day(value))


def f_roc_slash(value: int | date) -> str:
    """``106/03/22``."""
    return roc_slash(_day(value))


def f_due_day(due: int, style: Literal["text", "slash"] = "text") -> str:
    """The last allowed day of an exclusive due instant: 2017-03-23T00:00 → 106年3月22日."""
    day = last_allowed_day(due)
    return roc_slash(day) if style == "slash" else roc_date(day)


def f_local_time(us: int, style: Literal["text", "slash"] = "text") -> str:
    """``106年3月22日8時`` in prose (``106/03/22 08:00`` in tables), Asia/Taipei."""
    moment = from_us(us)
    if style == "slash":  # tables: 106/03/24 10:00
        return f"{roc_slash(moment.date())} {moment:%H:%M}"
    minutes = f"{moment.minute}分" if moment.minute else ""  # prose: 106年3月24日10時30分
    return f"{roc_date(moment.date())}{moment.hour}時{minutes}"


def f_number(value: float | None, unit: str = "") -> str:
    """``99.95%``, ``379件``, ``1,250頁``; ``—`` without a value."""
    if value is None:
        return "—"
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return ("0" if text == "-0" else text) + UNIT_SUFFIX.get(unit, unit)


def _meets(value: float, target: float, direction: str) -> bool:
    return value <= target if direction == "lower" else value >= target


def f_measured(value: float | None, target: float | None, kpi: KpiInfo) -> str:
    """A KPI's value as :func:`f_number` shows it, but never rounded onto its target: a
    value that misses the target is cut towards the worse side (99.996 against ≥100 shows
    99.99; 0.004 against ≤0 shows 0.01), so that the figure agrees with the status."""
    text = f_number(value, kpi.unit)
    if value is None or target is None or _meets(value, target, kpi.direction):
        return text
    if not _meets(float(f"{value:.2f}"), target, kpi.direction):
        return text
    exact = Decimal(repr(value))
    rounding = ROUND_CEILING if kpi.direction == "lower" else ROUND_FLOOR
    return f_number(float(exact.quantize(Decimal("0.01"), rounding=rounding)), kpi.unit)


def f_comparator(direction: str) -> str:
    """``≥`` when higher is better, ``≤`` when lower is."""
    return "≤" if direction == "lower" else "≥"


def f_goal(target: float | None, kpi: KpiInfo) -> str:
    """The target with its comparator and unit, ``≥80%`` / ``≤0%``; 未訂定 without one."""
    if target is None:
        return "未訂定"
    return f_comparator(kpi.direction) + f_number(target, kpi.unit)


def f_days_since(due: int, as_of: int) -> int:
    """Days overdue at ``as_of``: calendar dates in Asia/Taipei from the last allowed day
    (last allowed day 106/03/22 → 1 on 106/03/23)."""
    return days_late(due, local_date(as_of)) if as_of >= due else 0


def f_recipient(address: str) -> str:
    """The display name of ``名稱 <address>``, or the address itself."""
    name, _, rest = address.partition("<")
    return name.strip().strip('"') or rest.rstrip(">").strip()


def f_quoted(text: str) -> str:
    """``text`` in 「」, quotes inside turned to 『』: 「打造『樂婚、願生、能養』幸福臺北」."""
    return "「" + text.replace("「", "『").replace("」", "』") + "」"


def f_money(amount: int) -> str:
    """``38400`` → ``新臺幣38,400元``."""
    return f"新臺幣{amount:,}元"


def f_groupby_objective(
    rows: Iterable[DigestRow],
) -> list[tuple[tuple[str, str], list[DigestRow]]]:
    """Rows grouped under their strategic objective (code, name), in order of appearance."""
    groups: dict[tuple[str, str], list[DigestRow]] = {}
    for row in rows:
        groups.setdefault((row.kpi.objective_code, row.kpi.objective_name), []).append(row)
    return list(groups.items())


def f_mask(value: object) -> str:
    """Any value as text with ID numbers masked."""
    return mask_text(str(value))


FILTERS = {
    "roc_date": f_roc_date,
    "roc_slash": f_roc_slash,
    "due_day": f_due_day,
    "local_time": f_local_time,
    "number": f_number,
    "measured": f_measured,
    "comparator": f_comparator,
    "goal": f_goal,
    "days_since": f_days_since,
    "mask": f_mask,
    "recipient": f_recipient,
    "money": f_money,
    "quoted": f_quoted,
    "groupby_objective": f_groupby_objective,
}


# --- environment and rendering ---------------------------------------------------------


@lru_cache(maxsize=8)
def _environment(folder: Path) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(folder), encoding="utf-8"),
        autoescape=_select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    return env


def environment(templates: Path | None = None) -> SandboxedEnvironment:
    """The Jinja2 environment over ``templates`` (default: the shipped notifications/)."""
    folder = (templates or DEFAULT_TEMPLATES).resolve()
    if not folder.is_dir():
        msg = f"notification templates folder {folder} not found (expected *.txt.j2, *.html.j2)"
        raise RenderError(msg)
    return _environment(folder)


def _where(exc: BaseException, env: SandboxedEnvironment, name: str) -> str:
    """``path, line N`` of the template line that failed, as far as known."""
    if isinstance(exc, TemplateSyntaxError) and exc.lineno:
        return f"{exc.filename or exc.name or name}, line {exc.lineno}"
    loader = cast(FileSystemLoader, env.loader)
    roots = tuple(str(Path(p)) for p in loader.searchpath)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith(roots):
            return f"{frame.filename}, line {frame.lineno}"
    return f"{roots[0]}/{name}"


def _render(env: SandboxedEnvironment, name: str, context: Mapping[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except TemplateNotFound as exc:
        folder = cast(FileSystemLoader, env.loader).searchpath[0]
        msg = (
            f"template {exc.name!r} not found in the notification templates folder {folder}"
            f" (needed by {name}; only files inside that folder can be used)"
        )
        raise RenderError(msg) from exc
    except TemplateError as exc:
        detail = exc.message or type(exc).__name__
        msg = f"template {name} ({_where(exc, env, name)}): {detail}"
        raise RenderError(msg) from exc


def _masked(value: _T) -> _T:
    """``value`` with every string in it (dataclass fields, tuples, dicts) masked."""
    if isinstance(value, str):
        return cast(_T, mask_text(value))
    if is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _masked(getattr(value, f.name)) for f in fields(value)}
        return cast(_T, replace(value, **changes))
    if isinstance(value, tuple):
        return cast(_T, tuple(_masked(v) for v in value))
    if isinstance(value, dict):
        return cast(_T, {_masked(k): _masked(v) for k, v in value.items()})
    return value


def one_line(text: str) -> str:
    """Header-safe text: control characters (CR, LF, TAB, …) become single spaces."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]", " ", text).split())


def _compose(
    env: SandboxedEnvironment,
    kind: str,
    context: dict[str, Any],
    envelope: dict[str, Any],
    images: tuple[tuple[str, bytes], ...] = (),
) -> Mail:
    """Subject first (the bodies show it), then the text and HTML parts; all masked."""
    subject = mask_text(one_line(_render(env, "subjects.txt.j2", context)))
    context = {**context, "mail_subject": subject}
    text = mask_text(_render(env, f"{kind}.txt.j2", context))
    html = mask_text(_render(env, f"{kind}.html.j2", context))
    return Mail(subject=subject, text=text, html=html, images=images, **envelope)


def _envelope(
    sender: str, to: Iterable[str], message_id: str, date: int, headers: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    return {
        "sender": mask_text(one_line(sender)),
        "to": tuple(mask_text(one_line(t)) for t in to),
        "message_id": mask_text(one_line(message_id)),
        "date": date,
        "headers": tuple((name, mask_text(one_line(value))) for name, value in headers),
    }


def _ack_command(row_key: str, data: DailyList) -> str:
    office = f" --office {data.office_code}" if data.multi_office else ""
    return f"bsc-rules ack {row_key}{office} --by 姓名 --note 處理情形"


def _list_context(d: DailyList, date: int) -> dict[str, Any]:
    """What a morning mail or director's list template sees (``d`` already masked)."""
    rows = (*d.overdue, *d.due_soon)
    return {
        "kind": d.kind,
        "office": d.office_name,
        "data": d,
        "audience": d.audience,
        "audience_name": d.audience_name,
        "as_of": d.date,
        "day": local_date(d.date),
        "year": roc_year(year_of(d.date)),
        "ack_commands": {
            key: _ack_command(key, d) for key in [r.key for r in rows] + [k.key for k in d.kpis]
        },
        "severity": _severity(d),
        "counts": {
            "overdue": len(d.overdue),
            "due_soon": len(d.due_soon),
            "closed": len(d.closed),
            "kpi": sum(k.change in ("began", "repeat") for k in d.kpis),
            "kpi_ended": sum(k.change in ("ended", "year_end") for k in d.kpis),
        },
        "reply_by": d.reply_by or local_date(d.date + US_PER_DAY),  # a date, not 「本週內」
        "date": date,
    }


def _severity(d: DailyList) -> str:
    """The subject's prefix: the most severe part present (警示 over 預警 over 已解除)."""
    live = [k for k in d.kpis if k.change in ("began", "repeat")]
    if d.overdue or any(k.state == "breached" for k in live):
        return "警示"
    if d.due_soon or live or d.undelivered:
        return "預警"
    return "已解除"


def render_list(
    data: DailyList,
    *,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...] = (),
    message_id: str,
    date: int,
    templates: Path | None = None,
) -> Mail:
    """A morning mail or the director's list as mail (subject, plain text and HTML)."""
    env = environment(templates)
    context = _list_context(_masked(data), date)
    headers = [("Auto-Submitted", "auto-generated"), ("X-BSC-Kind", data.kind)]
    envelope = _envelope(sender, to, message_id, date, headers)
    envelope["cc"] = tuple(mask_text(one_line(c)) for c in cc)
    return _compose(env, data.kind, context, envelope)


# --- digest --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapRow:
    """One perspective of the strategy map: a cell per theme, or one spanning cell."""

    code: str
    name: str
    common: bool
    cells: tuple[tuple[DigestRow, ...], ...]


def strategy_map(digest: DigestData) -> tuple[list[tuple[str, str]], list[MapRow]]:
    """Themes (columns) and perspective rows laid out like the seed's strategy map.

    A theme whose name says 共通 (common, e.g. L 學習成長（共通項目）) and whose code is a
    perspective's gets that perspective's row to itself, spanning every column.
    """
    themes = dict(digest.themes) or {r.kpi.theme: r.kpi.theme_name for r in digest.rows}
    persp = dict(digest.perspectives) or {
        r.kpi.perspective: r.kpi.perspective_name for r in digest.rows
    }
    common = {code for code, name in themes.items() if "共通" in name and code in persp}
    columns = [(code, name) for code, name in themes.items() if code not in common]
    rows = []
    for code, name in persp.items():
        mine = tuple(r for r in digest.rows if r.kpi.perspective == code)
        if code in common:
            rows.append(MapRow(code, name, True, (mine,)))
            continue
        cells = tuple(tuple(r for r in mine if r.kpi.theme == t) for t, _ in columns)
        rows.append(MapRow(code, name, False, cells))
    return columns, rows


@dataclass(frozen=True, slots=True)
class SentCounts:
    """The month's notifications counted per kind and section (表四), not listed one by one:
    the alerts the messages listed (an alert listed every morning counts once)."""

    kinds: list[str]
    sections: list[str]
    cells: dict[tuple[str, str], int]  # (kind, section) → alerts listed to that section
    open: dict[tuple[str, str], int]  # (kind, section) → alerts among them unacknowledged
    totals: dict[str, int]  # kind → alerts listed
    messages: int = 0  # the messages that listed them


_KIND_ORDER = ("overdue", "due_soon", "breached", "at_risk", "resolved")


def sent_counts(digest: DigestData) -> SentCounts:
    """Count the alerts the month's messages listed, by kind and by receiving section,
    with those still unacknowledged; sections in the office's order."""
    cells: dict[tuple[str, str], set[str]] = {}
    still: dict[tuple[str, str], set[str]] = {}
    totals: dict[str, set[str]] = {}
    seen: list[str] = []
    for line in digest.notified:
        key = line.alert_key or line.message_id
        totals.setdefault(line.kind, set()).add(key)
        for section in line.sections:
            cells.setdefault((line.kind, section), set()).add(key)
            if not line.acknowledged and line.alert_key is not None:
                still.setdefault((line.kind, section), set()).add(key)
            if section not in seen:
                seen.append(section)
    order = {name: i for i, name in enumerate(digest.section_names)}
    sections = sorted(seen, key=lambda s: (order.get(s, len(order)), seen.index(s)))
    kind_order = {k: i for i, k in enumerate(_KIND_ORDER)}
    kinds = sorted(totals, key=lambda k: (kind_order.get(k, len(kind_order)), k))
    return SentCounts(
        kinds,
        sections,
        {k: len(v) for k, v in cells.items()},
        {k: len(v) for k, v in still.items()},
        {k: len(v) for k, v in totals.items()},
        len({line.message_id for line in digest.notified}),
    )


def chart_cid(kpi_id: str) -> str:
    """The ``cid:`` name of a KPI's trend chart."""
    return f"chart-{re.sub(r'[^A-Za-z0-9.-]', '-', kpi_id)}@bsc-rules"


def render_digest(
    digest: DigestData,
    *,
    sender: str,
    to: tuple[str, ...],
    message_id: str,
    date: int,
    templates: Path | None = None,
) -> Mail:
    """The monthly compliance digest as mail, with a trend chart per KPI inline."""
    env = environment(templates)
    d = _masked(digest)
    images = tuple(
        (chart_cid(r.kpi.id), trend_png(r.trend, status=r.status, unit=r.kpi.unit)) for r in d.rows
    )
    columns, map_rows = strategy_map(d)
    context: dict[str, Any] = {
        "kind": "digest",
        "office": d.office_name,
        "digest": d,
        "rows": d.rows,
        "year": roc_year(d.year),
        "month": d.month,
        "as_of": d.as_of,
        "audience": d.audience,
        "audience_name": d.audience_name,
        "months": list(range(1, d.month + 1)),
        "map_columns": columns,
        "map_rows": map_rows,
        "charts": {r.kpi.id: chart_cid(r.kpi.id) for r in d.rows},
        "counts": Counter(r.status for r in d.rows),
        "baseline_label": f"{roc_year(d.year - 3)}–{roc_year(d.year - 1)}年",
        "sent_counts": sent_counts(d),
        "date": date,
    }
    headers = [("Auto-Submitted", "auto-generated"), ("X-BSC-Kind", "digest")]
    return _compose(
        env, "digest", context, _envelope(sender, to, message_id, date, headers), images
    )


# --- RFC 5322 ------------------------------------------------------------------------

_CORE_HEADERS = {"from", "to", "cc", "subject", "date", "message-id", "mime-version"}
_HEADER_NAME = re.compile(r"[!-9;-~]+")


def _extra_headers(mail: Mail) -> list[tuple[str, str]]:
    """``mail.headers`` checked: a field name is printable ASCII without a colon."""
    extra = []
    for name, value in mail.headers:
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _CORE_HEADERS:
            msg = f"mail header name {name!r} is not allowed (a field name other than From/To/…)"
            raise UsageError(msg)
        extra.append((name, _header(value)))
    return extra


def _header(text: str) -> str:
    """A header value: one line, ID numbers masked."""
    return mask_text(one_line(text))


def _message_id(text: str) -> str:
    value = _header(text).replace(" ", "")
    return value if value.startswith("<") else f"<{value}>"


def _fix_boundaries(message: EmailMessage, seed: str) -> None:
    """MIME boundaries derived from the Message-ID, so equal mail gives equal bytes."""
    digest = hashlib.sha256(seed.encode()).hexdigest()[:24]
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            part.set_boundary(f"==_bsc_{index}_{digest}")


def to_bytes(mail: Mail) -> bytes:
    """The mail as RFC 5322 bytes: multipart/alternative (text, then HTML + inline PNGs)."""
    message = EmailMessage(policy=SMTP)
    message["MIME-Version"] = "1.0"
    message["Message-ID"] = _message_id(mail.message_id)
    message["Date"] = format_datetime(from_us(mail.date))
    message["From"] = _header(mail.sender)
    if mail.to:
        message["To"] = ", ".join(_header(t) for t in mail.to)
    if mail.cc:
        message["Cc"] = ", ".join(_header(c) for c in mail.cc)
    message["Subject"] = _header(mail.subject)
    for name, value in _extra_headers(mail):
        message[name] = value
    message.set_content(mask_text(mail.text), subtype="plain", charset="utf-8", cte="base64")
    message.add_alternative(mask_text(mail.html), subtype="html", charset="utf-8", cte="base64")
    html = list(message.iter_parts())[1]
    for name, data in mail.images:
        cid = one_line(name).replace(" ", "")
        filename = cid.split("@", 1)[0] + ".png"
        html.add_related(
            data, "image", "png", cid=f"<{cid}>", filename=filename, disposition="inline"
        )
    _fix_boundaries(message, message["Message-ID"])
    return message.as_bytes(policy=SMTP)


def inline_images(html: str, images: Iterable[tuple[str, bytes]]) -> str:
    """``html`` with ``cid:`` references replaced by ``data:`` URIs (browser previews)."""
    for name, data in images:
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        html = html.replace(f"cid:{name}", uri)
    return html


def previewable_html(message: EmailMessage) -> str:
    """A received message's HTML part with its inline images as ``data:`` URIs, so that a
    browser opening the file shows the charts (not bare ``cid:`` references)."""
    html = message.get_body(("html",))
    if html is None:
        return ""
    images: list[tuple[str, bytes]] = []
    for part in message.walk():
        data = part.get_payload(decode=True)
        cid = part["Content-ID"]
        if part.get_content_type() == "image/png" and cid and isinstance(data, bytes):
            images.append((str(cid).strip("<>"), data))
    return inline_images(str(html.get_content()), images)


# --- other kinds (the city's digest) -------------------------------------------------


def render_named(name: str, context: Mapping[str, Any], templates: Path | None = None) -> str:
    """The template ``name`` of the templates folder rendered with ``context``, masked;
    for mail outside :data:`KINDS` (``city.*.j2``, bsc_rules.notify.city), with the same
    filters, sandbox and located errors."""
    return mask_text(_render(environment(templates), name, context))
