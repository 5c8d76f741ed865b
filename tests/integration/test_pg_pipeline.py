"""The alert pipeline on PostgreSQL (issues #11, #12): a replay into a real SMTP server
sends byte for byte what the same replay on a SQLite file sends; two offices on one
database keep their alerts, history, outbox, runs and notes apart; ``replay``, ``ack``,
``history``, ``outbox`` and ``comment`` take ``--db URL --office CODE``."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bsc_rules.alerts.pipeline import open_pipeline
from bsc_rules.alerts.table import AlertTable, told_rows
from bsc_rules.calendar import TAIPEI, to_us
from bsc_rules.cli import main
from bsc_rules.clock import FakeClock
from bsc_rules.notify.outbox import Outbox
from bsc_rules.rules.ruleset import default_rules_dir
from bsc_rules.settings import load_settings
from bsc_rules.store.db import open_database
from bsc_rules.store.runs import Runs
from bsc_rules.store.sqlconn import Db
from tests.conftest import event, jsonl
from tests.integration.test_replay_mail import without_transport
from tests.smtp_server import SmtpServer

UNTIL = "2017-05-04T12:00:00+08:00"  # past March's digest (04-05) and April's (05-01)
CITY = default_rules_dir().parent / "examples" / "taipei"
CASE = "BS1060315001"
ACKED_AT = datetime(2017, 5, 4, 9, 30, tzinfo=TAIPEI)


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """No office's own BSC_RULES_* environment leaks into these runs."""
    for name in [n for n in os.environ if n.startswith("BSC_RULES_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    """An empty settings file: the shipped defaults, whatever ./bsc-rules.toml says."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text("", encoding="utf-8")
    return path


def weeks(office: str | None = None) -> bytes:
    """Seven weeks of one office: a subsidy paid late (due soon, overdue, the director's
    list, closed), a staff error that breaches AP2.1, everyday cases met in time."""
    extra: dict[str, Any] = {}
    if office is not None:
        extra = {"office": office, "source": f"/taipei/{office}/registration"}
    return jsonl([
        event("birth_subsidy.applied", "2017-03-15T10:23:00+08:00", CASE, {"amount": 20000},
              **extra),
        event("registration.completed", "2017-04-03T09:10:00+08:00", "RG1060403001",
              {"kind": "move_in"}, **extra),
        event("cross_notice.recorded", "2017-04-03T09:20:00+08:00", "RG1060403001",
              {"channel": "declined"}, **extra),
        event("seal_certificate.issued", "2017-04-03T09:30:00+08:00", "SC1060403001", **extra),
        event("birth_subsidy.paid", "2017-04-06T15:30:00+08:00", CASE, **extra),
        event("registration.completed", "2017-04-10T10:00:00+08:00", "RG1060410001",
              {"kind": "birth"}, **extra),
        event("cross_notice.recorded", "2017-04-10T10:05:00+08:00", "RG1060410001",
              {"channel": "declined"}, **extra),
        event("registration.error_found", "2017-04-12T14:20:00+08:00", "RG1060410001",
              {"cause": "staff"}, **extra),
    ])  # fmt: skip


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), stdout=out, clock=FakeClock(ACKED_AT))
    return code, out.getvalue()


def cli_replay(events: Path, db: str, settings: Path, *extra: str) -> dict[str, bytes]:
    """``bsc-rules replay`` into a real SMTP server: Message-ID -> the message as sent."""
    with SmtpServer() as server:
        code, text = run(
            "replay", str(events), "--until", UNTIL, "--smtp", f"{server.host}:{server.port}",
            "--db", db, "--matcher", "python", "--settings", str(settings), *extra,
        )  # fmt: skip
        assert code == 0, text
        received = list(server.received)
    mail = {r.message_id: without_transport(r.content) for r in received}
    assert len(mail) == len(received), "a Message-ID was delivered twice"
    return mail


def kinds(mail: dict[str, bytes]) -> set[str]:
    return {mid.split(".")[1].split("@")[0] for mid in mail}


def test_a_replay_on_postgresql_sends_what_it_sends_on_a_sqlite_file(
    tmp_path: Path, settings_file: Path, pg_url: str
) -> None:
    events = tmp_path / "weeks.jsonl"
    events.write_bytes(weeks())
    on_file = cli_replay(events, str(tmp_path / "office.db"), settings_file)
    on_pg = cli_replay(events, pg_url, settings_file)
    assert kinds(on_file) == {"morning", "director", "digest"}
    assert len(on_file) > 20
    assert list(on_pg) == list(on_file)  # the same messages, in the same order
    different = [mid for mid in on_file if on_pg[mid] != on_file[mid]]
    assert different == []
    # the state left behind is the same too: alerts, history, outbox, runs
    settings = load_settings(settings_file, matcher="python")
    states = []
    for db in (str(tmp_path / "office.db"), pg_url):
        pipeline = open_pipeline(settings, db)
        try:
            states.append((
                pipeline.alerts.load(),
                list(pipeline.alerts.history()),
                [(i.message_id, i.status) for i in pipeline.outbox.items()],
                pipeline.resume_clock(),
                told_rows(pipeline.db, 2**62),
            ))  # fmt: skip
        finally:
            pipeline.card.close()
    assert states[0] == states[1]
    assert states[0][0], "the replay left active alerts"


