"""The measurements of bsc_rules itself, each run in a fresh process.

``python -m bench.cases NAME 'JSON-ARGS'`` runs one measurement and prints one JSON object
on its last line of standard output. A fresh process per measurement makes each peak RSS
(``ru_maxrss``) that measurement's own, and keeps one measurement's garbage and caches
out of the next one's figures. Baselines are in :mod:`bench.baselines`, DuckDB in
:mod:`bench.duck`; they share this process harness.
"""

from __future__ import annotations

import gc
import hashlib
import os
import resource
import shutil
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

Result = dict[str, Any]
CASES: dict[str, Callable[..., Result]] = {}


def case(fn: Callable[..., Result]) -> Callable[..., Result]:
    """Register a measurement under its function name without the ``case_`` prefix."""
    CASES[fn.__name__.removeprefix("case_")] = fn
    return fn


# ---------------------------------------------------------------- helpers


class Timer:
    """Wall-clock and CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def throughput(events: int, t: Timer, **extra: Any) -> Result:
    """What every throughput case reports: events, wall and CPU seconds, the rate and the
    peak RSS, with ``extra``."""
    return {
        "events": events,
        "seconds": t.wall,
        "cpu_seconds": t.cpu,
        "events_per_s": events / t.wall,
        "peak_rss": peak_rss(),
        **extra,
    }


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """Peak resident set size of this process, in bytes.

    ``VmHWM`` where there is a /proc: ``ru_maxrss`` survives ``execve`` on Linux, so a
    child would report its parent's peak when that was higher.
    """
    hwm = _status("VmHWM:")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    """Current resident set size of this process, in bytes."""
    return _status("VmRSS:") or 0


def fresh_db(path: str | Path) -> Path:
    """``path`` with no database (nor WAL/SHM files) left from an earlier run."""
    db = Path(path)
    db.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


def db_bytes(path: str | Path) -> int:
    return sum(
        Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists()
    )


def drop_db(path: str | Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def lines_of(path: str | Path) -> Iterator[bytes]:
    """The lines of a JSON Lines file, streamed (never held in a list)."""
    with open(path, "rb", buffering=1 << 20) as handle:
        yield from handle


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max of latencies in seconds, returned in milliseconds."""
    ordered = sorted(samples)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] * 1000

    return {
        "n": n,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": ordered[-1] * 1000,
    }


