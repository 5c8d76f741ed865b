"""The SQLite event log: durability, idempotency, rejected events, restart by replay."""

from __future__ import annotations

import json
import sqlite3
import stat
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

from bsc_rules.calendar import TAIPEI
from bsc_rules.dev.simulate import simulate
from bsc_rules.errors import StoreError
from bsc_rules.scorecard import Scorecard
from bsc_rules.store.sqlite import SQLiteStore
from tests.conftest import event, jsonl

AS_OF = datetime(2017, 12, 31, 23, 59, 59, tzinfo=TAIPEI)


@pytest.fixture(scope="module")
def year_lines() -> list[bytes]:
    """A generated Datong year as JSON Lines."""
    return jsonl(list(simulate(year=2017, seed=3))).splitlines(keepends=True)


def test_acknowledged_event_is_on_disk(tmp_path: Path, rules) -> None:
    """An event acknowledged by ingest is readable by another connection at once."""
    db = tmp_path / "office.db"
    with Scorecard.open(db, rules, matcher="python") as card:
        out = card.ingest(event("seal_certificate.issued", "2017-03-01T10:00:00+08:00", "SC1"))
        assert out.status == "accepted"
        other = sqlite3.connect(db)
        assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        other.close()


def test_database_file_is_owner_only(tmp_path: Path, rules) -> None:
    """The database is created readable and writable by its owner only."""
    db = tmp_path / "office.db"
    Scorecard.open(db, rules, matcher="python").close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_restart_gives_the_same_report(tmp_path: Path, rules, year_lines: list[bytes]) -> None:
    """Stopping mid-stream and reopening gives the report of an uninterrupted run."""
    whole = Scorecard(rules, matcher="python")
    whole.ingest_lines(year_lines, origin="year.jsonl")
    expected = whole.report(AS_OF).as_dict()
    db = tmp_path / "office.db"
    half = len(year_lines) // 2
    with Scorecard.open(db, rules, matcher="python") as card:
        card.ingest_lines(year_lines[:half], origin="year.jsonl")
    with Scorecard.open(db, rules, matcher="python") as card:
        card.ingest_lines(year_lines[half:], origin="year.jsonl")
    with Scorecard.open(db, rules, matcher="python") as card:
        assert card.report(AS_OF).as_dict() == expected


def test_ingest_is_idempotent(tmp_path: Path, rules, year_lines: list[bytes]) -> None:
    """Ingesting the same file twice stores nothing new and counts no new rejections."""
    db = tmp_path / "office.db"
    bad = [b'{"not": "an event"}\n']
    with Scorecard.open(db, rules, matcher="python") as card:
        first = card.ingest_lines(year_lines + bad, origin="f.jsonl")
        second = card.ingest_lines(year_lines + bad, origin="f.jsonl")
        report = card.report(AS_OF).as_dict()
    assert first.accepted > 25_000
    assert second.accepted == 0
    assert second.duplicates == first.accepted + first.duplicates
    assert report["rejected"] == 1
    store = SQLiteStore(db)
    assert store.count() == first.accepted
    store.close()


def test_conflict_is_rejected_and_kept(tmp_path: Path, rules) -> None:
    """Same (source, id) with other content: the first stands, the second is kept as rejected."""
    db = tmp_path / "office.db"
    first = event("archive.scanned", "2017-03-01T10:00:00+08:00", "AS1", {"forms": 300}, id="x1")
    second = dict(first, data={"forms": 999})
    with Scorecard.open(db, rules, matcher="python") as card:
        assert card.ingest(first).status == "accepted"
        out = card.ingest(second)
        assert out.status == "rejected"
        assert out.rejection is not None
        assert out.rejection.field == "id"
        assert card.report(AS_OF).kpis["AC1.1"].numerator == 300
    store = SQLiteStore(db)
    rows = store.rejections()
    store.close()
    assert [(r[2], r[3]) for r in rows] == [("x1", "id")]
    assert "conflicts" in rows[0][4]


def test_rejected_events_keep_their_raw_bytes(tmp_path: Path, rules) -> None:
    """A bad line is stored whole, with its line number and reason."""
    db = tmp_path / "office.db"
    lines = [
        b"not json\n",
        jsonl(
            [
                event(
                    "survey.completed",
                    "2017-03-01T10:00:00+08:00",
                    "SV1",
                    {"mode": "online", "pages": 3},
                )
            ]
        ),
    ]
    with Scorecard.open(db, rules, matcher="python") as card:
        summary = card.ingest_lines(lines, origin="f.jsonl")
    assert (summary.accepted, summary.rejected) == (1, 1)
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT origin, line, raw, reason FROM rejected").fetchone()
    conn.close()
    assert row[:3] == ("f.jsonl", 1, b"not json\n")
    assert "not valid JSON" in row[3]


