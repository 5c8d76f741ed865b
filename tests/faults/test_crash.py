"""Crash safety with real processes: SIGKILL at random and at named points, then restart.

* ``bsc-rules ingest`` killed anywhere: what is in the log is always whole batches in
  file order; a restart completes it and the report equals an uninterrupted run's.
* The library (``Scorecard.ingest``, one commit per event) killed anywhere: every event
  whose ingest returned (acknowledged on standard output) is in the log.
* ``bsc-rules replay --db`` killed anywhere (Maildir or SMTP): a restart delivers every
  notification an uninterrupted replay delivers, nothing else, and a message delivered
  twice is a resend of the same bytes under the same Message-ID.

Each runs on both backends: a SQLite file, and a fresh PostgreSQL database per trial
(``--db postgresql://…``, the default rules' one office). Kill points are drawn from
seeded ``Random``s; the trial number (and the backend) is the seed.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default as default_policy
from functools import partial
from pathlib import Path
from random import Random

import orjson
import pytest

from bsc_rules.dev.simulate import simulate
from tests.faults.harness import (
    CLI,
    DRIVER,
    ROUTED_BATCH,
    count_rows,
    db_keys,
    key_order,
    kill,
    mail_count,
    maildir,
    ok,
    pause,
    record,
    run_cli,
    run_until,
    scale,
    settings_file,
    start,
    status_json,
)
from tests.smtp_server import SmtpServer

INGEST_TRIALS = scale(2, 100)
ACK_TRIALS = scale(2, 100)
REPLAY_TRIALS = scale(2, 100)
PG_TRIALS = scale(2, 30)  # per suite on PostgreSQL: a trial there takes 4 to 12 s
UNTIL = "2017-02-02T08:30:00+08:00"  # past the January digest (2 February 08:00, after 春節)


def trials(sqlite: int, postgres: int = PG_TRIALS) -> list[object]:
    """``(backend, trial)`` parameters: ``sqlite`` trials on a SQLite file, then
    ``postgres`` on PostgreSQL (ids ``sqlite-0``, …, ``postgres-0``, …)."""
    plan = (("sqlite", sqlite), ("postgres", postgres))
    return [pytest.param(b, t, id=f"{b}-{t}") for b, n in plan for t in range(n)]


def suite(name: str, backend: str) -> str:
    """The name a trial's counts are recorded under (SQLite's as before the backends)."""
    return name if backend == "sqlite" else f"{name}.{backend}"


def fresh_db(request: pytest.FixtureRequest, backend: str, path: Path) -> Path | str:
    """The trial's database: the SQLite file ``path``, or a PostgreSQL database of the
    test's own (the ``pg_url`` fixture, asked for only here: SQLite runs need no server)."""
    if backend == "sqlite":
        return path
    url: str = request.getfixturevalue("pg_url")
    return url


