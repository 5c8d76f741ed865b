"""Personal data: checksum-valid national IDs and resident certificate numbers (old and
new formats, domain.md §4) planted in case ids, extra data fields and bad lines never
leave the process unmasked: not in delivered mail, command output (evaluate, status,
ingest, replay, history, outbox), nor the log of ``bsc-rules run``. The files that hold
them (database, WAL, shared memory, Maildir) are owner-only.

The numbers are generated and checked here with the checksum algorithm, independently
of :mod:`bsc_rules.privacy`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

import orjson
import pytest

from bsc_rules.dev.simulate import simulate
from tests.faults.harness import (
    CLI,
    LONG,
    clean_env,
    maildir,
    make_id,
    ok,
    planted_in,
    readable,
    record,
    run_cli,
    settings_file,
    start,
    unmasked_ids,
    valid_id,
)
from tests.smtp_server import SmtpServer

KINDS = ("national", "resident_old", "resident_new")
SINCE, BEFORE = ("2017-01-10", "2017-02-05") if LONG else ("2017-01-18", "2017-01-25")
# past the January digest: 2017-02-02 08:00, the first working day after 春節
UNTIL = "2017-03-01T09:00:00+08:00" if LONG else "2017-02-02T09:00:00+08:00"
AS_OF = "2017-12-31T23:59:59+08:00"


def test_the_generator_makes_valid_numbers_of_every_format() -> None:
    """The planted numbers pass the checksum; the documented vectors behave as documented."""
    assert valid_id("A123456789")
    assert not valid_id("A123456788")
    assert valid_id("AA00000009")
    assert valid_id("A800000014")
    assert valid_id("A900000016")
    rng = Random(1)
    for kind in KINDS:
        numbers = [make_id(rng, kind) for _ in range(200)]
        assert all(valid_id(n) for n in numbers)
        second = {"national": "12", "resident_old": "ABCD", "resident_new": "89"}[kind]
        assert {n[1] for n in numbers} <= set(second)


def _contexts(rng: Random, number: str) -> str:
    """The number as a person might type it into a free-text field."""
    form = rng.choice([number, number.lower()])
    return rng.choice([
        form, f"身分證{form}號", f"申請人居留證：{form}。", f"({form})", f"id={form}&x=1",
        f"ID_{form}", f"{form} 王○明", f"[{form}]", f"聯絡人 {form}, 電話另洽",
    ])  # fmt: skip


@dataclass(frozen=True)
class Planted:
    """Events with planted numbers, the numbers, and where the work happens."""

    folder: Path
    events: Path
    numbers: list[str]
    settings: Path


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    """Simulated events with numbers as case ids, in extra fields and in bad lines."""
    folder = tmp_path_factory.mktemp("pii")
    rng = Random(12)
    numbers: list[str] = []

    def fresh() -> str:
        number = make_id(rng, rng.choice(KINDS))
        if rng.random() < 0.3:  # mistyped: a wrong check digit is still a person's number
            number = number[:-1] + str((int(number[-1]) + 1) % 10)
        numbers.append(number)
        return number

    events = [e for e in simulate(seed=12) if SINCE <= e["time"][:10] < BEFORE]
    cases = sorted({e["subject"] for e in events if e["type"].startswith(("birth", "care"))})
    renamed = {s: fresh() for s in cases if rng.random() < 0.3}
    lines = []
    for e in events:
        e = {**e, "subject": renamed.get(e["subject"], e["subject"])}
        if rng.random() < 0.1:
            extra = {"applicant": fresh(), "note": _contexts(rng, fresh())}
            e = {**e, "data": {**e.get("data", {}), **extra}}
        lines.append(orjson.dumps(e))
    first = events[0]
    for n in range(5):  # never paid: overdue, escalated, in the digest
        number = fresh()
        lines.append(orjson.dumps({**first, "id": f"pii-open-{n}", "type": "birth_subsidy.applied",
                                   "subject": number, "data": {"amount": 20000}}))  # fmt: skip
    lines += [  # rejected lines that carry numbers
        orjson.dumps({**first, "id": fresh(), "type": "birth_subsidy.unknown"}),
        orjson.dumps({**first, "id": "pii-bad", "subject": fresh(), "time": "2017-01-20"}),
        f"not json {fresh()}".encode(),
        orjson.dumps({**first, "id": "pii-office", "office": f"x-{fresh()}"}),
        orjson.dumps(
            {**first, "id": "pii-unmatched", "type": "birth_subsidy.paid"} | {"subject": fresh()}
        ),
    ]
    path = folder / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert len(set(numbers)) > 20
    return Planted(folder, path, numbers, settings_file(folder))


def assert_masked(texts: dict[str, str], numbers: list[str]) -> None:
    """No planted number in full and no valid number standing on its own, anywhere."""
    for where, text in texts.items():
        assert planted_in(text, numbers) == [], (where, planted_in(text, numbers)[:5])
        assert unmasked_ids(text) == [], (where, unmasked_ids(text)[:5])


def test_replayed_mail_and_command_output_show_numbers_only_masked(planted: Planted) -> None:
    """Planted ID numbers appear only masked in replayed mail and all command output."""
    folder, events = planted.folder, str(planted.events)
    db, box = folder / "replay.db", folder / "mail"
    outputs: dict[str, str] = {}

    def run(name: str, args: list[str]) -> None:
        proc = run_cli(args, folder)
        outputs[f"{name} stdout"] = ok(proc)
        outputs[f"{name} stderr"] = proc.stderr

    run("replay", ["replay", events, "--until", UNTIL, "--maildir", str(box), "--db", str(db),
                   "--settings", str(planted.settings)])  # fmt: skip
    run("ingest", ["ingest", events, "--db", str(folder / "ingest.db")])
    for fmt in ("table", "json"):
        run(f"evaluate {fmt}", ["evaluate", events, "--as-of", AS_OF, "--format", fmt])
        run(f"status {fmt}", ["status", "--db", str(db), "--as-of", AS_OF, "--format", fmt])
    run("history", ["history", "--db", str(db), "--settings", str(planted.settings)])
    run("outbox", ["outbox", "--db", str(db), "--settings", str(planted.settings)])
    mail = maildir(box)
    assert len(mail) > 8  # morning mails, director lists and the digests
    texts = {f"mail {name} ({n})": t for name, raw in mail.items() for n, t in
             enumerate(readable(raw))}  # fmt: skip
    assert_masked(outputs, planted.numbers)
    assert_masked(texts, planted.numbers)
    masked = {n.upper()[:6] + "****" for n in planted.numbers}
    shown = " ".join(texts.values()).upper()
    assert sum(m in shown for m in masked) >= 5, "the planted numbers never reached the mail"
    printed = " ".join(outputs.values()).upper()
    assert sum(m in printed for m in masked) >= 5, "the planted numbers never reached the output"
    for name in mail:
        assert stat.S_IMODE(os.stat(box / "new" / name).st_mode) == 0o600, name
    record("pii.replay", inputs=len(planted.numbers), trials=len(mail) + len(outputs))


def test_service_log_shows_numbers_only_masked(planted: Planted, tmp_path: Path) -> None:
    """Planted ID numbers appear only masked in the log and mail of `bsc-rules run`."""
    with SmtpServer() as server:
        env = clean_env(BSC_RULES_SMTP__PORT=str(server.port), BSC_RULES_TICK_MINUTES="1")
        args = ["run", "--db", str(tmp_path / "run.db"), "--settings", str(planted.settings)]
        proc = start([*CLI, *args], tmp_path, env=env, stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        assert proc.stdin is not None
        assert proc.stderr is not None
        watchdog = threading.Timer(300, proc.kill)
        watchdog.start()
        log: list[str] = []
        try:
            proc.stdin.write(planted.events.read_bytes())
            proc.stdin.close()
            for raw in iter(proc.stderr.readline, b""):
                log.append(raw.decode("utf-8", "replace"))
                if "標準輸入結束" in log[-1]:
                    break
            proc.terminate()
            log.append(proc.stderr.read().decode("utf-8", "replace"))
            out = proc.stdout.read() if proc.stdout is not None else b""
            proc.wait(timeout=60)
        finally:
            watchdog.cancel()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        received = server.received
    text = "".join(log)
    assert "未接受" in text, text[-2000:]
    assert "服務已停止" in text, text[-2000:]
    texts = {"run stderr": text, "run stdout": out.decode("utf-8", "replace")}
    texts |= {f"smtp {n}": t for n, r in enumerate(received) for t in readable(r.content)}
    assert_masked(texts, planted.numbers)
    assert any(m[:6] + "****" in text.upper() for m in planted.numbers)
    record("pii.service-log", inputs=len(planted.numbers), trials=1)


def _modes(path: Path) -> dict[str, int]:
    return {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
        if p.exists()
    }


def test_database_files_are_owner_only_even_with_an_open_umask(tmp_path: Path) -> None:
    """The database and its WAL and shared-memory files are created 0600, under umask 000."""
    db = tmp_path / "state.db"
    code = (
        "import os, sys, json\n"
        "os.umask(0)\n"
        "from bsc_rules.scorecard import Scorecard\n"
        "card = Scorecard.open(sys.argv[1], matcher='python')\n"
        "card.ingest(sys.stdin.buffer.read())\n"
        "print(json.dumps({p: oct(os.stat(p).st_mode & 0o777) for p in"
        " (sys.argv[1], sys.argv[1] + '-wal', sys.argv[1] + '-shm')}))\n"
    )
    event = next(itertools.islice(simulate(seed=1), 1))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(db)], input=orjson.dumps(event), capture_output=True,
        check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    modes: dict[str, Any] = orjson.loads(proc.stdout)
    assert set(modes.values()) == {"0o600"}, modes  # while open: the WAL and -shm too
    assert set(_modes(db).values()) == {0o600}
    with contextlib.suppress(FileNotFoundError):
        os.remove(db)
    ok(run_cli(["ingest", "/dev/null", "--db", str(db)], tmp_path))
    assert _modes(db) == {"state.db": 0o600}
