"""Sample notifications for previews: ``bsc-rules render KIND --example``.

The data (Datong, 2017) is in ``notifications/examples.yaml``, editable by the office
alongside the templates it previews.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from bsc_rules.calendar import TAIPEI, days_late, local_date, to_us, year_of
from bsc_rules.errors import UsageError
from bsc_rules.notify.digest import history_of, plans_of
from bsc_rules.notify.notices import (
    AckLine,
    CaseLine,
    CaseRow,
    DailyList,
    DigestData,
    DigestRow,
    KpiInfo,
    KpiRow,
    Mail,
    NoteLine,
    SentLine,
    TrendPoint,
)
from bsc_rules.notify.render import (
    DEFAULT_TEMPLATES,
    KINDS,
    RenderError,
    inline_images,
    render_digest,
    render_list,
)
from bsc_rules.rules.ruleset import RuleSet, load_ruleset


def preview(kind: str, part: Literal["text", "html"]) -> str:
    """The example of ``kind`` as plain text, or as HTML with its images inlined."""
    mail = example(kind)
    return mail.text if part == "text" else inline_images(mail.html, mail.images)


def example(kind: str, templates: Path | None = None) -> Mail:
    """A realistic example mail of ``kind`` (Datong, 2017) from notifications/examples.yaml."""
    if kind not in KINDS:
        msg = f"unknown notification kind {kind!r}; expected one of {', '.join(KINDS)}"
        raise UsageError(msg)
    data = _example_data()
    recipients = data["recipients"]
    spec = data["digest"] if kind == "digest" else data["lists"][kind]
    envelope: dict[str, Any] = {"sender": data["sender"], "templates": templates}
    if kind == "digest":
        digest = _example_digest(data)
        envelope["message_id"] = f"<digest.{digest.year}-{digest.month:02d}@{data['mail_domain']}>"
        to = tuple(recipients[r] for r in spec["to"])
        return render_digest(digest, date=_at(spec["sent"]), to=to, **envelope)
    daily = _example_list(data, kind, spec)
    envelope["message_id"] = f"<{kind}.{spec['sent'][:10]}@{data['mail_domain']}>"
    return render_list(
        daily,
        to=(recipients[spec["audience"]],),
        cc=tuple(recipients[c] for c in spec.get("cc", [])),
        date=daily.date,
        **envelope,
    )


# --- example data --------------------------------------------------------------------


@cache
def _shipped_rules() -> RuleSet:
    """The shipped rule set, loaded once: the examples' history, plans and KPI kinds."""
    return load_ruleset()


