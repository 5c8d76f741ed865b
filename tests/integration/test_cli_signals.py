"""Ctrl-C during ingest, a closed pipe, ``--out -``: real processes, real signals and pipes."""

from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bsc_rules.cli import main

EXE = Path(sys.executable).with_name("bsc-rules")
AS_OF = "2017-06-30T23:59:59+08:00"


@pytest.fixture(scope="module")
def year_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Datong 2017 (about 39,000 lines)."""
    path = tmp_path_factory.mktemp("signals") / "datong-2017.jsonl"
    assert main(["simulate", "--year", "2017", "--seed", "3", "--out", str(path)]) == 0
    return path


def test_ctrl_c_during_ingest_stores_what_it_says(tmp_path: Path, year_file: Path) -> None:
    """SIGINT after the first progress line: one summary line, exit 130, no traceback,
    and the database holds exactly the events and rejections the summary counts."""
    db = tmp_path / "office.db"
    argv = [str(EXE), "ingest", str(year_file), "--db", str(db), "--matcher", "python"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("匯入中 10%")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    found = re.search(r"新增 (\d+) 筆，重複 (\d+) 筆（已略過），退回 (\d+) 筆", lines[0])
    assert found is not None, lines[0]
    assert lines[0].startswith(f"已中斷（{db}）")
    accepted, duplicates, rejected = map(int, found.groups())
    total = year_file.read_bytes().count(b"\n")
    assert 0 < accepted + duplicates + rejected < total  # stopped part way
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == accepted
        assert conn.execute("SELECT count(*) FROM rejected").fetchone()[0] == rejected


def test_simulate_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    """``bsc-rules simulate --out - | head -1``: the first line, then a quiet end."""
    argv = [str(EXE), "simulate", "--out", "-"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # what head does after its line
        err = proc.stderr.read()
        proc.wait(timeout=120)
    assert first.startswith(b'{"specversion":"1.0"')
    assert err == b"", err.decode()
    assert proc.returncode == 141


def test_status_into_a_closed_pipe_ends_quietly(tmp_path: Path, year_file: Path) -> None:
    """The reader is gone before ``status`` writes: no traceback, no "Exception ignored"."""
    db = tmp_path / "office.db"
    assert main(["ingest", str(year_file), "--db", str(db)], stdout=io.StringIO()) == 0
    read, write = os.pipe()
    os.close(read)  # a reader that went away, as after `| head -1`
    try:
        argv = [str(EXE), "status", "--db", str(db), "--as-of", AS_OF]
        result = subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, check=False)
    finally:
        os.close(write)
    assert result.stderr == b"", result.stderr.decode()
    assert result.returncode == 141


def test_out_dash_writes_to_standard_output(tmp_path: Path, year_file: Path) -> None:
    """``simulate --out -`` writes the same lines as ``--out FILE``, in a real process."""
    argv = [str(EXE), "simulate", "--seed", "3", "--out", "-"]
    result = subprocess.run(argv, capture_output=True, check=True)
    assert result.stdout == year_file.read_bytes()
    assert not (Path.cwd() / "-").exists()
