"""The command line, through its entry point: evaluate, ingest, status, simulate."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from bsc_rules.calendar import TAIPEI
from bsc_rules.cli import main
from bsc_rules.clock import FakeClock
from tests.conftest import event, jsonl, needs_durable

AS_OF = "2017-06-30T23:59:59+08:00"


def run(argv: list[str], **kw: object) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdout=out, **kw)  # type: ignore[arg-type]
    return code, out.getvalue()


@pytest.fixture(scope="module")
def year_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Datong 2017 as a JSON Lines file."""
    path = tmp_path_factory.mktemp("cli") / "datong-2017.jsonl"
    assert main(["simulate", "--year", "2017", "--seed", "5", "--out", str(path)]) == 0
    return path


def test_evaluate_json_has_the_spec_shape(year_file: Path) -> None:
    """The JSON report has every key of spec/kpis.md and all ten KPIs."""
    code, out = run(["evaluate", str(year_file), "--as-of", AS_OF, "--format", "json"])
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"as_of", "year", "kpis", "cases", "rejected", "unmatched"}
    assert report["as_of"] == AS_OF
    assert report["year"] == 2017
    assert len(report["kpis"]) == 10
    for kpi in report["kpis"].values():
        assert set(kpi) == {
            "value",
            "target",
            "direction",
            "status",
            "numerator",
            "denominator",
            "owner",
        }
    assert report["kpis"]["BC1.1"]["numerator"] is None
    dues = [(c["due"], c["subject"], c["kpi"]) for c in report["cases"]]
    assert dues == sorted(dues)


@needs_durable
def test_both_matchers_give_the_same_report(year_file: Path) -> None:
    """--matcher durable and --matcher python print the same JSON."""
    reports = [
        run(["evaluate", str(year_file), "--as-of", AS_OF, "--format", "json", "--matcher", m])[1]
        for m in ("python", "durable")
    ]
    assert reports[0] == reports[1]


def test_ingest_then_status_equals_evaluate(tmp_path: Path, year_file: Path) -> None:
    """The report from the database equals the report from the file; re-ingest adds nothing."""
    db = tmp_path / "office.db"
    code, out = run(["ingest", str(year_file), "--db", str(db)])
    assert code == 0
    assert "新增" in out
    assert "退回 0 筆" in out
    code, again = run(["ingest", str(year_file), "--db", str(db)])
    assert code == 0
    assert "新增 0 筆" in again
    _, from_db = run(["status", "--db", str(db), "--as-of", AS_OF, "--format", "json"])
    _, from_file = run(["evaluate", str(year_file), "--as-of", AS_OF, "--format", "json"])
    assert json.loads(from_db) == json.loads(from_file)


def test_status_defaults_to_the_clock(tmp_path: Path, year_file: Path) -> None:
    """Without --as-of, status reports at the injected clock's instant."""
    db = tmp_path / "office.db"
    run(["ingest", str(year_file), "--db", str(db)])
    clock = FakeClock(datetime(2017, 9, 1, 8, 0, tzinfo=TAIPEI))
    _, out = run(["status", "--db", str(db), "--format", "json"], clock=clock)
    assert json.loads(out)["as_of"] == "2017-09-01T08:00:00+08:00"


def test_table_is_for_people(tmp_path: Path) -> None:
    """The default table is in Chinese with ROC dates, and masks ID numbers."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        jsonl(
            [
                event(
                    "birth_subsidy.applied",
                    "2017-06-01T10:00:00+08:00",
                    "A123456789",
                    {"amount": 20000},
                )
            ]
        )
    )
    code, out = run(["evaluate", str(path), "--as-of", AS_OF])
    assert code == 0
    assert "106年度平衡計分卡（截至106年6月30日 23:59:59）" in out
    assert "生育獎勵金逾期核發案件比例" in out
    assert "未達成" in out
    assert "A12345****" in out
    assert "A123456789" not in out
    assert "106年6月8日（含）前" in out  # due 2017-06-09T00:00 → last allowed day 6/8


def test_a_later_year_is_refused(year_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--year after the year of --as-of is a bad argument (exit 2), naming both."""
    code, _ = run(["evaluate", str(year_file), "--as-of", AS_OF, "--year", "2018"])
    assert code == 2
    assert "--year 2018 is after the year of --as-of (2017)" in capsys.readouterr().err


def test_the_year_before_can_be_asked_for(year_file: Path) -> None:
    """In January, --year of the year before reports that year's final figures."""
    code, out = run(
        [
            "evaluate",
            str(year_file),
            "--as-of",
            "2018-01-15T09:00:00+08:00",
            "--year",
            "2017",
            "--format",
            "json",
        ]
    )
    assert code == 0
    assert json.loads(out)["year"] == 2017


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["evaluate", "/nonexistent/e.jsonl", "--as-of", AS_OF],
            "cannot read /nonexistent/e.jsonl",
        ),
        (["evaluate", "-", "--as-of", AS_OF, "--rules", "/nonexistent"], "rule folder not found"),
        (["status", "--db", "/nonexistent/x.db", "--as-of", AS_OF], "does not exist"),
    ],
    ids=["unreadable-file", "missing-rules", "missing-db"],
)
def test_clear_errors(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    """What cannot be evaluated exits 1 and says why."""
    code, _ = run(argv)
    assert code == 1
    assert fragment in capsys.readouterr().err


def test_bad_as_of_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An --as-of without offset is refused by the argument parser (exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "x.jsonl", "--as-of", "2017-06-30T23:59:59"])
    assert info.value.code == 2
    assert "explicit offset" in capsys.readouterr().err


def test_simulate_is_deterministic(tmp_path: Path, year_file: Path) -> None:
    """The same seed writes the same bytes."""
    again = tmp_path / "again.jsonl"
    assert main(["simulate", "--year", "2017", "--seed", "5", "--out", str(again)]) == 0
    assert again.read_bytes() == year_file.read_bytes()


def test_console_script_runs() -> None:
    """The installed entry point answers --help."""
    exe = Path(sys.executable).with_name("bsc-rules")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "evaluate" in result.stdout


def test_check_warns_for_a_year_without_calendar_data() -> None:
    """`check` passes but warns when this year (or a year of the rules) has no calendar
    data: bridge days off and make-up Saturdays are then unknown (kpis.md)."""
    code, out = run(["check"], clock=FakeClock(datetime(2031, 3, 1, tzinfo=TAIPEI)))
    assert code == 0
    assert "規則檔檢查通過" in out
    assert "警告：120年（2031）的行事曆資料不明" in out
    code, out = run(["check"], clock=FakeClock(datetime(2017, 3, 1, tzinfo=TAIPEI)))
    assert "警告" not in out


def test_a_summary_stays_one_line_whatever_the_path(tmp_path: Path) -> None:
    """A database path longer than any terminal: the summary is still one line (scripts
    read it), never wrapped in the middle of a count."""
    folder = tmp_path / ("d" * 60) / ("e" * 60)
    folder.mkdir(parents=True)
    events = folder / "one.jsonl"
    events.write_bytes(
        jsonl(
            [
                event(
                    "registration.completed",
                    "2017-01-03T08:00:00+08:00",
                    "RG1060103001",
                    {"kind": "birth"},
                )
            ]
        )
    )
    db = folder / "office.db"
    code, out = run(["ingest", str(events), "--db", str(db), "--matcher", "python"])
    assert code == 0, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0] == f"匯入完成（{db}）：新增 1 筆，重複 0 筆（已略過），退回 0 筆。"
