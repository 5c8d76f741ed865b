"""The HTTP door on a real uvicorn server (loopback, a free port, in a thread) over a real
SQLite file: the binding's three modes, the status codes and their order, tokens."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from bsc_rules.calendar import TAIPEI
from bsc_rules.cli import main
from bsc_rules.clock import FakeClock
from bsc_rules.dev.simulate import simulate
from bsc_rules.http.app import create_app
from bsc_rules.http.auth import TokenBook
from bsc_rules.http.door import Door
from bsc_rules.scorecard import Scorecard
from bsc_rules.store.sqlite import SQLiteStore
from tests.conftest import event

TOKENS = ("tok-old", "tok-new")  # rotation: both valid
READER = "read-all"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
AS_OF = "2017-12-31T23:59:59+08:00"


@dataclass
class Live:
    """A running door: its URL, the scorecard's store and the door itself."""

    url: str
    door: Door
    store: SQLiteStore
    db: Path

    def client(self, token: str | None = TOKENS[0]) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stored(self) -> tuple[int, int]:
        """(events in the log, rejections kept)."""
        return self.store.count(), self.store.rejected_count()


def start_server(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    """uvicorn on 127.0.0.1, port chosen by the OS, in a thread; ready when /healthz answers."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(3000):  # bounded: ~30 s at most
        if server.started or not thread.is_alive():
            break
        thread.join(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    return server, thread, url


@pytest.fixture
def live(tmp_path: Path, rules: Any) -> Iterator[Live]:
    card = Scorecard.open(tmp_path / "bsc.db", rules, matcher="python")
    door = Door(card, queue_size=4)
    tokens = TokenBook({"datong": TOKENS}, READER)
    clock = FakeClock(datetime(2017, 12, 31, 12, 0, tzinfo=TAIPEI))
    app = create_app(door, tokens, clock, frozenset({"https://workflow.example.org"}), 120)
    server, thread, url = start_server(app)
    assert isinstance(card.store, SQLiteStore)
    yield Live(url, door, card.store, tmp_path / "bsc.db")
    server.should_exit = True
    thread.join(30)
    door.close()
    card.close()


def opened(subject: str = "RG1060103001", **extra: Any) -> dict[str, Any]:
    return event(
        "registration.completed", "2017-01-03T08:01:09+08:00", subject, {"kind": "birth"}, **extra
    )


def post(
    client: httpx.Client, obj: Any, content_type: str = STRUCTURED, **kw: Any
) -> httpx.Response:
    body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    return client.post("/events", content=body, headers={"Content-Type": content_type}, **kw)


# ---------------------------------------------------------------- structured mode


def test_structured_event_is_201_then_200_then_409(live: Live) -> None:
    ev = opened()
    with live.client() as c:
        first = post(c, ev)
        again = post(c, ev)
        other = post(c, {**ev, "subject": "RG1060103999"})
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert first.json()["id"] == ev["id"]
    assert "same idempotency key" in other.json()["error"]
    assert live.stored() == (1, 1)  # the conflicting one is kept among the rejected


def test_invalid_event_is_400_naming_the_field_and_kept(live: Live) -> None:
    bad = opened()
    bad["time"] = "yesterday"
    with live.client() as c:
        answer = post(c, bad)
    assert answer.status_code == 400
    assert answer.json()["field"] == "time"
    assert "RFC 3339" in answer.json()["error"] or "time" in answer.json()["error"]
    assert live.stored() == (0, 1)
    assert live.store.rejections()[0][0] == "http"


def test_event_of_another_office_is_403_and_nothing_kept(live: Live) -> None:
    with live.client() as c:
        answer = post(c, opened(office="zhongshan"))
        batch = post(c, [opened(office="zhongshan"), opened()], BATCH)
    assert answer.status_code == 403
    assert [r["status"] for r in batch.json()["results"]] == [403, 201]
    assert live.stored() == (1, 0)


def test_event_without_office_takes_the_tokens(live: Live) -> None:
    ev = opened()
    ev.pop("office", None)
    with live.client() as c:
        assert post(c, ev).status_code == 201


# ---------------------------------------------------------------- the order of the checks


def test_checks_run_401_then_415_then_413_then_400(live: Live) -> None:
    huge = b"[" + b" " * (4 * 1024 * 1024 + 1) + b"]"
    with live.client(None) as anon, live.client() as c, live.client("wrong") as wrong:
        assert post(anon, huge, "text/plain").status_code == 401
        assert post(wrong, huge, "text/plain").status_code == 401
        assert post(c, huge, "text/plain").status_code == 415
        assert post(c, huge, BATCH).status_code == 413
        assert post(c, b'{"not": "an array"}', BATCH).status_code == 400
    assert live.stored() == (0, 0)


def test_wrong_and_missing_tokens_get_the_same_answer(live: Live) -> None:
    with live.client(None) as anon, live.client("tok-ol") as wrong:
        a, b = post(anon, opened()), post(wrong, opened())
    assert (a.status_code, a.content, a.headers["www-authenticate"]) == (
        b.status_code,
        b.content,
        b.headers["www-authenticate"],
    )


def test_rotated_tokens_and_the_query_token_both_write(live: Live) -> None:
    with live.client(TOKENS[1]) as c, live.client(None) as anon:
        assert post(c, opened()).status_code == 201
        assert post(anon, opened(), params={"access_token": TOKENS[0]}).status_code == 201


def test_header_and_query_token_at_once_is_400(live: Live) -> None:
    with live.client() as c:
        answer = post(c, opened(), params={"access_token": TOKENS[0]})
    assert answer.status_code == 400
    assert live.stored() == (0, 0)


def test_content_encoding_and_binary_without_json_are_415(live: Live) -> None:
    with live.client() as c:
        gz = c.post(
            "/events",
            content=orjson.dumps(opened()),
            headers={"Content-Type": STRUCTURED, "Content-Encoding": "gzip"},
        )
        binary = c.post(
            "/events",
            content=b'{"kind": "birth"}',
            headers={"Content-Type": "text/plain", "ce-specversion": "1.0"},
        )
    assert (gz.status_code, binary.status_code) == (415, 415)


def test_media_type_parameters_are_ignored(live: Live) -> None:
    with live.client() as c:
        answer = post(c, opened(), f"{STRUCTURED}; charset=utf-8")
    assert answer.status_code == 201


# ---------------------------------------------------------------- binary and batch


def test_binary_mode_reads_ce_headers_and_json_data(live: Live) -> None:
    ev = opened(subject="RG1060103002")
    headers = {f"ce-{k}": v for k, v in ev.items() if k != "data"}
    headers["Content-Type"] = "application/json; charset=utf-8"
    headers["ce-source"] = "%2Ftaipei%2Fdatong%2Fregistration"  # percent-encoded, as allowed
    with live.client() as c:
        first = c.post("/events", content=orjson.dumps(ev["data"]), headers=headers)
        # the same event in the other mode (Content-Type is its datacontenttype): a duplicate
        structured = post(c, {**ev, "datacontenttype": "application/json"})
    assert (first.status_code, structured.status_code) == (201, 200)
    assert first.json()["source"] == "/taipei/datong/registration"


def test_batch_gives_one_verdict_per_element_in_order(live: Live) -> None:
    first = opened("RG1060103010")
    bad = {**opened("RG1060103011"), "type": "no.such.type"}
    batch = [first, first, {**first, "subject": "RG1060103012"}, bad, opened(office="x")]
    with live.client() as c:
        answer = post(c, batch, BATCH)
        empty = post(c, [], BATCH)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 200, 409, 400, 403]
    assert [r["id"] for r in results] == [e["id"] for e in batch]
    assert results[3]["error"]
    assert "type" in results[3]["error"]
    assert (empty.status_code, empty.json()) == (200, {"results": []})
    assert live.stored() == (1, 2)


def test_batch_of_more_than_1000_is_413_with_nothing_stored(live: Live) -> None:
    with live.client() as c:
        answer = post(c, [opened(f"RG{i:010d}") for i in range(1001)], BATCH)
    assert answer.status_code == 413
    assert live.stored() == (0, 0)


# ---------------------------------------------------------------- 429 and 503


def test_full_queue_is_429_with_retry_after(live: Live) -> None:
    """The writer blocked (its lock held here), the queue (4) filled: the next is 429."""
    answers: list[int] = []
    with live.door.lock:
        senders = [
            threading.Thread(target=lambda i=i: answers.append(_send(live, i))) for i in range(5)
        ]
        for s in senders:
            s.start()
        for _ in range(3000):  # bounded: until one is taken by the writer and 4 wait
            if live.door._jobs.full() and len(answers) == 0:
                break
            senders[0].join(0.01)
        assert live.door._jobs.full()
        with live.client() as c:
            refused = post(c, opened("RG1060199999"))
    for s in senders:
        s.join(30)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert sorted(answers) == [201] * 5
    assert live.stored() == (5, 0)


def test_waiting_requests_share_one_transaction_each_answered_after_it(live: Live) -> None:
    """The writer blocked (its lock held here) with one request taken and four waiting:
    once the lock is free, the five are stored in one transaction, each with its verdict."""
    answers: list[int] = []
    with live.door.lock:
        senders = [
            threading.Thread(target=lambda i=i: answers.append(_send(live, i))) for i in range(5)
        ]
        for s in senders:
            s.start()
        for _ in range(3000):  # bounded: until one is taken by the writer and 4 wait
            if live.door._jobs.full():
                break
            senders[0].join(0.01)
        assert live.door._jobs.full()
        assert answers == []  # nothing answered before the commit
        assert live.stored() == (0, 0)
    for s in senders:
        s.join(30)
    assert sorted(answers) == [201] * 5
    assert live.door.writes == {"requests": 5, "transactions": 1}
    assert live.stored() == (5, 0)


def _send(live: Live, i: int) -> int:
    with live.client() as c:
        return post(c, opened(f"RG10601040{i:02d}")).status_code


def test_database_unreachable_is_503(live: Live) -> None:
    live.store.connection.close()
    with live.client() as c:
        answer = post(c, opened())
        ready = c.get("/readyz")
    assert answer.status_code == 503
    assert ready.status_code == 503


# ---------------------------------------------------------------- the webhook handshake


def test_options_handshake_for_a_configured_origin_and_another(live: Live) -> None:
    with live.client(None) as c:
        ok = c.options(
            "/events", headers={"WebHook-Request-Origin": "https://workflow.example.org"}
        )
        no = c.options("/events", headers={"WebHook-Request-Origin": "https://evil.example.org"})
    assert ok.status_code == 200
    assert ok.headers["webhook-allowed-origin"] == "https://workflow.example.org"
    assert ok.headers["webhook-allowed-rate"] == "120"
    assert ok.headers["allow"] == "POST"
    assert no.status_code == 200
    assert no.headers["allow"] == "POST"
    assert "webhook-allowed-origin" not in no.headers


# ---------------------------------------------------------------- reading


def _year(live: Live) -> list[dict[str, Any]]:
    events = list(simulate(year=2017, seed=3, offices=("datong",)))[:2500]
    with live.client() as c:
        for start in range(0, len(events), 1000):
            answer = post(c, events[start : start + 1000], BATCH)
            assert answer.status_code == 200
    return events


def test_report_equals_status_json_and_reads_a_spaced_offset(live: Live) -> None:
    _year(live)
    with live.client() as c:
        raw = c.get(f"/offices/datong/report?as_of={AS_OF}")  # the + arrives as a space
    assert raw.status_code == 200
    out = io.StringIO()
    assert main(["status", "--db", str(live.db), "--as-of", AS_OF, "--format", "json",
                 "--matcher", "python"], stdout=out) == 0  # fmt: skip
    assert raw.json() == orjson.loads(out.getvalue())
    assert raw.json()["kpis"]


def test_report_access_and_errors(live: Live) -> None:
    basic = httpx.BasicAuth("anyone", READER)
    with live.client(None) as anon, live.client() as c:
        assert anon.get("/offices/datong/report").status_code == 401
        assert anon.get("/offices/datong/report", auth=basic).status_code == 200
        assert anon.get("/offices/nowhere/report", auth=basic).status_code == 404
        assert c.get("/offices/zhongshan/report").status_code == 403
        assert c.get("/offices/datong/report?as_of=noon").status_code == 400
        q = anon.get("/offices/datong/report", params={"access_token": TOKENS[0]})
        assert q.status_code == 200
        assert q.json()["as_of"] == "2017-12-31T12:00:00+08:00"  # the clock's now


def test_metrics_parse_and_carry_no_case_ids(live: Live) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    events = _year(live)
    with live.client() as c:
        post(c, [opened("RG1060103001"), opened("RG1060103001")], BATCH)
        text = c.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    labels = {k for f in families.values() for s in f.samples for k in s.labels}
    assert labels <= {"office", "kpi", "section", "status"}
    subjects = {e["subject"] for e in events}
    assert not any(s in text for s in subjects)
    stored = families["bsc_events_stored"].samples[0].value
    assert stored == live.store.count()
    answered = {s.labels["status"]: s.value for s in families["bsc_http_events"].samples}
    assert answered["duplicate"] >= 1
    assert {s.labels["kpi"] for s in families["bsc_kpi_status"].samples} >= {"AC1.1"}


@pytest.mark.skipif(
    shutil.which("promtool") is None and os.environ.get("CI") != "true",
    reason="promtool (Debian's prometheus package) is not installed; CI installs it",
)
def test_metrics_pass_promtool_check_metrics(live: Live) -> None:
    """Prometheus' own linter finds nothing to say (names, HELP, counter suffixes, units)."""
    _year(live)
    with live.client() as c:
        text = c.get("/metrics").text
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "bsc_kpi_status" in text


def test_healthz_and_readyz(live: Live) -> None:
    with live.client(None) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").json() == {"status": "ready"}


# ---------------------------------------------------------------- fuzz


def _dumps(value: Any) -> bytes:
    """JSON as any sender may write it (integers past 64 bits included)."""
    return json.dumps(value).encode()


def _fuzz_bodies() -> Any:
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
    mutated = st.builds(
        lambda ev, key, value: _dumps({**ev, key: value}),
        st.builds(lambda n: opened(f"RG106{n:07d}"), st.integers(0, 50)),
        st.sampled_from(["id", "time", "type", "subject", "office", "data", "source", "extra"]),
        json_values,
    )
    return (
        st.binary(max_size=300)
        | mutated
        | json_values.map(_dumps)
        | st.builds(lambda items: _dumps(items), st.lists(json_values, max_size=3))
    )


def test_fuzz_no_5xx_and_nothing_stored_from_a_rejected_request(live: Live) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    types = st.sampled_from(
        [STRUCTURED, BATCH, "application/json", "text/plain", "", f"{STRUCTURED}; x=1"]
    )
    tokens = st.sampled_from([TOKENS[0], "wrong", None])
    extra = st.dictionaries(
        st.sampled_from(["ce-specversion", "ce-id", "ce-type", "content-encoding", "ce-office"]),
        # what a client can send: printable ASCII without surrounding spaces
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12).map(str.strip),
        max_size=3,
    )

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=_fuzz_bodies(), content_type=types, token=tokens, headers=extra)
    def one(body: bytes, content_type: str, token: str | None, headers: dict[str, str]) -> None:
        before = live.stored()
        with live.client(token) as c:
            answer = c.post(
                "/events", content=body, headers={"Content-Type": content_type, **headers}
            )
        assert answer.status_code < 500, answer.text
        after = live.stored()
        verdicts = _verdicts(answer)
        if not verdicts:  # a request-level failure: nothing at all stored
            assert after == before
            return
        assert after[0] - before[0] == verdicts.count(201)
        assert after[1] - before[1] <= verdicts.count(400) + verdicts.count(409)

    one()


