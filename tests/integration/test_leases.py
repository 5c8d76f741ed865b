"""Office leases on a real PostgreSQL, in one process: the share, renewal, takeover,
fencing and wake-ups (store/lease.py). Expiry is made by moving a row's ``expires_at``
into the past on the database's clock (no waiting); tests/faults/test_lease_takeover.py
lets real processes expire for real."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bsc_rules.errors import StoreError, UsageError
from bsc_rules.store import postgres as pg_store
from bsc_rules.store.lease import CHANNEL, EVERY, LeaseLost, Leases, Wakeups, assert_current, notify
from bsc_rules.store.postgres import PostgresStore
from bsc_rules.store.sqlconn import Db
from tests.integration.test_pg_migrations import parsed_events

OFFICES = ("datong", "daan", "neihu", "shilin", "wanhua")


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with pg_store.connect(pg_url) as c:
        yield c


def lease_rows(conn: psycopg.Connection[Any]) -> dict[str, tuple[str | None, int]]:
    rows = conn.execute("SELECT office, holder, epoch FROM leases").fetchall()
    return {office: (holder, int(epoch)) for office, holder, epoch in rows}


def record_run(conn: psycopg.Connection[Any], office: str, epoch: int) -> None:
    """A scheduled job's result, committed only while ``epoch`` is current."""
    with conn.transaction():
        assert_current(conn, office, epoch)
        conn.execute("INSERT INTO runs VALUES (%s, 'digest', '2017-03', 1)", (office,))


def fence_only(conn: psycopg.Connection[Any], office: str, epoch: int) -> None:
    with conn.transaction():
        assert_current(conn, office, epoch)


def expire(conn: psycopg.Connection[Any], holder: str) -> None:
    """``holder``'s leases and heartbeat run out (as when it stops renewing)."""
    conn.execute(
        "UPDATE leases SET expires_at = now() - interval '1 second' WHERE holder = %s", (holder,)
    )
    conn.execute(
        "UPDATE lease_holders SET expires_at = now() - interval '1 second' WHERE holder = %s",
        (holder,),
    )


def test_one_service_takes_every_office_at_epoch_1(
    pg_url: str, conn: psycopg.Connection[Any]
) -> None:
    a = Leases(pg_url, "a", OFFICES)
    change = a.tick()
    assert change.gained == dict.fromkeys(OFFICES, 1)
    assert not change.lost
    assert a.held() == dict.fromkeys(OFFICES, 1)
    assert lease_rows(conn) == {o: ("a", 1) for o in OFFICES}
    assert not a.tick()  # renewed, nothing changed
    assert lease_rows(conn) == {o: ("a", 1) for o in OFFICES}
    a.close()


def test_two_services_split_the_offices_evenly(pg_url: str, conn: psycopg.Connection[Any]) -> None:
    """B's heartbeat makes two live services: A lets go of the extra, B takes them."""
    a, b = Leases(pg_url, "a", OFFICES), Leases(pg_url, "b", OFFICES)
    a.tick()
    assert not b.tick()  # all held and unexpired: nothing to take yet
    released = a.tick()  # share = ceil(5 / 2) = 3: the last two in code order go
    assert released.lost == {"shilin", "wanhua"}
    assert not released.gained
    taken = b.tick()
    assert taken.gained == {"shilin": 2, "wanhua": 2}  # every takeover adds one to the epoch
    assert a.held() == {"daan": 1, "datong": 1, "neihu": 1}
    assert not a.tick()  # stable: 3 + 2
    assert not b.tick()
    holders = [h for h, _ in lease_rows(conn).values()]
    assert sorted(holders) == ["a", "a", "a", "b", "b"]
    a.close()
    b.close()


def test_an_expired_service_is_taken_over_and_its_epoch_fenced(
    pg_url: str, conn: psycopg.Connection[Any]
) -> None:
    a, b = Leases(pg_url, "a", OFFICES), Leases(pg_url, "b", OFFICES)
    a.tick()
    expire(conn, "a")
    assert b.tick().gained == dict.fromkeys(OFFICES, 2)
    change = a.tick()  # A comes back: its epochs moved on, it renews nothing
    assert change.lost == set(OFFICES)
    lost = r"office 'datong': lease epoch 1 is over \(epoch 2, holder 'b'\)"
    with pytest.raises(LeaseLost, match=lost):
        record_run(conn, "datong", 1)
    assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)  # rolled back
    with conn.transaction():
        assert b.fence(Db(conn, "datong"), "datong") == 2
        conn.execute("INSERT INTO runs VALUES ('datong', 'digest', '2017-03', 1)")
    assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    a.close()
    b.close()


def test_a_takeover_waits_for_the_holders_fenced_transaction(
    pg_url: str, conn: psycopg.Connection[Any]
) -> None:
    """While A's transaction holds the fence, B skips the office even though it expired;
    once A commits, B takes it and A's epoch fails from then on."""
    a, b = Leases(pg_url, "a", ["datong"]), Leases(pg_url, "b", ["datong"])
    a.tick()
    expire(conn, "a")
    with pg_store.connect(pg_url) as other, other.transaction():
        a.fence(other, "datong")
        assert not b.tick()  # the locked row is skipped, not waited for
        other.execute("INSERT INTO runs VALUES ('datong', 'digest', '2017-03', 1)")
    assert b.tick().gained == {"datong": 2}
    with pytest.raises(LeaseLost):
        fence_only(conn, "datong", 1)
    assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    a.close()
    b.close()


