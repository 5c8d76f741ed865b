"""`bsc-rules test`: rule test files, their diffs, located errors, JUnit, --run, coverage."""

from __future__ import annotations

import io
import shutil
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

from bsc_rules.cli import main
from bsc_rules.rules.ruleset import default_rules_dir

RULES = default_rules_dir()

BP_TEST = """\
rule_files: {rules}
tests:
  - name: paid in time
    events:
      - {{type: birth_subsidy.applied, subject: BS1, time: "2017-03-15T10:00:00+08:00",
         data: {{amount: 20000}}}}
      - {{type: birth_subsidy.paid, subject: BS1, time: "2017-03-20T10:00:00+08:00"}}
    expect:
      - at: "2017-03-31T23:59:59+08:00"
        kpis: {{BP1.1: {{value: 0, status: met, numerator: 0, denominator: 1}}}}
        cases: []
  - name: never paid
    events:
      - {{type: birth_subsidy.applied, subject: BS2, time: "2017-03-15T10:00:00+08:00",
         data: {{amount: 20000}}}}
    expect:
      - at: "2017-03-31T23:59:59+08:00"
        kpis: {{BP1.1: {{value: {value}, status: {status}, denominator: 1}}}}
        cases: [{{kpi: BP1.1, subject: BS2, state: {state}}}]
        alerts:
          - {{key: "case:BP1.1:BS2", state: overdue, recipients: [{to}]}}
          - {{key: "kpi:2017:BP1.1", state: breached}}
"""


def write(tmp_path: Path, name: str = "bp.test.yaml", **fields: object) -> Path:
    values = {
        "rules": RULES,
        "value": 100,
        "status": "breached",
        "state": "overdue",
        "to": "director@datong.example.org, registration@datong.example.org",
    }
    path = tmp_path / name
    path.write_text(BP_TEST.format(**(values | fields)), encoding="utf-8")
    return path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["test", *argv], stdout=out)
    return code, out.getvalue()


def test_a_correct_test_file_passes(tmp_path: Path) -> None:
    code, out = run(str(write(tmp_path)))
    assert code == 0, out
    assert "規則測試：2 項，通過 2 項，失敗 0 項" in out


def test_a_wrong_expectation_fails_with_only_the_fields_that_differ(tmp_path: Path) -> None:
    path = write(tmp_path, value=0, status="met", state="due_soon", to="x@example.org")
    code, out = run(str(path))
    assert code == 1
    assert "失敗：bp.test.yaml：never paid" in out
    lines = path.read_text(encoding="utf-8").splitlines()
    at_line = [n for n, line in enumerate(lines, 1) if "- at:" in line][1]
    assert f"{path}:{at_line}:9: 於 2017-03-31T23:59:59+08:00" in out  # where it is written
    assert "KPI BP1.1：value：預期 0，實際 100；status：預期 met，實際 breached" in out
    assert "denominator" not in out  # equal fields are not shown
    assert "案件 BP1.1 BS2：state：預期 due_soon，實際 overdue" in out
    assert (
        "警示 case:BP1.1:BS2：recipients：預期 [x@example.org]，"
        "實際 [director@datong.example.org, registration@datong.example.org]"
    ) in out
    assert "paid in time" not in out.split("規則測試")[0]  # the passing test stays quiet