def _verdicts(answer: httpx.Response) -> list[int]:
    """The per-event statuses of an answer; [] for a request-level failure."""
    data = answer.json()
    if "results" in data:
        return [r["status"] for r in data["results"]]
    return [data["status"]] if "status" in data else []


# ---------------------------------------------------------------- the status page


def test_status_page_in_chinese_without_scripts_and_ids_masked(live: Live) -> None:
    _year(live)
    planted = "A123456789"  # a valid national id, as a (bad) case subject
    ev = event("birth_subsidy.applied", "2017-01-16T09:00:00+08:00", planted, {"amount": 20000})
    basic = httpx.BasicAuth("anyone", TOKENS[0])
    with live.client(None) as anon, live.client() as c:
        assert post(c, ev).status_code == 201
        assert anon.get("/status").status_code == 401
        assert anon.get("/status").headers["www-authenticate"].startswith("Basic")
        page = anon.get("/status", auth=basic)
        report = c.get("/offices/datong/report").json()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "平衡計分卡" in html
    assert "<script" not in html.lower()
    assert planted not in html
    assert f"即將到期或已逾期之案件（{len(report['cases'])} 件）" in html
    assert all(kpi in html for kpi in report["kpis"])
    assert "已逾期" in html


def test_readyz_names_a_stopped_scheduler(live: Live) -> None:
    live.door.scheduler_running = lambda: False
    with live.client(None) as c:
        answer = c.get("/readyz")
    assert answer.status_code == 503
    assert "scheduler" in answer.json()["error"]


