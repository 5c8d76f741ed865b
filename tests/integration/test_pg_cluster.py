"""The tests' own PostgreSQL (tests/pg.py): a throwaway cluster that leaves nothing
behind, and a missing PostgreSQL that fails CI but only skips elsewhere."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from bsc_rules.store.postgres import PostgresStore
from tests import conftest, pg


def test_throwaway_cluster_is_torn_down() -> None:
    """A local cluster answers on its own socket directory, restarts on it, and is gone
    after."""
    if pg.find_bin("initdb") is None:
        conftest._no_postgres("no initdb on PATH or in /usr/lib/postgresql/*/bin")
    with pg.local_cluster() as cluster:
        socket_dir = Path(parse_qs(urlsplit(cluster.admin_url).query)["host"][0])
        with psycopg.connect(cluster.url("postgres")) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
            cluster.restart()  # the fault suites' restart: sessions ended, the socket kept
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        with psycopg.connect(cluster.url("postgres")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert socket_dir.is_dir()
    assert not socket_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.admin_url, connect_timeout=5)


def test_missing_binaries_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "find_bin", lambda name: None)
    with pytest.raises(pg.PgUnavailable, match="no initdb/pg_ctl"), pg.local_cluster():
        pass


def test_missing_postgres_fails_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI: gone"):
        conftest._no_postgres("gone")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL to test against: gone"):
        conftest._no_postgres("gone")


def test_new_office_met_by_several_writers_at_once(pg_url: str) -> None:
    """Writers meeting a new office together create its partition once, without error."""
    PostgresStore(pg_url, "datong").close()  # the schema exists: only the partition races
    start, errors = threading.Barrier(4), []

    def open_store() -> None:
        start.wait()
        try:
            PostgresStore(pg_url, "beitou").close()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('events_beitou') IS NOT NULL").fetchone() == (True,)