def test_event_log_is_append_only(tmp_path: Path, rules) -> None:
    """Rows of the event log can be neither changed nor deleted."""
    db = tmp_path / "office.db"
    with Scorecard.open(db, rules, matcher="python") as card:
        card.ingest(event("seal_certificate.issued", "2017-03-01T10:00:00+08:00", "SC1"))
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE events SET subject = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events")
    conn.close()


def test_missing_folder_is_a_clear_error(tmp_path: Path, rules) -> None:
    """A database in a folder that does not exist names the folder."""
    with pytest.raises(StoreError, match="does not exist"):
        Scorecard.open(tmp_path / "nope" / "office.db", rules, matcher="python")


def test_wal_mode_and_full_sync(tmp_path: Path) -> None:
    """The log runs in WAL mode with synchronous=FULL (2)."""
    store = SQLiteStore(tmp_path / "office.db")
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    store.close()


def test_refresh_picks_up_other_writers(tmp_path: Path, rules) -> None:
    """Events appended by another writer are applied once by refresh; our own are not redone."""
    db = tmp_path / "office.db"
    with (
        Scorecard.open(db, rules, matcher="python") as ours,
        Scorecard.open(db, rules, matcher="python") as theirs,
    ):
        ours.ingest(
            event(
                "immigrant_visit.reported", "2017-03-01T10:00:00+08:00", "NV1", {"method": "phone"}
            )
        )
        theirs.ingest(
            event(
                "immigrant_visit.reported", "2017-03-02T10:00:00+08:00", "NV2", {"method": "home"}
            )
        )
        assert ours.report(AS_OF).kpis["BC1.1"].value == 1
        assert ours.refresh() == 1
        assert ours.refresh() == 0
        assert ours.report(AS_OF).kpis["BC1.1"].value == 2


def test_log_keeps_the_line_as_received_and_knows_its_duplicates(tmp_path: Path, rules) -> None:
    """The body is the line as received; the same content written otherwise is a duplicate,
    also after a restart, and changed content a conflict."""
    db = tmp_path / "office.db"
    course = {"employee": "E1", "course": "戶籍法"}
    original = event("training.attended", "2017-05-02T09:00:00+08:00", "TR-1", course)
    line = json.dumps(original, ensure_ascii=False).encode()
    reordered = json.dumps(dict(reversed(list(original.items()))), ensure_ascii=True).encode()
    changed = json.dumps({**original, "subject": "TR-2"}).encode()
    with Scorecard.open(db, rules, matcher="python") as card:
        assert card.ingest(b"  " + line + b"\r\n").status == "accepted"
        assert card.ingest(reordered).status == "duplicate"
    with closing(sqlite3.connect(db)) as conn:  # (a with-block alone does not close it)
        assert conn.execute("SELECT body FROM events").fetchone()[0] == line
    with Scorecard.open(db, rules, matcher="python") as card:
        summary = card.ingest_lines([reordered, line, changed])
        assert (summary.accepted, summary.duplicates, summary.rejected) == (0, 2, 1)
        assert summary.rejections[0].field == "id"


def test_own_writes_are_not_remembered_but_interleaved_ones_are(tmp_path: Path, rules) -> None:
    """The scorecard forgets the seqs it wrote once it has moved past them (memory stays
    flat over a long replay), except those behind another writer's rows until refresh."""
    db = tmp_path / "office.db"
    visit = "immigrant_visit.reported"
    with (
        Scorecard.open(db, rules, matcher="python") as ours,
        Scorecard.open(db, rules, matcher="python") as theirs,
    ):
        lines = [
            jsonl([event(visit, f"2017-03-01T10:0{n}:00+08:00", f"NV{n}", {"method": "phone"})])
            for n in range(3)
        ]
        ours.ingest_lines(lines[:2])
        assert isinstance(ours.store, SQLiteStore)
        assert ours.store.own_writes() == set()
        theirs.ingest(lines[2])
        ours.ingest(event(visit, "2017-03-04T10:00:00+08:00", "NV4", {"method": "home"}))
        assert ours.store.own_writes() == {4}
        assert ours.refresh() == 1
        assert ours.store.own_writes() == set()
        assert ours.report(AS_OF).kpis["BC1.1"].value == 4