def test_a_chunked_body_past_4_mib_is_413_as_received(live: Live) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(5):
            yield b" " * (1024 * 1024)
        yield b"]"

    with live.client() as c:
        answer = c.post("/events", content=chunks(), headers={"Content-Type": BATCH})
    assert answer.status_code == 413
    assert "content-length" not in answer.request.headers  # sent chunked: counted as read
    assert live.stored() == (0, 0)


def test_single_event_rejection_names_no_line(live: Live) -> None:
    with live.client() as c:
        answer = post(c, {**opened(), "type": "no.such.type"})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("event ")


def test_tokens_from_the_environment_and_a_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bsc_rules.http.config import HttpConfig
    from bsc_rules.settings import load_settings

    secret = tmp_path / "tokens"
    secret.write_text("# office=tokens\ndatong = from-file\nzhongshan=z1,z2\n", encoding="utf-8")
    monkeypatch.setenv("BSC_RULES_TOKENS__DATONG", "new, old")
    monkeypatch.setenv("BSC_RULES_TOKENS_FILE", str(secret))
    monkeypatch.setenv("BSC_RULES_READ_TOKEN", "reader")
    monkeypatch.setenv("BSC_RULES_HTTP__QUEUE", "7")
    config = HttpConfig()
    assert config.office_tokens() == {
        "datong": ("new", "old", "from-file"),
        "zhongshan": ("z1", "z2"),
    }
    assert config.http.queue == 7
    book = TokenBook(config.office_tokens(), "reader")
    assert [book.office_of(t) for t in ("old", "from-file", "z2", "nope", "", None)] == [
        "datong", "datong", "zhongshan", None, None, None,
    ]  # fmt: skip
    assert book.reader("reader") is not None
    assert load_settings(None).database  # the office settings still load beside these
