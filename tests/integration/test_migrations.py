"""The database layer: numbered migrations, an older database upgraded in place, a newer
one refused, and errors that say what is wrong (service.md, "Schema")."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bsc_rules.alerts.lifecycle import AlertRecord
from bsc_rules.alerts.table import AlertTable
from bsc_rules.errors import StoreError
from bsc_rules.notify.outbox import Outbox
from bsc_rules.rules.ruleset import default_rules_dir
from bsc_rules.store.db import MIGRATIONS, SCHEMA_VERSION, Migration, migrate, schema_version
from bsc_rules.store.sqlite import SQLiteStore

FIXTURES = Path(__file__).parent.parent / "fixtures"
OLD = FIXTURES / "main-42b7987.db.gz"
AS_OF = "2017-02-03T12:00:00+08:00"
NEWER = SCHEMA_VERSION + 1  # a version this code does not know
TABLES = ("events", "rejected", "alerts", "alert_history", "runs", "outbox")


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    """A copy of the database made by the code of commit 42b7987 (tests/fixtures/README.md)."""
    db = tmp_path / "old.db"
    db.write_bytes(gzip.decompress(OLD.read_bytes()))
    return db


def rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, read with plain SQLite (no bsc_rules code)."""
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bsc_rules", *args], capture_output=True, text=True, check=False
    )


def test_the_migrations_are_numbered_in_order() -> None:
    """One list per dialect, numbered 1, 2, … without a gap; the version is the last one."""
    for steps in MIGRATIONS.values():
        assert [m.version for m in steps] == list(range(1, len(steps) + 1))
    assert SCHEMA_VERSION == len(MIGRATIONS["sqlite"]) >= 2


def test_a_new_database_has_every_table_at_the_current_version(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "new.db")
    names = {r[0] for r in store.connection.execute("SELECT name FROM sqlite_master")}
    assert set(TABLES) | {"meta"} <= names
    assert schema_version(store.connection) == SCHEMA_VERSION
    store.close()


def test_a_database_of_the_old_main_upgrades_keeping_every_row(old_db: Path) -> None:
    """Version 1 (the old main) becomes the current version; every row stays as it was."""
    before = rows(old_db)
    with sqlite3.connect(old_db) as conn:
        assert schema_version(conn) == 1
    assert all(before[t] for t in TABLES)  # the fixture has rows in every table
    store = SQLiteStore(old_db)
    assert schema_version(store.connection) == SCHEMA_VERSION
    history = list(AlertTable(store.connection).history())
    items = Outbox(store.connection).items()
    store.close()
    after = rows(old_db)
    for table in TABLES:  # every old row kept as it was; columns added later are empty
        width = len(before[table][0])
        assert [r[:width] for r in after[table]] == before[table], table
        assert all(v is None for r in after[table] for v in r[width:]), table
    assert [h[:6] for h in history] == [r[1:7] for r in before["alert_history"]]
    assert sorted(i.message_id for i in items) == sorted(r[0] for r in before["outbox"])
    assert all(i.status == "sent" for i in items)


def test_the_upgraded_database_reports_what_the_old_main_reported(
    old_db: Path, tmp_path: Path
) -> None:
    """``status`` on the upgraded file prints the report the old code printed, under the
    old code's deadline rule (calendar days: the office file without ``working_day_end``,
    which later moved dues off days off by design)."""
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules, ignore=shutil.ignore_patterns("tests"))
    office = rules / "office.yaml"
    text = office.read_text(encoding="utf-8")
    assert "deadlines: working_day_end" in text
    office.write_text(text.replace("deadlines: working_day_end", "deadlines: calendar"))
    done = run_cli(
        "status", "--db", str(old_db), "--as-of", AS_OF, "--format", "json", "--rules", str(rules)
    )
    assert done.returncode == 3, done.stderr  # it ran; the old log holds 2 rejected lines
    expected = json.loads((FIXTURES / "main-42b7987.status.json").read_text(encoding="utf-8"))
    assert json.loads(done.stdout) == expected
    with sqlite3.connect(old_db) as conn:
        assert schema_version(conn) == SCHEMA_VERSION


