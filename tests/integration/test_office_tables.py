"""The office's tables beside the event log (notes, runs, outbox) through the database seam
(bsc_rules.store.sqlconn.Db), on a real SQLite file and a real PostgreSQL database: the
same behaviour on both, and on PostgreSQL each office sees only its own rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bsc_rules.alerts.notes import Note, Notes
from bsc_rules.errors import StoreError, UsageError
from bsc_rules.notify.outbox import Outbox
from bsc_rules.store.db import open_database
from bsc_rules.store.runs import Runs
from bsc_rules.store.sqlconn import Db
from tests.integration.test_delivery import T0_US, mail, mid, render

MINUTE = 60_000_000
Open = Callable[[str], Db]  # a new connection, scoped to an office


class Boom(Exception):
    """The block fails after writing."""


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Open]:
    """New connections to one database: a SQLite file (one office), or PostgreSQL."""
    opened: list[Db] = []

    def sqlite(office: str) -> Db:
        opened.append(Db(open_database(tmp_path / "office.db"), office))
        return opened[-1]

    def postgres(office: str) -> Db:
        from bsc_rules.store.postgres import connect

        opened.append(Db(connect(url), office))
        return opened[-1]

    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
    yield postgres if request.param == "postgres" else sqlite
    for db in opened:
        db.connection.close()


@pytest.fixture
def pg(pg_url: str) -> Iterator[Open]:
    """New connections to a PostgreSQL database, each scoped to the office named."""
    from bsc_rules.store.postgres import connect

    opened: list[Db] = []

    def open_(office: str) -> Db:
        opened.append(Db(connect(pg_url), office))
        return opened[-1]

    yield open_
    for db in opened:
        db.connection.close()


# ---------------------------------------------------------------- notes


def test_notes_keep_every_entry_and_show_the_latest(opener: Open) -> None:
    """Every note is kept in order; a digest shows each author's latest before it was sent."""
    notes = Notes(opener("datong"))
    notes.add("BP1.1", "2017-05", "戶籍課", "初稿", T0_US)
    notes.add("BP1.1", "2017-05", "戶籍課", "修正稿", T0_US + MINUTE)
    notes.add("BP1.1", "2017-05", "秘書室", "補充", T0_US + 2 * MINUTE)
    notes.add("CS2.1", "2017-06", "戶籍課", "六月", T0_US)
    again = Notes(opener("datong"))  # another connection reads what was committed
    assert [n.text for n in again.history()] == ["初稿", "修正稿", "補充", "六月"]
    assert [n.text for n in again.history(kpi="BP1.1", month="2017-05")] == [
        "初稿",
        "修正稿",
        "補充",
    ]
    assert again.history(month="2017-06") == [Note("CS2.1", "2017-06", "戶籍課", "六月", T0_US)]
    shown = again.for_month("2017-05", before=T0_US + 2 * MINUTE)
    assert {k: [n.text for n in v] for k, v in shown.items()} == {"BP1.1": ["修正稿"]}


def test_notes_refuse_what_is_not_a_note(opener: Open) -> None:
    """A bad month, an empty author or text: an error naming the option, nothing stored."""
    notes = Notes(opener("datong"))
    with pytest.raises(UsageError, match="--month"):
        notes.add("BP1.1", "2017-13", "戶籍課", "x", T0_US)
    with pytest.raises(UsageError, match="--by"):
        notes.add("BP1.1", "2017-05", " ", "x", T0_US)
    with pytest.raises(UsageError, match="--text"):
        notes.add("BP1.1", "2017-05", "戶籍課", "", T0_US)
    assert notes.history() == []


# ---------------------------------------------------------------- runs


def test_runs_record_replace_and_record_once(opener: Open) -> None:
    """``record`` replaces, ``record_once`` keeps the first and says which stands."""
    runs = Runs(opener("datong"))
    assert (runs.get("digest", "2017-05"), runs.done("digest", "2017-05")) == (None, False)
    runs.record("pipeline", "clock", T0_US)
    runs.record("pipeline", "clock", T0_US + MINUTE)
    assert runs.get("pipeline", "clock") == T0_US + MINUTE
    assert runs.record_once("service", "started", T0_US) == T0_US
    assert runs.record_once("service", "started", T0_US + MINUTE) == T0_US
    again = Runs(opener("datong"))
    assert again.get("service", "started") == T0_US
    assert again.done("pipeline", "clock")
    assert not again.done("digest", "2017-05")


def test_runs_join_the_callers_transaction(opener: Open) -> None:
    """Inside a caller's transaction a run is recorded with it, and rolled back with it."""
    db = opener("datong")
    runs = Runs(db)
    seen_inside: list[bool] = []

    def record_then_fail() -> None:
        with db.transaction():
            runs.record("digest", "2017-05", T0_US)
            seen_inside.extend([db.in_transaction, runs.done("digest", "2017-05")])
            raise Boom

    with pytest.raises(Boom):
        record_then_fail()
    assert seen_inside == [True, True]
    assert not db.in_transaction
    assert not Runs(opener("datong")).done("digest", "2017-05")
    with db.transaction():
        runs.record("digest", "2017-05", T0_US)
    assert Runs(opener("datong")).done("digest", "2017-05")


# ---------------------------------------------------------------- the seam itself


def test_a_statement_with_the_wrong_number_of_parameters_is_refused(opener: Open) -> None:
    """The count is checked before the driver sees the statement, the same on both."""
    db = opener("datong")
    with pytest.raises(UsageError, match="takes 2 parameters, got 1"):
        db.execute("SELECT done_us FROM runs WHERE {office} AND job = ? AND period = ?", ("x",))


