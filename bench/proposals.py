"""Proposed fixes, measured: each is a monkeypatch of one src function, applied in a fresh
process before a measurement of :mod:`bench.cases` runs.

Nothing here changes ``src/``: these are prototypes that show what a change would buy,
so that it can be made (and tested) in the source. ``python -m bench.proposals`` runs
every variant and prints before/after; each patched run must produce the same report
(its digest) as the unpatched one.

Applied since (commits after 86b4959; measured before/after in docs/benchmarks.md):
``decode`` (no per-line regex), ``hostile`` (C-speed guards for the hostile-input
checks), ``event`` (Event not frozen), ``measure`` (KPIs compiled once), ``durable``
(the engine's mask memoised per fact content), ``written`` (own seqs not kept),
``cache`` (a 256 MiB page cache). What is left, measured and not applied:

* ``year`` — calendar.year_of: cache the local year per UTC hour (Taipei's offsets are
  whole hours); the case book now remembers the last year's bounds instead.
* ``store`` — store.SQLiteStore.append_batch: one ``executemany`` per batch, verdicts
  from the rows it added.
* ``replay`` — replay.replay and scorecard.Scorecard.ingest_numbered: hand the parsed
  Event to the batch instead of the line (validated once, not twice).
* ``target`` — report.effective_target: cached per (KPI, year).
* ``gc`` — the cyclic garbage collector off during the run (an upper bound of its cost).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(fn: Callable[[], None]) -> Callable[[], None]:
    PATCHES[fn.__name__.removeprefix("patch_")] = fn
    return fn


def _rebind(name: str, old: object, new: object) -> None:
    """Replace ``old`` by ``new`` wherever a bsc_rules module imported it by name."""
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("bsc_rules") and (
            getattr(module, name, None) is old
        ):
            setattr(module, name, new)


@patch
def patch_year() -> None:
    from bsc_rules import calendar

    hour = 3_600_000_000

    @lru_cache(maxsize=1 << 16)
    def year_of_hour(h: int) -> int:
        return calendar.local_date(h * hour).year

    def year_of(us: int) -> int:
        return year_of_hour(us // hour)

    _rebind("year_of", calendar.year_of, year_of)


@patch
def patch_store() -> None:
    import sqlite3

    from bsc_rules.errors import StoreError
    from bsc_rules.events import content_digest, same_content
    from bsc_rules.store.sqlite import SQLiteStore

    insert = (
        "INSERT INTO events (source, id, type, time_us, subject, digest, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING"
    )

    def append_batch(self: Any, events: Iterable[Any]) -> list[str]:
        batch = list(events)
        conn = self._conn
        written: list[int] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                top = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
                digests = [content_digest(e.body) for e in batch]
                conn.executemany(
                    insert,
                    [
                        (e.source, e.id, e.type, e.time_us, e.subject, d, e.body)
                        for e, d in zip(batch, digests, strict=True)
                    ],
                )
                added = {
                    (source, id_): seq
                    for seq, source, id_ in conn.execute(
                        "SELECT seq, source, id FROM events WHERE seq > ?", (top,)
                    )
                }
                verdicts = []
                for e, d in zip(batch, digests, strict=True):
                    seq = added.pop(e.key, None)  # the first of equal keys claims the row
                    if seq is not None:
                        written.append(seq)
                        verdicts.append("accepted")
                        continue
                    row = conn.execute(
                        "SELECT digest, body FROM events WHERE source = ? AND id = ?", e.key
                    ).fetchone()
                    same = row is not None and (row[0] == d or same_content(row[1], e.body))
                    verdicts.append("duplicate" if same else "conflict")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            msg = f"cannot write to the database {self.path}: {exc}"
            raise StoreError(msg) from exc
        self._own.add(written)  # own writes count once committed (store/base.py)
        return verdicts

    SQLiteStore.append_batch = append_batch  # type: ignore[method-assign,assignment]


@patch
def patch_gc() -> None:
    """The cyclic garbage collector off (bounds what its passes over the growing case book
    cost; a real fix would ``gc.freeze()`` the book or raise the thresholds)."""
    import gc

    gc.disable()


@patch
def patch_replay() -> None:  # noqa: C901  (a copy of replay.replay plus one change)
    from bsc_rules import events
    from bsc_rules.events import Rejection
    from bsc_rules.scheduling import replay as module
    from bsc_rules.scorecard import Ingested, IngestSummary, Scorecard

    def replay(lines: Any, until: int, pipeline: Any, mailer: Any, progress: Any = None) -> Any:
        schedule = module.Schedule.of(pipeline, pipeline.settings.tick_minutes)
        summary = module.ReplaySummary()
        batch: list[tuple[int, Any]] = []
        now: int | None = None
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            parsed = pipeline.card.validate(raw, number)
            t = parsed.time_us if isinstance(parsed, events.Event) else (now or 0)
            if isinstance(parsed, events.Event) and t > until:
                continue
            if now is None and isinstance(parsed, events.Event):
                now = summary.start = t
            while now is not None and (nxt := schedule.after(now)) < t:
                module._flush(pipeline, batch, summary)
                now = nxt
                module._tick(pipeline, schedule, mailer, now, summary)
            batch.append(
                (number, parsed if isinstance(parsed, events.Event) else raw)
            )  # the change
        module._flush(pipeline, batch, summary)
        while now is not None and (nxt := schedule.after(now)) <= until:
            now = nxt
            module._tick(pipeline, schedule, mailer, now, summary)
        summary.end = now
        return summary

    def ingest_numbered(
        self: Any, lines: Any, *, origin: str = "", batch: int = 1000, progress: Any = None
    ) -> Any:
        summary = IngestSummary()
        pending: list[tuple[Any, int]] = []
        for number, raw in lines:
            if not isinstance(raw, events.Event) and not raw.strip():  # the change: Events pass
                continue
            parsed = self.validate(raw, number)
            if isinstance(parsed, Rejection):
                self.store.reject(parsed, origin)
                summary.add(Ingested("rejected", rejection=parsed))
            else:
                pending.append((parsed, number))
            if len(pending) >= batch:
                self._flush(pending, summary, origin)
                if progress is not None:
                    progress(number)
        self._flush(pending, summary, origin)
        return summary

    module.replay = replay
    Scorecard.ingest_numbered = ingest_numbered  # type: ignore[method-assign]


@patch
def patch_target() -> None:
    from bsc_rules.measures import report

    original = report.effective_target
    cache: dict[tuple[int, int], Any] = {}

    def effective_target(kpi: Any, year: int) -> Any:
        key = (id(kpi), year)
        if key not in cache:
            cache[key] = original(kpi, year)
        return cache[key]

    report.effective_target = effective_target


# ---------------------------------------------------------------- running


def apply(names: Iterable[str]) -> None:
    for name in names:
        PATCHES[name]()


def run_case(names: list[str], case: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run ``case`` of :mod:`bench.cases` in a fresh process with ``names`` patched."""
    code = (
        "import sys, json, orjson\n"
        "from bench import proposals, cases, baselines, duck\n"
        "import bsc_rules.scorecard, bsc_rules.scheduling.replay, bsc_rules.alerts.pipeline\n"
        "import bsc_rules.measures.report\n"
        "import bsc_rules.measures.cases, bsc_rules.matching.durable, bsc_rules.store.sqlite\n"
        "proposals.apply(json.loads(sys.argv[1]))\n"
        "print(orjson.dumps(cases.CASES[sys.argv[2]](**json.loads(sys.argv[3]))).decode())\n"
    )
    from bench.config import ROOT

    cpu = {(os.cpu_count() or 1) - 1}
    proc = subprocess.run(
        [
            "taskset",
            "-c",
            str(cpu.pop()),
            sys.executable,
            "-c",
            code,
            json.dumps(names),
            case,
            json.dumps(args),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        msg = f"{case} with {names} failed"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _best(names: list[str], case: str, args: dict[str, Any], repeat: int) -> dict[str, Any]:
    runs = [run_case(names, case, args) for _ in range(repeat)]
    return min(runs, key=lambda r: r["cpu_seconds"])


def _line(label: str, best: dict[str, Any], base: dict[str, Any] | None) -> str:
    per = best["cpu_seconds"] / best["events"] * 1e6
    rate = best["events"] / best["cpu_seconds"] / 1000
    text = (
        f"  {label:34s} {per:6.1f} µs CPU/event ({rate:5.1f}k ev/s CPU;"
        f" wall {best['seconds']:6.2f} s)"
    )
    if base is not None:
        before = base["cpu_seconds"] / base["events"] * 1e6
        text += f"  {per / before - 1:+6.1%}"
        if "report" in best:
            text += f"  same report: {best['report'] == base['report']}"
    return text


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.config import DATA, FINAL, NATIONAL_EVENTS, PIPELINE_UNTIL, national_offices
    from bench.config import QUICK_NATIONAL_SAMPLE as SAMPLE
    from bench.inputs import ensure

    parser = argparse.ArgumentParser(prog="python -m bench.proposals", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant (least CPU kept)")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="sections to skip: engine, scale, pipeline"
    )
    parser.add_argument(
        "--only", nargs="*", default=[], help="extra sections: national (the 10M year)"
    )
    args = parser.parse_args(argv)
    one = str(ensure("one", ("datong",), rewrite=False).path)
    db = str(DATA / "db" / "proposal.db")
    replay = {"path": one, "db": db, "as_of": FINAL}

    if "engine" not in args.skip:
        print("engine replay, one office (validate + store + match + measure):", flush=True)
        for matcher in ("python", "durable"):
            base = _best([], "replay", {**replay, "matcher": matcher}, args.repeat)
            print(_line(f"as it is ({matcher} matcher)", base, None), flush=True)
            for names in (["year"], ["store"], ["gc"]):
                best = _best(names, "replay", {**replay, "matcher": matcher}, args.repeat)
                print(_line(" + ".join(names), best, base), flush=True)

    if "scale" not in args.skip:
        sample = str(ensure("national-sample", national_offices(SAMPLE), rewrite=True).path)
        print("engine replay, the national sample (≈1M events):", flush=True)
        big = {"path": sample, "db": db, "as_of": FINAL, "matcher": "python"}
        base = _best([], "replay", big, 1)
        print(_line("as it is", base, None), flush=True)
        print(_line("gc", _best(["gc"], "replay", big, 1), base), flush=True)

    if "national" in args.only:
        full = str(ensure("national", national_offices(NATIONAL_EVENTS), rewrite=True).path)
        print("engine replay, the national year (≈10M events), GC off:", flush=True)
        after = run_case(["gc"], "replay", {**replay, "path": full, "matcher": "python"})
        print(_line("gc", after, None), flush=True)
        print(f"  peak RSS {after['peak_rss'] / 2**20:,.0f} MiB", flush=True)

    if "pipeline" not in args.skip:
        print("alert pipeline replay, one office, to 2018-01-31:", flush=True)
        pipe = {"path": one, "workdir": str(DATA / "proposal-pipeline"), "until": PIPELINE_UNTIL}
        base = _best([], "pipeline", pipe, 2)
        print(_line("as it is", base, None), flush=True)
        for names in (["replay"], ["target"], ["replay", "target"]):
            print(_line(" + ".join(names), _best(names, "pipeline", pipe, 2), base), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
