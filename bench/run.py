"""``python -m bench [--quick]``: generate the inputs, run every measurement, print the table.

Each measurement runs in its own process (:mod:`bench.cases`), pinned to one core when
the machine has more than one, so that every figure is a one-core figure and every peak
RSS belongs to one measurement. Results go to ``bench/out/results-MODE.json`` and the
table to ``bench/out/table-MODE.md``; cProfile listings of the paths that miss their
target to ``bench/out/profile-*.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import config
from bench.config import DATA, OUT, Plan
from bench.duck import cross_check
from bench.http_cases import http_text
from bench.inputs import Input, ensure

Result = dict[str, Any]


# ---------------------------------------------------------------- running cases


class Runner:
    """Runs measurements in fresh processes and logs progress on standard error."""

    def __init__(self, cpu: int | None) -> None:
        self.env = dict(os.environ, PYTHONHASHSEED="0")
        if cpu is not None:
            self.env["BENCH_CPU"] = str(cpu)
        self.started = time.perf_counter()
        self.loads: list[float] = []

    def log(self, text: str) -> None:
        elapsed = time.perf_counter() - self.started
        sys.stderr.write(f"[{elapsed:7.1f}s] {text}\n")
        sys.stderr.flush()

    def __call__(self, label: str, name: str, **args: Any) -> Result:
        self.log(f"{label} …")
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.cases", name, json.dumps(args)],
            cwd=config.ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
            msg = f"measurement {label!r} ({name}) failed with status {proc.returncode}"
            raise RuntimeError(msg)
        result: Result = json.loads(proc.stdout.strip().splitlines()[-1])
        # the 1-minute load average before and after: other work on the machine shows here
        result["load"] = [load, os.getloadavg()[0]]
        self.loads.append(max(result["load"]))
        self.log(f"{label}: done in {time.perf_counter() - start:.1f}s (load {load:.1f})")
        return result

    def median(self, label: str, name: str, repeat: int, **args: Any) -> Result:
        """The run with the median throughput of ``repeat`` runs (short measurements are
        noisy: fsync waits, the other core's work); every run's figure is kept."""
        runs = [self(f"{label} ({i + 1}/{repeat})", name, **args) for i in range(repeat)]
        runs.sort(key=lambda r: r["events_per_s"])
        result = runs[len(runs) // 2]
        result["runs_events_per_s"] = [r["events_per_s"] for r in runs]
        return result


# ---------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with open("/proc/meminfo", encoding="ascii") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    versions = {}
    for module in ("orjson", "pydantic", "duckdb"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "absent"
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions["durable_rules"] = version("durable_rules")
    except PackageNotFoundError:
        versions["durable_rules"] = "absent"
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor() or "unknown",
        "memory_gb": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        **versions,
    }


# ---------------------------------------------------------------- the run


def _db(name: str) -> str:
    return str(DATA / "db" / f"{name}.db")


def _evaluate_cli(path: Path, as_of: str, year: int) -> dict[str, Any]:
    """``bsc-rules evaluate … --format json``: the report the DuckDB figures must equal."""
    script = Path(sys.executable).with_name("bsc-rules")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from bsc_rules.cli import main; sys.exit(main())"]
    )
    args = ["evaluate", str(path), "--as-of", as_of, "--year", str(year), "--format", "json"]
    proc = subprocess.run(
        [*command, *args, "--matcher", "python"],
        cwd=config.ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    kpis: dict[str, Any] = json.loads(proc.stdout)["kpis"]
    return kpis


def measure(plan: Plan, run: Runner) -> dict[str, Any]:  # noqa: C901  (the run, in order)
    """Every measurement of one run, as plain data."""
    r: dict[str, Any] = {"plan": plan.mode, "machine": machine()}
    one_office = ("datong",)
    national = config.national_offices(plan.national_events)
    inputs: dict[str, Input] = {}
    for name, offices, rewrite in (
        ("one", one_office, False),
        ("city", config.TAIPEI, True),
        ("national" if not plan.quick else "national-sample", national, True),
    ):
        run.log(f"input {name}: {len(offices)} office(s) …")
        made = ensure(name, offices, rewrite=rewrite)
        inputs[name.split("-")[0]] = made
        how = f"generated in {made.seconds:.1f}s" if made.seconds else "cached"
        run.log(f"input {name}: {made.events:,} events, {made.bytes / 2**20:.0f} MiB ({how})")
    r["inputs"] = {
        k: {"offices": v.offices, "events": v.events, "bytes": v.bytes, "seconds": v.seconds}
        for k, v in inputs.items()
    }
    one, city, nat = (str(inputs[k].path) for k in ("one", "city", "national"))

    # DuckDB and its cross-check against `bsc-rules evaluate`, at two instants
    instants = [config.MID_YEAR, config.FINAL]
    k = plan.repeats
    r["duckdb"] = run.median(
        "duckdb one office", "duckdb", k, path=one, as_ofs=instants, year=config.YEAR
    )
    r["evaluate"] = run.median(
        "evaluate one office (in memory)",
        "evaluate",
        k,
        path=one,
        as_of=config.FINAL,
        year=config.YEAR,
    )
    checks = []
    for as_of in instants:
        report = _evaluate_cli(inputs["one"].path, as_of, config.YEAR)
        for row in cross_check(r["duckdb"]["values"][as_of], report):
            checks.append([as_of, *row])
    r["cross_check"] = checks

    # replay throughput and the baselines, scale by scale
    # (the national scale runs last, below: after its 10M events and 2.7 GiB the machine
    # stays slower for minutes while the kernel reclaims, which showed in what followed)
    for scale, path in (("one", one), ("city", city)):
        r[f"floor_{scale}"] = run.median(
            f"floor {scale}", "floor", k if scale == "one" else 1, path=path, db=_db("floor")
        )
    r["raw_durable_one"] = run.median(
        "raw durable_rules one", "raw_durable", k, path=one, variants=True
    )
    r["raw_durable_city"] = run("raw durable_rules city", "raw_durable", path=city)
    for matcher in ("python", "durable"):
        for scale, path in (("one", one), ("city", city)):
            r[f"replay_{matcher}_{scale}"] = run.median(
                f"replay {matcher} {scale}",
                "replay",
                k if scale == "one" else 1,
                path=path,
                db=_db(f"replay-{matcher}-{scale}"),
                matcher=matcher,
                as_of=config.FINAL,
                keep=(matcher, scale) == ("python", "city"),  # the restart's log
            )

    # the whole alert pipeline on event time, and a month's digests from its database
    r["pipeline_one"] = run(
        "alert pipeline replay one",
        "pipeline",
        path=one,
        workdir=str(DATA / "pipeline"),
        until=config.PIPELINE_UNTIL,
    )
    year, month = config.DIGEST_MONTH
    r["digest"] = run(
        "digest one month",
        "digest",
        db=r["pipeline_one"]["db"],
        year=year,
        month=month,
        repeats=plan.digest_repeats,
    )

    # live ingest latency
    n = plan.latency_events
    r["commit_latency"] = run(
        "SQLite commit per event", "commit_latency", path=one, db=_db("commit"), n=n
    )
    for matcher in ("python", "durable"):
        r[f"ingest_latency_{matcher}"] = run(
            f"ingest latency {matcher}",
            "ingest_latency",
            path=one,
            db=_db("latency"),
            n=n,
            matcher=matcher,
        )
    for batch in (100, 1000):
        r[f"group_latency_{batch}"] = run(
            f"group commit {batch}",
            "group_latency",
            path=one,
            db=_db("group"),
            n=max(n, 10 * batch),
            batch=batch,
        )

    # memory per open deadline case
    for matcher, method in (("python", "tracemalloc"), ("python", "rss"), ("durable", "rss")):
        r[f"open_memory_{matcher}_{method}"] = run(
            f"open cases {matcher} {method}",
            "open_memory",
            db=_db("open"),
            n=plan.open_cases,
            matcher=matcher,
            method=method,
        )

    # restart from the city's log
    city_db = _db("replay-python-city")
    r["read_log_city"] = run("read log city", "read_log", db=city_db)
    for matcher in ("python", "durable"):
        r[f"restart_{matcher}_city"] = run(
            f"restart {matcher} city", "restart", db=city_db, matcher=matcher, as_of=config.FINAL
        )

    r["http"] = measure_http(plan, run)

    # the national scale, last
    r["floor_national"] = run("floor national", "floor", path=nat, db=_db("floor"))
    r["replay_python_national"] = run(
        "replay python national",
        "replay",
        path=nat,
        db=_db("replay-python-national"),
        matcher="python",
        as_of=config.FINAL,
        keep=False,
    )
    r["targets"] = targets(r, plan)
    if plan.profile:
        r["profiles"] = profiles(r, run, one, city_db)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{city_db}{suffix}").unlink(missing_ok=True)
    return r


def measure_http(plan: Plan, run: Runner) -> dict[str, Any]:
    """The HTTP door against a real ``bsc-rules serve`` and the in-process ingest (one case)."""
    return run(
        "http door vs in-process ingest",
        "http",
        db=_db("http"),
        single=1000 if plan.quick else 2000,
        batches=100,
        concurrent=200 if plan.quick else 250,
    )


def profiles(r: dict[str, Any], run: Runner, one: str, city_db: str) -> dict[str, Any]:
    """cProfile listings of the paths whose target is missed (one office, or the city log)."""
    missed = {t["id"] for t in r["targets"] if not t["met"]}
    wanted = []
    if missed & {"python_floor", "national"}:
        wanted.append("replay_python")
    if "durable_raw" in missed:
        wanted.append("replay_durable")
    if "restart" in missed:
        wanted.append("restart")
    wanted.append("pipeline")  # the slowest path whatever the targets say
    OUT.mkdir(parents=True, exist_ok=True)
    found = {}
    for kind in wanted:
        found[kind] = run(
            f"profile {kind}",
            "profile",
            kind=kind,
            path=one,
            db=city_db if kind == "restart" else _db("profile"),
            out=str(OUT / f"profile-{kind}.txt"),
            as_of=config.FINAL,
            until="2017-03-31T23:59:59+08:00",  # the pipeline: its first quarter
        )
    return found


# ---------------------------------------------------------------- targets


def _target(
    tid: str, what: str, figure: str, goal: str, met: bool, note: str = ""
) -> dict[str, Any]:
    return {"id": tid, "what": what, "figure": figure, "goal": goal, "met": met, "note": note}


def national_seconds(r: dict[str, Any]) -> tuple[float, float, bool]:
    """Wall and CPU seconds of a 10M-event national year, and whether extrapolated."""
    rep = r["replay_python_national"]
    scale = config.NATIONAL_EVENTS / rep["events"]
    extrapolated = r["plan"] == "quick"
    if not extrapolated:
        scale = 1.0
    return rep["seconds"] * scale, rep["cpu_seconds"] * scale, extrapolated


def targets(r: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    out = []
    worst = min(
        r[f"replay_python_{s}"]["events_per_s"] / r[f"floor_{s}"]["events_per_s"]
        for s in ("one", "city", "national")
    )
    out.append(
        _target(
            "python_floor",
            "Python matcher replay vs the floor",
            f"{worst:.0%} (worst scale)",
            "≥ 50 %",
            worst >= 0.5,
        )
    )
    worst_d = min(
        r[f"replay_durable_{s}"]["events_per_s"] / r[f"raw_durable_{s}"]["events_per_s"]
        for s in ("one", "city")
    )
    out.append(
        _target(
            "durable_raw",
            "durable matcher replay vs raw durable_rules",
            f"{worst_d:.0%} (worst scale)",
            "≥ 50 %",
            worst_d >= 0.5,
        )
    )
    wall, cpu, extrapolated = national_seconds(r)
    label = " (extrapolated)" if extrapolated else ""
    out.append(
        _target(
            "national",
            "national year (10M events), Python matcher",
            f"{wall:.0f} s wall, {cpu:.0f} s CPU{label}",
            "< 120 s",
            wall < 120,
        )
    )
    p99 = r["ingest_latency_python"]["p99_ms"]
    out.append(
        _target("latency", "ingest p99, commit per event", f"{p99:.2f} ms", "< 5 ms", p99 < 5)
    )
    per_case = max(
        r["open_memory_python_tracemalloc"]["bytes_per_case"],
        r["open_memory_python_rss"]["bytes_per_case"],
    )
    out.append(
        _target(
            "memory",
            "memory per open deadline case",
            f"{per_case:.0f} B",
            "≤ 1024 B",
            per_case <= 1024,
        )
    )
    restart = r["restart_python_city"]["seconds"]
    out.append(_target("restart", "city year restart", f"{restart:.1f} s", "< 10 s", restart < 10))
    return out


# ---------------------------------------------------------------- the table


@dataclass
class Row:
    what: str
    scale: str
    figure: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = ""


def _rate(x: float) -> str:
    return f"{x / 1000:,.1f}k ev/s"


def _mb(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×"


def _met(r: dict[str, Any], tid: str) -> str:
    for t in r["targets"]:
        if t["id"] == tid:
            return f"{t['goal']}: {'met' if t['met'] else 'MISSED'}"
    return ""


def rows(r: dict[str, Any]) -> list[Row]:
    scales = {
        "one": f"1 office ({r['inputs']['one']['events'] / 1000:,.0f}k)",
        "city": f"12 offices ({r['inputs']['city']['events'] / 1000:,.0f}k)",
        "national": (
            f"national sample, {r['inputs']['national']['offices']} offices "
            f"({r['inputs']['national']['events'] / 1e6:,.2f}M)"
            if r["plan"] == "quick"
            else f"national, {r['inputs']['national']['offices']} offices "
            f"({r['inputs']['national']['events'] / 1e6:,.2f}M)"
        ),
    }
    out: list[Row] = []
    for s in ("one", "city", "national"):
        f = r[f"floor_{s}"]
        out.append(
            Row("floor: orjson + SQLite executemany, 1 txn", scales[s], _rate(f["events_per_s"]))
        )
    for s in ("one", "city"):
        d = r[f"raw_durable_{s}"]
        post = (
            f" (rule fired by every event: {_rate(d['every_events_per_s'])};"
            f" post instead: {_rate(d['post_events_per_s'])})"
            if "every_events_per_s" in d
            else ""
        )
        out.append(
            Row(
                "raw durable_rules: assert + retract, 1 rule",
                scales[s],
                _rate(d["events_per_s"]) + post,
            )
        )
    replays = (  # (label, matcher, baseline key, baseline label, scales)
        ("replay, Python matcher (validate+store+match+measure)", "python", "floor", "floor",
         ("one", "city", "national")),
        ("replay, durable matcher", "durable", "raw_durable", "raw durable", ("one", "city")),
    )  # fmt: skip
    for label, matcher, base_key, base_label, replay_scales in replays:
        for s in replay_scales:
            p, b = r[f"replay_{matcher}_{s}"], r[f"{base_key}_{s}"]
            out.append(
                Row(
                    label,
                    scales[s],
                    _rate(p["events_per_s"]),
                    f"{base_label} {_rate(b['events_per_s'])}",
                    _ratio(p["events_per_s"], b["events_per_s"]),
                    "≥ 0.50×",
                )
            )
    wall, cpu, extrapolated = national_seconds(r)
    fl = r["floor_national"]
    fl_s = fl["seconds"] * (config.NATIONAL_EVENTS / fl["events"] if extrapolated else 1)
    out.append(
        Row(
            "national year, Python matcher" + (" — EXTRAPOLATED to 10M" if extrapolated else ""),
            "10M events" if extrapolated else scales["national"],
            f"{wall:,.0f} s wall ({cpu:,.0f} s CPU)",
            f"floor {fl_s:,.0f} s",
            _ratio(wall, fl_s),
            _met(r, "national"),
        )
    )
    pl, one = r["pipeline_one"], r["replay_python_one"]
    out.append(
        Row(
            f"alert pipeline replay to 2018-01-31 ({pl['ticks']:,} ticks, {pl['sent']:,} mails)",
            scales["one"],
            f"{_rate(pl['events_per_s'])} ({pl['seconds']:.1f} s)",
            f"engine replay {_rate(one['events_per_s'])}",
            _ratio(pl["events_per_s"], one["events_per_s"]),
        )
    )
    ev, dk = r["evaluate"], r["duckdb"]
    out.append(
        Row(
            "evaluate (in memory) vs DuckDB load + 10 KPI queries (1 thread)",
            scales["one"],
            f"{_rate(ev['events_per_s'])} ({ev['seconds']:.2f} s)",
            f"DuckDB {_rate(dk['events_per_s'])} ({dk['seconds']:.2f} s)",
            _ratio(ev["events_per_s"], dk["events_per_s"]),
        )
    )
    c = r["commit_latency"]
    base = f"SQLite commit p50 {c['p50_ms']:.2f} / p99 {c['p99_ms']:.2f} ms"
    for m in ("python", "durable"):
        lat = r[f"ingest_latency_{m}"]
        out.append(
            Row(
                f"ingest latency, commit per event ({m} matcher)",
                f"{lat['n']:,} events",
                f"p50 {lat['p50_ms']:.2f} / p99 {lat['p99_ms']:.2f} / max {lat['max_ms']:.1f} ms",
                base,
                _ratio(lat["p99_ms"], c["p99_ms"]) + " (p99)",
                _met(r, "latency") if m == "python" else "< 5 ms",
            )
        )
    for b in (100, 1000):
        g = r[f"group_latency_{b}"]
        out.append(
            Row(
                f"ingest_lines, group commit of {b}",
                f"{g['events']:,} events",
                f"per batch p50 {g['p50_ms']:.1f} / p99 {g['p99_ms']:.1f} ms; "
                f"{g['per_event_ms'] * 1000:.0f} µs/event",
                base,
                _ratio(g["per_event_ms"], c["mean_ms"]) + " (per event)",
            )
        )
    for s in ("one", "city", "national"):
        p = r[f"replay_python_{s}"]
        out.append(
            Row(
                "peak RSS, replay (Python matcher)",
                scales[s],
                _mb(p["peak_rss"]),
                f"floor {_mb(r[f'floor_{s}']['peak_rss'])}",
                _ratio(p["peak_rss"], r[f"floor_{s}"]["peak_rss"]),
            )
        )
    for s in ("one", "city"):
        p = r[f"replay_durable_{s}"]
        out.append(
            Row(
                "peak RSS, replay (durable matcher)",
                scales[s],
                _mb(p["peak_rss"]),
                f"raw durable {_mb(r[f'raw_durable_{s}']['peak_rss'])}",
                _ratio(p["peak_rss"], r[f"raw_durable_{s}"]["peak_rss"]),
            )
        )
    for key, label in (
        ("open_memory_python_tracemalloc", "Python matcher, tracemalloc"),
        ("open_memory_python_rss", "Python matcher, RSS delta"),
        ("open_memory_durable_rss", "durable matcher, RSS delta"),
    ):
        m = r[key]
        out.append(
            Row(
                f"memory per open deadline case ({label})",
                f"{m['cases']:,} open BP1.1 cases",
                f"{m['bytes_per_case']:,.0f} B",
                "",
                "",
                _met(r, "memory") if key.endswith("tracemalloc") else "≤ 1024 B",
            )
        )
    rl = r["read_log_city"]
    for m in ("python", "durable"):
        rs = r[f"restart_{m}_city"]
        out.append(
            Row(
                f"restart: Scorecard.open on the city log ({m} matcher)",
                f"{rs['events']:,} events",
                f"{rs['seconds']:.1f} s ({_rate(rs['events_per_s'])})",
                f"read + decode the log {rl['seconds']:.1f} s",
                _ratio(rs["seconds"], rl["seconds"]),
                _met(r, "restart") if m == "python" else "< 10 s",
            )
        )
    d = r["digest"]
    year, month = config.DIGEST_MONTH
    out.append(
        Row(
            f"digest {year}-{month:02d}: build + render {d['mails']} mails "
            f"({d['bytes'] / 1024:,.0f} KiB)",
            scales["one"],
            f"{d['seconds']:.2f} s (build {d['build_seconds']:.2f} + render "
            f"{d['render_seconds']:.2f})",
        )
    )
    return out


def table(r: dict[str, Any]) -> str:
    m = r["machine"]
    head = (
        f"bench ({r['plan']}) — {m['cores']} cores, {m['cpu']}, {m['memory_gb']} GB RAM; "
        f"Python {m['python']}, SQLite {m['sqlite']}, durable_rules {m['durable_rules']}, "
        f"DuckDB {m['duckdb']}; each measurement in its own process, pinned to one core"
    )
    if "load" in r:
        head += (
            f"; 1-min load average around the measurements: mean {r['load']['mean']:.1f},"
            f" max {r['load']['max']:.1f} (the measurement itself counts about 1;"
            " more is other work)"
        )
    lines = [head, "", "| measurement | scale | figure | baseline | ratio | target |"]
    lines.append("|---|---|---|---|---|---|")
    for row in rows(r):
        cells = (row.what, row.scale, row.figure, row.baseline, row.ratio, row.target)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling(r: dict[str, Any]) -> str:
    """Cost per event at each scale, relative to one office."""
    lines = [
        "| path | 1 office | 12 offices | national | national / 1 office |",
        "|---|---|---|---|---|",
    ]
    for key, label in (("floor", "floor"), ("replay_python", "replay, Python matcher")):
        for clock, field in (("wall", "seconds"), ("CPU", "cpu_seconds")):
            per = [
                1e6 * r[f"{key}_{s}"][field] / r[f"{key}_{s}"]["events"]
                for s in ("one", "city", "national")
            ]
            cells = " | ".join(f"{p:.1f} µs" for p in per)
            lines.append(f"| {label}, {clock} µs/event | {cells} | {per[2] / per[0]:.2f}× |")
    per = [1e6 / r[f"replay_durable_{s}"]["events_per_s"] for s in ("one", "city")]
    lines.append(
        f"| replay, durable matcher (µs/event) | {per[0]:.1f} µs | {per[1]:.1f} µs | — | — |"
    )
    rss = [r[f"replay_python_{s}"]["peak_rss"] for s in ("one", "city", "national")]
    ev = [r["inputs"][s]["events"] for s in ("one", "city", "national")]
    cells = " | ".join(f"{b / e:,.0f} B" for b, e in zip(rss, ev, strict=True))
    lines.append(f"| peak RSS per event, Python matcher | {cells} | — |")
    return "\n".join(lines)


def checks_text(r: dict[str, Any]) -> str:
    checks = r["cross_check"]
    bad = [c for c in checks if not c[-1]]
    verdict = "PASS" if not bad else "FAIL"
    lines = [
        f"DuckDB cross-check: {len(checks) - len(bad)}/{len(checks)} figures equal "
        f"(10 KPIs × value/numerator/denominator × {len({c[0] for c in checks})} instants)"
        f" — {verdict}"
    ]
    lines.append("| as_of | KPI | figure | DuckDB | bsc-rules evaluate | equal |")
    lines.append("|---|---|---|---|---|---|")
    for as_of, kpi, figure, a, b, same in checks:
        if figure == "value" or not same:
            lines.append(f"| {as_of} | {kpi} | {figure} | {a} | {b} | {'yes' if same else 'NO'} |")
    return "\n".join(lines)


def targets_text(r: dict[str, Any]) -> str:
    lines = ["| target | figure | goal | |", "|---|---|---|---|"]
    for t in r["targets"]:
        lines.append(
            f"| {t['what']} | {t['figure']} | {t['goal']} | {'met' if t['met'] else 'MISSED'} |"
        )
    return "\n".join(lines)


def profiles_text(r: dict[str, Any]) -> str:
    out = []
    for kind, p in r.get("profiles", {}).items():
        out.append(f"cProfile {kind} ({p['seconds']:.1f} s profiled; {p['file']}):")
        for row in p["top"][:8]:
            out.append(f"  {row['own']:6.1%} own  {row['cum']:6.1%} cum  {row['function']}")
    return "\n".join(out)


def report(r: dict[str, Any]) -> str:
    sections = [
        table(r),
        "Cost per event as the input grows:\n\n" + scaling(r),
        "Targets:\n\n" + targets_text(r),
        checks_text(r),
    ]
    if "http" in r:
        sections.append(http_text(r["http"]))
    if r.get("profiles"):
        sections.append(profiles_text(r))
    return "\n\n".join(sections) + "\n"


def only_http(plan: Plan, run: Runner) -> int:
    """``python -m bench --only http``: the HTTP measurements alone (a few minutes)."""
    result: dict[str, Any] = {"plan": plan.mode, "machine": machine()}
    result["http"] = measure_http(plan, run)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"results-http-{plan.mode}.json").write_text(json.dumps(result, indent=1))
    m = result["machine"]
    text = f"{m['cores']} cores, {m['cpu']}, {m['memory_gb']} GB RAM\n\n"
    text += http_text(result["http"]) + "\n"
    (OUT / f"table-http-{plan.mode}.md").write_text(text)
    sys.stdout.write("\n" + text)
    return 0


def only_pipeline(plan: Plan, run: Runner) -> int:
    """``python -m bench --only pipeline``: the whole alert pipeline's replay of one office
    year beside the engine's ingest of the same events (issue #13: ≥ 0.5×), a minute."""
    made = ensure("one", ("datong",), rewrite=False)
    one = str(made.path)
    result: dict[str, Any] = {"plan": plan.mode, "machine": machine(), "events": made.events}
    result["ingest"] = run.median(
        "ingest one office", "replay", plan.repeats, path=one, db=_db("ingest-only"),
        matcher="python", as_of=config.FINAL,
    )  # fmt: skip
    result["pipeline"] = run.median(
        "alert pipeline replay one", "pipeline", plan.repeats, path=one,
        workdir=str(DATA / "pipeline"), until=config.PIPELINE_UNTIL,
    )  # fmt: skip
    ingest, pipeline = result["ingest"], result["pipeline"]
    m = result["machine"]
    ratio = pipeline["events_per_s"] / ingest["events_per_s"]
    text = (
        f"{m['cores']} cores, {m['cpu']}, {m['memory_gb']} GB RAM; {made.events:,} events\n\n"
        "| run | throughput | wall | vs ingest |\n|---|---|---|---|\n"
        f"| ingest (validate, store, match, measure) | {ingest['events_per_s']:,.0f} ev/s "
        f"| {ingest['seconds']:.2f} s | 1.00× |\n"
        f"| alert pipeline replay ({pipeline['ticks']:,} mail instants, "
        f"{pipeline['sent']:,} messages) | {pipeline['events_per_s']:,.0f} ev/s "
        f"| {pipeline['seconds']:.2f} s | {ratio:.2f}× |\n"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"results-pipeline-{plan.mode}.json").write_text(json.dumps(result, indent=1))
    (OUT / f"table-pipeline-{plan.mode}.md").write_text(text)
    sys.stdout.write("\n" + text)
    return 0


def only_offices(plan: Plan, run: Runner) -> int:
    """``python -m bench --only offices``: a many-office national file ingested with two
    workers into per-office SQLite files and into PostgreSQL beside PostgreSQL's floor,
    and the city's restart on PostgreSQL (issue #12)."""
    from bench import offices as bo

    run.env = bo.environ_without_pin()  # two workers: no pinning to one core
    name = "national-offices-sample" if plan.quick else "national-offices"
    codes = {"national": config.national_offices(plan.national_events), "city": config.TAIPEI}
    inputs: dict[str, Input] = {}
    for key, made_name in (("national", name), ("city", "city-offices")):
        run.log(f"input {made_name}: {len(codes[key])} offices …")
        inputs[key] = ensure(made_name, codes[key], rewrite=False)
    nat, city = inputs["national"], inputs["city"]
    rules = {k: bo.write_deployment(DATA / "offices-rules" / k, v) for k, v in codes.items()}
    r: dict[str, Any] = {"plan": plan.mode, "machine": machine()}
    r["inputs"] = {k: {"offices": v.offices, "events": v.events, "bytes": v.bytes}
                   for k, v in inputs.items()}  # fmt: skip
    ingest = {"path": str(nat.path), "rules": str(rules["national"]), "workers": 2}
    r["sqlite"] = run("ingest → per-office SQLite", "cli_ingest", db=f"{DATA / 'offices-db'}/",
                      events=nat.events, **ingest)  # fmt: skip
    with bo.pg_cluster() as admin:
        r["pg_version"] = bo.pg_version(admin)
        url = bo.database(admin, "national")
        r["postgres"] = run("ingest → PostgreSQL", "cli_ingest", db=url, events=nat.events,
                            **ingest)  # fmt: skip
        r["floor"] = run("PostgreSQL floor", "pg_floor", path=str(nat.path), url=url)
        url = bo.database(admin, "city")
        r["city_pg"] = run("city ingest → PostgreSQL", "cli_ingest", db=url, path=str(city.path),
                           rules=str(rules["city"]), workers=2, events=city.events)  # fmt: skip
        r["restart"] = run("city restart on PostgreSQL", "pg_restart", url=url,
                           rules=str(rules["city"]), codes=list(config.TAIPEI))  # fmt: skip
    shutil.rmtree(DATA / "offices-db", ignore_errors=True)
    r["wall_seconds"] = time.perf_counter() - run.started
    text = bo.write(OUT, plan.mode, r)
    sys.stdout.write("\n" + text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a national sample, a few minutes")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile runs")
    parser.add_argument("--render", type=Path, help="print the table of a saved results file")
    parser.add_argument(
        "--only",
        choices=["http", "pipeline", "offices"],
        help="only the HTTP door, or only the alert pipeline replay, against in-process ingest;"
        " or many offices: ingest with two workers into SQLite files and PostgreSQL",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        sys.stdout.write(report(json.loads(args.render.read_text())))
        return 0
    plan = config.QUICK if args.quick else config.FULL
    if args.no_profile:
        plan = Plan(**{**plan.__dict__, "profile": False})
    cores = os.cpu_count() or 1
    run = Runner(cpu=cores - 1 if cores > 1 else None)
    if args.only == "http":
        return only_http(plan, run)
    if args.only == "pipeline":
        return only_pipeline(plan, run)
    if args.only == "offices":
        return only_offices(plan, run)
    results = measure(plan, run)
    results["wall_seconds"] = time.perf_counter() - run.started
    results["load"] = {"max": max(run.loads), "mean": sum(run.loads) / len(run.loads)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"results-{plan.mode}.json").write_text(json.dumps(results, indent=1))
    text = report(results)
    (OUT / f"table-{plan.mode}.md").write_text(text)
    sys.stdout.write("\n" + text)
    run.log(f"results: {OUT / f'results-{plan.mode}.json'}; table: {OUT / f'table-{plan.mode}.md'}")
    return 0 if all(c[-1] for c in results["cross_check"]) else 1
