"""The service against the replay (issue #13, item 3): the live service, driven by a fake
clock tick by tick through the same events, sends byte for byte what `replay` sends while
acting at the mail instants only."""

from __future__ import annotations

from pathlib import Path

import orjson

from bsc_rules.alerts.pipeline import open_pipeline
from bsc_rules.calendar import from_us, parse_instant, to_us
from bsc_rules.clock import FakeClock
from bsc_rules.dev.simulate import simulate
from bsc_rules.notify.mailer import MaildirMailer
from bsc_rules.scheduling.replay import replay
from bsc_rules.scheduling.service import Service
from bsc_rules.settings import load_settings

BEFORE = "2017-03-01"  # two months of a generated year: morning mails, lists, two digests
UNTIL = to_us(parse_instant("2017-03-01T12:00:00+08:00"))  # past February's digest (03-01)


def quarter() -> list[bytes]:
    return [orjson.dumps(e) for e in simulate(year=2017, seed=4) if e["time"][:10] < BEFORE]


def mail_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "new").iterdir())}


def test_the_service_ticked_hourly_sends_what_the_replay_sends(tmp_path: Path) -> None:
    lines = quarter()
    settings_file = tmp_path / "bsc-rules.toml"
    settings_file.write_text("tick_minutes = 60\n", encoding="utf-8")

    replayed = tmp_path / "replayed"
    settings = load_settings(settings_file, database=tmp_path / "replay.db", matcher="python")
    pipeline = open_pipeline(settings, tmp_path / "replay.db")
    try:
        summary = replay(lines, UNTIL, pipeline, MaildirMailer(replayed))
    finally:
        pipeline.card.close()

    served = tmp_path / "served"
    settings = load_settings(settings_file, database=tmp_path / "service.db", matcher="python")
    first = to_us(parse_instant(orjson.loads(lines[0])["time"]))
    clock = FakeClock(from_us(first))
    ticks = 0
    with Service(settings, clock, MaildirMailer(served)) as service:
        service.catch_up(first)  # the service starts when the first event arrives
        now = first
        for raw in [*lines, None]:
            t = UNTIL + 1 if raw is None else to_us(parse_instant(orjson.loads(raw)["time"]))
            while (nxt := service.schedule.after(now)) < t and nxt <= UNTIL:
                now = nxt
                clock.set(from_us(now))
                service.scheduled()  # what APScheduler calls at each tick
                ticks += 1
            if raw is not None:
                service.ingest(raw)

    sent, expected = mail_of(served), mail_of(replayed)
    assert ticks > 24 * 50  # hourly, through the two months
    assert summary.ticks < ticks / 10  # the replay acted at the mail instants only
    assert len(expected) > 50
    assert sent.keys() == expected.keys()
    different = [name for name in expected if sent[name] != expected[name]]
    assert different == []
