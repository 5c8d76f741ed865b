"""Database faults through the real command line: a missing folder, a read-only file or
folder, a damaged file, a locked database and a full disk (``RLIMIT_FSIZE``).

Each must end with a clear error (non-zero exit, one ``錯誤`` line naming the database
file as given, no traceback), leave no partial state (whole transactions only, the file
untouched where nothing could be written), and work again once the fault is gone.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from bsc_rules.dev.simulate import simulate
from tests.faults.harness import (
    CLI,
    DRIVER,
    LONG,
    clear_error,
    count_rows,
    db_keys,
    key_order,
    maildir,
    ok,
    query,
    record,
    run_cli,
    settings_file,
    start,
    status_json,
)

UNTIL = "2017-01-12T12:00:00+08:00"
DAMAGE_WORDS = ("damaged", "corrupt", "malformed", "integrity", "not a database")


@dataclass(frozen=True)
class Files:
    """Two halves of the events and what the whole gives."""

    folder: Path
    first: Path
    second: Path
    both: Path
    settings: Path
    status: dict[str, object]
    mail: dict[str, bytes]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """400 + 400 simulated events of January; reference status and replayed mail; the
    database of the first half (``first.db``) and of both (``both.db``) to copy."""
    folder = tmp_path_factory.mktemp("db-faults")
    lines = [orjson.dumps(e) for e in itertools.islice(simulate(seed=6), 800)]
    first, second, both = folder / "first.jsonl", folder / "second.jsonl", folder / "both.jsonl"
    first.write_bytes(b"\n".join(lines[:400]) + b"\n")
    second.write_bytes(b"\n".join(lines[400:]) + b"\n")
    both.write_bytes(b"\n".join(lines) + b"\n")
    ok(run_cli(["ingest", str(first), "--db", str(folder / "first.db")], folder))
    ok(run_cli(["ingest", str(both), "--db", str(folder / "both.db")], folder))
    settings = settings_file(folder)
    box = folder / "ref-mail"
    ok(run_cli(_replay(both, folder / "replay.db", box, settings), folder))
    return Files(
        folder,
        first,
        second,
        both,
        settings,
        status_json(folder / "both.db", folder),
        maildir(box),
    )


def _replay(events: Path, db: Path, box: Path, settings: Path) -> list[str]:
    return ["replay", str(events), "--until", UNTIL, "--maildir", str(box), "--db", str(db),
            "--settings", str(settings)]  # fmt: skip


def limited(args: list[str], *, fsize: int | None = None, no_dac: bool = False) -> list[str]:
    """``python -m bsc_rules ARGS`` under a file size limit and/or without root's DAC bypass."""
    options = ([f"--fsize={fsize}"] if fsize is not None else []) + (["--no-dac"] * no_dac)
    return [sys.executable, str(DRIVER), "limits", *options, "--", *CLI, *args]