def report_digest(report: Any) -> str:
    """A short digest of a report's JSON: equal digests, equal reports."""
    return hashlib.sha256(orjson.dumps(report.as_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()[
        :16
    ]


def instant(text: str) -> int:
    from bsc_rules.calendar import parse_instant, to_us

    return to_us(parse_instant(text))


# ---------------------------------------------------------------- replay (engine path)


@case
def case_replay(path: str, db: str, matcher: str, as_of: str, keep: bool = False) -> Result:
    """validate + store + match + measure: ``ingest_lines`` (group commit of 1000) into a
    fresh SQLite log, then the report at ``as_of``."""
    from bsc_rules.rules.ruleset import load_ruleset
    from bsc_rules.scorecard import Scorecard
    from bsc_rules.store.sqlite import SQLiteStore

    rules = load_ruleset()
    target = fresh_db(db)
    rss0 = current_rss()
    with Timer() as t:
        card = Scorecard(rules, store=SQLiteStore(target), matcher=matcher)
        summary = card.ingest_lines(lines_of(path))
        with Timer() as r:
            report = card.report_at(instant(as_of))
    written = len(getattr(card.store, "written", ()))
    cases = sum(len(book) for book in card.book.cases.values())
    card.close()
    events = summary.accepted + summary.duplicates + summary.rejected
    result = throughput(
        events,
        t,
        accepted=summary.accepted,
        duplicates=summary.duplicates,
        rejected=summary.rejected,
        report_seconds=r.wall,
        rss_start=rss0,
        case_records=cases,
        store_written_set=written,
        db_bytes=db_bytes(target),
        report=report_digest(report),
    )
    if not keep:
        drop_db(target)
    return result


@case
def case_restart(db: str, matcher: str, as_of: str) -> Result:
    """``Scorecard.open(db)``: the state rebuilt by replaying the stored log."""
    from bsc_rules.rules.ruleset import load_ruleset
    from bsc_rules.scorecard import Scorecard

    rules = load_ruleset()
    with Timer() as t:
        card = Scorecard.open(db, rules, matcher=matcher)
    report = card.report_at(instant(as_of))
    events = card._seq
    card.close()
    return throughput(events, t, report=report_digest(report))


@case
def case_evaluate(path: str, as_of: str, year: int) -> Result:
    """What ``bsc-rules evaluate`` does: in memory (no SQLite), Python matcher."""
    from bsc_rules.rules.ruleset import load_ruleset
    from bsc_rules.scorecard import Scorecard

    rules = load_ruleset()
    with Timer() as t:
        card = Scorecard(rules, matcher="python")
        summary = card.ingest_lines(lines_of(path))
        report = card.report_at(instant(as_of), year)
    events = summary.accepted + summary.duplicates + summary.rejected
    return throughput(events, t, kpis=report.as_dict()["kpis"])


# ---------------------------------------------------------------- the whole alert pipeline


@case
def case_pipeline(path: str, workdir: str, until: str) -> Result:
    """``replay``: ingest, and at the mail instants (08:00 of each working day, the digest
    days) the morning mail, the director's list and the digests, delivered into a
    Maildir, all on event time."""
    from bsc_rules.alerts.pipeline import open_pipeline
    from bsc_rules.notify.mailer import MaildirMailer
    from bsc_rules.scheduling.replay import replay
    from bsc_rules.settings import load_settings

    folder = Path(workdir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    db = folder / "pipeline.db"
    settings = load_settings(None, database=db, matcher="python")
    with Timer() as t:
        pipeline = open_pipeline(settings, db)
        with open(path, "rb", buffering=1 << 20) as lines:
            summary = replay(lines, instant(until), pipeline, MaildirMailer(folder / "maildir"))
    pipeline.card.close()
    ingest = summary.ingest
    events = ingest.accepted + ingest.duplicates + ingest.rejected
    return throughput(
        events,
        t,
        ticks=summary.ticks,
        queued=len(summary.queued),
        sent=len(summary.sent),
        db=str(db),
    )


@case
def case_digest(db: str, year: int, month: int, repeats: int) -> Result:
    """One month's digests (director + three sections): build the data, render the mail
    (Jinja2 text + HTML, a PNG trend chart per KPI) and make the MIME bytes."""
    from bsc_rules.alerts.pipeline import open_pipeline
    from bsc_rules.notify.digest import DIRECTOR, DigestBuilder, digest_message_id
    from bsc_rules.notify.render import render_digest, to_bytes
    from bsc_rules.rules.office import SECTIONS
    from bsc_rules.settings import load_settings

    settings = load_settings(None, database=Path(db), matcher="python")
    pipeline = open_pipeline(settings, Path(db))
    audiences = (DIRECTOR, *[s for s in SECTIONS if s != DIRECTOR])
    builds, renders, sizes = [], [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        builder = DigestBuilder(pipeline, year, month)
        data = [builder.build(a) for a in audiences]
        built = time.perf_counter()
        mails = []
        for audience, d in zip(audiences, data, strict=True):
            mail = render_digest(
                d,
                sender=settings.sender,
                to=pipeline.rules.office.recipients.of(audience),
                message_id=digest_message_id(year, month, audience, pipeline.rules.code),
                date=builder.hi,
                templates=settings.templates,
            )
            mails.append(to_bytes(mail))
        done = time.perf_counter()
        builds.append(built - start)
        renders.append(done - built)
        sizes = sum(len(m) for m in mails)
    pipeline.card.close()
    totals = [b + r for b, r in zip(builds, renders, strict=True)]
    return {
        "mails": len(audiences),
        "bytes": sizes,
        "seconds": statistics.median(totals),
        "build_seconds": statistics.median(builds),
        "render_seconds": statistics.median(renders),
        "first_seconds": totals[0],  # includes loading the templates
        "peak_rss": peak_rss(),
    }


# ---------------------------------------------------------------- live ingest latency


def _head(path: str, n: int) -> list[bytes]:
    out: list[bytes] = []
    for line in lines_of(path):
        out.append(line)
        if len(out) == n:
            break
    return out


@case
def case_ingest_latency(path: str, db: str, n: int, matcher: str) -> Result:
    """``Scorecard.ingest`` one event at a time: each acknowledged after its own durable
    commit (WAL, ``synchronous=FULL``)."""
    from bsc_rules.rules.ruleset import load_ruleset
    from bsc_rules.scorecard import Scorecard

    lines = _head(path, n)
    card = Scorecard.open(fresh_db(db), load_ruleset(), matcher=matcher)
    samples = []
    clock = time.perf_counter
    for line in lines:
        start = clock()
        card.ingest(line)
        samples.append(clock() - start)
    card.close()
    drop_db(db)
    return {"events": len(lines), **percentiles(samples), "events_per_s": len(lines) / sum(samples)}


@case
def case_group_latency(path: str, db: str, n: int, batch: int) -> Result:
    """``Scorecard.ingest_lines`` in groups of ``batch``: one durable commit per group."""
    from bsc_rules.rules.ruleset import load_ruleset
    from bsc_rules.scorecard import Scorecard

    lines = _head(path, n)
    card = Scorecard.open(fresh_db(db), load_ruleset(), matcher="python")
    samples = []
    clock = time.perf_counter
    for i in range(0, len(lines), batch):
        group = lines[i : i + batch]
        start = clock()
        card.ingest_lines(group, batch=batch)
        samples.append(clock() - start)
    card.close()
    drop_db(db)
    return {
        "events": len(lines),
        "batch": batch,
        **percentiles(samples),
        "per_event_ms": sum(samples) / len(lines) * 1000,
        "events_per_s": len(lines) / sum(samples),
    }


# ---------------------------------------------------------------- memory per open case


def _applications(n: int, first: int) -> list[bytes]:
    """``n`` birth-subsidy applications through 2017, never paid nor rejected.

    Built a thousand at a time and split out of one joined buffer: each ``orjson.dumps``
    result holds about 4 KB of RSS while it lives (measured: 100k results of 214 bytes,
    420 MB), which would swamp the figure measured here.
    """
    from bsc_rules.calendar import iso

    start = instant("2017-01-02T08:00:00+08:00")
    step = (instant("2017-12-20T17:00:00+08:00") - start) // max(n, 1)

    def one(i: int) -> bytes:
        at = start + i * step
        return orjson.dumps(
            {
                "specversion": "1.0",
                "id": f"open-{first + i}",
                "source": "/taipei/datong/registration",
                "type": "birth_subsidy.applied",
                "time": iso(at - at % 1_000_000),
                "subject": f"BS{first + i:010d}",
                "office": "datong",
                "data": {"amount": 20000},
            }
        )

    lines: list[bytes] = []
    for lo in range(0, n, 1000):
        lines += b"\n".join([one(i) for i in range(lo, min(n, lo + 1000))]).split(b"\n")
    return lines


def _top_files(diff: list[Any], n: int, limit: int = 6) -> list[dict[str, Any]]:
    rows = []
    for stat in diff[:limit]:
        frame = stat.traceback[0]
        name = frame.filename
        for marker in ("/bsc_rules/", "/lib/python3"):
            if marker in name:
                name = name[name.index(marker) + 1 :]
        rows.append({"where": f"{name}:{frame.lineno}", "bytes_per_case": stat.size_diff / n})
    return rows


@case
def case_open_memory(db: str, n: int, matcher: str, method: str) -> Result:
    """Memory held per open deadline case: ``n`` BP1.1 applications never paid.

    ``method`` ``tracemalloc``: Python allocations still live after the ingest (and where,
    by source line); ``rss``: the resident set's growth (allocator overhead included).
    """
    from bsc_rules.rules.ruleset import load_ruleset
    from bsc_rules.scorecard import Scorecard

    card = Scorecard.open(fresh_db(db), load_ruleset(), matcher=matcher)
    card.ingest_lines(_applications(1000, 10**9))  # warm up: caches, first allocations
    lines = _applications(n, 0)
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        base = tracemalloc.get_traced_memory()[0]
    rss0 = current_rss()
    card.ingest_lines(lines)
    gc.collect()
    rss1 = current_rss()
    result: Result = {"cases": n, "matcher": matcher, "method": method}
    if method == "tracemalloc":
        grown = tracemalloc.get_traced_memory()[0] - base
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        result["bytes_per_case"] = grown / n
        result["top"] = _top_files(after.compare_to(before, "lineno"), n)
    else:
        result["bytes_per_case"] = (rss1 - rss0) / n
    pending = card.book.pending["BP1.1"]
    result["open_cases"] = len(pending)
    result["written_set"] = len(getattr(card.store, "written", ()))
    result["peak_rss"] = peak_rss()
    card.close()
    drop_db(db)
    return result


# ---------------------------------------------------------------- profiles


@case
def case_profile(
    kind: str, path: str, db: str, out: str, as_of: str = "", until: str = ""
) -> Result:
    """cProfile of one path; the top functions by own time go to ``out``."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    if kind in ("replay_python", "replay_durable"):
        from bsc_rules.rules.ruleset import load_ruleset
        from bsc_rules.scorecard import Scorecard
        from bsc_rules.store.sqlite import SQLiteStore

        rules = load_ruleset()
        card = Scorecard(rules, store=SQLiteStore(fresh_db(db)), matcher=kind.split("_")[1])
        profiler.enable()
        card.ingest_lines(lines_of(path))
        card.report_at(instant(as_of))
        profiler.disable()
        card.close()
        drop_db(db)
    elif kind == "restart":
        from bsc_rules.rules.ruleset import load_ruleset
        from bsc_rules.scorecard import Scorecard

        rules = load_ruleset()
        profiler.enable()
        card = Scorecard.open(db, rules, matcher="python")
        profiler.disable()
        card.close()
    elif kind == "pipeline":
        from bsc_rules.alerts.pipeline import open_pipeline
        from bsc_rules.notify.mailer import MaildirMailer
        from bsc_rules.scheduling.replay import replay
        from bsc_rules.settings import load_settings

        folder = Path(db).parent / "profile-pipeline"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        settings = load_settings(None, database=folder / "p.db", matcher="python")
        pipeline = open_pipeline(settings, folder / "p.db")
        with open(path, "rb") as lines:
            profiler.enable()
            replay(lines, instant(until), pipeline, MaildirMailer(folder / "maildir"))
            profiler.disable()
        pipeline.card.close()
        shutil.rmtree(folder, ignore_errors=True)
    else:
        msg = f"unknown profile {kind!r}"
        raise ValueError(msg)
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
    Path(out).write_text(text.getvalue())
    rows = []
    for (file, line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = file.split("/src/")[-1].split("site-packages/")[-1]
        rows.append({"function": f"{short}:{line}({func})", "own": tt / total, "cum": ct / total})
    rows.sort(key=lambda r: -r["own"])
    return {"kind": kind, "seconds": total, "top": rows[:12], "file": out}


# ---------------------------------------------------------------- entry point


def main(argv: list[str]) -> int:
    # Run as __main__, this module is not ``bench.cases``: use the registry that the
    # baselines and DuckDB modules fill, the imported one.
    from bench import baselines, duck, http_cases, offices  # noqa: F401  (they register their cases)
    from bench.cases import CASES as registry

    name, args = argv[0], orjson.loads(argv[1]) if len(argv) > 1 else {}
    if hasattr(os, "sched_setaffinity") and os.environ.get("BENCH_CPU"):
        os.sched_setaffinity(0, {int(os.environ["BENCH_CPU"])})
    result = registry[name](**args)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
