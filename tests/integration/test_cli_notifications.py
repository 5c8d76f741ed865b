"""The notification commands through the entry point: replay, history, ack, outbox, render."""

from __future__ import annotations

import email
import email.policy
import io
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from bsc_rules.cli import main
from bsc_rules.clock import FakeClock
from bsc_rules.store.sqlite import SQLiteStore
from tests.conftest import event, jsonl


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, stdout=out), out.getvalue()


@pytest.fixture
def replayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An unpaid birth subsidy replayed to a Maildir, with its state database kept."""
    monkeypatch.chdir(tmp_path)  # no bsc-rules.toml here: the shipped defaults apply
    events = tmp_path / "e.jsonl"
    events.write_bytes(
        jsonl(
            [
                event(
                    "birth_subsidy.applied",
                    "2017-03-15T10:00:00+08:00",
                    "BS1060315001",
                    {"amount": 20000},
                ),
                event("seal_certificate.issued", "2017-04-01T10:00:00+08:00", "SC1"),
            ]
        )
    )
    db, maildir = tmp_path / "state.db", tmp_path / "mail"
    code, out = run(
        [
            "replay",
            str(events),
            "--until",
            "2017-03-30T12:00:00+08:00",
            "--maildir",
            str(maildir),
            "--db",
            str(db),
            "--matcher",
            "python",
        ]
    )
    assert code == 0
    assert "重播完成" in out
    assert "待寄 0 封" in out  # nothing left in the queue: the replay delivered it all
    return db, maildir


def test_history_lists_transitions_and_mail(replayed: tuple[Path, Path]) -> None:
    """History shows the case entering due_soon and overdue and who was told."""
    db, _ = replayed
    code, out = run(["history", "--db", str(db), "--case", "BS1060315001"])
    assert code == 0
    for word in ("entered", "due_soon", "overdue", "notified", "registration@datong.example.org"):
        assert word in out


def test_ack_stops_repeats(replayed: tuple[Path, Path]) -> None:
    """An acknowledged alert is recorded with its note; an unknown one is a clear error."""
    db, _ = replayed
    ack = ["ack", "case:BP1.1:BS1060315001", "--note", "已聯繫申請人", "--db", str(db)]
    code, out = run([*ack, "--by", "戶籍登記課 林課員"])
    assert code == 0
    assert "已確認警示" in out
    _, history = run(["history", "--db", str(db), "--case", "BS1060315001"])
    assert "acknowledged" in history
    assert "已聯繫申請人" in history
    assert "戶籍登記課 林課員" in history  # who acknowledged is recorded
    code, again = run([*ack[:2], "--note", "再次確認", *ack[4:], "--by", "主任"])
    assert code == 0
    assert "未再變更" in again  # acknowledging again changes nothing and says by whom
    assert "戶籍登記課 林課員" in again
    assert "再次確認" not in run(["history", "--db", str(db), "--case", "BS1060315001"])[1]
    assert run(["ack", "case:BP1.1:NOPE", "--note", "x", "--by", "x", "--db", str(db)])[0] == 1


def test_ack_accepts_the_masked_key_mails_show(tmp_path: Path) -> None:
    """A case id shaped like an ID number is shown masked; `ack` accepts the key as shown
    when it names exactly one active alert."""
    db = tmp_path / "state.db"
    events = tmp_path / "e.jsonl"
    applied = event("birth_subsidy.applied", "2017-03-15T10:00:00+08:00", "A123456789")
    applied["data"] = {"amount": 20000}
    events.write_bytes(jsonl([applied]))
    argv = ["replay", str(events), "--until", "2017-03-30T12:00:00+08:00"]
    assert run([*argv, "--maildir", str(tmp_path / "mail"), "--db", str(db)])[0] == 0
    code, out = run(
        ["ack", "case:BP1.1:A12345****", "--note", "處理中", "--by", "林課員", "--db", str(db)]
    )
    assert code == 0, out
    assert "A123456789" not in out
    assert "A12345****" in out


def test_outbox_lists_what_was_sent(replayed: tuple[Path, Path]) -> None:
    """The outbox lists the sent mail, one file per message in the Maildir."""
    db, maildir = replayed
    code, out = run(["outbox", "--db", str(db), "--status", "sent"])
    assert code == 0
    files = list((maildir / "new").glob("*"))
    assert files
    assert out.count("sent") == len(files)
    assert run(["outbox", "--db", str(db), "--retry"])[0] == 0  # nothing parked: a no-op


def test_outbox_retry_prints_what_it_requeued(replayed: tuple[Path, Path], tmp_path: Path) -> None:
    """The listing shows Message-IDs; --retry prints the ids it put back, not the outbox."""
    db, _ = replayed
    copy = tmp_path / "copy.db"
    with sqlite3.connect(db) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as conn:
        [(parked,)] = conn.execute(
            "SELECT message_id FROM outbox ORDER BY created_us LIMIT 1"
        ).fetchall()
        conn.execute("UPDATE outbox SET status = 'parked' WHERE message_id = ?", (parked,))
    code, listing = run(["outbox", "--db", str(copy), "--status", "parked"])
    assert code == 0
    assert parked in listing.replace("\n", "")
    code, out = run(["outbox", "--db", str(copy), "--retry"])
    assert code == 0
    assert "已重新排入寄送佇列：1 封" in out
    assert parked in out
    assert "sent" not in out  # not the whole outbox


@pytest.mark.parametrize(
    ("kind", "part", "fragment"),
    [
        ("morning", "text", "【KPI警示】戶籍登記課每日提醒"),
        ("director", "text", "【KPI警示】逾期案件陳核"),
        ("digest", "html", "<html"),
    ],
)
def test_render_example(kind: str, part: str, fragment: str) -> None:
    """`render KIND --example` previews a template with sample data."""
    code, out = run(["render", kind, "--example", "--part", part])
    assert code == 0
    assert fragment in out


def test_comment_notes_reach_the_month_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`comment` keeps every version of a section's note; the month's digest shows the
    latest entered before it is sent (a note written after it waits for no digest)."""
    monkeypatch.chdir(tmp_path)
    events = tmp_path / "e.jsonl"
    events.write_bytes(
        jsonl(
            [
                event("birth_subsidy.applied", "2017-01-10T10:00:00+08:00", "BS1", {"amount": 1}),
                event("seal_certificate.issued", "2017-02-03T10:00:00+08:00", "SC1"),
            ]
        )
    )
    db, maildir = tmp_path / "state.db", tmp_path / "mail"

    def replay(until: str) -> None:
        argv = ["replay", str(events), "--until", until, "--maildir", str(maildir), "--db", str(db)]
        assert run([*argv, "--matcher", "python"])[0] == 0

    def comment(text: str, at: str, month: str = "2017-01") -> tuple[int, str]:
        clock = FakeClock(datetime.fromisoformat(at))
        argv = ["comment", "BP1.1", "--month", month, "--by", "戶籍登記課 王課長", "--db", str(db)]
        code = main([*argv, "--text", text], clock=clock, stdout=(out := io.StringIO()))
        return code, out.getvalue()

    replay("2017-01-31T12:00:00+08:00")
    code, said = comment("初稿：撥款流程待檢討", "2017-01-31T17:00:00+08:00")
    assert code == 0
    assert "106年1月" in said
    assert comment("已逐案追蹤撥款進度，2月起每日核對。", "2017-01-31T17:30:00+08:00")[0] == 0
    # January's digest goes 2017-02-02 08:00, the first working day after 春節
    assert comment("寫於月報寄出之後", "2017-02-02T09:00:00+08:00")[0] == 0
    code, listing = run(["comment", "BP1.1", "--month", "2017-01", "--db", str(db)])
    assert code == 0
    for text in ("初稿：撥款流程待檢討", "已逐案追蹤撥款進度", "寫於月報寄出之後"):
        assert text in listing  # every version is kept
    replay("2017-02-02T12:00:00+08:00")
    digest = next(
        p.read_text(encoding="utf-8")
        for p in (maildir / "new").iterdir()
        if "digest" in p.name and "registration" in p.read_text(encoding="utf-8")
    )
    plain = email.message_from_string(digest, policy=email.policy.default)
    text = plain.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "已逐案追蹤撥款進度，2月起每日核對。（戶籍登記課 王課長，106/01/31）" in text
    assert "初稿" not in text
    assert "寫於月報寄出之後" not in text


def test_comment_errors_name_the_field(tmp_path: Path) -> None:
    """A bad month, an unknown KPI or a note without its author is a clear usage error."""
    db = tmp_path / "state.db"
    SQLiteStore(db).close()
    note = ["--db", str(db), "--by", "x", "--text", "y"]
    assert run(["comment", "BP1.1", "--month", "2017-13", *note])[0] == 1
    assert run(["comment", "XX9.9", "--month", "2017-01", *note])[0] == 1
    assert run(["comment", "BP1.1", "--month", "2017-01", "--db", str(db), "--text", "y"])[0] == 1
