"""Shared machinery of the fault suites: the mode, subprocesses, waiting, ID numbers, results.

Nothing here sleeps blindly: waits are on a process (``Popen.wait(timeout=...)``) or short
polls with a deadline (:func:`wait_until`, 10 ms steps on a ``threading.Event``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from html import unescape
from pathlib import Path
from random import Random
from typing import Any

LONG = os.environ.get("BSC_FAULTS_LONG", "") not in ("", "0")
ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.py")
CLI = (sys.executable, "-m", "bsc_rules")
RESULTS = ROOT / "out" / "faults-long.json"
AS_OF = "2017-12-31T23:59:59+08:00"
_pause = threading.Event()  # never set: its wait() is an interruptible pause


def scale(fast: int, long: int) -> int:
    """``fast`` in the fast sample, ``long`` in the long mode."""
    return long if LONG else fast


def examples(fast: int) -> int:
    """hypothesis ``max_examples``: ``BSC_FAULTS_EXAMPLES``, else 10,000 long or ``fast``."""
    env = os.environ.get("BSC_FAULTS_EXAMPLES", "")
    if env.isdigit():
        return int(env)
    return 10_000 if LONG else fast


TALLY: defaultdict[str, Counter[str]] = defaultdict(Counter)


def record(suite: str, **counts: int) -> None:
    """Count what a test did (trials, faults, inputs); ``conftest.py`` writes the totals of
    a long run to ``out/faults-long.json`` for docs/guarantees.md."""
    TALLY[suite].update(counts)


# ------------------------------------------------------------------ processes


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without ``BSC_RULES_*`` overrides (plus ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BSC_RULES_")}
    env.update(extra)
    return env


def settings_file(folder: Path) -> Path:
    """An empty settings file: the shipped defaults, whatever ./bsc-rules.toml says."""
    path = folder / "settings.toml"
    path.write_text("", encoding="utf-8")
    return path


def run_cli(
    args: Sequence[str],
    cwd: Path,
    *,
    timeout: float = 300,
    preexec_fn: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m bsc_rules ARGS`` to completion, output captured as text."""
    proc = subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        capture_output=True,
        input=stdin,
        timeout=timeout,
        preexec_fn=preexec_fn,
        env=env or clean_env(),
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def start(argv: Sequence[str], cwd: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a process with the clean environment (output discarded unless redirected)."""
    kwargs.setdefault("env", clean_env())
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(list(argv), cwd=cwd, **kwargs)


def kill(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL (if still running) and reap; return the exit status. Pipes stay open:
    what the process wrote before it died can still be read."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=60)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 10 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout:g} s waiting for {what}"
            raise AssertionError(msg)
        _pause.wait(0.01)


def run_until(
    proc: subprocess.Popen[bytes], progress: Callable[[], int], target: int, timeout: float
) -> None:
    """Wait until ``proc`` exits or ``progress()`` reaches ``target``."""
    wait_until(lambda: proc.poll() is not None or progress() >= target, timeout, "progress")


def pause(seconds: float) -> None:
    """Let a running process go on for ``seconds`` (a random kill point), interruptibly."""
    _pause.wait(seconds)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert a run to the end (0, or 3: some lines rejected, spec/kpis.md); return stdout."""
    assert proc.returncode in (0, 3), (proc.args, proc.returncode, proc.stdout[-2000:], proc.stderr)
    return proc.stdout


def clear_error(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """Assert a failure with a one-line message naming ``names``, and no traceback."""
    err = proc.stderr
    assert proc.returncode != 0, (proc.args, proc.stdout[-2000:], err)
    assert "Traceback" not in err, err
    assert "錯誤" in err, err
    for name in names:
        assert name in err, (name, err)
    return err


# ------------------------------------------------------------------ database and mail


def is_url(db: Path | str) -> bool:
    """Whether ``db`` is a ``postgresql://`` URL (else a SQLite file)."""
    return str(db).startswith(("postgresql://", "postgres://"))


def _connect(db: Path) -> sqlite3.Connection:
    """A connection that never creates the file (mode=rw) and waits for writers."""
    return sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=60)


def _pg_rows(url: str, sql: str) -> list[tuple[Any, ...]] | None:
    """Rows of one query on a PostgreSQL database; None while its table does not exist."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        try:
            return [tuple(r) for r in conn.execute(sql.encode())]
        except psycopg.errors.UndefinedTable:  # not migrated yet
            return None


def db_keys(db: Path | str) -> list[tuple[str, str]]:
    """``(source, id)`` of every event in the log, in arrival order: a SQLite file, or
    the events of every office of a PostgreSQL database (``seq`` is one sequence)."""
    sql = "SELECT source, id FROM events ORDER BY seq"
    if is_url(db):
        rows = _pg_rows(str(db), sql) or []
    elif not Path(db).exists():
        return []
    else:
        with contextlib.closing(_connect(Path(db))) as conn:
            try:
                rows = conn.execute(sql).fetchall()
            except sqlite3.OperationalError:  # no table yet
                return []
    return [(str(s), str(i)) for s, i in rows]


def count_rows(db: Path | str, table: str = "events") -> int:
    """Rows in ``table`` (0 while the file or table does not exist yet)."""
    sql = f"SELECT count(*) FROM {table}"
    if is_url(db):
        rows = _pg_rows(str(db), sql)
        return int(rows[0][0]) if rows else 0
    if not Path(db).exists():
        return 0
    try:
        with contextlib.closing(_connect(Path(db))) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one query on a database that exists."""
    with contextlib.closing(_connect(db)) as conn:
        return [tuple(r) for r in conn.execute(sql)]


BATCH = 1000  # Scorecard.ingest_lines' commit group (what `bsc-rules ingest FILE.db` uses)
# What `bsc-rules ingest --db postgresql://…` (or a directory) commits together: the next
# 5,000 lines routed to one office (cli/_offices.py), counted before validation, so a
# line rejected there (bad JSON, an unknown type) takes a place in the batch too.
ROUTED_BATCH = 5000


def key_order(
    path: Path, batch: int = BATCH, *, routed: bool = False
) -> tuple[list[tuple[str, str]], set[int]]:
    """The log an uninterrupted ingest of ``path`` writes (keys in order) and the lengths
    it can have after a crash or a failed write (distinct keys after each whole batch):
    a batch is ``batch`` valid events, or with ``routed`` ``batch`` non-blank lines (the
    ingest into a ``postgresql://`` URL or a directory, of a one-office file)."""
    from bsc_rules.events import Event
    from bsc_rules.scorecard import Scorecard

    order: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    boundaries, pending = {0}, 0
    with Scorecard(matcher="python") as card, path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            if routed and not raw.isspace():
                pending += 1
            parsed = card.validate(raw, number)
            if isinstance(parsed, Event):
                if not routed:
                    pending += 1
                if parsed.key not in seen:
                    seen.add(parsed.key)
                    order.append(parsed.key)
            if pending == batch:
                boundaries.add(len(order))
                pending = 0
    boundaries.add(len(order))
    return order, boundaries


def status_json(db: Path | str, cwd: Path, as_of: str = AS_OF) -> dict[str, Any]:
    """``bsc-rules status --format json`` of a database."""
    out = ok(run_cli(["status", "--db", str(db), "--as-of", as_of, "--format", "json"], cwd))
    data: dict[str, Any] = json.loads(out)
    return data


def maildir(path: Path) -> dict[str, bytes]:
    """File name → bytes of every message delivered into a Maildir's ``new/``."""
    folder = path / "new"
    if not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def mail_count(path: Path) -> int:
    """How many messages a Maildir holds (0 before it exists)."""
    try:
        return len(os.listdir(path / "new"))
    except FileNotFoundError:
        return 0


def readable(raw: bytes) -> Iterator[str]:
    """Everything a person could read in a message: raw text, decoded headers and parts."""
    yield raw.decode("utf-8", "replace")
    msg: EmailMessage = message_from_bytes(raw, policy=default_policy)  # type: ignore[assignment]
    for name, value in msg.items():
        yield f"{name}: {value}"
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            text = part.get_content()
            yield text
            yield unescape(text)


# ------------------------------------------------------------------ ID numbers (domain.md §4)

# Letter → region code: A10 … H17, J18 … V29, X30, Y31, W32, Z33, I34, O35.
CODES = {letter: 10 + i for i, letter in enumerate("ABCDEFGHJKLMNPQRSTUVXYWZIO")}
WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 1, 1)


