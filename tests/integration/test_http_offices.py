"""``bsc-rules serve`` over many offices: the Taipei example's twelve on a directory of
SQLite files and on PostgreSQL, as a real process. Each office's token posts and reads
its own office only; the read token reads them all: each office's report equals
``status --office`` on the same database, ``/status`` lists the offices, ``/metrics``
carries each office's label. A second ``serve`` on the same PostgreSQL database takes
its share of the offices' mail (the leases) and still accepts any office's events."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from bsc_rules.cli import main
from bsc_rules.dev.simulate import simulate
from tests.faults.harness import clean_env, wait_until
from tests.integration.test_http_serve import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "taipei"
AS_OF = "2017-02-01T12:00:00+08:00"
TOKENS = {"datong": "tok-datong", "zhongshan": "tok-zhongshan"}
READ = "tok-city-reader"
BATCH = "application/cloudevents-batch+json"


class Served:
    """A ``bsc-rules serve --db DB --rules examples/taipei`` process."""

    def __init__(self, db: str, folder: Path) -> None:
        self.db, self.port = db, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.toml").write_text("", encoding="utf-8")
        env = clean_env(
            BSC_RULES_TOKENS__DATONG=TOKENS["datong"],
            BSC_RULES_TOKENS__ZHONGSHAN=TOKENS["zhongshan"],
            BSC_RULES_READ_TOKEN=READ,
            BSC_RULES_MATCHER="python",
            BSC_RULES_TICK_MINUTES="1440",
            BSC_RULES_SMTP__PORT=str(free_port()),  # nobody listens: the mail waits
            BSC_RULES_LEASE_TTL_SECONDS="4",
            BSC_RULES_LEASE_RENEW_SECONDS="1",
        )
        argv = [sys.executable, "-m", "bsc_rules", "serve", "--db", db, "--rules", str(EXAMPLE)]
        argv += ["--port", str(self.port), "--settings", str(folder / "settings.toml")]
        self.log = folder / f"serve-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        wait_until(self._ready, 60, f"serve to be ready: {self.log.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve ended: {self.log.read_text()}")
        with suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        return False

    def post(self, events: list[dict[str, Any]], token: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": BATCH}
        return httpx.post(f"{self.url}/events", content=orjson.dumps(events), headers=headers)

    def post_all(self, events: list[dict[str, Any]], token: str) -> None:
        """``events`` in batches of 200, each answered 201 or 200 (the simulation's
        deliberate duplicates)."""
        for start in range(0, len(events), 200):
            answer = self.post(events[start : start + 200], token)
            assert answer.status_code == 200, answer.text[:500]
            assert {r["status"] for r in answer.json()["results"]} <= {200, 201}

    def get(self, path: str, token: str, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{self.url}{path}", params=params, headers=headers, timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def january() -> dict[str, list[dict[str, Any]]]:
    """January 2017 of Datong and Zhongshan, by office."""
    events: dict[str, list[dict[str, Any]]] = {"datong": [], "zhongshan": []}
    for event in simulate(year=2017, seed=5, offices=tuple(TOKENS)):
        if event["time"] >= "2017-02":
            break
        events[event["office"]].append(event)
    return events


@pytest.fixture(params=["directory", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "directory":
        yield str(tmp_path / "offices") + os.sep
    else:
        yield request.getfixturevalue("pg_url")


def status(db: str, office: str) -> Any:
    out = io.StringIO()
    argv = ["status", "--db", db, "--office", office, "--as-of", AS_OF, "--format", "json"]
    argv += ["--rules", str(EXAMPLE), "--matcher", "python"]
    assert main(argv, stdout=out) == 0, out.getvalue()
    return orjson.loads(out.getvalue())


def test_each_office_posts_and_reads_its_own_and_the_city_reads_all(
    database: str, tmp_path: Path, january: dict[str, list[dict[str, Any]]]
) -> None:
    served = Served(database, tmp_path / "a")
    try:
        for office, events in january.items():
            served.post_all(events, TOKENS[office])
        # another office's event, with Datong's token: refused, nothing stored
        crossed = {**january["zhongshan"][0], "id": "crossed-1"}
        answer = served.post([crossed], TOKENS["datong"])
        assert answer.json()["results"][0]["status"] == 403
        # an office of the deployment without a token: no token posts for it
        daan = {**crossed, "id": "daan-1", "office": "daan", "source": "/taipei/daan/records"}
        assert served.post([daan], TOKENS["zhongshan"]).json()["results"][0]["status"] == 403

        mine = served.get("/offices/datong/report", TOKENS["datong"], as_of=AS_OF)
        assert mine.status_code == 200
        assert served.get("/offices/zhongshan/report", TOKENS["datong"]).status_code == 403
        assert served.get("/offices/nowhere/report", READ).status_code == 404
        for office in TOKENS:
            report = served.get(f"/offices/{office}/report", READ, as_of=AS_OF)
            assert report.status_code == 200
            assert report.json() == status(database, office)
        assert mine.json() == status(database, "datong")

        index = served.get("/status", READ)
        assert index.status_code == 200
        assert index.text.count('href="offices/') == 12
        assert "臺北市中山區戶政事務所" in index.text
        page = served.get("/status", TOKENS["zhongshan"])  # one office's token: its own page
        assert "臺北市中山區戶政事務所" in page.text
        assert "臺北市大同區戶政事務所" not in page.text
        assert served.get("/offices/datong/status", TOKENS["zhongshan"]).status_code == 403

        every = served.get("/metrics", READ).text
        assert 'bsc_events_stored{office="datong"}' in every
        assert 'bsc_events_stored{office="zhongshan"}' in every
        own = served.get("/metrics", TOKENS["datong"]).text
        assert 'office="datong"' in own
        assert 'office="zhongshan"' not in own
    finally:
        assert served.stop() == 0, served.log.read_text()
    assert "bsc-rules serve stopped" in served.log.read_text()


def test_two_servers_on_postgresql_share_the_mail_and_both_take_events(
    pg_url: str, tmp_path: Path, january: dict[str, list[dict[str, Any]]]
) -> None:
    first = Served(pg_url, tmp_path / "a")
    second = None
    try:
        second = Served(pg_url, tmp_path / "b")
        holders = {first.proc.pid: 0, second.proc.pid: 0}

        def split() -> bool:
            for pid in holders:
                holders[pid] = 0
            with psycopg.connect(pg_url) as conn:
                rows = conn.execute(
                    "SELECT holder FROM leases WHERE expires_at > now() AND office <> '_city'"
                ).fetchall()
            for (holder,) in rows:
                pid = int(holder.split(":")[1])
                holders[pid] = holders.get(pid, 0) + 1
            return sorted(holders.values()) == [6, 6]

        wait_until(split, 30, f"the twelve offices split between two servers: {holders}")
        # each server takes any office's events, whichever holds its mail
        datong, zhongshan = january["datong"], january["zhongshan"]
        first.post_all(datong[:100], TOKENS["datong"])
        second.post_all(datong[100:], TOKENS["datong"])
        second.post_all(zhongshan, TOKENS["zhongshan"])
        for office in TOKENS:
            one = first.get(f"/offices/{office}/report", READ, as_of=AS_OF).json()
            other = second.get(f"/offices/{office}/report", READ, as_of=AS_OF).json()
            assert one == other == status(pg_url, office)
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT count(*) FROM events WHERE office = 'datong'").fetchone()
        assert row is not None
        assert row[0] == len({(e["source"], e["id"]) for e in datong})
    finally:
        if second is not None:
            assert second.stop() == 0, second.log.read_text()
        assert first.stop() == 0, first.log.read_text()
