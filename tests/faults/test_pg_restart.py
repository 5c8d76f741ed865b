"""The PostgreSQL server restarted under load (spec/service.md "Deployments and --db",
"Leases"; docs/guarantees.md): nothing acknowledged is lost, nothing is sent twice.

* **Ingest.** Two producers acknowledging event by event (the library, one commit per
  event: ``driver.py ack-offices``) and a ``bsc-rules ingest`` of the same half month of
  the Taipei example's twelve offices write at once; the server is restarted (``pg_ctl
  stop -m fast``, then start: every session ended, open transactions rolled back) in the
  middle. Each fails with a clear error; the ingest run again (as a workflow retries)
  completes.
  Every acknowledged event is in the log, every ``(office, source, id)`` once, and the
  offices' status is that of a clean ingest of the same file into a fresh database.
* **Delivery.** One ``bsc-rules run`` (the fleet) delivers a pre-filled outbox; the
  server is restarted while a message is in the SMTP server's DATA, and again while
  every office is idle. Every message is delivered and recorded sent, none twice but the
  one whose sending could not be recorded (same Message-ID); the service goes on holding
  its offices (its lease loop and its wake-ups connect again, each office's service is
  opened again: ``Fleet.heal``) and stops with status 0 on SIGTERM.

The server restarted is the session's throwaway cluster (tests/pg.py), or one of this
module's own when the session's is given by ``BSC_RULES_TEST_PG``. Waits are polls
with a deadline.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from bsc_rules.dev.simulate import simulate
from bsc_rules.notify.outbox import Outbox
from bsc_rules.store import postgres as pg_store
from bsc_rules.store.sqlconn import Db
from tests import conftest, pg
from tests.faults.harness import CLI, DRIVER, clean_env, clear_error, ok, run_cli, wait_until
from tests.faults.test_fleet_takeover import OFFICES, TTL, Run, held_by, message, to_us_2017
from tests.smtp_server import SmtpServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "taipei"
UNTIL = "2017-01-16"
AS_OF = "2017-01-16T00:00:00+08:00"
RULES = ["--rules", str(EXAMPLE), "--matcher", "python"]
_names = itertools.count(1)


# ---------------------------------------------------------------- the server and its data


@pytest.fixture(scope="module")
def server(pg_cluster: pg.Cluster) -> Iterator[pg.Cluster]:
    """A PostgreSQL server the tests may restart."""
    if pg_cluster.restartable:
        yield pg_cluster
        return
    try:
        with pg.local_cluster() as own:
            yield own
    except pg.PgUnavailable as exc:
        conftest._no_postgres(f"a server to restart: {exc}")


@contextmanager
def fresh_db(cluster: pg.Cluster) -> Iterator[str]:
    """The URL of a new, empty database on ``cluster``, dropped afterwards."""
    name = f"bsc_restart_{os.getpid()}_{next(_names)}"
    with psycopg.connect(cluster.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield cluster.url(name)
    finally:
        with psycopg.connect(cluster.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def url(server: pg.Cluster) -> Iterator[str]:
    """A database of this test's own on the server that restarts."""
    with fresh_db(server) as made:
        yield made


def scalar(url: str, query: str, params: tuple[object, ...] | None = None) -> int:
    """One number from the database (-1 while it cannot be reached)."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(query, params).fetchone()
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):  # restarting; no table yet
        return -1
    return int(row[0]) if row and row[0] is not None else 0


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 to 15 January 2017 of the twelve offices, as the workflow sends them (~22,000)."""
    path = tmp_path_factory.mktemp("pg-restart") / "events.jsonl"
    with path.open("wb") as handle:
        for event in simulate(year=2017, seed=5, offices=tuple(OFFICES)):
            if event["time"] >= UNTIL:
                break
            handle.write(orjson.dumps(event) + b"\n")
    return path


def status(url: str, cwd: Path) -> dict[str, object]:
    """``bsc-rules status --all-offices --format json`` of the database."""
    argv = ["status", "--db", url, "--all-offices", "--format", "json", "--as-of", AS_OF]
    data: dict[str, object] = json.loads(ok(run_cli([*argv, *RULES], cwd)))
    return data


@pytest.fixture(scope="module")
def clean(server: pg.Cluster, events: Path) -> tuple[int, dict[str, object]]:
    """The events stored and the status of the file ingested once into a fresh database."""
    with fresh_db(server) as url:
        ok(run_cli(["ingest", str(events), "--db", url, *RULES], events.parent))
        return scalar(url, "SELECT count(*) FROM events"), status(url, events.parent)


# ---------------------------------------------------------------- ingest under load