@pytest.fixture
def two_offices(tmp_path: Path, settings_file: Path, pg_url: str) -> dict[str, Any]:
    """Wanhua replayed into the database first, then Datong, the same cases in each;
    Datong alone on a SQLite file for comparison."""
    files = {}
    for code in ("datong", "wanhua"):
        files[code] = tmp_path / f"{code}.jsonl"
        files[code].write_bytes(weeks(code))
    common = ("--rules", str(CITY))
    wanhua = cli_replay(files["wanhua"], pg_url, settings_file, *common, "--office", "wanhua")
    datong = cli_replay(files["datong"], pg_url, settings_file, *common, "--office", "datong")
    alone = cli_replay(
        files["datong"], str(tmp_path / "datong.db"), settings_file, *common, "--office", "datong"
    )
    return {"wanhua": wanhua, "datong": datong, "alone": alone, "url": pg_url,
            "settings": settings_file, "file": tmp_path / "datong.db"}  # fmt: skip


def office_db(url: str, office: str) -> Iterator[Db]:
    from bsc_rules.store.postgres import connect

    conn = connect(url)
    try:
        yield Db(conn, office)
    finally:
        conn.close()


def test_two_offices_on_one_database_keep_their_state_apart(two_offices: dict[str, Any]) -> None:
    datong, wanhua = two_offices["datong"], two_offices["wanhua"]
    # Datong, sharing the database with Wanhua, sends what Datong alone sends
    assert list(datong) == list(two_offices["alone"])
    assert all(datong[mid] == two_offices["alone"][mid] for mid in datong)
    assert all(mid.endswith("@bsc-rules.datong>") for mid in datong)
    assert all(mid.endswith("@bsc-rules.wanhua>") for mid in wanhua)
    assert len(wanhua) == len(datong)  # the same cases: as many messages each
    runs: dict[str, list[tuple[Any, ...]]] = {}
    for code, sent in (("datong", datong), ("wanhua", wanhua)):
        for db in office_db(two_offices["url"], code):
            assert [i.message_id for i in Outbox(db).items()] == list(sent)
            assert {i.status for i in Outbox(db).items()} == {"sent"}
            alerts = AlertTable(db).load()
            assert "kpi:2017:AP2.1" in alerts
            notified = told_rows(db, 2**62)
            assert {mid for _, _, _, mid, _ in notified} <= set(sent)
            assert all(f"@{code}.example.org" in to for *_, to in notified)
            assert Runs(db).done("digest", "2017-04")
            runs[code] = db.execute(_RUNS).fetchall()
    conn = open_database(two_offices["file"])
    try:
        assert runs["datong"] == Db(conn).execute(_RUNS).fetchall()  # as Datong alone
    finally:
        conn.close()
    assert runs["wanhua"] == runs["datong"]  # the same events, the same instants
    assert len(runs["datong"]) > 30  # the mail days, the digests, the start and the clock


_RUNS = "SELECT job, period, done_us FROM runs WHERE {office} ORDER BY job, period"


