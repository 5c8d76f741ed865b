"""``python -m bench --only offices``: many offices at once, as a deployment runs them.

The inputs keep every office's own events (no rewrite into one office, unlike the city and
national inputs of the main run); a generated rule folder gives each office its file. In
one run, side by side:

* ``bsc-rules ingest NATIONAL --db DIR/ --workers 2`` into per-office SQLite files;
* the same into PostgreSQL, on a throwaway cluster started here with ``fsync`` ON (the
  server's defaults, ``synchronous_commit`` on: an honest disk, unlike the tests' cluster);
* PostgreSQL's own floor on the same events: a binary COPY of ``(office, source, id,
  time_us, body)`` into a staging table, then one ``INSERT … SELECT … ON CONFLICT DO
  NOTHING`` into a table with the events' unique key, in the same database;
* the city (12 offices) ingested into PostgreSQL, then the state of every office rebuilt
  as a service start rebuilds it (each office's store opened, its Scorecard replayed);
* the peak RSS of the ingest processes (the CLI and its workers).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bench.cases import Timer, case, current_rss, lines_of, peak_rss

Result = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
TEMPLATE = ROOT / "examples" / "taipei" / "offices" / "datong.yaml"
SHARED = ("closures.yaml",)  # beside the KPI files (rules/*.yaml but office.yaml)


# ---------------------------------------------------------------- the rule folder


def office_file(code: str, template: str) -> str:
    """Datong's office file with its code and name made ``code``'s."""
    out = []
    for line in template.splitlines():
        stripped = line.strip()
        if stripped.startswith("code: "):
            line = line.replace(stripped, f"code: {code}")
        elif stripped.startswith("name: ") and line.startswith("  name: "):
            line = f"  name: 測試戶政事務所（{code}）"
        elif stripped.startswith("name_en: ") and line.startswith("  name_en: "):
            line = f"  name_en: Test Household Registration Office {code}"
        out.append(line)
    return "\n".join(out) + "\n"


def write_deployment(folder: Path, codes: tuple[str, ...], rules: Path = RULES) -> Path:
    """A multi-office rule folder at ``folder``: the KPI files and closures.yaml of ``rules``
    (symbolic links) and ``offices/<code>.yaml`` for every code. Made afresh each time."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "offices").mkdir(parents=True)
    for path in sorted(rules.glob("*.yaml")):
        if path.name != "office.yaml":
            (folder / path.name).symlink_to(path.resolve())
    template = TEMPLATE.read_text(encoding="utf-8")
    for code in codes:
        (folder / "offices" / f"{code}.yaml").write_text(office_file(code, template), "utf-8")
    return folder


# ---------------------------------------------------------------- a PostgreSQL cluster


