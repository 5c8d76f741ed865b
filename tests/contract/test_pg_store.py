"""The PostgreSQL event store keeps the SQLite store's contract: the same verdicts
(duplicate vs conflict, inside a batch too), rejections kept once, arrival order, an
append-only log, atomic batches; plus its own: offices apart, clear errors.

Each behaviour runs on both stores where both have it, so a difference shows as a failing
SQLite-or-PostgreSQL pair.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bsc_rules.errors import StoreError
from bsc_rules.events import Event, Rejection, parse_line
from bsc_rules.store import pg_schema
from bsc_rules.store import postgres as pg_store
from bsc_rules.store.db import SCHEMA_VERSION
from bsc_rules.store.postgres import PostgresStore
from bsc_rules.store.sqlite import SQLiteStore
from tests import pg
from tests.conftest import event


def ev(id: str = "x1", subject: str = "SC1", **over: Any) -> dict[str, Any]:
    return event("seal_certificate.issued", "2017-03-01T10:00:00+08:00", subject, id=id, **over)


def parsed(obj: dict[str, Any] | bytes) -> Event:
    line = obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode()
    out = parse_line(line)
    assert isinstance(out, Event), out
    return out


def respelled(obj: dict[str, Any]) -> Event:
    """The same content written otherwise: keys reversed, spaced, non-ASCII escaped."""
    return parsed(json.dumps(dict(reversed(obj.items())), indent=1, ensure_ascii=True).encode())


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each store of the contract, fresh."""
    if request.param == "sqlite":
        made: Any = SQLiteStore(tmp_path / "office.db")
    else:
        made = PostgresStore(request.getfixturevalue("pg_url"), office="datong")
    yield made
    made.close()


def test_verdicts_accepted_duplicate_conflict(store: Any) -> None:
    """New → accepted; same content (even written otherwise) → duplicate; other → conflict."""
    first = ev(subject="戶籍-1")
    assert store.append(parsed(first)) == "accepted"
    assert store.append(parsed(first)) == "duplicate"
    assert store.append(respelled(first)) == "duplicate"
    assert store.append(parsed({**first, "subject": "戶籍-2"})) == "conflict"
    assert store.count() == 1
    assert list(store.replay()) == [parsed(first).body]


def test_batch_verdicts_against_the_log_and_inside_the_batch(store: Any) -> None:
    """In a batch, the first of a key stands; later ones are judged against it, in
    arrival order, as are the keys already stored."""
    old, a, b = ev("old"), ev("a", "A1"), ev("b", "B1")
    assert store.append_batch([parsed(old)]) == ["accepted"]
    batch = [
        parsed({**old, "subject": "changed"}),  # conflict with the log
        respelled(old),  # duplicate of the log
        parsed(a),
        respelled(a),  # duplicate of the batch's first
        parsed({**a, "subject": "A2"}),  # conflict with the batch's first
        parsed({**b, "subject": "B0"}),
        parsed(b),  # the first b stands: this one conflicts
    ]
    verdicts = store.append_batch(batch)
    assert verdicts == [
        "conflict", "duplicate", "accepted", "duplicate", "conflict", "accepted", "conflict",
    ]  # fmt: skip
    assert list(store.replay()) == [parsed(old).body, parsed(a).body, batch[5].body]
    assert store.append_batch([]) == []


def test_arrival_order_is_kept(store: Any) -> None:
    """Replay gives the events in the order they were stored, not by id or time."""
    ids = ["z", "a", "m", "b", "y"]
    store.append_batch([parsed(ev(i, f"S{i}")) for i in ids[:3]])
    for i in ids[3:]:
        store.append(parsed(ev(i, f"S{i}")))
    assert [json.loads(b)["id"] for b in store.replay()] == ids
    seqs = [seq for seq, _ in store.rows_after(0)]
    assert seqs == sorted(seqs)
    assert [json.loads(b)["id"] for _, b in store.rows_after(seqs[2])] == ids[3:]


def test_rejections_kept_once_per_origin_line_and_content(store: Any) -> None:
    bad = Rejection("expected a string", field="subject", line=3, event_id="r1", raw=b"{...}")
    store.reject(bad, "a.jsonl")
    store.reject(bad, "a.jsonl")
    assert store.rejected_count() == 1
    store.reject(bad, "b.jsonl")
    store.reject(Rejection("x", field="id", line=4, raw=b"{...}"), "a.jsonl")
    store.reject(Rejection("x", field="id", line=3, raw=b"{other}"), "a.jsonl")
    assert store.rejected_count() == 4
    assert store.rejections()[0] == ("a.jsonl", 3, "r1", "subject", "expected a string")


def test_nul_and_backslash_keys_stay_exact(store: Any) -> None:
    """A valid event's id may hold NUL and backslashes: keys stay distinct and exact."""
    ids = ["a\\u0000b", "a\\\\0b", "a\\\\\\\\0b", "a0b"]  # JSON escapes: a␀b, a\0b, a\\0b
    bodies = [json.dumps(ev("ID")).replace('"ID"', f'"{i}"').encode() for i in ids]
    assert store.append_batch([parsed(b) for b in bodies]) == ["accepted"] * 4
    assert [store.append(parsed(b)) for b in bodies] == ["duplicate"] * 4
    assert store.count() == 4