def events_file(path: Path, count: int, seed: int, since: str = "") -> Path:
    """``count`` simulated events (from the day ``since`` on) with bad lines among them:
    bad JSON, an unknown type, a conflict (a known id with other content) and a
    byte-identical duplicate."""
    events = (e for e in simulate(seed=seed) if e["time"][:10] >= since)
    lines = [orjson.dumps(e) for e in itertools.islice(events, count)]
    first = orjson.loads(lines[10])
    conflict = orjson.dumps({**first, "subject": first["subject"] + "X"})
    unknown = orjson.dumps({**first, "id": "bad-type", "type": "no.such.type"})
    for at, line in ((7, b'{"specversion": "1.0", "id": '), (len(lines) // 2, unknown),
                     (len(lines) // 3, conflict), (len(lines) - 5, lines[20])):  # fmt: skip
        lines.insert(at, line)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@dataclass(frozen=True)
class IngestCase:
    """A file to ingest and what an uninterrupted ingest leaves."""

    file: Path
    order: list[tuple[str, str]]
    boundaries: set[int]
    status: dict[str, object]


def _reference_ingest(folder: Path, count: int, seed: int, routed: bool = False) -> IngestCase:
    """``count`` simulated events and an uninterrupted `bsc-rules ingest` of them into a
    SQLite file; the whole batches are those of a file, or with ``routed`` those of the
    ingest into a ``postgresql://`` URL (:data:`ROUTED_BATCH` lines)."""
    path = events_file(folder / "events.jsonl", count, seed=seed)
    db = folder / "ref.db"
    ok(run_cli(["ingest", str(path), "--db", str(db)], folder))
    order, boundaries = key_order(path, ROUTED_BATCH, routed=True) if routed else key_order(path)
    assert db_keys(db) == order
    return IngestCase(path, order, boundaries, status_json(db, folder))


@pytest.fixture(scope="module")
def ingest_case(tmp_path_factory: pytest.TempPathFactory) -> IngestCase:
    """5,000 simulated events (five batches) and the reference run."""
    return _reference_ingest(tmp_path_factory.mktemp("ingest-ref"), 5000, seed=3)


@pytest.fixture(scope="module")
def routed_ingest_case(tmp_path_factory: pytest.TempPathFactory) -> IngestCase:
    """12,000 simulated events (three batches of 5,000 lines into PostgreSQL, the last one
    short) and the reference run."""
    folder = tmp_path_factory.mktemp("ingest-pg-ref")
    return _reference_ingest(folder, 12_000, seed=3, routed=True)


@pytest.mark.parametrize(("backend", "trial"), trials(INGEST_TRIALS))
def test_ingest_killed_anywhere_keeps_whole_batches_and_recovers(
    trial: int, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SIGKILL during `bsc-rules ingest`: whole batches in order; a rerun gives the same report.

    A batch into a SQLite file is 1,000 valid events; into PostgreSQL it is 5,000 lines
    (the routed ingest of cli/_offices.py commits an office's next 5,000 lines together,
    its rejected lines among them), so there the log is a prefix of those batches, and
    the rerun's report equals the uninterrupted run's into a SQLite file."""
    sqlite = backend == "sqlite"
    ingest_case: IngestCase = request.getfixturevalue(
        "ingest_case" if sqlite else "routed_ingest_case"
    )
    rng = Random(f"ingest-{trial}" if sqlite else f"ingest-{backend}-{trial}")
    db = fresh_db(request, backend, tmp_path / "kill.db")
    argv = [*CLI, "ingest", str(ingest_case.file), "--db", str(db)]
    kills = 0
    for _ in range(rng.choice((1, 1, 2))):
        target = rng.randrange(len(ingest_case.order))
        proc = start(argv, tmp_path)
        run_until(proc, partial(count_rows, db), target, 120)
        pause(rng.uniform(0, 0.05))
        kills += kill(proc) == -9
        keys = db_keys(db)
        assert keys == ingest_case.order[: len(keys)], "the log is not a prefix of the file"
        assert len(keys) in ingest_case.boundaries, f"{len(keys)} rows: a partial batch"
    ok(run_cli(["ingest", str(ingest_case.file), "--db", str(db)], tmp_path))
    assert db_keys(db) == ingest_case.order
    assert status_json(db, tmp_path) == ingest_case.status
    record(suite("crash.ingest", backend), trials=1, faults=kills)


@pytest.fixture(scope="module")
def ack_case(tmp_path_factory: pytest.TempPathFactory) -> IngestCase:
    """1,500 simulated events ingested one by one, and the CLI's uninterrupted run."""
    return _reference_ingest(tmp_path_factory.mktemp("ack-ref"), 1500, seed=4)


def _acks(lines: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    for line in lines:
        parts = line.decode().rstrip("\n").split("\t")
        if parts[0] == "ack":
            yield parts[2], parts[3]


@pytest.mark.parametrize(("backend", "trial"), trials(ACK_TRIALS))
def test_acknowledged_events_survive_sigkill(
    trial: int, backend: str, ack_case: IngestCase, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every event whose Scorecard.ingest returned is in the log after a SIGKILL (on
    PostgreSQL the report after the restart equals the SQLite reference's)."""
    rng = Random(f"ack-{trial}" if backend == "sqlite" else f"ack-{backend}-{trial}")
    db = fresh_db(request, backend, tmp_path / "kill.db")
    argv = [sys.executable, str(DRIVER), "ack", str(ack_case.file), str(db)]
    acked: list[tuple[str, str]] = []
    kills = 0
    for _ in range(rng.choice((1, 2))):
        target = rng.randrange(1, len(ack_case.order))
        proc = start(argv, tmp_path, stdout=subprocess.PIPE)
        watchdog = threading.Timer(120, proc.kill)
        watchdog.start()
        assert proc.stdout is not None
        try:
            for key in _acks(iter(proc.stdout.readline, b"")):
                acked.append(key)
                if len(acked) >= target:
                    break
            kills += kill(proc) == -9
            acked += _acks(iter(proc.stdout.readline, b""))  # acknowledged before the kill
        finally:
            watchdog.cancel()
            proc.stdout.close()
        stored = set(db_keys(db))
        lost = [k for k in acked if k not in stored]
        assert lost == [], f"{len(lost)} acknowledged events lost, e.g. {lost[:3]}"
    proc = start(argv, tmp_path)
    proc.wait(timeout=300)
    assert proc.returncode == 0
    assert set(db_keys(db)) == set(ack_case.order)
    assert status_json(db, tmp_path) == ack_case.status
    record(suite("crash.ack", backend), trials=1, faults=kills, inputs=len(acked))


# ------------------------------------------------------------------ replay


@dataclass(frozen=True)
class ReplayCase:
    """Events to replay and what an uninterrupted replay delivers."""

    folder: Path
    file: Path
    settings: Path
    mail: dict[str, bytes]
    counts: dict[str, int]
    status: dict[str, object]

    def argv(self, db: Path | str, target: list[str]) -> list[str]:
        return ["replay", str(self.file), "--until", UNTIL, *target, "--db", str(db),
                "--settings", str(self.settings)]  # fmt: skip


@pytest.fixture(scope="module")
def replay_case(tmp_path_factory: pytest.TempPathFactory) -> ReplayCase:
    """About 900 events from 16 January on and the reference replay, with its hook counts."""
    folder = tmp_path_factory.mktemp("replay-ref")
    path = events_file(folder / "events.jsonl", 900, seed=5, since="2017-01-16")
    case = ReplayCase(folder, path, settings_file(folder), {}, {}, {})
    counts = folder / "counts.json"
    argv = case.argv(folder / "ref.db", ["--maildir", str(folder / "ref-mail")])
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "cli", "--count", str(counts), "--", *argv],
        cwd=folder, capture_output=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr  # ran to the end; the file's bad lines rejected
    mail = maildir(folder / "ref-mail")
    assert len(mail) >= 12  # the morning mails of 13 working days and the digests
    hooks = json.loads(counts.read_text())
    assert hooks["digest-build"] >= 4, hooks
    status = status_json(folder / "ref.db", folder)
    return ReplayCase(folder, path, case.settings, mail, hooks, status)


def _received(server: SmtpServer) -> int:
    return len(server.received)


def _message_id(raw: bytes) -> str:
    return str(message_from_bytes(raw, policy=default_policy)["Message-ID"])


def _kill_plan(rng: Random, case: ReplayCase, smtp: bool) -> tuple[str | None, int]:
    """A named hook and its N-th call, or (None, number of messages delivered first)."""
    if rng.random() < 0.4:
        return None, rng.randrange(len(case.mail))
    send = "smtp-send" if smtp else "maildir-send"
    hooks = ["ingest-commit", "enqueue", "morning-commit", "digest-build", send, "mark-sent"]
    hook = rng.choice(hooks)
    counts = case.counts.get("maildir-send" if hook == send else hook, 0)
    return hook, rng.randint(1, max(counts, 1))


@pytest.mark.parametrize(("backend", "trial"), trials(REPLAY_TRIALS))
def test_replay_killed_anywhere_delivers_everything_once(
    trial: int,
    backend: str,
    replay_case: ReplayCase,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """SIGKILL during `replay --db`: a rerun delivers the reference mail; resends are identical.

    On PostgreSQL the reference is the same (a replay into a SQLite file): the same
    messages, byte for byte, and the same report; the named kill points are drawn from
    the reference's call counts (``ingest-commit`` is the PostgreSQL store's batch)."""
    rng = Random(f"replay-{trial}" if backend == "sqlite" else f"replay-{backend}-{trial}")
    smtp = trial % 2 == 1
    db, box = fresh_db(request, backend, tmp_path / "state.db"), tmp_path / "mail"
    kills = 0
    with SmtpServer() as server:
        target = ["--smtp", f"{server.host}:{server.port}"] if smtp else ["--maildir", str(box)]
        argv = replay_case.argv(db, target)
        for _ in range(rng.choice((1, 1, 2))):
            hook, nth = _kill_plan(rng, replay_case, smtp)
            if hook is None:
                proc = start([*CLI, *argv], tmp_path)
                done = partial(_received, server) if smtp else partial(mail_count, box)
                run_until(proc, done, nth, 300)
                pause(rng.uniform(0, 0.05))
            else:
                driver = [sys.executable, str(DRIVER), "cli", "--kill", f"{hook}:{nth}", "--"]
                proc = start([*driver, *argv], tmp_path)
                proc.wait(timeout=300)
            kills += kill(proc) == -9
        ok(run_cli(argv, tmp_path))
        received = server.received
    expected = {_message_id(raw): raw for raw in replay_case.mail.values()}
    if smtp:
        got: dict[str, set[bytes]] = {}
        for r in received:
            got.setdefault(r.message_id, set()).add(r.content.replace(b"\r\n", b"\n"))
        assert set(got) == set(expected), _difference(set(got), set(expected))
        for mid, contents in got.items():
            assert contents == {expected[mid]}, f"{mid}: delivered with other content"
        duplicates = sum(n - 1 for n in Counter(r.message_id for r in received).values())
    else:
        delivered = maildir(box)
        assert set(delivered) == set(replay_case.mail), _difference(
            set(delivered), set(replay_case.mail)
        )
        changed = [n for n, raw in delivered.items() if raw != replay_case.mail[n]]
        assert changed == [], f"same Message-ID, other content: {changed[:3]}"
        duplicates = 0
    assert status_json(db, tmp_path) == replay_case.status
    record(suite("crash.replay", backend), trials=1, faults=kills, inputs=duplicates)


def _difference(got: set[str], expected: set[str]) -> str:
    missing, extra = sorted(expected - got), sorted(got - expected)
    return f"{len(missing)} missing {missing[:3]}, {len(extra)} never due {extra[:3]}"