def test_release_frees_every_office_and_the_heartbeat(
    pg_url: str, conn: psycopg.Connection[Any]
) -> None:
    a, b = Leases(pg_url, "a", OFFICES), Leases(pg_url, "b", OFFICES)
    a.tick()
    b.tick()
    a.tick()
    b.tick()
    a.release()
    assert a.held() == {}
    assert conn.execute("SELECT holder FROM lease_holders").fetchall() == [("b",)]
    assert b.tick().gained.keys() == {"daan", "datong", "neihu"}  # alone again: all five
    assert set(b.held()) == set(OFFICES)
    a.close()
    b.close()


def test_the_fence_belongs_inside_a_transaction(pg_url: str, conn: psycopg.Connection[Any]) -> None:
    a = Leases(pg_url, "a", OFFICES)
    a.tick()
    with pytest.raises(UsageError, match="inside the write's transaction"):
        assert_current(conn, "datong", 1)
    with pytest.raises(LeaseLost, match="not held by a"):
        a.fence(conn, "nowhere")
    a.close()


def test_bad_settings_are_refused(pg_url: str) -> None:
    with pytest.raises(UsageError, match="renew every 5 s, within the ttl 5 s"):
        Leases(pg_url, "a", OFFICES, ttl=5, renew_every=5)
    with pytest.raises(UsageError, match="at least one office"):
        Leases(pg_url, "a", [])


def test_the_run_loop_ticks_until_stopped_then_releases(
    pg_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The loop's pauses are injected: three ticks, then the stop; no real waiting."""
    a = Leases(pg_url, "a", OFFICES, ttl=20, renew_every=5)
    stop, pauses, changes = threading.Event(), [], []

    def pause(seconds: float) -> bool:
        pauses.append(seconds)
        return len(pauses) == 3

    a.run(stop, wait=pause, on_change=changes.append)
    assert pauses == [5, 5, 5]
    assert [c.gained for c in changes] == [dict.fromkeys(OFFICES, 1)]  # then no change
    assert lease_rows(conn) == {o: (None, 1) for o in OFFICES}  # released on the way out
    assert conn.execute("SELECT count(*) FROM lease_holders").fetchone() == (0,)
    a.close()


def test_a_tick_without_the_database_is_a_store_error(
    pg_url: str, conn: psycopg.Connection[Any]
) -> None:
    a = Leases(pg_url, "a", OFFICES)
    a.tick()
    conn.execute("ALTER TABLE lease_holders RENAME TO gone")
    with pytest.raises(StoreError, match=r"for leases: .*lease_holders"):
        a.tick()
    assert a.held() == dict.fromkeys(OFFICES, 1)  # as at the last tick that committed
    conn.execute("ALTER TABLE gone RENAME TO lease_holders")
    assert not a.tick()
    a.close()


# ---------------------------------------------------------------- wake-ups


def test_a_notify_wakes_a_waiting_listener(pg_url: str, conn: psycopg.Connection[Any]) -> None:
    listener = Wakeups(pg_url)
    got: list[set[str]] = []
    waiting = threading.Thread(target=lambda: got.append(listener.wait(timeout=10)))
    waiting.start()
    with conn.transaction():
        notify(conn, "datong")
        notify(Db(conn, "daan"), "daan")
    waiting.join(timeout=10)
    assert got == [{"datong", "daan"}]
    listener.close()


def test_a_rolled_back_ingest_wakes_nobody(pg_url: str, conn: psycopg.Connection[Any]) -> None:
    listener = Wakeups(pg_url)
    with conn.transaction():
        notify(conn, "datong")
        conn.execute("INSERT INTO runs VALUES ('datong', 'digest', '2017-03', 1)")
        raise psycopg.Rollback  # the ingest failed
    assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert listener.wait(timeout=0.2) == set()  # the timeout passed, nothing came
    conn.execute("SELECT pg_notify(%s, 'neihu')", (CHANNEL,))
    assert listener.wait(timeout=10) == {"neihu"}
    listener.close()


def test_a_lost_listening_connection_listens_again_and_says_refresh_all(
    pg_url: str, conn: psycopg.Connection[Any]
) -> None:
    listener = Wakeups(pg_url)
    pid = listener._conn.info.backend_pid
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert listener.wait(timeout=10) == {EVERY}
    notify(conn, "datong")
    assert listener.wait(timeout=10) == {"datong"}
    listener.close()


def test_the_postgres_store_notifies_what_it_stored(pg_url: str) -> None:
    """Ingest wakes the listeners of the office, once per batch that stored something;
    a batch of duplicates stores nothing and wakes nobody."""
    listener = Wakeups(pg_url)
    store = PostgresStore(pg_url, "datong")
    events = parsed_events(3)
    assert store.append_batch(events) == ["accepted"] * 3
    assert listener.wait(timeout=10) == {"datong"}
    assert store.append_batch(events) == ["duplicate"] * 3
    assert store.append(events[0]) == "duplicate"
    assert listener.wait(timeout=0.2) == set()
    assert store.append(parsed_events(4)[3]) == "accepted"
    assert listener.wait(timeout=10) == {"datong"}
    store.close()
    listener.close()