class Producer:
    """A process whose standard output is read as it comes (acknowledgements)."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode())

    def acks(self) -> list[tuple[str, str, str]]:
        """``(office, source, id)`` of every event acknowledged so far."""
        rows = [line.rstrip("\n").split("\t") for line in list(self.lines)]
        return [(r[2], r[3], r[4]) for r in rows if len(r) == 5 and r[0] == "ack"]

    def finish(self) -> subprocess.CompletedProcess[str]:
        """Wait for the end; its status, the lines it printed and its standard error."""
        try:
            status = self.proc.wait(timeout=60)
        finally:
            self.kill()
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode("utf-8", "replace")
        self.proc.stderr.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return subprocess.CompletedProcess(self.proc.args, status, "".join(self.lines), err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def stored(url: str) -> int:
    """Events in the log (-1 while the server restarts)."""
    return scalar(url, "SELECT count(*) FROM events")


def acknowledging(events: Path, url: str, lines: str, cwd: Path) -> Producer:
    """``driver.py ack-offices``: lines ``lines`` (``FROM:TO``) of ``events``, acknowledged
    one by one."""
    argv = [CLI[0], str(DRIVER), "ack-offices", str(events), url, str(EXAMPLE), "--lines", lines]
    return Producer(argv, cwd)


def test_a_restart_under_ingest_load_loses_nothing_acknowledged_and_stores_nothing_twice(
    server: pg.Cluster,
    url: str,
    events: Path,
    clean: tuple[int, dict[str, object]],
    tmp_path: Path,
) -> None:
    """Two producers acknowledging each event, then the CLI's ingest (1,000-event batches)
    write together; the server restarts mid-way; all three fail clearly, none hangs. A
    second ingest completes: every acknowledged event is there, once, and the status
    equals a clean ingest's."""
    half = len(events.read_bytes().splitlines()) // 2
    acking = [acknowledging(events, url, span, tmp_path) for span in (f"1:{half}", f"{half}:")]
    everyone = list(acking)
    try:
        wait_until(lambda: all(len(p.acks()) >= 300 for p in acking), 60, "acknowledgements")
        before = stored(url)
        ingest = Producer([*CLI, "ingest", str(events), "--db", url, *RULES], tmp_path)
        everyone.insert(0, ingest)
        wait_until(lambda: stored(url) >= before + 2000, 60, "the ingest's first batches")
        assert all(p.proc.poll() is None for p in everyone)  # the restart comes mid-way
        server.restart("fast")
    except BaseException:
        for p in everyone:
            p.kill()
            p.finish()
        raise
    first, *others = (p.finish() for p in everyone)
    clear_error(first)  # one line of 錯誤, no traceback
    for done in others:
        assert done.returncode == 1, done.stderr
        assert "failed:" in done.stderr, done.stderr
    acked = {key for p in acking for key in p.acks()}
    assert len(acked) >= 600

    ok(run_cli(["ingest", str(events), "--db", url, *RULES], tmp_path))  # the retry

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT office, source, id FROM events").fetchall()
    keys = Counter((str(o), str(s), str(i)) for o, s, i in rows)
    assert acked <= set(keys)  # nothing acknowledged lost
    assert max(keys.values()) == 1  # each (office, source, id) once
    assert len(keys) == clean[0]  # and the whole file
    assert status(url, tmp_path) == clean[1]


# ---------------------------------------------------------------- delivery under a restart


def queue(url: str, numbers: range) -> set[str]:
    """Messages ``numbers`` due now in every office's outbox; their Message-IDs."""
    conn = pg_store.connect(url)
    try:
        for office in OFFICES:
            db = Db(conn, office)
            with db.transaction():
                for n in numbers:
                    Outbox(db).enqueue(message(office, n), kind="overdue", now_us=to_us_2017())
    finally:
        conn.close()
    return {
        f"<fleet{n}.{office}.overdue@bsc-rules.{office}>" for office in OFFICES for n in numbers
    }