def test_failed_batch_stores_nothing(store: Any) -> None:
    """A failure mid-batch (a constraint of the database) leaves nothing of the batch."""
    if isinstance(store, SQLiteStore):
        store.connection.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.subject = 'POISON'"
            " BEGIN SELECT RAISE(ABORT, 'poison'); END"
        )
    else:
        store.connection.execute(
            "ALTER TABLE events ADD CONSTRAINT poison CHECK (subject <> 'POISON')"
        )
    batch = [parsed(ev("p1")), parsed(ev("p2", "POISON")), parsed(ev("p3"))]
    with pytest.raises(StoreError):
        store.append_batch(batch)
    assert store.count() == 0
    assert store.own_writes() == frozenset()  # a rolled-back batch leaves no own writes
    assert store.append_batch([batch[0], batch[2]]) == ["accepted", "accepted"]
    assert store.count() == 2


def test_event_log_is_append_only(pg_url: str) -> None:
    store = PostgresStore(pg_url, office="datong")
    store.append(parsed(ev()))
    for stmt in ("UPDATE events SET subject = 'x'", "DELETE FROM events", "TRUNCATE events"):
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
            store.connection.execute(stmt)
    assert store.count() == 1
    store.close()


def test_offices_are_apart(pg_url: str) -> None:
    """The key is (office, source, id): each office has its own log, partition and rejections."""
    datong, wanhua = PostgresStore(pg_url, "datong"), PostgresStore(pg_url, "wanhua")
    one = parsed(ev())
    assert datong.append(one) == "accepted"
    assert wanhua.append_batch([one, parsed(ev("w2"))]) == ["accepted", "accepted"]
    assert (datong.count(), wanhua.count()) == (1, 2)
    datong.reject(Rejection("x", field="id", raw=b"?"))
    assert (datong.rejected_count(), wanhua.rejected_count()) == (1, 0)
    rows = datong.connection.execute(
        "SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [("events_datong", 1), ("events_wanhua", 2)]
    with pytest.raises(StoreError, match="office: this store holds 'datong', got 'wanhua'"):
        datong.append_batch([parsed(ev("d2")), parsed(ev("w3", office="wanhua"))])
    assert datong.count() == 1
    datong.close()
    wanhua.close()


def test_odd_office_codes_get_their_own_partition(pg_url: str) -> None:
    names = {pg_schema.partition_name(o) for o in ("datong", "Datong", "大同", "da-tong")}
    assert len(names) == 4
    for office in ("Datong", "大同"):
        store = PostgresStore(pg_url, office)
        assert store.append(parsed(ev())) == "accepted"
        store.close()
    again = PostgresStore(pg_url, "大同")  # the partition exists: reused
    assert again.count() == 1
    again.close()


def test_unreachable_server_names_host_and_port_not_password() -> None:
    port = pg.free_port()
    url = f"postgresql://bsc:s3cret-pw@127.0.0.1:{port}/city"
    with pytest.raises(StoreError) as caught:
        PostgresStore(url, "datong")
    text = str(caught.value)
    assert f"127.0.0.1:{port}/city" in text
    assert "s3cret-pw" not in text


def test_newer_schema_is_refused_naming_both_versions(pg_url: str) -> None:
    PostgresStore(pg_url, "datong").close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match=f"version 99.* up to {SCHEMA_VERSION}"):
        PostgresStore(pg_url, "datong")


def test_schema_is_created_once_and_commits_are_synchronous(pg_url: str) -> None:
    first, second = PostgresStore(pg_url, "datong"), PostgresStore(pg_url, "datong")
    conn = second.connection
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (
        str(SCHEMA_VERSION),
    )
    assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    first.append(parsed(ev()))
    assert second.count() == 1  # committed before append returned
    first.close()
    second.close()


def test_rows_after_reads_by_pages(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_store, "_PAGE", 3)
    store = PostgresStore(pg_url, "datong")
    store.append_batch([parsed(ev(f"e{n}", f"S{n}")) for n in range(10)])
    rows = list(store.rows_after(0))
    assert [json.loads(b)["id"] for _, b in rows] == [f"e{n}" for n in range(10)]
    assert store.own_writes() == {seq for seq, _ in rows}
    store.close()


def test_writers_of_one_office_take_turns(pg_url: str) -> None:
    """While another transaction writes to the office, a write waits (here: times out,
    storing nothing), so seqs commit in order and rows_after never skips a row; another
    office is not held up."""
    datong, wanhua = PostgresStore(pg_url, "datong"), PostgresStore(pg_url, "wanhua")
    datong.connection.execute("SET lock_timeout = '50ms'")
    with psycopg.connect(pg_url, autocommit=True) as other, other.transaction():
        other.execute(pg_schema.OFFICE_WRITE_LOCK, ("datong",))
        with pytest.raises(StoreError, match="lock timeout"):
            datong.append(parsed(ev()))
        with pytest.raises(StoreError, match="lock timeout"):
            datong.append_batch([parsed(ev())])
        assert wanhua.append(parsed(ev())) == "accepted"
    assert datong.count() == 0
    assert datong.append(parsed(ev())) == "accepted"
    datong.close()
    wanhua.close()
