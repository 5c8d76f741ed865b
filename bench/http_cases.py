"""The HTTP door measured against a real ``bsc-rules serve`` process on a loopback port,
side by side with the in-process ``Scorecard.ingest``/``ingest_lines`` of the same events.

One case, ``http``: a fresh SQLite file, ``bsc-rules serve`` started on a free port of
127.0.0.1, then three phases on disjoint slices of one simulated Datong year (seed 1):
single events one request each, batches of 100 one request each, and 8 concurrent senders
in batches of 100 (a 429 is retried after a short pause and counted). Every loop is
bounded. The server then stops (SIGTERM) and the same events are ingested in-process into
another fresh file, one event and 100 events per durable commit. The server may use every
core (the goal is set for the 2-core machine); the senders run in this process, on
the standard library's http.client (keep-alive; far less CPU per request than httpx).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.cases import Result, case, drop_db, fresh_db, percentiles

TOKEN = "bench-datong-token"
BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"
SENDERS = 8
MAX_RETRIES = 200  # per request: 429s retried, bounded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(n: int) -> list[bytes]:
    from bsc_rules.dev.simulate import simulate

    out: list[bytes] = []
    for ev in simulate(year=2017, seed=1, offices=("datong",)):
        out.append(orjson.dumps(ev))
        if len(out) == n:
            break
    return out


class Server:
    """``bsc-rules serve`` over ``db`` on a free loopback port."""

    def __init__(self, db: Path, log: Path, queue: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "BSC_RULES_TOKENS__DATONG": TOKEN,
            "BSC_RULES_MATCHER": "python",
            "BSC_RULES_HTTP__QUEUE": str(queue),
        }
        env.pop("BENCH_CPU", None)
        script = Path(sys.executable).with_name("bsc-rules")
        cmd = [str(script), "serve", "--db", str(db), "--port", str(self.port)]
        self.out = log.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=db.parent, env=env, stdout=self.out, stderr=self.out)

    def wait_ready(self) -> None:
        import httpx

        for _ in range(600):  # bounded: ~30 s
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.out.flush()
        log = Path(self.out.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"bsc-rules serve did not start:\n{log}")

    def cpu(self) -> float:
        """CPU seconds (user + system) the server has used so far, all its threads."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        return Path(self.out.name).read_text(errors="replace")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.out.close()


class Answer:
    """A status code and a body."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.text = status, body.decode(errors="replace")


class Client:
    """A keep-alive HTTP/1.1 connection (the standard library's: a sender costing little
    CPU of its own, on a machine the server shares)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.auth = f"Bearer {TOKEN}"

    def post(self, path: str, content: bytes, headers: dict[str, str]) -> Answer:
        self.conn.request("POST", path, content, {**headers, "Authorization": self.auth})
        answer = self.conn.getresponse()
        return Answer(answer.status, answer.read())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _post(client: Client, body: bytes, content_type: str, busy: list[int]) -> tuple[float, Any]:
    """One request, retried on 429 (bounded); the latency of the answered attempt."""
    for _ in range(MAX_RETRIES):
        start = time.perf_counter()
        answer = client.post("/events", content=body, headers={"Content-Type": content_type})
        took = time.perf_counter() - start
        if answer.status_code != 429:
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"POST /events answered {answer.status_code}: {answer.text}")
            return took, answer
        busy.append(1)
        time.sleep(0.005)
    raise RuntimeError("POST /events: still 429 after the retries")


def _client(url: str) -> Client:
    return Client(url)


def _single(url: str, events: list[bytes]) -> Result:
    busy: list[int] = []
    with _client(url) as c:
        samples = [_post(c, ev, STRUCTURED, busy)[0] for ev in events]
    return {"events": len(events), **percentiles(samples), "busy": len(busy)}


def _batches(events: list[bytes], size: int) -> list[bytes]:
    return [b"[" + b",".join(events[i : i + size]) + b"]" for i in range(0, len(events), size)]


def _batched(url: str, events: list[bytes], size: int) -> Result:
    busy: list[int] = []
    with _client(url) as c:
        samples = [_post(c, body, BATCH, busy)[0] for body in _batches(events, size)]
    return {"events": len(events), "batch": size, **percentiles(samples), "busy": len(busy)}


def _concurrent(url: str, events: list[bytes], size: int) -> Result:
    bodies = _batches(events, size)
    shares = [bodies[i::SENDERS] for i in range(SENDERS)]
    samples: list[float] = []
    busy: list[int] = []
    errors: list[BaseException] = []

    def sender(share: list[bytes]) -> None:
        try:
            with _client(url) as c:
                for body in share:
                    samples.append(_post(c, body, BATCH, busy)[0])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(s,)) for s in shares]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {
        "events": len(events),
        "senders": SENDERS,
        "batch": size,
        "seconds": wall,
        "events_per_s": len(events) / wall,
        **percentiles(samples),
        "busy": len(busy),
    }