def _second_digit(char: str) -> int | None:
    if char in "ABCD":
        return CODES[char] % 10  # old resident certificate: A→0, B→1, C→2, D→3
    return int(char) if char in "1289" else None


def valid_id(text: str) -> bool:
    """Checksum-valid national ID or resident certificate number (old or new format)."""
    text = text.upper()
    if not re.fullmatch(r"[A-Z][A-D1289][0-9]{8}", text):
        return False
    code, second = CODES[text[0]], _second_digit(text[1])
    assert second is not None
    digits = [second, *map(int, text[2:])]
    total = code // 10 + (code % 10) * 9 + sum(w * d for w, d in zip(WEIGHTS, digits, strict=True))
    return total % 10 == 0


def make_id(rng: Random, kind: str) -> str:
    """A random checksum-valid number: ``national``, ``resident_old`` or ``resident_new``."""
    letter = rng.choice(sorted(CODES))
    second = {"national": "12", "resident_old": "ABCD", "resident_new": "89"}[kind]
    char = rng.choice(second)
    body = [rng.randrange(10) for _ in range(7)]
    digit = _second_digit(char)
    assert digit is not None
    code = CODES[letter]
    partial = (
        code // 10
        + (code % 10) * 9
        + sum(w * d for w, d in zip(WEIGHTS, [digit, *body], strict=False))
    )
    check = (10 - partial % 10) % 10
    number = letter + char + "".join(map(str, body)) + str(check)
    assert valid_id(number), number
    return number


_CANDIDATE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z][A-Da-d1289][0-9]{8}(?![A-Za-z0-9])")


def unmasked_ids(text: str) -> list[str]:
    """Every checksum-valid ID number standing on its own in ``text`` (independent scan)."""
    return [m.group(0) for m in _CANDIDATE.finditer(text) if valid_id(m.group(0))]


def planted_in(text: str, planted: Sequence[str]) -> list[str]:
    """The planted numbers that appear in ``text`` in full (any case)."""
    upper = text.upper()
    return [p for p in planted if p.upper() in upper]