def test_an_alerts_table_without_sent_gains_the_column(old_db: Path) -> None:
    """``alerts.sent`` came later under CREATE TABLE IF NOT EXISTS: a table without it
    is upgraded, its rows kept with sent = 0, and a new record can be written."""
    with sqlite3.connect(old_db) as conn:
        conn.executescript(
            "CREATE TABLE a2 AS SELECT key, state, since_us, notified, told, escalated,"
            " acknowledged, ack_note FROM alerts; DROP TABLE alerts;"
            " ALTER TABLE a2 RENAME TO alerts;"
        )
        count = conn.execute("SELECT count(*) FROM alerts").fetchone()[0]
    store = SQLiteStore(old_db)
    table = AlertTable(store.connection)
    loaded = table.load()
    assert len(loaded) == count
    assert all(r.sent == 0 for r in loaded.values())
    table.save(AlertRecord("kpi:2017:X", "at_risk", 1, 1, frozenset({"owner"}), sent=1))
    assert table.load()["kpi:2017:X"].sent == 1
    store.close()


def test_a_database_newer_than_the_code_is_refused(old_db: Path) -> None:
    with sqlite3.connect(old_db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(NEWER),))
    before = rows(old_db)
    expected = (
        f"schema version {NEWER}, this bsc_rules knows up to {SCHEMA_VERSION}; upgrade bsc_rules"
    )
    with pytest.raises(StoreError, match=expected) as caught:
        SQLiteStore(old_db)
    assert str(old_db) in str(caught.value)
    assert rows(old_db) == before


def test_an_upgrade_that_fails_leaves_the_database_as_it_was(old_db: Path) -> None:
    """The migrations run in one transaction: a failing step undoes the ones before it."""
    known = len(MIGRATIONS["sqlite"])
    steps = (
        *MIGRATIONS["sqlite"],
        Migration(known + 1, "a table", ("CREATE TABLE extra (x INTEGER)",)),
        Migration(known + 2, "a broken step", ("ALTER TABLE nowhere ADD COLUMN y INTEGER",)),
    )
    conn = sqlite3.connect(old_db, isolation_level=None)
    with pytest.raises(StoreError, match="nowhere"):
        migrate(conn, old_db, steps)
    assert schema_version(conn) == 1
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'extra'").fetchone() is None
    assert migrate(conn, old_db, steps[: known + 1]) == known + 1
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'extra'").fetchone()
    conn.close()


# ---------------------------------------------------------------- permission denied


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can enter (tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="bsc-perm-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def _open_as_other(db: Path) -> str:
    """Open ``db`` with SQLiteStore in a forked child that became user ``nobody`` (root
    passes every permission check; the child, with the code already imported, does not)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, try, report, leave without running pytest's exit
        message = "opened"
        try:
            os.setgid(65534)
            os.setuid(65534)
            SQLiteStore(db).close()
        except Exception as exc:
            message = str(exc)
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def _denied_to_me(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_RDWR))
    except PermissionError:
        return True
    return False


def test_a_file_not_ours_says_permission_denied(shared_dir: Path) -> None:
    """As root, chmod 000 does not stop root: the file is opened by user nobody instead."""
    db = shared_dir / "office.db"
    SQLiteStore(db).close()  # owner-only (0600)
    db.chmod(0o000)
    try:
        if _denied_to_me(db):
            with pytest.raises(StoreError) as caught:
                SQLiteStore(db)
            message = str(caught.value)
        else:
            message = _open_as_other(db)
    finally:
        db.chmod(0o600)
    assert "permission denied" in message
    assert "is it a bsc_rules database" not in message
    assert str(db) in message


def test_a_folder_not_writable_says_permission_denied(shared_dir: Path) -> None:
    """A readable file in a folder the user cannot write (SQLite adds its -wal there)."""
    db = shared_dir / "office.db"
    SQLiteStore(db).close()
    db.chmod(0o666)
    shared_dir.chmod(0o555)
    try:
        if os.access(shared_dir, os.W_OK):  # root: the folder does not stop it
            message = _open_as_other(db)
        else:
            with pytest.raises(StoreError) as caught:
                SQLiteStore(db)
            message = str(caught.value)
    finally:
        shared_dir.chmod(0o755)
    assert "permission denied" in message
    assert "not writable" in message
    assert "is it a bsc_rules database" not in message
