"""``bsc-rules db upgrade``: a SQLite file, every file of a directory, or a PostgreSQL
database brought to this code's schema in place, the versions before and after printed;
nothing else done (a missing database is not created); a newer one refused."""

from __future__ import annotations

import gzip
import io
import sqlite3
from pathlib import Path

import psycopg
import pytest

from bsc_rules.cli import main
from bsc_rules.store.db import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from bsc_rules.store.sqlite import SQLiteStore

OLD = Path(__file__).parent.parent / "fixtures" / "main-42b7987.db.gz"  # schema version 1


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdout=out)
    return code, out.getvalue()


def old_file(path: Path) -> Path:
    path.write_bytes(gzip.decompress(OLD.read_bytes()))
    return path


def version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return schema_version(conn)


def test_a_sqlite_file_is_upgraded_and_says_from_what_to_what(tmp_path: Path) -> None:
    db = old_file(tmp_path / "office.db")
    with sqlite3.connect(db) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()
    code, text = run(["db", "upgrade", "--db", str(db)])
    assert code == 0
    assert f"資料庫 {db}：結構版本 1 → {SCHEMA_VERSION}，已升級。" in text
    assert version(db) == SCHEMA_VERSION
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == events
    code, text = run(["db", "upgrade", "--db", str(db)])
    assert (code, text.strip()) == (
        0,
        f"資料庫 {db}：結構版本 {SCHEMA_VERSION}，已是最新，未變更。",
    )


def test_every_file_of_a_directory_is_upgraded(tmp_path: Path) -> None:
    city = tmp_path / "city"
    city.mkdir()
    old_file(city / "datong.db")
    SQLiteStore(city / "wanhua.db").close()
    old_file(city / "_rejected.db")
    code, text = run(["db", "upgrade", "--db", f"{city}/"])
    assert code == 0
    lines = text.strip().splitlines()
    assert len(lines) == 3
    assert f"{city / '_rejected.db'}：結構版本 1 → {SCHEMA_VERSION}" in lines[0]
    assert f"{city / 'datong.db'}：結構版本 1 → {SCHEMA_VERSION}" in lines[1]
    assert f"{city / 'wanhua.db'}：結構版本 {SCHEMA_VERSION}，已是最新" in lines[2]
    assert {version(p) for p in city.glob("*.db")} == {SCHEMA_VERSION}


def test_nothing_is_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["db", "upgrade", "--db", str(tmp_path / "none.db")])
    assert code == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    code, text = run(["db", "upgrade", "--db", str(tmp_path)])
    assert (code, list(tmp_path.iterdir())) == (0, [])
    assert "沒有資料庫檔" in text


def test_a_newer_file_is_refused_naming_both_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "office.db"
    SQLiteStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '9' WHERE key = 'schema'")
    assert run(["db", "upgrade", "--db", str(db)])[0] == 1
    assert f"schema version 9, this bsc_rules knows up to {SCHEMA_VERSION}" in (
        capsys.readouterr().err.replace("\n", "")
    )
    assert version(db) == 9


def test_a_postgres_database_is_upgraded(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn, "db", MIGRATIONS["postgres"][:1])
    code, text = run(["db", "upgrade", "--db", pg_url])
    assert code == 0
    assert f"結構版本 1 → {SCHEMA_VERSION}，已升級。" in text
    assert "postgres@" not in text  # the server is named without the user
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert schema_version(conn) == SCHEMA_VERSION
        assert conn.execute("SELECT to_regclass('notes')").fetchone() == ("notes",)
    assert f"結構版本 {SCHEMA_VERSION}，已是最新" in run(["db", "upgrade", "--db", pg_url])[1]


def test_an_empty_postgres_database_gets_the_whole_schema(pg_url: str) -> None:
    code, text = run(["db", "upgrade", "--db", pg_url])
    assert code == 0
    assert f"結構版本 0 → {SCHEMA_VERSION}，已升級。" in text
