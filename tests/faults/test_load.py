"""Load: producers in threads and in processes call ``Scorecard.ingest`` on one database
as fast as they can for a bounded time, each event its own durable commit, some events
sent by every producer at once.

Afterwards: every acknowledged event is in the log exactly once and nothing else is;
each event sent by several producers was accepted by exactly one; every producer
finished within its bound (no deadlock); and the report equals that of the same events
ingested by one writer in file order (arrival order does not matter).
"""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from random import Random
from typing import Any

import orjson
import pytest

from bsc_rules.calendar import to_us
from bsc_rules.dev.simulate import simulate
from bsc_rules.rules.ruleset import load_ruleset
from bsc_rules.scorecard import Scorecard
from tests.faults.harness import DRIVER, clean_env, db_keys, record, scale

SECONDS = scale(2, 10)
THREADS, PROCESSES = scale(2, 4), scale(2, 4)
SHARED = 200  # events every producer sends
RULES = load_ruleset()
END_2017 = to_us(datetime.fromisoformat("2017-12-31T23:59:59+08:00"))
Key = tuple[str, str]


@functools.cache
def _lines() -> tuple[list[bytes], list[bytes]]:
    """Distinct simulated events of a year: the producers' own, and the shared ones."""
    seen: set[Key] = set()
    lines = []
    for e in itertools.islice(simulate(seed=13), scale(12_000, 40_000)):
        if (e["source"], e["id"]) not in seen:
            seen.add((e["source"], e["id"]))
            lines.append(orjson.dumps(e))
    return lines[SHARED:], lines[:SHARED]


def _key(raw: bytes) -> Key:
    obj = orjson.loads(raw)
    return obj["source"], obj["id"]


def _thread_producer(db: Path, lines: list[bytes], acks: list[tuple[str, Key]]) -> None:
    deadline = time.monotonic() + SECONDS
    with Scorecard.open(db, RULES, matcher="python") as card:
        for raw in lines:
            if time.monotonic() > deadline:
                break
            outcome = card.ingest(raw)
            assert outcome.event is not None, str(outcome.rejection)
            acks.append((outcome.status, outcome.event.key))


def _report(card: Scorecard) -> dict[str, Any]:
    report = card.report_at(END_2017)
    return {k: v for k, v in report.as_dict().items() if k != "rejected"}


def test_concurrent_producers_lose_and_double_nothing(tmp_path: Path) -> None:
    """Threads and processes at full speed: the log is the acknowledged events, once each."""
    own, shared = _lines()
    producers = THREADS + PROCESSES
    rng = Random(13)
    plans: list[list[bytes]] = []
    for n in range(producers):
        mine = own[n::producers]
        for raw in shared:
            mine.insert(rng.randrange(min(len(mine), 400)), raw)
        plans.append(mine)
    db = tmp_path / "load.db"
    Scorecard.open(db, RULES, matcher="python").close()  # created before the race
    acks: list[list[tuple[str, Key]]] = [[] for _ in range(producers)]
    procs = []
    for n in range(THREADS, producers):
        path = tmp_path / f"producer-{n}.jsonl"
        path.write_bytes(b"\n".join(plans[n]) + b"\n")
        argv = [sys.executable, str(DRIVER), "ack", str(path), str(db),
                "--until-seconds", str(SECONDS)]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, env=clean_env()))
    threads = [
        threading.Thread(target=_thread_producer, args=(db, plans[n], acks[n]), daemon=True)
        for n in range(THREADS)
    ]
    for t in threads:
        t.start()
    for n, proc in zip(range(THREADS, producers), procs, strict=True):
        out, _ = proc.communicate(timeout=SECONDS + 120)
        assert proc.returncode == 0, f"producer {n} failed"
        for line in out.decode().splitlines():
            kind, status, source, ident = line.split("\t")
            assert kind == "ack", line
            acks[n].append((status, (source, ident)))
    for t in threads:
        t.join(timeout=SECONDS + 120)
        assert not t.is_alive(), "a producer thread is stuck (deadlock?)"
    everything = [a for producer in acks for a in producer]
    assert {status for status, _ in everything} <= {"accepted", "duplicate"}
    log = db_keys(db)
    assert len(log) == len(set(log)), "an event is in the log twice"
    acked = {key for _, key in everything}
    assert set(log) == acked, "the log and the acknowledgements differ"
    accepted = Counter(key for status, key in everything if status == "accepted")
    assert all(n == 1 for n in accepted.values()), "an event was accepted twice"
    assert sum(accepted.values()) == len(log)
    shared_keys = {_key(raw) for raw in shared}
    assert {k for k in shared_keys if k in acked} == {k for k in shared_keys if accepted[k]}
    with (
        Scorecard.open(db, RULES, matcher="python") as stored,
        Scorecard(RULES, matcher="python") as single,
    ):
        single.ingest_lines(raw for raw in [*shared, *own] if _key(raw) in acked)
        assert _report(stored) == _report(single)
    rate = len(log) / SECONDS
    record("load", trials=1, inputs=len(log), faults=producers, rate=int(rate))
    assert len(log) > 100, f"only {len(log)} events in {SECONDS} s"


@pytest.mark.parametrize("producers", [scale(3, 8)])
def test_one_event_from_many_writers_at_once_is_stored_once(tmp_path: Path, producers: int) -> None:
    """One event from many writers at once: stored once, one accepted, the rest duplicate."""
    _, shared = _lines()
    db = tmp_path / "race.db"
    Scorecard.open(db, RULES, matcher="python").close()
    barrier = threading.Barrier(producers)
    results: list[list[str]] = [[] for _ in range(producers)]

    def send(n: int) -> None:
        with Scorecard.open(db, RULES, matcher="python") as card:
            for raw in shared[:50]:
                barrier.wait(timeout=60)
                results[n].append(card.ingest(raw).status)

    threads = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive()
    assert len(db_keys(db)) == 50
    for i in range(50):
        assert sorted(r[i] for r in results) == ["accepted"] + ["duplicate"] * (producers - 1)
    record("load.race", trials=50, faults=producers)
