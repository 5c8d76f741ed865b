"""Proposed fixes, measured: each is a monkeypatch of one src function, applied in a fresh
process before a measurement of :mod:`bench.cases` runs.

Nothing here changes ``src/``: these are prototypes that show what a change would buy,
so that it can be made (and tested) in the source. ``python -m bench.proposals`` runs
every variant and prints before/after; each patched run must produce the same report
(its digest) as the unpatched one.

Variants (file, function: change):

* ``year`` — calendar.year_of: cache the local year per UTC hour (Taipei's offsets are
  whole hours).
* ``decode`` — events._decode: no per-line ``\\d{16,}`` regex; decode with orjson and
  fall back to the stdlib only when the result holds a float (how orjson reads integers
  past 64 bits).
* ``event`` — events.Event: ``@dataclass(slots=True)`` without ``frozen`` (a frozen init
  calls ``object.__setattr__`` per field).
* ``hostile`` — events.parse_line and parse_object: the hostile-input checks (nesting
  depth, lone surrogates) walked in Python only when a C-speed test says they may fail:
  more than MAX_DEPTH brackets in the line; orjson (strict UTF-8) refusing to encode.
* ``measure`` — measures.CaseBook.add and _count: each KPI compiled once to masks and
  (mask, weight) credits; no contribution computed before a case is opened; no
  ``setdefault(year, Counter())`` (a new Counter per call).
* ``store`` — store.SQLiteStore.append_batch: one ``executemany`` per batch, verdicts
  from the rows it added.
* ``written`` — store.SQLiteStore.written: not kept (bounds what the set of own seqs costs).
* ``durable`` — _durable.DurableMatcher.match: memoise the mask per fact (type and field
  tokens; the fact id left out).
* ``replay`` — replay.replay and scorecard.Scorecard.ingest_numbered: hand the parsed
  Event to the batch instead of the line (validated once, not twice).
* ``target`` — report.effective_target: cached per (KPI, year).
* ``cache`` — store._connect: ``PRAGMA cache_size`` of 256 MiB (the default is 2 MiB).
* ``gc`` — the cyclic garbage collector off during the run (an upper bound of its cost).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

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


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False


@patch
def patch_decode() -> None:
    from bsc_rules import events

    stdlib = events._decode

    def decode(raw: bytes) -> Any:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return stdlib(raw)
        return stdlib(raw) if _has_float(obj) else obj

    events._decode = decode


@patch
def patch_hostile() -> None:
    """The hostile-input checks of events.parse_line/parse_object at C speed on the common
    path: nesting is walked only when the line holds more than MAX_DEPTH brackets (depth
    can be no more than that count); lone surrogates are looked for only when orjson,
    strict UTF-8, refuses to encode the object (it raises TypeError for them)."""
    from pydantic import ValidationError

    from bsc_rules import events as ev

    def parse_line(raw: bytes | str, line: int | None = None) -> Any:
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        try:
            obj = ev._decode(data)
        except ValueError as exc:
            message = f"not valid JSON: {exc}" if ev._is_utf8(data) else "not valid UTF-8 text"
            return ev.Rejection(message, line=line, raw=data)
        brackets = data.count(b"{") + data.count(b"[")
        if brackets > ev.MAX_DEPTH and ev._depth(obj) > ev.MAX_DEPTH:
            field = ev._culprit(obj, lambda v, level: ev._depth(v) > ev.MAX_DEPTH - level)
            message = f"expected at most {ev.MAX_DEPTH} levels of nesting, got deeper"
            return ev.Rejection(
                message, field=field, line=line, event_id=ev._ident(obj, "id"), raw=data
            )
        return ev.parse_object(obj, line=line, raw=data)

    def parse_object(obj: Any, line: int | None = None, raw: bytes | None = None) -> Any:
        event_id, source = ev._ident(obj, "id"), ev._ident(obj, "source")
        if raw is None:
            raw = ev.canonical(obj) if isinstance(obj, dict) else repr(obj).encode()
        if not isinstance(obj, dict):
            got = ev._describe(obj)
            return ev.Rejection(f"expected a JSON object, got {got}", line=line, raw=raw)
        try:
            valid = ev._ADAPTER.validate_python(obj)
        except ValidationError as exc:
            texts = [ev._error_text(e) for e in exc.errors(include_url=False)]
            message = "; ".join(f"{f}: {m}" if i else m for i, (f, m) in enumerate(texts))
            return ev.Rejection(
                message, field=texts[0][0], line=line, event_id=event_id, source=source, raw=raw
            )
        try:
            body = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)  # refuses surrogates
        except TypeError:
            if ev._has_surrogate(obj):
                field = ev._culprit(obj, lambda v, _level: ev._has_surrogate(v))
                message = "expected Unicode text, got a lone UTF-16 surrogate (\\ud800-\\udfff)"
                return ev.Rejection(
                    message, field=field, line=line, event_id=event_id, source=source, raw=raw
                )
            body = ev.canonical(obj)  # integers past 64 bits
        return ev._event(valid, valid["time"], body)

    _rebind("parse_line", ev.parse_line, parse_line)
    _rebind("parse_object", ev.parse_object, parse_object)


@patch
def patch_event() -> None:
    import dataclasses

    from bsc_rules import events

    old = events.Event
    namespace = {
        "__annotations__": dict(old.__annotations__),
        "__module__": old.__module__,
        "__doc__": old.__doc__,
        "key": old.key,
        "digest": old.digest,
    }
    new: Any = dataclasses.dataclass(slots=True)(type("Event", (), namespace))
    _rebind("Event", old, new)


@patch
def patch_store() -> None:
    import sqlite3

    from bsc_rules.errors import StoreError
    from bsc_rules.store import SQLiteStore

    insert = (
        "INSERT INTO events (source, id, type, time_us, subject, digest, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING"
    )

    def append_batch(self: Any, events: Iterable[Any]) -> list[str]:
        batch = list(events)
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                top = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
                digests = [e.digest for e in batch]
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
                        self.written.add(seq)
                        verdicts.append("accepted")
                        continue
                    row = conn.execute(
                        "SELECT digest FROM events WHERE source = ? AND id = ?", e.key
                    ).fetchone()
                    verdicts.append("duplicate" if row is not None and row[0] == d else "conflict")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            msg = f"cannot write to the database {self.path}: {exc}"
            raise StoreError(msg) from exc
        return verdicts

    SQLiteStore.append_batch = append_batch  # type: ignore[method-assign,assignment]


@patch
def patch_measure() -> None:  # noqa: C901  (a prototype: one patch, one place)
    """CaseBook.add as it is now (a follow-up touches only the KPIs it meets, a repeat
    opening nothing), plus: each KPI compiled once to plain masks and (mask, weight)
    credits for the ratio contributions; no "before" contribution for a case not yet
    opened; ``_count`` without ``setdefault(year, Counter())`` (a new Counter per call)."""
    from collections import Counter

    from bsc_rules import measures as m
    from bsc_rules.events import FOLLOW_UP_OF
    from bsc_rules.ruleset import SCORE_SCALE, RatioMeasure

    original_init = m.CaseBook.__init__

    def plan(book: Any, kpi: Any) -> tuple[Any, ...]:
        ratio = isinstance(kpi.spec.measure, RatioMeasure)
        return (
            ratio,
            kpi.population.mask,
            kpi.masks["exclude"],
            kpi.masks["fail"],
            tuple((c.mask, w) for c, w in kpi.credit),
            kpi,
            kpi.id in book.pending,
            kpi.masks["follow_ups"],
        )

    def init(self: Any, rules: Any) -> None:
        original_init(self, rules)
        self._plans = {t: tuple(plan(self, k) for k in ks) for t, ks in self._tracked.items()}

    def contribution(book: Any, p: tuple[Any, ...], rec: Any) -> Any:
        ratio, population, exclude, fail, credit, kpi = p[:6]
        if rec.open_us is None or not rec.open_mask & population:
            return None
        if not ratio:
            return m._contribution(book, kpi, rec)
        flags = rec.open_mask
        for item in rec.follow or ():
            flags |= item[2]  # every follow-up: FAR_FUTURE
        if flags & exclude:
            return None
        if flags & fail:
            score = 0
        elif credit:
            score = min(SCORE_SCALE, sum(w for c, w in credit if flags & c))
        else:
            score = SCORE_SCALE
        return (rec.year, (("den", 1), ("num", score)))

    def add(self: Any, event: Any, mask: int, seq: int) -> None:
        t = event.time_us
        if t > self.max_time:
            self.max_time = t
        etype = event.type
        opening = FOLLOW_UP_OF.get(etype) or etype
        subject = event.subject
        book = self.cases[opening]
        rec = book.get(subject)
        if rec is None:
            rec = book[subject] = m.CaseRec()
        plans = self._plans.get(opening, ())
        was_open = rec.open_us is not None
        if opening != etype:
            plans = tuple(p for p in plans if mask & p[7])
        elif was_open and (t, seq) >= (rec.open_us, rec.open_seq):
            plans = ()  # a later repeat of the opening event changes nothing
        before = [contribution(self, p, rec) for p in plans] if was_open else None
        if opening != etype:
            if rec.follow is None:
                rec.follow = []
            rec.follow.append((t, seq, mask))
            self.orphans += not was_open
        elif not was_open or (t, seq) < (rec.open_us, rec.open_seq):
            self._open(rec, event, mask, seq)
        if rec.open_us is None:
            return  # nothing counted, never pending
        for i, p in enumerate(plans):
            old = before[i] if before is not None else None
            new = contribution(self, p, rec)
            if new != old:
                self._count(p[5], old, -1)
                self._count(p[5], new, +1)
            if p[6]:
                self._track_pending(p[5], rec, subject)

    def count(self: Any, kpi: Any, part: Any, sign: int) -> None:
        if part is None:
            return
        year, amounts = part
        totals = self.totals[kpi.id]
        bucket = totals.get(year)  # not setdefault(year, Counter()): a Counter per call
        if bucket is None:
            bucket = totals[year] = Counter()
        for key, amount in amounts:
            value = bucket[key] + sign * amount
            if value:
                bucket[key] = value
            else:
                bucket.pop(key, None)

    m.CaseBook.__init__ = init  # type: ignore[method-assign]
    m.CaseBook.add = add  # type: ignore[method-assign]
    m.CaseBook._count = count  # type: ignore[method-assign]


@patch
def patch_cache() -> None:
    """A 256 MiB SQLite page cache on the store's connection (the default is 2 MiB: once
    the ``(source, id)`` index outgrows it, every insert misses)."""
    from bsc_rules import store

    original = store._connect

    def connect(path: Any) -> Any:
        conn = original(path)
        conn.execute("PRAGMA cache_size = -262144")
        return conn

    store._connect = connect


@patch
def patch_gc() -> None:
    """The cyclic garbage collector off (bounds what its passes over the growing case book
    cost; a real fix would ``gc.freeze()`` the book or raise the thresholds)."""
    import gc

    gc.disable()


class _Forgetful(set[int]):
    def add(self, item: int) -> None:
        return None


@patch
def patch_written() -> None:
    from bsc_rules.store import SQLiteStore

    original = SQLiteStore.__init__

    def init(self: Any, path: Any) -> None:
        original(self, path)
        self.written = _Forgetful()

    SQLiteStore.__init__ = init  # type: ignore[method-assign]


@patch
def patch_durable() -> None:
    from bsc_rules._durable import DurableMatcher

    original = DurableMatcher.match

    def match(self: Any, type_: str, data: Any) -> int:
        plan = self._plans.get(type_)
        if plan is None:
            return original(self, type_, data)
        key = (plan.token, *(f.token(data) for f in plan.fields))
        memo: dict[tuple[str, ...], int] = self.__dict__.setdefault("_bench_memo", {})
        mask = memo.get(key)
        if mask is None:
            mask = memo[key] = original(self, type_, data)
        return mask

    DurableMatcher.match = match  # type: ignore[method-assign]


@patch
def patch_replay() -> None:  # noqa: C901  (a copy of replay.replay plus one change)
    from bsc_rules import events
    from bsc_rules import replay as module
    from bsc_rules.events import Rejection
    from bsc_rules.scorecard import Ingested, IngestSummary, Scorecard

    def replay(lines: Any, until: int, pipeline: Any, mailer: Any, progress: Any = None) -> Any:
        s = pipeline.settings
        schedule = module.Schedule(s.tick_minutes, s.digest.day, s.digest.hour)
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
    from bsc_rules import report

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
        "import bsc_rules.scorecard, bsc_rules.replay, bsc_rules.pipeline, bsc_rules.report\n"
        "import bsc_rules.measures, bsc_rules._durable, bsc_rules.store\n"
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


def main(argv: list[str] | None = None) -> int:  # noqa: C901  (sections in order)
    import argparse

    from bench.config import (
        DATA,
        FINAL,
        NATIONAL_EVENTS,
        PIPELINE_UNTIL,
        QUICK_NATIONAL_SAMPLE,
        TAIPEI,
        national_offices,
    )
    from bench.inputs import ensure

    parser = argparse.ArgumentParser(prog="python -m bench.proposals", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant (least CPU kept)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        help="sections to skip: engine, scale, restart, pipeline, memory",
    )
    parser.add_argument(
        "--only", nargs="*", default=[], help="extra sections: national (the 10M year, ~5 min)"
    )
    args = parser.parse_args(argv)
    one = str(ensure("one", ("datong",), rewrite=False).path)
    db = str(DATA / "db" / "proposal.db")
    engine = ["hostile", "decode", "event", "measure"]
    replay = {"path": one, "db": db, "as_of": FINAL}

    if "engine" not in args.skip:
        print("engine replay, one office (validate + store + match + measure):", flush=True)
        base = _best([], "replay", {**replay, "matcher": "python"}, args.repeat)
        print(_line("before (Python matcher)", base, None), flush=True)
        for names in [[n] for n in [*engine, "year", "store"]] + [engine]:
            best = _best(names, "replay", {**replay, "matcher": "python"}, args.repeat)
            print(_line(" + ".join(names), best, base), flush=True)
        base = _best([], "replay", {**replay, "matcher": "durable"}, args.repeat)
        print(_line("before (durable matcher)", base, None), flush=True)
        for names in (["durable"], [*engine, "durable"]):
            best = _best(names, "replay", {**replay, "matcher": "durable"}, args.repeat)
            print(_line(" + ".join(names) + " (durable)", best, base), flush=True)

    if "scale" not in args.skip:
        sample = str(
            ensure("national-sample", national_offices(QUICK_NATIONAL_SAMPLE), rewrite=True).path
        )
        print("engine replay, the national sample (≈1M events):", flush=True)
        big = {"path": sample, "db": db, "as_of": FINAL, "matcher": "python"}
        base = _best([], "replay", big, 1)
        print(_line("before", base, None), flush=True)
        for names in (["cache"], ["gc"], [*engine, "cache", "gc"]):
            print(_line(" + ".join(names), _best(names, "replay", big, 1), base), flush=True)

    if "national" in args.only:
        full = str(ensure("national", national_offices(NATIONAL_EVENTS), rewrite=True).path)
        print("engine replay, the national year (≈10M events), every proposal:", flush=True)
        names = [*engine, "cache", "gc", "written"]
        after = run_case(names, "replay", {**replay, "path": full, "matcher": "python"})
        print(_line(" + ".join(names), after, None), flush=True)
        print(f"  peak RSS {after['peak_rss'] / 2**20:,.0f} MiB", flush=True)

    if "restart" not in args.skip:
        print("restart, the city log (Scorecard.open):", flush=True)
        city = str(ensure("city", TAIPEI, rewrite=True).path)
        city_db = str(DATA / "db" / "proposal-city.db")
        run_case(
            [],
            "replay",
            {"path": city, "db": city_db, "matcher": "python", "as_of": FINAL, "keep": True},
        )
        import sqlite3
        import time

        conn = sqlite3.connect(city_db)
        start = time.perf_counter()
        conn.execute("PRAGMA quick_check(5)").fetchall()
        print(f"  (of which PRAGMA quick_check on open: {time.perf_counter() - start:.2f} s)")
        conn.close()
        restart = {"db": city_db, "matcher": "python", "as_of": FINAL}
        base = _best([], "restart", restart, 2)
        print(_line("before", base, None), flush=True)
        for names in (["measure"], engine):
            print(_line(" + ".join(names), _best(names, "restart", restart, 2), base), flush=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{city_db}{suffix}").unlink(missing_ok=True)

    if "pipeline" not in args.skip:
        print("alert pipeline replay, one office, to 2018-01-31:", flush=True)
        pipe = {"path": one, "workdir": str(DATA / "proposal-pipeline"), "until": PIPELINE_UNTIL}
        base = _best([], "pipeline", pipe, 2)
        print(_line("before", base, None), flush=True)
        for names in (["replay"], ["target"], ["replay", "target", *engine]):
            print(_line(" + ".join(names), _best(names, "pipeline", pipe, 2), base), flush=True)

    if "memory" not in args.skip:
        print("memory per open deadline case (tracemalloc):", flush=True)
        open_args = {"db": db, "n": 100_000, "matcher": "python", "method": "tracemalloc"}
        for names in ([], ["written"]):
            r = run_case(names, "open_memory", open_args)
            print(f"  {' + '.join(names) or 'before':34s} {r['bytes_per_case']:6.0f} B per case")
    return 0


if __name__ == "__main__":
    sys.exit(main())