def _in_process(db: str, single: list[bytes], grouped: list[bytes], size: int) -> Result:
    from bsc_rules.rules.ruleset import load_ruleset
    from bsc_rules.scorecard import Scorecard

    card = Scorecard.open(fresh_db(db), load_ruleset(), matcher="python")
    one = []
    for line in single:
        start = time.perf_counter()
        card.ingest(line)
        one.append(time.perf_counter() - start)
    groups = []
    for i in range(0, len(grouped), size):
        start = time.perf_counter()
        card.ingest_lines(grouped[i : i + size], batch=size)
        groups.append(time.perf_counter() - start)
    card.close()
    drop_db(db)
    return {
        "single": {"events": len(single), **percentiles(one)},
        "batch": {"events": len(grouped), "batch": size, **percentiles(groups)},
        "batch_events_per_s": len(grouped) / sum(groups),
    }


@case
def case_http(db: str, single: int, batches: int, concurrent: int, queue: int = 64) -> Result:
    """The door's three loads, then the in-process ingest of the same events."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))  # the senders: any core
    size = 100
    events = _events(single + batches * size + concurrent * size)
    one = events[:single]
    grouped = events[single : single + batches * size]
    parallel = events[single + batches * size :]
    path = fresh_db(db)
    server = Server(path, path.with_suffix(".serve.log"), queue)
    try:
        server.wait_ready()
        r: Result = {}
        phases: list[tuple[str, Callable[[], Result]]] = [
            ("single", lambda: _single(server.url, one)),
            ("batch", lambda: _batched(server.url, grouped, size)),
            ("concurrent", lambda: _concurrent(server.url, parallel, size)),
        ]
        for phase, measure in phases:
            cpu = server.cpu()
            r[phase] = measure()
            r[phase]["server_cpu_us"] = (server.cpu() - cpu) * 1e6 / r[phase]["events"]
    finally:
        server.stop()
    found = re.search(r"writer: (\d+) requests in (\d+) transactions", server.log())
    if found:  # the door's own count (absent before it kept one)
        r["writer"] = {"requests": int(found[1]), "transactions": int(found[2])}
    drop_db(path)
    r["in_process"] = _in_process(db + ".inproc", one, grouped, size)
    r["cores"] = os.cpu_count()
    return r


# ---------------------------------------------------------------- the table


def _ms(r: Result) -> str:
    text = f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"
    if "server_cpu_us" in r:
        text += f"; server CPU {r['server_cpu_us']:.0f} µs/event"
    return text


def _grouped(h: Result) -> str:
    w = h.get("writer")
    if not w:
        return ""
    return f"; the writer stored {w['requests']:,} requests in {w['transactions']:,} transactions"


def http_text(h: Result) -> str:
    """The HTTP door's figures beside the in-process ingest, with the goals."""
    s, b, c, inp = h["single"], h["batch"], h["concurrent"], h["in_process"]
    rows = [
        ("one event per request", _ms(s), _ms(inp["single"]), "p99 < 10 ms",
         s["p99_ms"] < 10),
        ("batch of 100 per request", _ms(b), _ms(inp["batch"]), "p99 < 50 ms",
         b["p99_ms"] < 50),
        (f"{c['senders']} senders, batches of 100",
         f"{c['events_per_s']:,.0f} ev/s ({_ms(c)}; {c['busy']} × 429 retried)",
         f"{inp['batch_events_per_s']:,.0f} ev/s (one writer, batches of 100)",
         "≥ 5,000 ev/s", c["events_per_s"] >= 5000),
    ]  # fmt: skip
    lines = [
        f"HTTP door: `bsc-rules serve` on 127.0.0.1 ({h['cores']} cores, senders in the "
        "bench process), against in-process `Scorecard.ingest`/`ingest_lines` of the same "
        f"events (single: {s['events']:,}; batch: {b['events']:,}; concurrent: "
        f"{c['events']:,}); load {h['load'][0]:.1f} → {h['load'][1]:.1f}" + _grouped(h),
        "",
        "| load | HTTP | in-process | goal | |",
        "|---|---|---|---|---|",
    ]
    for what, door, local, goal, met in rows:
        lines.append(f"| {what} | {door} | {local} | {goal} | {'met' if met else 'MISSED'} |")
    return "\n".join(lines)