def test_sqlite_needs_explicit_transactions(tmp_path: Path) -> None:
    """A SQLite connection that begins transactions on its own is refused."""
    open_database(tmp_path / "office.db").close()
    conn = sqlite3.connect(tmp_path / "office.db")  # isolation_level "" (implicit BEGIN)
    with pytest.raises(UsageError, match="isolation_level=None"):
        Outbox(conn)
    conn.close()


def test_postgres_needs_an_office_and_autocommit(pg_url: str) -> None:
    """A PostgreSQL database holds many offices: the seam is told which one."""
    import psycopg

    from bsc_rules.store.postgres import connect

    conn = connect(pg_url)
    with pytest.raises(UsageError, match="name one"):
        Notes(conn)
    with pytest.raises(UsageError, match="scoped to office 'datong', not 'wanhua'"):
        Db.of(Db(conn, "datong"), "wanhua")
    conn.close()
    with psycopg.connect(pg_url) as manual, pytest.raises(UsageError, match="autocommit"):
        Db(manual, "datong")


def test_postgres_errors_name_the_server(pg: Open) -> None:
    """A failing statement is a StoreError naming host, port and database."""
    db = pg("datong")
    info = db.connection.info
    with pytest.raises(StoreError, match=f"{info.port}/{info.dbname}.*no_such_table"):
        db.execute("SELECT * FROM no_such_table WHERE {office}")
    assert db.execute("SELECT count(*) FROM runs WHERE {office}").fetchone() == (0,)


# ---------------------------------------------------------------- offices apart


def test_each_office_sees_only_its_own_outbox(pg: Open) -> None:
    """Two offices in one PostgreSQL database: the same Message-ID is two messages, and
    listing, delivering, marking and retrying one office's never touches the other's."""
    a, b = Outbox(pg("datong"), render=render), Outbox(pg("wanhua"), render=render)
    for box, n in ((a, 1), (a, 2), (b, 1), (b, 3)):
        with box.db.transaction():
            assert box.enqueue(mail(n), kind="overdue", now_us=T0_US)
    assert [i.message_id for i in a.due(T0_US)] == [mid(1), mid(2)]
    assert [i.message_id for i in b.items()] == [mid(1), mid(3)]
    assert a.get(mid(3)) is None
    a.mark_sent(mid(1), T0_US)
    a.mark_failed(mid(2), T0_US, "550 no such user", permanent=True)
    b.mark_failed(mid(1), T0_US, "550 mailbox disabled", permanent=True)
    assert [(i.message_id, i.status) for i in b.items()] == [
        (mid(1), "parked"),
        (mid(3), "pending"),
    ]
    assert a.retry(now_us=T0_US + MINUTE) == [mid(2)]
    assert [i.message_id for i in b.parked()] == [mid(1)]
    with pytest.raises(UsageError, match="not in the outbox"):
        a.retry(mid(3), now_us=T0_US)


def test_each_office_sees_only_its_own_notes_and_runs(pg: Open) -> None:
    """Notes and runs of one office are invisible to another in the same database."""
    Notes(pg("datong")).add("BP1.1", "2017-05", "戶籍課", "大同", T0_US)
    Notes(pg("wanhua")).add("BP1.1", "2017-05", "戶籍課", "萬華", T0_US)
    assert [n.text for n in Notes(pg("datong")).history()] == ["大同"]
    Runs(pg("datong")).record("digest", "2017-05", T0_US)
    assert not Runs(pg("wanhua")).done("digest", "2017-05")
    assert Runs(pg("wanhua")).record_once("service", "started", T0_US + MINUTE) == T0_US + MINUTE
    assert Runs(pg("datong")).get("service", "started") is None


def test_an_offices_writers_take_turns(pg: Open) -> None:
    """While one transaction of an office is open, a second writer of that office waits
    (here it gives up at a lock timeout); another office's writer does not wait."""
    holder, same, other = pg("datong"), pg("datong"), pg("wanhua")
    same.execute("SET lock_timeout = '50ms'")
    other.execute("SET lock_timeout = '50ms'")
    with holder.transaction():
        Runs(holder).record("pipeline", "clock", T0_US)
        with pytest.raises(StoreError, match="lock timeout"), same.transaction():
            pass
        assert not same.in_transaction  # rolled back, usable again
        Runs(other).record("pipeline", "clock", T0_US)
    Runs(same).record("pipeline", "clock", T0_US + MINUTE)
    assert Runs(holder).get("pipeline", "clock") == T0_US + MINUTE


def test_a_store_hands_out_the_seam_of_its_office(pg_url: str, tmp_path: Path) -> None:
    """``store.db``: the log's connection as the seam, scoped to the store's office."""
    from bsc_rules.store.postgres import PostgresStore
    from bsc_rules.store.sqlite import SQLiteStore

    local = SQLiteStore(tmp_path / "office.db")
    Runs(local.db).record("digest", "2017-05", T0_US)
    assert (local.db.engine, Runs(local.db).get("digest", "2017-05")) == ("sqlite", T0_US)
    local.close()
    datong, wanhua = PostgresStore(pg_url, "datong"), PostgresStore(pg_url, "wanhua")
    assert (datong.db.engine, datong.db.office) == ("postgres", "datong")
    Runs(datong.db).record("digest", "2017-05", T0_US)
    assert Runs(datong.db).done("digest", "2017-05")
    assert not Runs(wanhua.db).done("digest", "2017-05")
    datong.close()
    wanhua.close()
