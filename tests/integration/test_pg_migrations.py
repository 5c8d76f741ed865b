"""One database layer for both dialects: PostgreSQL gets SQLite's numbered steps (same
versions, same names, the same tables and columns plus ``office`` in every key), an older
database upgraded in place, a failed upgrade undone, a newer one refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bsc_rules.errors import StoreError
from bsc_rules.events import Event, parse_line
from bsc_rules.store import postgres as pg_store
from bsc_rules.store.db import MIGRATIONS, SCHEMA_VERSION, Migration, migrate, schema_version
from bsc_rules.store.postgres import PostgresStore
from bsc_rules.store.sqlite import SQLiteStore
from tests.conftest import event, jsonl


def parsed_events(n: int) -> list[Event]:
    visits = [
        event("immigrant_visit.reported", "2017-03-01T10:00:00+08:00", f"NV{i}",
              {"method": "home"}, id=f"v{i}")
        for i in range(n)
    ]  # fmt: skip
    out = [parse_line(jsonl([v]).strip()) for v in visits]
    assert all(isinstance(e, Event) for e in out)
    return out  # type: ignore[return-value]


TABLES = ("events", "rejected", "alerts", "alert_history", "runs", "outbox", "notes")


def pg_columns(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
    ).fetchall()
    return {r[0] for r in rows}


def pg_key(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """The primary key's columns, in order."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey, a.attnum)",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def test_both_dialects_have_the_same_numbered_named_steps() -> None:
    lite, pg = MIGRATIONS["sqlite"], MIGRATIONS["postgres"]
    assert [(m.version, m.name) for m in lite] == [(m.version, m.name) for m in pg]
    assert len(pg) == SCHEMA_VERSION


def test_a_new_postgres_database_has_every_table_keyed_by_office(
    pg_url: str, tmp_path: Path
) -> None:
    """Every SQLite table exists in PostgreSQL with the same columns plus ``office``, and
    ``office`` leads its primary key (so an office's rows stay together, as Citus needs)."""
    lite = SQLiteStore(tmp_path / "office.db")
    with pg_store.connect(pg_url) as conn:
        assert schema_version(conn) == SCHEMA_VERSION
        for table in TABLES:
            info = lite.connection.execute(f"PRAGMA table_info({table})").fetchall()
            assert info, table
            assert pg_columns(conn, table) == {r[1] for r in info} | {"office"}, table
            if table != "rejected":  # version 1's: its seq alone, office in its unique key
                assert pg_key(conn, table)[0] == "office", table
        # PostgreSQL only (one service per SQLite file): the leases of shared offices.
        assert pg_columns(conn, "leases") == {"office", "holder", "epoch", "expires_at"}
        assert pg_key(conn, "leases") == ["office"]
        assert pg_columns(conn, "lease_holders") == {"holder", "expires_at"}
    assert "leases" not in {r[0] for r in lite.connection.execute("SELECT name FROM sqlite_master")}
    lite.close()


def test_a_version_1_database_is_upgraded_keeping_its_events(pg_url: str) -> None:
    """A database of the PostgreSQL store before this layer (version 1: the event log) is
    brought to the current version in place; its events stay."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrate(conn, "the test database", MIGRATIONS["postgres"][:1]) == 1
        assert schema_version(conn) == 1
        assert "alerts" not in {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}  # fmt: skip
    store = PostgresStore(pg_url, "datong")  # opening upgrades
    assert store.append_batch(parsed_events(5)) == ["accepted"] * 5
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert schema_version(conn) == SCHEMA_VERSION
        conn.execute("INSERT INTO runs VALUES ('datong', 'digest', '2017-03', 1)")
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (5,)


def test_a_failed_upgrade_leaves_the_database_as_it_was(pg_url: str) -> None:
    """PostgreSQL's DDL is transactional: a failing step undoes the steps before it."""
    known = MIGRATIONS["postgres"]
    steps = (
        *known,
        Migration(len(known) + 1, "a table", ("CREATE TABLE extra (x bigint)",)),
        Migration(len(known) + 2, "broken", ("ALTER TABLE nowhere ADD COLUMN y bigint",)),
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn, "db", known[:1])
        with pytest.raises(StoreError, match=r"cannot upgrade the database db: .*nowhere"):
            migrate(conn, "db", steps)
        assert schema_version(conn) == 1
        assert conn.execute("SELECT to_regclass('extra')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('alerts')").fetchone() == (None,)
        assert migrate(conn, "db", steps[: len(known) + 1]) == len(known) + 1
        assert conn.execute("SELECT to_regclass('extra')").fetchone() == ("extra",)


def test_a_newer_database_is_refused_naming_both_versions_in_both_dialects(
    pg_url: str, tmp_path: Path
) -> None:
    newer = SCHEMA_VERSION + 1
    expected = f"schema version {newer}, this bsc_rules knows up to {SCHEMA_VERSION}"
    with pg_store.connect(pg_url) as conn:
        conn.execute("UPDATE meta SET value = %s WHERE key = 'schema'", (str(newer),))
        with pytest.raises(StoreError, match=expected):
            migrate(conn, pg_store.describe(pg_url))
    SQLiteStore(tmp_path / "office.db").close()
    with sqlite3.connect(tmp_path / "office.db") as lite:
        lite.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(newer),))
    with pytest.raises(StoreError, match=expected):
        SQLiteStore(tmp_path / "office.db")


def test_an_empty_database_is_version_0(pg_url: str) -> None:
    with pg_store.connect(pg_url, upgrade=False) as conn:
        assert schema_version(conn) == 0
        assert conn.execute("SELECT to_regclass('meta')").fetchone() == (None,)
