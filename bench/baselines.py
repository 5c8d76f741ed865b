"""Baselines on the same input: what the same work costs without bsc_rules.

* the floor: decode each line with orjson and insert it into SQLite with ``executemany``,
  one transaction, WAL, ``synchronous=FULL``, into a table shaped like bsc_rules' event log
  (the idempotency key ``UNIQUE (source, id)`` included: storing events idempotently is
  the least any event log must do);
* raw durable_rules: each decoded event asserted as a fact to a one-rule ruleset and
  retracted, in a ``Host`` whose ``_run`` starts nothing (no timer threads: everything
  runs synchronously in the caller, as ``bsc_rules.matching.durable`` does);
* a durable commit per event: one INSERT and COMMIT per event (the floor of live ingest);
* reading the log back: SELECT every stored body and decode it (the floor of a restart).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import Any

import orjson

from bench.cases import (
    Result,
    Timer,
    case,
    db_bytes,
    drop_db,
    fresh_db,
    lines_of,
    peak_rss,
    throughput,
)
from bench.cases import percentiles as _percentiles

TABLE = """
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY,
    source  TEXT NOT NULL,
    id      TEXT NOT NULL,
    type    TEXT NOT NULL,
    time    TEXT NOT NULL,
    subject TEXT NOT NULL,
    body    BLOB NOT NULL,
    UNIQUE (source, id)
)
"""
INSERT = (
    "INSERT INTO events (source, id, type, time, subject, body) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (source, id) DO NOTHING"
)


def _connect(db: str, variant: str = "") -> sqlite3.Connection:
    conn = sqlite3.connect(fresh_db(db), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    if variant == "cache":  # a 256 MiB page cache instead of SQLite's 2 MiB
        conn.execute("PRAGMA cache_size = -262144")
    conn.execute(TABLE.replace(",\n    UNIQUE (source, id)", "") if variant == "noindex" else TABLE)
    return conn


def _row(line: bytes) -> tuple[Any, ...]:
    o = orjson.loads(line)
    return (o["source"], o["id"], o["type"], o["time"], o["subject"], line)


@case
def case_floor(path: str, db: str, variant: str = "") -> Result:
    """orjson decode + SQLite ``executemany`` insert, one transaction, WAL.

    ``variant`` (not in ``make bench``; for the scaling question): ``noindex`` without the
    ``UNIQUE (source, id)`` index, ``cache`` with a 256 MiB page cache.
    """
    conn = _connect(db, variant)
    count = 0

    def rows() -> Any:
        nonlocal count
        for line in lines_of(path):
            count += 1
            yield _row(line)

    with Timer() as t:
        conn.execute("BEGIN")
        conn.executemany(
            INSERT.split(" ON CONFLICT")[0] if variant == "noindex" else INSERT, rows()
        )
        conn.execute("COMMIT")
    stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    size = db_bytes(db)
    drop_db(db)
    return throughput(count, t, stored=stored, db_bytes=size)


def _sync_host() -> Any:
    from durable import engine

    class SyncHost(engine.Host):  # type: ignore[misc]
        def _run(self) -> None:
            """Start nothing: no timer threads."""

    return SyncHost(), engine.MessageNotHandledException


def _assert_retract(path: str, test: dict[str, object]) -> tuple[int, int, Timer]:
    """Assert then retract each decoded event against a one-rule ruleset of ``test``."""
    fired = [0]

    def action(_closure: object) -> None:
        fired[0] += 1

    host, not_handled = _sync_host()
    host.register_rulesets({"raw": {"r0": {"all": [{"m": test}], "run": action}}})
    count = 0
    with Timer() as t:
        for line in lines_of(path):
            fact = orjson.loads(line)
            count += 1
            with contextlib.suppress(not_handled):
                host.assert_fact("raw", fact)
            host.retract_fact("raw", fact)
    return count, fired[0], t


@case
def case_raw_durable(path: str, variants: bool = False) -> Result:
    """Each event decoded, asserted as a fact to a one-rule ruleset (``type ==
    registration.completed``: a quarter of the events fire it) and retracted.

    With ``variants``: the same with a rule every event fires (as each event fires at least
    one rule of bsc_rules' ruleset), and each event posted instead (consumed when it fires).
    """
    count, fired, t = _assert_retract(path, {"type": "registration.completed"})
    result = throughput(count, t, fired=fired)
    if variants:
        _, fired_all, every = _assert_retract(path, {"specversion": "1.0"})
        result["every_fired"] = fired_all
        result["every_events_per_s"] = count / every.wall
        host, not_handled = _sync_host()
        rule = {"all": [{"m": {"type": "registration.completed"}}], "run": lambda _c: None}
        host.register_rulesets({"raw_post": {"r0": rule}})
        with Timer() as p:
            for line in lines_of(path):
                with contextlib.suppress(not_handled):
                    host.post("raw_post", orjson.loads(line))
        result["post_events_per_s"] = count / p.wall
    result["peak_rss"] = peak_rss()
    return result


@case
def case_commit_latency(path: str, db: str, n: int) -> Result:
    """One INSERT + COMMIT per event (WAL, ``synchronous=FULL``): a durable commit's floor."""
    conn = _connect(db)
    samples = []
    clock = time.perf_counter
    count = 0
    for line in lines_of(path):
        start = clock()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT, _row(line))
        conn.execute("COMMIT")
        samples.append(clock() - start)
        count += 1
        if count == n:
            break
    conn.close()
    drop_db(db)
    return {"events": count, **_percentiles(samples), "events_per_s": count / sum(samples)}


@case
def case_read_log(db: str) -> Result:
    """Every stored body read back in order and decoded: the floor of a restart."""
    conn = sqlite3.connect(db)
    count = 0
    with Timer() as t:
        for (body,) in conn.execute("SELECT body FROM events ORDER BY seq"):
            orjson.loads(body)
            count += 1
    conn.close()
    return throughput(count, t)
