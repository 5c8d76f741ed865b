"""Exit codes (spec/kpis.md: 0 / 3 / 2 / 1), rejected lines explained, the rejected list."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bsc_rules.cli import main
from tests.conftest import event, jsonl

AS_OF = "2017-06-30T23:59:59+08:00"
EXE = Path(sys.executable).with_name("bsc-rules")
NATIONAL_ID = "A123456789"


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdout=out)
    return code, out.getvalue()


def good_events() -> list[bytes]:
    return [
        jsonl([event("birth_subsidy.applied", "2017-06-01T10:00:00+08:00", "BS1", {"amount": 1})]),
        jsonl([event("birth_subsidy.applied", "2017-06-02T10:00:00+08:00", "BS2", {"amount": 1})]),
    ]


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    path = tmp_path / "clean.jsonl"
    path.write_bytes(b"".join(good_events()) * 2)  # the second copy: duplicates
    return path


@pytest.fixture
def dirty(tmp_path: Path) -> Path:
    """Line 2 lacks its type; line 4 is not JSON; both carry a national ID."""
    bad = event("x", "2017-06-03T10:00:00+08:00", "BS3", id=f"ev-{NATIONAL_ID}")
    del bad["type"]
    first, second = good_events()
    path = tmp_path / "dirty.jsonl"
    path.write_bytes(first + jsonl([bad]) + second + f"{{oops {NATIONAL_ID}\n".encode())
    return path


# ---------------------------------------------------------------- 0 and 3


@pytest.mark.parametrize("form", ["table", "json"])
def test_evaluate_exits_0_when_every_line_is_accepted(clean: Path, form: str) -> None:
    """Duplicates count as accepted: exit 0."""
    code, _ = run(["evaluate", str(clean), "--as-of", AS_OF, "--format", form])
    assert code == 0


def test_evaluate_says_why_lines_were_rejected_and_exits_3(dirty: Path) -> None:
    """The report is printed in full, then each rejection (line, id, field, reason), masked."""
    code, out = run(["evaluate", str(dirty), "--as-of", AS_OF, "--matcher", "python"])
    assert code == 3
    assert "年度平衡計分卡" in out
    assert "退回事件：2筆" in out
    assert "退回：line 2, event 'ev-A12345****': type: " in out
    assert "退回：line 4, event without id: " in out
    assert NATIONAL_ID not in out


def test_evaluate_json_keeps_stdout_json_and_explains_on_stderr(
    dirty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(["evaluate", str(dirty), "--as-of", AS_OF, "--format", "json"])
    assert code == 3
    assert json.loads(out)["rejected"] == 2
    err = capsys.readouterr().err
    assert "line 2, event 'ev-A12345****': type: " in err
    assert NATIONAL_ID not in err


def test_ingest_and_status_exit_3_with_rejected_lines_0_without(
    tmp_path: Path, clean: Path, dirty: Path
) -> None:
    good_db, bad_db = tmp_path / "good.db", tmp_path / "bad.db"
    assert run(["ingest", str(clean), "--db", str(good_db)])[0] == 0
    assert run(["ingest", str(clean), "--db", str(good_db)])[0] == 0  # all duplicates
    assert run(["status", "--db", str(good_db), "--as-of", AS_OF])[0] == 0
    code, out = run(["ingest", str(dirty), "--db", str(bad_db)])
    assert code == 3
    assert "新增 2 筆，重複 0 筆（已略過），退回 2 筆" in out
    assert "退回：line 2, event 'ev-A12345****': type: " in out
    code, out = run(["status", "--db", str(bad_db), "--as-of", AS_OF])
    assert code == 3
    assert "退回事件：2筆" in out
    assert f"bsc-rules rejected --db {bad_db}" in out


def test_the_installed_command_exits_3_and_documents_the_codes(dirty: Path) -> None:
    """Through the console entry point, in a real process."""
    argv = [str(EXE), "evaluate", str(dirty), "--as-of", AS_OF, "--format", "json"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout)["rejected"] == 2
    assert "Traceback" not in result.stderr
    helptext = subprocess.run([str(EXE), "--help"], capture_output=True, text=True, check=True)
    for line in ("exit status", "  0 ", "  3 ", "  2 ", "  1 ", "  130", "  141"):
        assert line in helptext.stdout, line


# ---------------------------------------------------------------- 2 and 1


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "x.jsonl", "--as-of", "2017-06-30T23:59:59"],
        ["evaluate", "x.jsonl"],
        ["ingest", "x.jsonl", "--db", "x.db", "--matcher", "fast"],
        ["status", "--as-of", AS_OF],
    ],
    ids=["as-of-without-offset", "missing-as-of", "unknown-matcher", "missing-db"],
)
def test_what_argparse_refuses_exits_2(argv: list[str]) -> None:
    result = subprocess.run([str(EXE), *argv], capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert "usage: bsc-rules" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "{clean}", "--as-of", AS_OF, "--year", "2018"],
        ["status", "--db", "{tmp}/none.db", "--as-of", AS_OF, "--year", "2018"],
        ["replay", "{clean}", "--until", AS_OF, "--smtp", "nohost"],
    ],
    ids=["evaluate-year", "status-year", "smtp"],
)
def test_arguments_that_cannot_go_together_exit_2(
    argv: list[str], clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before anything runs: the --year check comes before the missing database."""
    code, _ = run([a.format(clean=clean, tmp=tmp_path) for a in argv])
    assert code == 2
    err = capsys.readouterr().err
    assert "錯誤：" in err
    assert "--help" in err


def test_what_cannot_run_exits_1_with_a_clear_message(
    tmp_path: Path, clean: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable file, invalid rules, a file that is no database: exit 1, no traceback."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "office.yaml").write_text("office: [\n")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    cases = [
        (["ingest", str(tmp_path / "none.jsonl"), "--db", str(tmp_path / "a.db")], "cannot read"),
        (["evaluate", str(clean), "--as-of", AS_OF, "--rules", str(rules)], "in the rule files"),
        (["status", "--db", str(garbage), "--as-of", AS_OF], str(garbage)),
    ]
    for argv, fragment in cases:
        code, _ = run(argv)
        err = capsys.readouterr().err
        assert code == 1, (argv, err)
        assert fragment in err, err
        assert "Traceback" not in err


# ---------------------------------------------------------------- the kept rejections


def test_rejected_lists_the_kept_rejections_masked(tmp_path: Path, dirty: Path) -> None:
    db = tmp_path / "office.db"
    assert run(["ingest", str(dirty), "--db", str(db)])[0] == 3
    code, out = run(["rejected", "--db", str(db), "--format", "json"])
    assert code == 0
    rows = json.loads(out)
    assert [(r["origin"], r["line"], r["id"], r["field"]) for r in rows] == [
        ("dirty.jsonl", 2, "ev-A12345****", "type"),
        ("dirty.jsonl", 4, None, rows[1]["field"]),
    ]
    assert all(r["reason"] for r in rows)
    code, out = run(["rejected", "--db", str(db)])
    assert code == 0
    assert "ev-A12345****" in out
    assert "dirty.jsonl" in out
    assert "退回事件：2筆" in out
    assert NATIONAL_ID not in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM rejected").fetchone()[0] == len(rows)


def test_rejected_needs_an_existing_database(tmp_path: Path) -> None:
    assert run(["rejected", "--db", str(tmp_path / "none.db")])[0] == 1
