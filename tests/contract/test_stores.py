"""The store contract: every EventStore (memory, SQLite, PostgreSQL) passes the same
tests: verdicts, rejections kept once, arrival order, own writes tracked and forgotten on
rollback, a batch all or nothing. PostgreSQL runs on the tests' throwaway cluster
(tests/pg.py); in CI a missing PostgreSQL fails instead of skipping."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bsc_rules.events import Event, Rejection, parse_line
from bsc_rules.store.base import EventStore, MemoryStore
from bsc_rules.store.sqlite import SQLiteStore
from tests.conftest import event

Opener = Callable[[], EventStore]


def _memory(tmp_path: Path) -> Opener:
    store = MemoryStore()  # one store object: memory has no second connection
    return lambda: store


def _sqlite(tmp_path: Path) -> Opener:
    return lambda: SQLiteStore(tmp_path / "office.db")


def _postgres(request: pytest.FixtureRequest) -> Opener:
    from bsc_rules.store.postgres import PostgresStore

    url: str = request.getfixturevalue("pg_url")  # a database of this test's own
    return lambda: PostgresStore(url, "datong")


BACKENDS = ("memory", "sqlite", "postgres")
SHARED = ("sqlite", "postgres")  # where several store objects (processes) share the data


def _opener(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if name == "postgres":
        return _postgres(request)
    return _memory(tmp_path) if name == "memory" else _sqlite(tmp_path)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    opened = _opener(request.param, request, tmp_path)()
    yield opened
    opened.close()


@pytest.fixture(params=SHARED)
def two(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EventStore, EventStore]]:
    """Two writers on the same data (two connections, as two processes have)."""
    opener = _opener(request.param, request, tmp_path)
    ours, theirs = opener(), opener()
    yield ours, theirs
    ours.close()
    theirs.close()


def parsed(n: int, time: str = "2017-03-01T10:00:00+08:00", **extra: object) -> Event:
    body = event("seal_certificate.issued", time, f"SC{n}", id=f"e-{n}", **extra)
    result = parse_line(json.dumps(body, ensure_ascii=False).encode())
    assert isinstance(result, Event)
    return result


def rewritten(e: Event) -> Event:
    """The same event written differently: keys reversed, other spacing and escaping."""
    obj = json.loads(e.body)
    body = json.dumps(dict(reversed(list(obj.items()))), ensure_ascii=True, indent=1)
    result = parse_line(body.replace("\n", " ").encode())
    assert isinstance(result, Event)
    return result


def seqs(store: EventStore) -> list[int]:
    return [seq for seq, _ in store.rows_after(0)]


def failing(events: list[Event]) -> Iterator[Event]:
    yield from events
    raise OSError("the input broke")


# ---------------------------------------------------------------- verdicts


def test_verdicts_accepted_duplicate_conflict(store: EventStore) -> None:
    first = parsed(1)
    assert store.append(first) == "accepted"
    assert store.append(rewritten(first)) == "duplicate"
    assert store.append(parsed(1, "2017-03-02T10:00:00+08:00")) == "conflict"
    assert store.append(parsed(2)) == "accepted"
    assert list(store.replay()) == [first.body, parsed(2).body]


def test_verdicts_within_one_batch(store: EventStore) -> None:
    """A key seen earlier in the same batch decides the later elements' verdicts."""
    first = parsed(1)
    batch = [first, rewritten(first), parsed(1, "2017-03-02T10:00:00+08:00"), parsed(2)]
    assert store.append_batch(batch) == ["accepted", "duplicate", "conflict", "accepted"]
    assert len(seqs(store)) == 2


def test_rejections_are_kept_once_per_origin_line_and_content(store: EventStore) -> None:
    def rejection(line: int, raw: bytes) -> Rejection:
        return Rejection("not valid JSON", field="id", line=line, raw=raw)

    store.reject(rejection(3, b"not json"), "a.jsonl")
    store.reject(rejection(3, b"not json"), "a.jsonl")
    assert store.rejected_count() == 1
    store.reject(rejection(4, b"not json"), "a.jsonl")
    store.reject(rejection(3, b"not json"), "b.jsonl")
    store.reject(rejection(3, b"not json!"), "a.jsonl")
    assert store.rejected_count() == 4


# ---------------------------------------------------------------- order


def test_replay_and_rows_after_follow_arrival_not_event_time(store: EventStore) -> None:
    times = ["2017-03-05T10:00:00+08:00", "2017-03-01T10:00:00+08:00", "2017-03-03T10:00:00+08:00"]
    events = [parsed(n, t) for n, t in enumerate(times)]
    store.append(events[0])
    store.append_batch(events[1:])
    assert list(store.replay()) == [e.body for e in events]
    rows = list(store.rows_after(0))
    assert [body for _, body in rows] == [e.body for e in events]
    assert [s for s, _ in rows] == sorted(s for s, _ in rows)
    assert [body for _, body in store.rows_after(rows[0][0])] == [e.body for e in events[1:]]
    assert list(store.rows_after(rows[-1][0])) == []


# ---------------------------------------------------------------- own writes


def test_own_writes_are_the_accepted_rows_taken_once(store: EventStore) -> None:
    first = parsed(1)
    store.append_batch([first, parsed(2)])
    store.append(rewritten(first))  # a duplicate writes nothing
    written = seqs(store)
    assert store.own_writes() == frozenset(written)
    assert store.take_own(written[0]) is True
    assert store.take_own(written[0]) is False
    assert store.own_writes() == frozenset(written[1:])


def test_forgotten_own_writes_are_no_longer_own(store: EventStore) -> None:
    """A writer that keeps no state (a file ingest) forgets its writes; later ones count."""
    store.append_batch([parsed(1), parsed(2)])
    written = seqs(store)
    store.forget_own()
    assert store.own_writes() == frozenset()
    assert store.take_own(written[0]) is False
    store.append(parsed(3))
    assert store.own_writes() == frozenset(seqs(store)[2:])


def test_a_batch_is_all_or_nothing_and_a_rollback_forgets_its_writes(store: EventStore) -> None:
    store.append(parsed(1))
    before, own = seqs(store), store.own_writes()
    with pytest.raises(OSError, match="input broke"):
        store.append_batch(failing([parsed(2), parsed(3)]))
    assert seqs(store) == before
    assert store.own_writes() == own
    assert store.append_batch([parsed(2), parsed(3)]) == ["accepted", "accepted"]
    assert store.own_writes() == frozenset(seqs(store))


def test_another_writers_rows_are_not_own(two: tuple[EventStore, EventStore]) -> None:
    ours, theirs = two
    ours.append(parsed(1))
    theirs.append(parsed(2))
    ours.append(parsed(3))
    one, two_, three = seqs(ours)
    assert ours.own_writes() == {one, three}
    assert theirs.own_writes() == {two_}
    assert theirs.append(parsed(1)) == "duplicate"  # the key is known to every writer


def test_a_seq_reused_after_a_rollback_is_not_own(two: tuple[EventStore, EventStore]) -> None:
    """Ours rolls back a batch; theirs stores an event under the seq ours had used: it is
    theirs, not ours."""
    ours, theirs = two
    with pytest.raises(OSError, match="input broke"):
        ours.append_batch(failing([parsed(1)]))
    theirs.append(parsed(2))
    assert ours.own_writes() == frozenset()
    (seq,) = seqs(ours)
    assert ours.take_own(seq) is False
    assert theirs.take_own(seq) is True
