"""``bsc-rules serve`` as a process: plain curl and the official CloudEvents SDK as
senders, the query token kept out of the log, a clean stop on SIGTERM, and SIGKILL in the
middle of 8 concurrent senders (retries, deliberate duplicates) followed by a restart."""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bsc_rules.cli import main
from bsc_rules.dev.simulate import simulate
from bsc_rules.store.sqlite import SQLiteStore

TOKEN = "s3cret-datong-token"
QUERY_TOKEN = "q-token-never-logged"
AS_OF = "2017-12-31T23:59:59+08:00"
BSC = str(Path(sys.executable).with_name("bsc-rules"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Serve:
    """A ``bsc-rules serve`` process over ``db``, restartable on the same port."""

    tmp: Path
    port: int = field(default_factory=free_port)
    queue: int = 16
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def db(self) -> Path:
        return self.tmp / "bsc.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return "".join(
            (self.tmp / f"serve-{n}.log").read_text(errors="replace") for n in range(self.runs)
        )

    def start(self) -> None:
        env = {
            **os.environ,
            "BSC_RULES_TOKENS__DATONG": f"{TOKEN},{QUERY_TOKEN}",
            "BSC_RULES_MATCHER": "python",
            "BSC_RULES_HTTP__QUEUE": str(self.queue),
        }
        cmd = [BSC, "serve", "--db", str(self.db), "--port", str(self.port)]
        with (self.tmp / f"serve-{self.runs}.log").open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.tmp, env=env, stdout=out, stderr=out)
        self.runs += 1
        for _ in range(600):  # bounded: each failed attempt waits up to 0.05 s
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    break
                with suppress(subprocess.TimeoutExpired):
                    self.proc.wait(0.05)
        msg = f"bsc-rules serve did not start: {self.log()}"
        raise AssertionError(msg)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(60)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    server = Serve(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.stop(signal.SIGKILL)


def opened(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"curl-{n}",
        "source": "/taipei/datong/registration",
        "type": "registration.completed",
        "time": "2017-01-03T08:01:09+08:00",
        "subject": f"RG10601030{n:02d}",
        "data": {"kind": "birth"},
        **extra,
    }


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_in_each_mode_and_the_query_token_never_logged(serve: Serve) -> None:
    def curl(*args: str) -> tuple[int, str]:
        done = subprocess.run(
            ["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, check=True
        )
        body, _, code = done.stdout.decode().rpartition("\n")
        return int(code), body

    auth = ["-H", f"Authorization: Bearer {TOKEN}"]
    structured = orjson.dumps(opened(1)).decode()
    ev = opened(2)
    binary = [f"-H ce-{k}: {v}" for k, v in ev.items() if k != "data"]
    batch = orjson.dumps([opened(3), opened(4)]).decode()
    url = f"{serve.url}/events"
    ct = "Content-Type: application/cloudevents+json"
    assert curl(*auth, "-H", ct, "-d", structured, url)[0] == 201
    headers = [a for h in binary for a in ("-H", h.removeprefix("-H "))]
    data = orjson.dumps(ev["data"]).decode()
    assert curl(*auth, *headers, "-H", "Content-Type: application/json", "-d", data, url)[0] == 201
    code, body = curl(
        "-H", "Content-Type: application/cloudevents-batch+json", "-d", batch,
        f"{url}?access_token={QUERY_TOKEN}",
    )  # fmt: skip
    assert code == 200
    assert [r["status"] for r in orjson.loads(body)["results"]] == [201, 201]
    assert serve.stop() == 0  # SIGTERM: a clean stop
    log = serve.log()
    assert "POST /events 200" in log
    assert "stopped" in log
    # every line as the service writes them: +08:00 time, level, office (service.md)
    access = next(line for line in log.splitlines() if "POST /events 200" in line)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00 INFO datong ", access)
    assert QUERY_TOKEN not in log
    assert TOKEN not in log
    with closing(SQLiteStore(serve.db)) as store:
        assert store.count() == 4


def test_the_official_sdk_as_sender_binary_and_structured(serve: Serve) -> None:
    from cloudevents.core.bindings import http as ce_http
    from cloudevents.core.v1.event import CloudEvent

    def sdk_event(n: int) -> CloudEvent:
        ev = opened(n, office="datong")
        attrs = {k: v for k, v in ev.items() if k != "data"}
        attrs["time"] = datetime.fromisoformat(ev["time"])
        attrs["datacontenttype"] = "application/json"
        return CloudEvent(attrs, ev["data"])

    auth = {"Authorization": f"Bearer {TOKEN}"}
    answers = []
    for message in (
        ce_http.to_binary_event(sdk_event(10)),
        ce_http.to_structured_event(sdk_event(11)),
        ce_http.to_structured_event(sdk_event(10)),  # the binary one again: a duplicate
    ):
        answer = httpx.post(
            f"{serve.url}/events", content=message.body, headers={**message.headers, **auth}
        )
        answers.append(answer.status_code)
    assert answers == [201, 201, 200]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stopped_mid_load_then_restarted_loses_nothing_answered(serve: Serve, sig: int) -> None:
    """8 senders in batches of 100 (each with 5 deliberate duplicates of others' events),
    retrying until answered; the server is killed (or stopped) mid-load and restarted.
    Every event answered 2xx is in the log, once, and the report equals an uninterrupted
    evaluation; SIGTERM ends with status 0 after answering the requests in flight."""
    events = list(simulate(year=2017, seed=5, offices=("datong",)))[:4000]
    up, progress = threading.Event(), threading.Condition()
    up.set()
    answered: set[tuple[str, str]] = set()
    done = [0]
    failures: list[str] = []

    def send(body: list[dict[str, Any]]) -> list[dict[str, Any]]:
        while True:
            up.wait(120)
            try:
                answer = httpx.post(
                    f"{serve.url}/events",
                    content=orjson.dumps(body),
                    headers={
                        "Content-Type": "application/cloudevents-batch+json",
                        "Authorization": f"Bearer {TOKEN}",
                    },
                    timeout=60,
                )
            except httpx.TransportError:
                continue  # killed: wait until it is up again, then retry the same batch
            if answer.status_code in (429, 503):
                continue
            assert answer.status_code == 200, answer.text
            results: list[dict[str, Any]] = answer.json()["results"]
            return results

    def sender(k: int) -> None:
        try:
            mine, rng = events[k::8], random.Random(k)
            for start in range(0, len(mine), 100):
                body = mine[start : start + 100] + rng.sample(events, 5)
                results = send(body)
                with progress:
                    for ev, result in zip(body, results, strict=True):
                        assert result["status"] in (200, 201), result
                        answered.add((ev["source"], ev["id"]))
                    done[0] += len(body)
                    progress.notify_all()
        except BaseException as exc:  # reported by the main thread
            failures.append(repr(exc))

    senders = [threading.Thread(target=sender, args=(k,)) for k in range(8)]
    for s in senders:
        s.start()
    with progress:
        assert progress.wait_for(lambda: done[0] >= 1500 or failures, 120)
        up.clear()
    status = serve.stop(sig)
    assert status == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    serve.start()
    up.set()
    for s in senders:
        s.join(300)
    assert not failures
    with closing(SQLiteStore(serve.db)) as store:
        keys = [tuple(r) for r in store.connection.execute("SELECT source, id FROM events")]
    assert len(keys) == len(set(keys)) == len({(e["source"], e["id"]) for e in events})
    assert answered <= set(keys)
    report = httpx.get(
        f"{serve.url}/offices/datong/report", params={"as_of": AS_OF, "access_token": TOKEN}
    ).json()
    log = serve.tmp / "events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    out = io.StringIO()
    argv = ["evaluate", str(log), "--as-of", AS_OF, "--format", "json", "--matcher", "python"]
    assert main(argv, stdout=out) == 0
    assert report == orjson.loads(out.getvalue())


def test_overload_is_answered_429_not_timeouts(tmp_path: Path) -> None:
    """A queue of 1 before the writer and 16 senders of 1,000 events at the same instant:
    the ones that cannot wait are answered 429 with Retry-After at once; none times out."""
    server = Serve(tmp_path, queue=1)
    server.start()
    events = list(simulate(year=2017, seed=7, offices=("datong",)))[:16000]
    barrier = threading.Barrier(16)
    answers: list[httpx.Response] = []

    def sender(k: int) -> None:
        body = orjson.dumps(events[k * 1000 : (k + 1) * 1000])
        barrier.wait(60)
        answers.append(
            httpx.post(
                f"{server.url}/events",
                content=body,
                headers={
                    "Content-Type": "application/cloudevents-batch+json",
                    "Authorization": f"Bearer {TOKEN}",
                },
                timeout=60,
            )
        )

    try:
        senders = [threading.Thread(target=sender, args=(k,)) for k in range(16)]
        for s in senders:
            s.start()
        for s in senders:
            s.join(120)
    finally:
        server.stop(signal.SIGKILL)
    codes = sorted(a.status_code for a in answers)
    assert len(codes) == 16
    assert set(codes) == {200, 429}, codes
    assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 429)


def test_the_core_stays_light_and_serve_without_the_extra_says_how(tmp_path: Path) -> None:
    light = (
        "import sys, bsc_rules, bsc_rules.cli, bsc_rules.scorecard; "
        "print('starlette' in sys.modules, 'uvicorn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", light], capture_output=True, check=True)
    assert done.stdout.split() == [b"False", b"False"]
    hidden = (
        "import sys; sys.modules['starlette'] = None; from bsc_rules.cli import main; "
        f"sys.exit(main(['serve', '--db', {str(tmp_path / 'x.db')!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", hidden], capture_output=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "pip install 'bsc-rules[http]'" in done.stderr.decode()


def test_the_start_is_frozen_out_of_the_collector_before_serving() -> None:
    """What the start built is left out of every later full collection (the batch p99 of
    docs/benchmarks.md); run in a process of its own, not to freeze pytest's objects."""
    code = (
        "import gc\n"
        "from bsc_rules.http.serve import freeze_startup\n"
        "started = len(gc.get_objects())\n"
        "freeze_startup()\n"
        "later = [[n] for n in range(100)]\n"
        "print(started, gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    started, frozen, tracked = map(int, out.stdout.split())
    assert started > 10_000  # the imports alone
    assert frozen >= started // 2
    assert tracked < 1_000  # what came after: the 100 lists and little else
