"""``bsc-rules serve`` as a process: plain curl and the official CloudEvents SDK as
senders, the query token kept out of the log, a clean stop on SIGTERM, and SIGKILL in the
middle of 8 concurrent senders (retries, deliberate duplicates) followed by a restart."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
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
            "BSC_RULES_HTTP__QUEUE": "16",
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
                try:
                    self.proc.wait(0.05)
                except subprocess.TimeoutExpired:
                    pass
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
