"""`bsc-rules whatif`: the shipped rules against a copy with one changed target."""

from __future__ import annotations

import io
import shutil
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from bsc_rules.authoring.whatif import WhatIf, what_if
from bsc_rules.authoring.whatif_view import print_table, render_html
from bsc_rules.calendar import parse_instant, to_us
from bsc_rules.cli import main
from bsc_rules.dev.simulate import simulate
from bsc_rules.rules.ruleset import default_rules_dir

RULES = default_rules_dir()
UNTIL = "2017-02-02T09:00:00+08:00"  # the February digest included
FLOOR = 22.84  # CP1.1: mean of the history 6.79, 9.02, 52.71


def _events(path: Path) -> Path:
    """A generated January 2017 (seed 7)."""
    lines = []
    for event in simulate(year=2017, seed=7):
        if event["time"] >= "2017-03":
            break
        if event["time"] < "2017-02":
            lines.append(orjson.dumps(event) + b"\n")
    path.write_bytes(b"".join(lines))
    return path


def _changed_copy(root: Path) -> Path:
    copy = root / "proposed"
    shutil.copytree(RULES, copy, ignore=shutil.ignore_patterns("tests"))
    cp = copy / "CP1.1.yaml"
    text = cp.read_text(encoding="utf-8")
    assert "targets: {2017: 80," in text
    cp.write_text(text.replace("targets: {2017: 80,", "targets: {2017: 20,"), encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> WhatIf:
    root = tmp_path_factory.mktemp("whatif")
    events = _events(root / "events.jsonl")
    return what_if(events, RULES, _changed_copy(root), to_us(parse_instant(UNTIL)))


def test_only_the_changed_kpi_differs(compared: WhatIf) -> None:
    rows = compared.kpi_rows()
    assert len(rows) == 10
    assert [len(cells) for cells in rows.values()] == [2] * 10  # January's end, until
    for kpi, cells in rows.items():
        if kpi != "CP1.1":
            assert all(a == b for _, a, b in cells), kpi
    for _, a, b in rows["CP1.1"]:
        assert a is not None
        assert b is not None
        assert a["value"] == b["value"]
        assert (a["target"], b["target"]) == (80, pytest.approx(FLOOR))
        assert a["status"] == ("met" if a["value"] >= 80 else "at_risk")
        assert b["status"] == ("met" if b["value"] >= FLOOR else "at_risk")


def test_only_the_mail_of_that_kpi_differs(compared: WhatIf) -> None:
    differing = compared.alert_rows()
    assert differing, "the stricter target must have cost some CP1.1 notices"
    assert {key for key, *_ in differing} == {"kpi:2017:CP1.1"}
    assert {kind for _, kind, *_ in differing} <= {"at_risk", "resolved"}
    assert all(a > b for *_, a, b in differing)  # the lower target sends less
    mails = [(k, to, a, b) for k, to, a, b in compared.mail_rows() if a != b]
    assert {to for _, to, *_ in mails} <= {"registration@datong.example.org"}  # CP1.1's owner
    assert all(kind == "morning" and a >= b for kind, _, a, b in mails)
    digests = [(a, b) for k, _, a, b in compared.mail_rows() if k == "digest"]
    assert digests
    assert all(a == b == 1 for a, b in digests)  # January's, once per recipient


def test_no_case_differs(compared: WhatIf) -> None:
    assert compared.case_rows() == []


def test_json_html_and_table(compared: WhatIf, tmp_path: Path) -> None:
    data = orjson.loads(orjson.dumps(compared.as_dict()))
    assert data["instants"][-1] == UNTIL
    assert [k for k, rows in data["kpis"].items() if any(r["differs"] for r in rows)] == ["CP1.1"]
    html = render_html(compared)
    parser = HTMLParser()
    parser.feed(html)
    assert "<script" not in html
    assert "跨機關通報比率" in html
    assert "kpi:2017:CP1.1" in html
    assert html.count('class="differs"') == 2 + len(compared.alert_rows()) + sum(
        1 for *_, a, b in compared.mail_rows() if a != b
    )
    out = io.StringIO()
    print_table(compared, Console(file=out, width=160))
    text = out.getvalue()
    assert "各月相同的KPI：AC1.1、AC1.2、AP1.1、AP2.1、BC1.1、BP1.1、CC1.1、TF1.1、TL1.1" in text
    assert "目標 22.84" in text
    assert "≠" in text


def test_the_command(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b'{"specversion":"1.0","id":"1","source":"/t","type":"registration.completed",'
        b'"time":"2017-01-10T10:00:00+08:00","subject":"RG1","data":{"kind":"birth"}}\n'
    )
    out = tmp_path / "report.html"
    argv = ["whatif", str(events), "--rules", str(RULES), "--rules", str(_changed_copy(tmp_path))]
    code = main(
        [*argv, "--until", "2017-01-12T00:00:00+08:00", "--format", "html", "--out", str(out)]
    )
    assert code == 0
    assert "<h1>假設分析（截至 106/01/12 00:00）</h1>" in out.read_text(encoding="utf-8")
    stdout = io.StringIO()
    assert main([*argv, "--format", "json"], stdout=stdout) == 0
    data = orjson.loads(stdout.getvalue())
    assert data["until"] == "2017-01-31T23:59:59+08:00"  # default: the last event's month end
    cp = data["kpis"]["CP1.1"][0]
    assert (cp["a"]["target"], cp["b"]["target"]) == (80, FLOOR)
    assert (cp["a"]["status"], cp["b"]["status"]) == ("at_risk", "at_risk")  # a value of 0
    assert main(["whatif", str(events), "--rules", str(RULES)]) == 2
