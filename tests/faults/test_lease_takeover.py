"""Services sharing offices, with real processes (store/lease.py, spec/service.md): a
service SIGKILLed loses its offices to the other within ttl + renew interval, each at the
next epoch, and its old epoch no longer commits; a service stopped by SIGTERM hands its
offices over at once. The ttl and renew interval are shortened (the spec's 20 s and 5 s
are the defaults); the waits are polls with a deadline, on leases that expire by the
database's clock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bsc_rules.store import postgres as pg_store
from bsc_rules.store.lease import LeaseLost, Leases, assert_current
from tests.faults.harness import clean_env, kill, wait_until

DRIVER = Path(__file__).with_name("lease_driver.py")
ROOT = Path(__file__).resolve().parents[2]
OFFICES = ("daan", "datong", "neihu", "shilin")
RENEW = 0.25


class Driver:
    """A lease-holding subprocess; ``held`` is the last set of offices it printed."""

    def __init__(self, url: str, holder: str, ttl: float) -> None:
        argv = [sys.executable, str(DRIVER), url, holder, str(ttl), str(RENEW), *OFFICES]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=clean_env(PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE
        )
        self.held: dict[str, int] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.held = json.loads(line)

    def close(self) -> None:
        """SIGKILL if still running; reap it and close its pipe."""
        kill(self.proc)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextmanager
def in_process(url: str, holder: str, ttl: float) -> Iterator[Leases]:
    """A second service in this process, its renew loop in a thread."""
    leases = Leases(url, holder, OFFICES, ttl=ttl, renew_every=RENEW)
    stop = threading.Event()
    loop = threading.Thread(target=leases.run, args=(stop,))
    loop.start()
    try:
        yield leases
    finally:
        stop.set()
        loop.join(timeout=10)
        leases.close()


def record_run(conn: psycopg.Connection[Any], office: str, epoch: int) -> None:
    with conn.transaction():
        assert_current(conn, office, epoch)
        conn.execute("INSERT INTO runs VALUES (%s, 'digest', '2017-03', 1)", (office,))


def rows(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, int]]:
    found = conn.execute("SELECT office, holder, epoch FROM leases").fetchall()
    return {office: (holder, int(epoch)) for office, holder, epoch in found}


def alone(a: Driver) -> None:
    wait_until(lambda: len(a.held) == 4, 20, "the first service to take every office")


def split_evenly(a: Driver, b: Leases) -> None:
    wait_until(
        lambda: len(a.held) == 2 and len(b.held()) == 2 and not a.held.keys() & b.held().keys(),
        10,
        "two services to hold two offices each",
    )


def test_a_killed_service_is_taken_over_within_ttl_and_renew(pg_url: str) -> None:
    ttl = 1.5
    a = Driver(pg_url, "a", ttl)
    try:
        alone(a)
        with in_process(pg_url, "b", ttl) as b, pg_store.connect(pg_url) as conn:
            split_evenly(a, b)
            theirs = dict(a.held)
            assert {o: rows(conn)[o] for o in theirs} == {o: ("a", e) for o, e in theirs.items()}
            kill(a.proc)
            wait_until(lambda: len(b.held()) == 4, ttl + RENEW + 1.5, "the takeover")
            assert {o: rows(conn)[o] for o in theirs} == {
                o: ("b", e + 1) for o, e in theirs.items()
            }
            office, old = next(iter(theirs.items()))
            with pytest.raises(LeaseLost, match=f"lease epoch {old} is over"):
                record_run(conn, office, old)
            assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    finally:
        a.close()


def test_a_stopped_service_hands_its_offices_over_at_once(pg_url: str) -> None:
    """A ttl of 30 s: the takeover within 3 s can only come from the release."""
    ttl = 30.0
    a = Driver(pg_url, "a", ttl)
    try:
        alone(a)
        with in_process(pg_url, "b", ttl) as b, pg_store.connect(pg_url) as conn:
            split_evenly(a, b)
            theirs = dict(a.held)
            a.proc.send_signal(signal.SIGTERM)
            assert a.proc.wait(timeout=10) == 0
            assert a.held == {}  # it printed its release
            wait_until(lambda: len(b.held()) == 4, 3, "the handover")
            assert {o: rows(conn)[o] for o in theirs} == {
                o: ("b", e + 1) for o, e in theirs.items()
            }
            assert conn.execute("SELECT holder FROM lease_holders").fetchall() == [("b",)]
    finally:
        a.close()