def _example_data() -> dict[str, Any]:
    path = DEFAULT_TEMPLATES / "examples.yaml"
    try:
        return cast(dict[str, Any], yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        msg = f"cannot read the example data {path}: {exc}"
        raise RenderError(msg) from exc


def _at(text: str) -> int:
    """An instant from local time text such as ``2017-05-31T08:00`` (Asia/Taipei)."""
    return to_us(datetime.fromisoformat(text).replace(tzinfo=TAIPEI))


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def _example_kpis(data: dict[str, Any]) -> dict[str, KpiInfo]:
    kpis, kinds = {}, {k: v.spec.kind for k, v in load_ruleset().kpis.items()}
    for kid, (name, obj, obj_name, theme, persp, owner, unit, direction, *label) in data[
        "kpis"
    ].items():
        kpis[kid] = KpiInfo(
            kid, name, obj, obj_name, theme, data["themes"][theme], persp,
            data["perspectives"][persp], owner, data["sections"][owner], unit, direction,
            label=label[0] if label else "", kind=kinds.get(kid, "rate"),
        )  # fmt: skip
    return kpis


def _ack(spec: list[str] | None) -> AckLine | None:
    return None if spec is None else AckLine(spec[0], _at(spec[1]), spec[2])


def _example_case(kpis: dict[str, KpiInfo], spec: dict[str, Any], sent: int) -> CaseRow:
    due, closed = _at(spec["due"]), _at(spec["closed"]) if "closed" in spec else None
    state: Literal["due_soon", "overdue"] = spec.get("state") or (
        "overdue" if sent >= due else "due_soon"
    )
    late_on = local_date(closed if closed is not None else sent)
    late = days_late(due, late_on) if (closed or sent) >= due else 0
    return CaseRow(
        f"case:{spec['kpi']}:{spec['subject']}", kpis[spec["kpi"]], spec["subject"], state,
        due, _at(spec["opened"]), closed=closed, new=spec.get("new", False),
        days_overdue=late, working_days=spec.get("working_days", 0), ack=_ack(spec.get("ack")),
        year=year_of(_at(spec["opened"])),
    )  # fmt: skip


def _example_list(data: dict[str, Any], kind: str, spec: dict[str, Any]) -> DailyList:
    kpis, sent = _example_kpis(data), _at(spec["sent"])
    year = year_of(sent)
    return DailyList(
        kind=kind,
        office_name=data["office"],
        office_code="datong",
        audience=spec["audience"],
        audience_name=data["sections"][spec["audience"]],
        date=sent,
        overdue=tuple(_example_case(kpis, c, sent) for c in spec.get("overdue", [])),
        due_soon=tuple(_example_case(kpis, c, sent) for c in spec.get("due_soon", [])),
        closed=tuple(_example_case(kpis, c, sent) for c in spec.get("closed", [])),
        kpis=tuple(
            KpiRow(
                f"kpi:{year}:{k['kpi']}",
                kpis[k["kpi"]],
                k["change"],
                k["state"],
                k["status"],
                year,
                _number(k["value"]),
                _number(k["target"]),
                _number(k.get("pace")),
            )
            for k in spec.get("kpis", [])
        ),
        cc_names=tuple(data["sections"][c] for c in spec.get("cc", [])),
        reply_by=local_date(sent) + timedelta(days=1),
    )


def _example_rows(data: dict[str, Any]) -> tuple[DigestRow, ...]:
    """The digest's rows: figures from the example data; the three years before and the
    action plans from the shipped rule files, as the real digest takes them."""
    kpis, rows, spec = _example_kpis(data), [], data["digest"]
    rules = load_ruleset()
    notes: dict[str, list[NoteLine]] = {}
    for kid, by, at, text in spec.get("notes", []):
        notes.setdefault(kid, []).append(NoteLine(by, text, _at(at)))
    for kid, (month, ytd, target, status, num, den, trend) in spec["rows"].items():
        goal = _number(target)
        points = tuple(TrendPoint(m, _number(v), goal) for m, v in enumerate(trend, 1))
        values = (_number(month), _number(ytd), goal, status, _number(num), _number(den))
        kpi = rules.kpis[kid]
        history = history_of(kpi, spec["year"])
        plans = plans_of(kpi, spec["year"], data["sections"])
        pace = _number(spec.get("pace", {}).get(kid))
        rows.append(
            DigestRow(kpis[kid], *values, points, pace, history, plans, tuple(notes.get(kid, ())))
        )
    return tuple(rows)


def _example_digest(data: dict[str, Any]) -> DigestData:
    spec, recipients = data["digest"], data["recipients"]

    def owner_name(case: dict[str, Any]) -> str:
        return str(data["sections"][data["kpis"][case["kpi_id"]][5]])

    sent = tuple(
        SentLine(
            _at(at), subject, tuple(recipients[r] for r in to), key, ack,
            kind=kind, sections=tuple(data["sections"][r] for r in to),
            message_id=f"<{at}.{'-'.join(to)}@example>",
        )
        for at, to, key, ack, kind, subject in spec["notified"]
    )  # fmt: skip
    return DigestData(
        data["office"], spec["audience"], data["sections"][spec["audience"]],
        spec["year"], spec["month"], _at(spec["as_of"]), _example_rows(data),
        open_cases=tuple(
            CaseLine(c["kpi_id"], c["subject"], c["state"], _at(c["due"]), owner_name(c))
            for c in spec["open_cases"]
        ),
        notified=sent,
        unacknowledged=tuple(sent[i] for i in spec["unacknowledged"]),
        undeliverable=tuple(replace(sent[i], error=e) for i, e in spec["undeliverable"]),
        themes=data["themes"], perspectives=data["perspectives"],
        section_names=tuple(data["sections"].values()),
    )  # fmt: skip


def example_digest() -> DigestData:
    """The sample digest data (the May digest for the director) before rendering."""
    return _example_digest(_example_data())