@contextmanager
def pg_cluster() -> Iterator[str]:
    """A throwaway cluster in a temporary directory (on the same disk as the SQLite
    files) with the server's durability defaults (fsync, full_page_writes and
    synchronous_commit on); yields an admin URL."""
    from urllib.parse import quote

    from tests.pg import PgUnavailable, _as_postgres, _owned_tempdir, find_bin, free_port

    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise PgUnavailable("no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin")
    tmp = _owned_tempdir()
    data, port = tmp / "data", free_port()

    def pg(*cmd: str) -> None:
        subprocess.run(_as_postgres(list(cmd)), cwd=tmp, check=True, capture_output=True)

    try:
        pg(initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale")
        opts = f"-k {tmp} -p {port} -c listen_addresses='' -c max_wal_size=4GB"
        pg(pg_ctl, "start", "-w", "-t", "60", "-D", str(data), "-l", str(tmp / "log"), "-o", opts)
        try:
            yield f"postgresql://postgres@/postgres?host={quote(str(tmp))}&port={port}"
        finally:
            pg(pg_ctl, "stop", "-D", str(data), "-m", "fast", "-w")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def database(admin: str, name: str) -> str:
    """A fresh database ``name`` on the cluster of ``admin``; its URL."""
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.replace("/postgres?", f"/{name}?", 1)


# ---------------------------------------------------------------- the cases


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("bsc-rules")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from bsc_rules.cli import main; sys.exit(main())"]


@case
def case_cli_ingest(path: str, db: str, rules: str, workers: int, events: int) -> Result:
    """``bsc-rules ingest`` as a subprocess: wall, and the peak RSS of the CLI and its
    workers (``RUSAGE_CHILDREN``: the largest of the processes waited for)."""
    if not db.startswith("postgresql:"):
        shutil.rmtree(db, ignore_errors=True)
    command = [*_cli(), "ingest", path, "--db", db, "--rules", rules]
    command += ["--workers", str(workers), "--matcher", "python"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        msg = f"bsc-rules ingest exited {proc.returncode}"
        raise RuntimeError(msg)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "events": events,
        "seconds": wall,
        "cpu_seconds": children.ru_utime + children.ru_stime,
        "events_per_s": events / wall,
        "peak_rss_worker": children.ru_maxrss * 1024,
        "workers": workers,
        "command": " ".join(["bsc-rules", *command[len(_cli()) :]]),
        "stdout_tail": proc.stdout.strip().splitlines()[-3:],
    }


_FLOOR_TABLES = (
    "DROP TABLE IF EXISTS floor_events, floor_staging",
    "CREATE UNLOGGED TABLE floor_staging (office text, source text, id text, time_us int8,"
    " body bytea)",
    "CREATE TABLE floor_events (seq bigserial, office text NOT NULL, source text NOT NULL,"
    " id text NOT NULL, time_us int8 NOT NULL, body bytea NOT NULL,"
    " PRIMARY KEY (office, seq), UNIQUE (office, source, id))",
)
_FLOOR_INSERT = (
    "INSERT INTO floor_events (office, source, id, time_us, body)"
    " SELECT office, source, id, time_us, body FROM floor_staging"
    " ON CONFLICT (office, source, id) DO NOTHING"
)


def _micros(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


@case
def case_pg_floor(path: str, url: str) -> Result:
    """PostgreSQL's floor: every line parsed for its key and time, binary COPY into an
    unlogged staging table, one INSERT … ON CONFLICT DO NOTHING, committed (one process)."""
    import psycopg

    with psycopg.connect(url) as conn:
        for statement in _FLOOR_TABLES:
            conn.execute(statement)
        conn.commit()
        with Timer() as t:
            copy_sql = "COPY floor_staging FROM STDIN (FORMAT BINARY)"
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.set_types(["text", "text", "text", "int8", "bytea"])
                events = 0
                for raw in lines_of(path):
                    e = orjson.loads(raw)
                    body = raw.rstrip(b"\n")
                    copy.write_row((e["office"], e["source"], e["id"], _micros(e["time"]), body))
                    events += 1
            stored = conn.execute(_FLOOR_INSERT).rowcount
            conn.commit()
        conn.execute("DROP TABLE floor_events, floor_staging")
        conn.commit()
    return {
        "events": events,
        "stored": stored,
        "seconds": t.wall,
        "cpu_seconds": t.cpu,
        "events_per_s": events / t.wall,
        "peak_rss": peak_rss(),
    }


@case
def case_pg_restart(url: str, rules: str, codes: list[str]) -> Result:
    """The state of every office rebuilt as a service start does: each office's store
    opened and its Scorecard replayed from the log, one after the other, all kept open."""
    from bsc_rules.rules.offices import load_deployment
    from bsc_rules.scorecard import Scorecard
    from bsc_rules.store.dbform import open_store

    deployment = load_deployment(Path(rules))
    base = current_rss()
    cards, per_office = [], {}
    with Timer() as t:
        for code in codes:
            start = time.perf_counter()
            store = open_store(url, code)
            cards.append(Scorecard(deployment.offices[code], store=store, matcher="python"))
            per_office[code] = time.perf_counter() - start
    rss = current_rss()
    for card in cards:
        card.close()
    return {
        "offices": len(codes),
        "seconds": t.wall,
        "cpu_seconds": t.cpu,
        "per_office_seconds": per_office,
        "rss_base": base,
        "rss_open": rss,
        "rss_per_office": (rss - base) / len(codes),
        "peak_rss": peak_rss(),
    }


# ---------------------------------------------------------------- the run


def summary(r: Result) -> str:
    """The table of an ``--only offices`` run (markdown)."""
    m, nat = r["machine"], r["inputs"]["national"]
    sq, pg, floor, rs = r["sqlite"], r["postgres"], r["floor"], r["restart"]
    ratio = pg["events_per_s"] / floor["events_per_s"]
    scale = 10_000_000 / nat["events"]
    lines = [
        f"bench --only offices ({r['plan']}) — {m['cores']} cores, {m['cpu']}, "
        f"{m['memory_gb']} GB RAM; Python {m['python']}, SQLite {m['sqlite']}, "
        f"PostgreSQL {r['pg_version']} (fsync on, synchronous_commit on); "
        f"national input {nat['events']:,} events of {nat['offices']} offices; "
        f"city {r['inputs']['city']['events']:,} events of 12 offices; not pinned "
        "(two workers)",
        "",
        f"command: `{sq['command']}`",
        "",
        "| measurement | wall | events/s | 10M at this rate | peak RSS | goal | |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, x, goal in (
        ("ingest → per-office SQLite, 2 workers", sq, 120),
        ("ingest → PostgreSQL, 2 workers", pg, 300),
    ):
        ten = x["seconds"] * scale
        lines.append(
            f"| {label} | {x['seconds']:.1f} s | {x['events_per_s']:,.0f} | {ten:.0f} s "
            f"| {x['peak_rss_worker'] / 2**20:.0f} MiB | < {goal} s "
            f"| {'met' if ten < goal else 'MISSED'} |"
        )
    lines.append(
        f"| PostgreSQL floor (binary COPY + INSERT … ON CONFLICT, 1 process) "
        f"| {floor['seconds']:.1f} s | {floor['events_per_s']:,.0f} "
        f"| {floor['seconds'] * scale:.0f} s | {floor['peak_rss'] / 2**20:.0f} MiB | — | |"
    )
    lines.append(
        f"| ingest → PostgreSQL / floor | | {ratio:.2f}× | | | ≥ 0.5× "
        f"| {'met' if ratio >= 0.5 else 'MISSED'} |"
    )
    lines.append(
        f"| city restart on PostgreSQL (12 offices' state rebuilt) | {rs['seconds']:.1f} s | "
        f"{r['inputs']['city']['events'] / rs['seconds']:,.0f} | | "
        f"{rs['peak_rss'] / 2**20:.0f} MiB ({rs['rss_per_office'] / 2**20:.1f} MiB/office) "
        f"| < 10 s | {'met' if rs['seconds'] < 10 else 'MISSED'} |"
    )
    lines.append(
        f"| city ingest → PostgreSQL, 2 workers | {r['city_pg']['seconds']:.1f} s "
        f"| {r['city_pg']['events_per_s']:,.0f} | | "
        f"{r['city_pg']['peak_rss_worker'] / 2**20:.0f} MiB | — | |"
    )
    return "\n".join(lines) + "\n"


def pg_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def write(out: Path, mode: str, result: Result) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results-offices-{mode}.json").write_text(json.dumps(result, indent=1))
    text = summary(result)
    (out / f"table-offices-{mode}.md").write_text(text)
    return text


def environ_without_pin() -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("BENCH_CPU", None)
    return env


@case
def case_profile_worker(path: str, db: str, rules: str, out: str, lines: int) -> Result:
    """cProfile of one worker's work (every other office of the deployment, as
    ``--workers 2`` deals them) over the first ``lines`` lines of ``path``, into ``db``
    (a directory, made afresh, or a postgresql:// URL)."""
    import cProfile
    import io
    import itertools
    import pstats

    from bsc_rules.cli._offices import RoutedIngest
    from bsc_rules.rules.offices import load_deployment

    if not db.startswith("postgresql:"):
        shutil.rmtree(db, ignore_errors=True)
    sets = load_deployment(Path(rules)).offices
    mine = set(sorted(sets)[0::2])
    profiler = cProfile.Profile()
    with RoutedIngest(db, sets, Path(path).name) as routed:
        numbered = enumerate(itertools.islice(lines_of(path), lines), 1)
        profiler.enable()
        routed.run(numbered, mine=mine)
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    Path(out).write_text(text.getvalue())
    return {"lines": lines, "file": out}