def run_limited(
    args: list[str], cwd: Path, **limits: int | bool | None
) -> subprocess.CompletedProcess[str]:
    """:func:`limited` to completion, output as text."""
    proc = subprocess.run(
        limited(args, **limits),  # type: ignore[arg-type]
        cwd=cwd, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def deep(tmp_path: Path, copy: Path | None = None) -> Path:
    """``state.db`` in a folder with a long path (so a message that wraps lines would
    split it), a copy of ``copy`` if given."""
    folder = tmp_path / ("a-folder-with-a-long-name-" * 3) / "state"
    folder.mkdir(parents=True)
    db = folder / "state.db"
    if copy is not None:
        shutil.copy(copy, db)
    return db


# ------------------------------------------------------------------ missing folder


def test_missing_folder_is_a_clear_error_and_creates_nothing(files: Files, tmp_path: Path) -> None:
    """A missing folder: a clear error, nothing created, fine once the folder exists."""
    db = tmp_path / "nowhere" / "deeper" / "state.db"
    err = clear_error(run_cli(["ingest", str(files.first), "--db", str(db)], tmp_path), str(db))
    assert "does not exist" in err
    clear_error(run_cli(["status", "--db", str(db), "--as-of", "2017-12-31T00:00:00Z"], tmp_path))
    box = tmp_path / "mail"
    clear_error(run_cli(_replay(files.both, db, box, files.settings), tmp_path), str(db))
    assert not (tmp_path / "nowhere").exists()
    db.parent.mkdir(parents=True)
    ok(run_cli(["ingest", str(files.both), "--db", str(db)], tmp_path))
    assert status_json(db, tmp_path) == files.status
    record("db.missing-folder", trials=1, faults=3)


# ------------------------------------------------------------------ read-only


def test_read_only_database_is_a_clear_error_and_recovers(files: Files, tmp_path: Path) -> None:
    """A read-only database: writes fail clearly, change nothing, reads work; then it recovers."""
    db = deep(tmp_path, files.folder / "first.db")
    before, keys = db.read_bytes(), db_keys(db)
    report = status_json(db, tmp_path)
    db.chmod(0o444)
    try:
        proc = run_limited(["ingest", str(files.second), "--db", str(db)], tmp_path, no_dac=True)
        assert "read" in clear_error(proc, str(db)).lower()
        box = tmp_path / "mail"
        proc = run_limited(_replay(files.both, db, box, files.settings), tmp_path, no_dac=True)
        clear_error(proc, str(db))
        args = ["status", "--db", str(db), "--as-of", "2017-12-31T23:59:59+08:00", "--format"]
        proc = run_limited([*args, "json"], tmp_path, no_dac=True)
        assert orjson.loads(ok(proc)) == report
    finally:
        db.chmod(0o600)
    assert db.read_bytes() == before
    assert db_keys(db) == keys
    ok(run_cli(["ingest", str(files.second), "--db", str(db)], tmp_path))
    assert status_json(db, tmp_path) == files.status
    record("db.read-only", trials=1, faults=3)


def test_read_only_folder_is_a_clear_error_and_recovers(files: Files, tmp_path: Path) -> None:
    """A new database in a read-only folder: a clear error and no file; then it works."""
    db = deep(tmp_path)
    folder = db.parent
    folder.chmod(0o555)
    try:
        proc = run_limited(["ingest", str(files.both), "--db", str(db)], tmp_path, no_dac=True)
        clear_error(proc, str(db))
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
    ok(run_cli(["ingest", str(files.both), "--db", str(db)], tmp_path))
    assert status_json(db, tmp_path) == files.status
    record("db.read-only-folder", trials=1, faults=1)


# ------------------------------------------------------------------ damaged file


def _damage(db: Path, where: str) -> None:
    """Overwrite the 100-byte header, or one whole b-tree page of the log or its index."""
    if where == "header":
        with db.open("r+b") as f:
            f.write(b"\xde\xad\xbe\xef" * 25)
        return
    name = {"log page": "events", "index page": "sqlite_autoindex_events_1"}[where]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        page = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno"
            " LIMIT 1 OFFSET 3",
            (name,),
        ).fetchone()[0]
    with db.open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xff" * size)


@pytest.mark.parametrize("where", ["header", "log page", "index page"])
def test_damaged_database_is_refused_on_start(files: Files, tmp_path: Path, where: str) -> None:
    """A damaged file is refused on open by every command and left as is; a copy works."""
    db = deep(tmp_path, files.folder / "both.db")
    _damage(db, where)
    damaged = db.read_bytes()
    commands = [
        ["status", "--db", str(db), "--as-of", "2017-12-31T23:59:59+08:00", "--format", "json"],
        ["ingest", str(files.second), "--db", str(db)],
        _replay(files.both, db, tmp_path / "mail", files.settings),
    ]
    for args in commands:
        proc = run_cli(args, tmp_path)
        err = clear_error(proc, str(db))
        assert proc.stdout == "", f"{args[0]} reported from a damaged database"
        assert any(word in err.lower() for word in DAMAGE_WORDS), err
        assert db.read_bytes() == damaged, f"{args[0]} wrote to a damaged database"
    assert maildir(tmp_path / "mail") == {}
    shutil.copy(files.folder / "both.db", db)  # restored from a copy
    assert status_json(db, tmp_path) == files.status
    record("db.damaged", trials=1, faults=len(commands))


# ------------------------------------------------------------------ locked


LOCKS = ["released", "held past the timeout"] if LONG else ["released"]