def test_ack_history_outbox_and_comment_on_one_office_of_postgresql(
    two_offices: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    url, settings = two_offices["url"], str(two_offices["settings"])
    key = "kpi:2017:AP2.1"
    where = ("--db", url, "--settings", settings)
    code, text = run("ack", key, "--note", "已更正並加強複核", "--by", "王課長", *where)
    assert code == 2, text
    said = capsys.readouterr().err
    assert "datong、wanhua" in said
    assert "--office" in said
    assert "--all-offices" not in said
    code, text = run("ack", key, "--note", "已更正並加強複核", "--by", "王課長", *where,
                     "--office", "datong")  # fmt: skip
    assert code == 0, text
    assert "已確認警示 kpi:2017:AP2.1" in text
    code, text = run("ack", key, "--note", "again", "--by", "李課員", *where, "--office", "datong")
    assert code == 0
    assert "王課長" in text
    assert "未再變更" in text
    for db in office_db(url, "datong"):
        rec = AlertTable(db).load()[key]
        assert rec.acknowledged
        assert rec.ack_by == "王課長"
        assert rec.ack_at == int(ACKED_AT.timestamp() * 1_000_000)
    for db in office_db(url, "wanhua"):
        assert not AlertTable(db).load()[key].acknowledged  # Wanhua's alert untouched

    code, text = run("history", "--kpi", "AP2.1", *where, "--office", "datong")
    assert code == 0
    assert "acknowledged" in text
    assert "王課長" in text
    code, text = run("history", "--kpi", "AP2.1", *where, "--office", "wanhua")
    assert code == 0
    assert "notified" in text
    assert "acknowledged" not in text

    code, text = run("outbox", *where, "--office", "wanhua")
    assert code == 0, text
    assert "wanhua" in text
    assert "bsc-rules.datong" not in text
    code, text = run("outbox", *where, "--office", "taichung")
    said = capsys.readouterr().err
    assert code == 2
    assert "taichung" in said
    assert "datong、wanhua" in said

    note = ("comment", "AP2.1", "--month", "2017-04", *where)
    code, text = run(*note, "--by", "王課長", "--text", "誤登一件，已更正", "--office", "wanhua")
    assert code == 0, text
    code, text = run(*note, "--office", "wanhua")
    assert code == 0
    assert "誤登一件" in text
    code, text = run(*note, "--office", "datong")
    assert code == 0
    assert "誤登一件" not in text


class Crash(Exception):
    """The process dies in the middle of a mail instant's transaction."""


def test_a_mail_instant_that_fails_midway_leaves_nothing_on_postgresql(
    settings_file: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The morning's alert records, history, mail and run are one transaction: failing after
    the first message was written keeps none of it; the next try writes all of it."""
    settings = load_settings(settings_file, matcher="python")
    pipeline = open_pipeline(settings, pg_url)
    try:
        assert pipeline.card.ingest(event(
            "birth_subsidy.applied", "2017-03-15T10:23:00+08:00", CASE, {"amount": 20000}
        )).ok  # fmt: skip
        now = to_us(datetime(2017, 3, 20, 8, 0, tzinfo=TAIPEI))  # due soon: listed
        enqueue, written = pipeline._enqueue, []

        def crash_after_one(*args: Any) -> str:
            written.append(enqueue(*args))
            raise Crash

        monkeypatch.setattr(pipeline, "_enqueue", crash_after_one)
        with pytest.raises(Crash):
            pipeline.morning(now)
        assert written  # a message had been written in the transaction
        assert pipeline.alerts.load() == {}
        assert list(pipeline.alerts.history()) == []
        assert pipeline.outbox.items() == []
        assert not pipeline.lists_sent(datetime(2017, 3, 20).date())
        assert pipeline.resume_clock() is None
        monkeypatch.undo()
        queued = pipeline.morning(now)
        assert queued[: len(written)] == written  # the same message, now with the others
        assert len(queued) > len(written)
        assert sorted(i.message_id for i in pipeline.outbox.items()) == sorted(queued)
        assert f"case:BP1.1:{CASE}" in pipeline.alerts.load()
        assert pipeline.resume_clock() == now
    finally:
        pipeline.card.close()


def test_the_directory_form_replays_and_acknowledges_per_office(
    tmp_path: Path, settings_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``DIR/`` holds one file per office: the replay writes ``DIR/<office>.db`` and sends
    what the office's own file sends; the commands find the office (``--office`` once
    the directory holds two)."""
    events = tmp_path / "datong.jsonl"
    events.write_bytes(weeks("datong"))
    rules = ("--rules", str(CITY))
    folder = f"{tmp_path / 'offices'}/"
    code, _ = run("replay", str(events), "--until", UNTIL, "--maildir", str(tmp_path / "m"),
                  "--db", folder, "--settings", str(settings_file), *rules)  # fmt: skip
    assert code == 2  # the rules have twelve offices: which one?
    assert "--office" in capsys.readouterr().err
    sent = cli_replay(events, folder, settings_file, *rules, "--office", "datong")
    alone = cli_replay(events, str(tmp_path / "datong.db"), settings_file, *rules,
                       "--office", "datong")  # fmt: skip
    assert sent == alone
    assert (tmp_path / "offices" / "datong.db").is_file()
    where = ("--db", folder, "--settings", str(settings_file))
    code, text = run("ack", "kpi:2017:AP2.1", "--note", "已更正", "--by", "王課長", *where)
    assert code == 0, text  # the only office the directory holds
    shutil.copy(tmp_path / "datong.db", tmp_path / "offices" / "wanhua.db")
    code, text = run("history", "--kpi", "AP2.1", *where)
    assert code == 2
    assert "datong、wanhua" in capsys.readouterr().err
    code, text = run("history", "--kpi", "AP2.1", *where, "--office", "datong")
    assert code == 0
    assert "王課長" in text
    code, text = run("history", "--kpi", "AP2.1", *where, "--office", "wanhua")
    assert code == 0
    assert "王課長" not in text