def sent_count(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM outbox WHERE status = 'sent'")


def db_now(url: str) -> str:
    """The database's clock, as text."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT now()::text").fetchone()
    assert row is not None
    return str(row[0])


def renewed_since(url: str, instant: str) -> bool:
    """Whether every lease row was renewed (by the database's clock) after ``instant``."""
    query = (
        "SELECT count(*) FROM leases WHERE expires_at <= %s::timestamptz + %s * interval '1 second'"
    )
    return scalar(url, query, (instant, TTL)) == 0


def listening(url: str) -> int:
    """Sessions of the database listening for the events' wake-ups."""
    return scalar(
        url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )


def wait_for(run: Run, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """:func:`wait_until`, the service's log in the failure."""
    try:
        wait_until(predicate, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the service said:\n{''.join(run.lines)}") from None


def back_in_service(run: Run, url: str, sent: int) -> None:
    """After a restart: ``sent`` messages recorded sent, every lease renewed since the
    server came back, the wake-ups listening again."""
    back = db_now(url)
    wait_for(run, lambda: sent_count(url) == sent, 30, f"{sent} messages recorded sent")
    wait_for(run, lambda: renewed_since(url, back), 30, "every lease renewed")
    wait_for(run, lambda: listening(url) == 1, 30, "the wake-ups listening again")


def test_a_restart_while_the_fleet_delivers_sends_every_message_and_keeps_the_offices(
    server: pg.Cluster, url: str, tmp_path: Path
) -> None:
    """One service holds the twelve offices and the city. First restart: the first
    message is held in DATA meanwhile, then let go. Second restart: every office idle,
    a message per office queued before it. Every message is delivered and recorded, none
    twice but the one held in DATA; after each restart the leases are renewed and the
    wake-ups listen again; SIGTERM: status 0, every lease released."""
    first = queue(url, range(2))
    with SmtpServer() as smtp:
        smtp.behaviour.hold = threading.Event()
        run = Run(url, tmp_path, smtp)
        try:
            wait_for(run, smtp.behaviour.holding.is_set, 120, "the first message in DATA")
            server.restart("fast")
            smtp.behaviour.hold.set()
            back_in_service(run, url, len(first))
            after_first = Counter(r.message_id for r in smtp.received)
            healed = sum("資料庫連線中斷" in line for line in run.lines)
            second = queue(url, range(2, 3))  # no tick comes: sent once the offices reopen
            server.restart("fast")
            back_in_service(run, url, len(first) + len(second))
            holders = held_by(url)
            sent = Counter(r.message_id for r in smtp.received)
        finally:
            status = run.end(signal.SIGTERM)
    log = "".join(run.lines)
    assert status == 0, log
    assert set(after_first) == first, log  # none lost
    assert sum(after_first.values()) - len(first) <= 1, after_first  # the one in DATA again
    assert set(sent) == first | second, log
    assert all(sent[m] == 1 for m in second), sent  # nothing in flight at the second
    assert sum("資料庫連線中斷" in line for line in run.lines) - healed == len(OFFICES), log
    assert set(holders) == {*OFFICES, "_city"}
    assert all(run.holder() in (h or "") for h in holders.values()), holders
    assert all(h is None for h in held_by(url).values())  # SIGTERM released them


def test_a_restart_under_http_load_loses_nothing_answered_and_the_doors_reconnect(
    server: pg.Cluster, url: str, tmp_path: Path, events: Path
) -> None:
    """``bsc-rules serve`` on the database; a sender posts Datong's and Zhongshan's half
    month in batches of 100, retrying on 503 or a lost connection as a workflow does; the
    server is restarted after the fifth batch answered. Every batch is answered 200 in the
    end, every event stored once, each office's report over HTTP equals ``status`` on
    the database, and ``/readyz`` is ready again (the doors and the fleet reconnected)."""
    from tests.integration.test_http_offices import READ, TOKENS, Served

    wanted = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    batches = [
        (office, chunk[i : i + 100])
        for office in TOKENS
        for chunk in [[e for e in wanted if e["office"] == office]]
        for i in range(0, len(chunk), 100)
    ]
    served = Served(url, tmp_path / "serve")
    answered: list[int] = []
    retried = Counter[str]()
    failures: list[BaseException] = []

    def settled(office: str, batch: list[dict[str, object]]) -> bool:
        try:
            answer = served.post(batch, TOKENS[office])
        except httpx.TransportError:
            retried["transport"] += 1
            return False
        if answer.status_code == 503:
            retried["503"] += 1
            return False
        assert answer.status_code == 200, answer.text[:300]
        statuses = {r["status"] for r in answer.json()["results"]}
        assert statuses <= {200, 201}, statuses
        return True

    def send() -> None:
        try:
            for office, batch in batches:
                wait_until(partial(settled, office, batch), 60, "a batch answered")
                answered.append(len(batch))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    sender = threading.Thread(target=send)
    try:
        sender.start()
        wait_until(lambda: len(answered) >= 5 or bool(failures), 60, "five batches answered")
        server.restart("fast")
        sender.join(120)
        assert not sender.is_alive()
        assert not failures, failures
        wait_until(lambda: served.get("/readyz", READ).status_code == 200, 30, "ready again")
        keys = {(e["office"], e["source"], e["id"]) for e in wanted if e["office"] in TOKENS}
        stored = scalar(url, "SELECT count(*) FROM events WHERE office = ANY(%s)", (list(TOKENS),))
        assert stored == len(keys)
        assert sum(answered) == sum(len(b) for _, b in batches)
        whole = status(url, tmp_path)
        for office in TOKENS:
            report = served.get(f"/offices/{office}/report", READ, as_of=AS_OF).json()
            assert report == whole[office]
    finally:
        assert served.stop() == 0, served.log.read_text()
    log = served.log.read_text()
    assert "database connection opened again" in log, log