@pytest.mark.parametrize("lock", LOCKS)
def test_locked_database_waits_then_fails_clearly(files: Files, tmp_path: Path, lock: str) -> None:
    """A held lock: writers wait, fail clearly past the busy timeout, then succeed."""
    db = deep(tmp_path, files.folder / "first.db")
    keys = db_keys(db)
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        if lock == "released":
            proc = start([*CLI, "ingest", str(files.second), "--db", str(db)], tmp_path)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.5)
            assert proc.poll() is None, "the ingest did not wait for the lock"
            assert count_rows(db) == len(keys)
            holder.execute("COMMIT")
            assert proc.wait(timeout=120) == 0
        else:
            ingest = ["ingest", str(files.second), "--db", str(db)]
            box = tmp_path / "mail"
            for args in (ingest, _replay(files.both, db, box, files.settings)):
                err = clear_error(run_cli(args, tmp_path, timeout=120), str(db))
                assert "locked" in err
            holder.execute("COMMIT")
            assert db_keys(db) == keys
            ok(run_cli(ingest, tmp_path))
    finally:
        holder.close()
    assert status_json(db, tmp_path) == files.status
    record("db.locked", trials=1, faults=1 if lock == "released" else 2)


# ------------------------------------------------------------------ full disk


FSIZE_INGEST = [64_000, 200_000, 450_000, 700_000] if LONG else [200_000]
FSIZE_REPLAY = [48_000, 96_000, 160_000, 240_000, 320_000, 400_000, 600_000, 800_000]
FSIZE_REPLAY = FSIZE_REPLAY if LONG else [160_000]


@pytest.mark.parametrize("fsize", FSIZE_INGEST)
def test_full_disk_during_ingest(files: Files, tmp_path: Path, fsize: int) -> None:
    """A full disk during ingest: a clear error, whole batches only; the rerun completes."""
    db = deep(tmp_path)
    big = tmp_path / "big.jsonl"
    lines = [orjson.dumps(e) for e in itertools.islice(simulate(seed=6), 3000)]
    big.write_bytes(b"\n".join(lines) + b"\n")
    proc = run_limited(["ingest", str(big), "--db", str(db)], tmp_path, fsize=fsize)
    err = clear_error(proc, str(db))
    assert "I/O" in err or "full" in err, err
    order, boundaries = key_order(big)
    keys = db_keys(db)
    assert keys == order[: len(keys)], "the log is not a prefix of the file"
    assert len(keys) in boundaries, f"{len(keys)} rows: a partial batch"
    ok(run_cli(["ingest", str(big), "--db", str(db)], tmp_path))
    assert db_keys(db) == order
    record("db.full-disk.ingest", trials=1, faults=1)


def _consistent(db: Path) -> None:
    """Every notification the history says was written is in the outbox, and back."""
    told = {
        r[0] for r in query(db, "SELECT message_id FROM alert_history WHERE message_id IS NOT NULL")
    }
    kept = {r[0] for r in query(db, "SELECT message_id FROM outbox WHERE kind != 'digest'")}
    assert told == kept


@pytest.mark.parametrize("fsize", FSIZE_REPLAY)
def test_full_disk_during_replay(files: Files, tmp_path: Path, fsize: int) -> None:
    """A full disk during replay: a clear error; the rerun delivers the reference mail."""
    db = deep(tmp_path)
    box = tmp_path / "mail"
    args = _replay(files.both, db, box, files.settings)
    proc = run_limited(args, tmp_path, fsize=fsize)
    clear_error(proc, str(db))
    with contextlib.suppress(sqlite3.OperationalError):  # the tables may not exist yet
        _consistent(db)
    ok(run_cli(args, tmp_path))
    _consistent(db)
    assert maildir(box) == files.mail
    record("db.full-disk.replay", trials=1, faults=1)


def test_full_disk_while_writing_alerts_and_outbox(files: Files, tmp_path: Path) -> None:
    """A full disk while writing alerts and outbox: a clear error, consistent tables."""
    db = deep(tmp_path, files.folder / "both.db")
    box = tmp_path / "mail"
    proc = run_limited(_replay(files.both, db, box, files.settings), tmp_path, fsize=40_000)
    clear_error(proc, str(db))
    with contextlib.suppress(sqlite3.OperationalError):
        _consistent(db)
    ok(run_cli(_replay(files.both, db, box, files.settings), tmp_path))
    _consistent(db)
    record("db.full-disk.alerts", trials=1, faults=1)