def test_missing_and_unexpected_cases_are_named(tmp_path: Path) -> None:
    path = tmp_path / "cases.test.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        rule_files: {RULES}
        tests:
          - name: cases
            events:
              - {{type: birth_subsidy.applied, subject: BS2,
                 time: "2017-03-15T10:00:00+08:00", data: {{amount: 1}}}}
            expect:
              - at: "2017-03-31T23:59:59+08:00"
                cases: [{{kpi: CC1.1, subject: CC9, state: overdue}}]
        """),
        encoding="utf-8",
    )
    code, out = run(str(path))
    assert code == 1
    assert "案件 BP1.1 BS2：未預期（state overdue，due 2017-03-23T00:00:00+08:00）" in out
    assert "案件 CC1.1 CC9：預期有（state overdue），實際沒有" in out


def test_the_shipped_tests_pass_and_cover_every_kpi() -> None:
    code, out = run()
    assert code == 0, out
    assert "失敗 0 項" in out
    assert "KPI 均有測試涵蓋" in out


def test_a_changed_target_makes_the_shipped_tests_fail(tmp_path: Path) -> None:
    copy = tmp_path / "rules"
    shutil.copytree(RULES, copy)
    cp = copy / "CP1.1.yaml"
    text = cp.read_text(encoding="utf-8")
    assert "targets: {2017: 80," in text
    cp.write_text(text.replace("targets: {2017: 80,", "targets: {2017: 20,"), encoding="utf-8")
    code, out = run(str(copy / "tests"))
    assert code == 1
    assert "失敗：CP1.1.test.yaml：CP1.1 case scores by channel" in out
    # the floor (mean of the history, 22.84) is now the effective target
    assert "KPI CP1.1：target：預期 80，實際 22.84；status：預期 at_risk，實際 met" in out
    assert "警示 kpi:2017:CP1.1：預期有（state at_risk" in out
    assert "失敗：BP1.1" not in out  # only the tests of the changed KPI fail


def test_a_bad_test_file_gives_located_errors_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.test.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        rule_files: {RULES}
        tests:
          - name: typos
            events:
              - {{type: birth_subsidy.aplied, subject: BS1, time: "2017-03-15T10:00:00+08:00"}}
              - {{type: birth_subsidy.paid, subject: BS1, time: "2017-03-16T10:00:00"}}
            expect:
              - at: "2017-03-31T23:59:59"
                kpis: {{BP1.1: {{stauts: met}}}}
                cases: [{{kpi: BP1.1, subject: BS1, state: late}}]
        """),
        encoding="utf-8",
    )
    code, out = run(str(path))
    assert code == 2
    lines = [line for line in out.splitlines() if line.startswith("測試檔錯誤")]
    text = "\n".join(lines)
    assert f"{path}:5:16: tests[0].events[0].type: expected one of 'registration.completed'" in text
    assert (
        f"{path}:6:56: tests[0].events[1].time: expected a date-time with an explicit offset"
        in text
    )
    assert f"{path}:8:13: tests[0].expect[0].at: " in text
    assert (
        f"{path}:9:24: tests[0].expect[0].kpis.BP1.1.stauts: unknown field; did you mean 'status'?"
        in text
    )
    assert f"{path}:10:" in text
    assert "tests[0].expect[0].cases[0].state: expected one of" in text


def test_junit_xml_parses_and_counts(tmp_path: Path) -> None:
    good = write(tmp_path, "good.test.yaml")
    bad = write(tmp_path, "bad.test.yaml", value=0)
    report = tmp_path / "junit.xml"
    code, _ = run(str(good), str(bad), "--junit", str(report))
    assert code == 1
    root = ET.parse(report).getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert suites[str(good)].get("tests") == "2"
    assert suites[str(good)].get("failures") == "0"
    assert suites[str(bad)].get("failures") == "1"
    failure = root.find(".//testcase[@name='never paid']/failure")
    assert failure is not None
    assert "value：預期 0，實際 100" in (failure.text or "")


def test_run_filters_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, value=0)
    code, out = run(str(path), "--run", "paid in")
    assert code == 0, out
    assert "規則測試：1 項，通過 1 項" in out
    code, out = run(str(path), "--run", "^never")
    assert code == 1
    assert "規則測試：1 項，通過 0 項，失敗 1 項" in out
    code, out = run(str(path), "--run", "(")
    assert code == 2
    assert out == ""


def test_uncovered_kpis_are_listed(tmp_path: Path) -> None:
    code, out = run(str(write(tmp_path)))
    assert code == 0
    others = sorted(
        k for k in ("AC1.1", "AC1.2", "AP1.1", "AP2.1", "BC1.1", "CC1.1", "CP1.1", "TF1.1", "TL1.1")
    )
    folder = RULES.relative_to(Path.cwd()) if RULES.is_relative_to(Path.cwd()) else RULES
    assert f"未受測試涵蓋的KPI（{folder}）：{', '.join(others)}" in out


def test_rules_override_runs_a_file_against_another_folder(tmp_path: Path) -> None:
    copy = tmp_path / "rules"
    shutil.copytree(RULES, copy, ignore=shutil.ignore_patterns("tests"))
    bp = copy / "BP1.1.yaml"
    bp.write_text(bp.read_text(encoding="utf-8").replace("days: 7}", "days: 30}"), "utf-8")
    code, out = run(str(write(tmp_path)), "--rules", str(copy))
    assert code == 1  # with 30 days to pay, BS2 is not overdue on 03-31
    assert "案件 BP1.1 BS2：預期有（state overdue），實際沒有" in out
