"""Replay on event time: the whole pipeline with a simulated clock.

``replay`` feeds a JSON Lines stream of events in arrival order, moving a simulated
clock from the first event's time to ``until``. At every scheduled instant (each tick of
``tick_minutes`` from local midnight, and each digest instant) it does what the service
does at that instant: evaluate, decide alerts, enqueue mail, send the digests due, and
deliver. Each message carries the ``Date:`` of its simulated sending. Nothing reads the
wall clock, so two replays of the same input send identical messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bsc_rules.calendar import TAIPEI, from_us, to_us
from bsc_rules.clock import FakeClock
from bsc_rules.digest import digest_instant, missed_months, previous_month, send_digests
from bsc_rules.events import Event
from bsc_rules.mailer import Mailer, deliver_due
from bsc_rules.pipeline import Pipeline
from bsc_rules.scorecard import IngestSummary


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did."""

    ingest: IngestSummary = field(default_factory=IngestSummary)
    ticks: int = 0
    queued: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    undeliverable: list[str] = field(default_factory=list)
    start: int | None = None
    end: int | None = None


class Schedule:
    """The instants at which the service acts: ticks from local midnight and digests."""

    def __init__(self, tick_minutes: int, digest_day: int, digest_hour: int) -> None:
        self.tick = tick_minutes * 60 * 1_000_000
        self.day, self.hour = digest_day, digest_hour

    def after(self, instant: int) -> int:
        """The first scheduled instant strictly after ``instant``."""
        moment = from_us(instant)
        midnight = to_us(datetime.combine(moment.date(), datetime.min.time(), tzinfo=TAIPEI))
        tick = midnight + ((instant - midnight) // self.tick + 1) * self.tick
        next_midnight = to_us(
            datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=TAIPEI)
        )
        this = (moment.year, moment.month)
        candidates = (previous_month(instant), this)  # digests sent this month and next
        digest = min(d for d in (self._instant(m) for m in candidates) if d > instant)
        return min(tick, next_midnight, digest)

    def _instant(self, month: tuple[int, int]) -> int:
        return digest_instant(month[0], month[1], self.day, self.hour)

    def digest_due(self, instant: int) -> tuple[int, int] | None:
        """The month whose digest is due at ``instant`` (at or after its digest instant)."""
        year, month = previous_month(instant)
        return (
            (year, month) if instant >= digest_instant(year, month, self.day, self.hour) else None
        )


def run_tick(
    pipeline: Pipeline, schedule: Schedule, mailer: Mailer, now: int, start: int
) -> tuple[list[str], list[str], list[str]]:
    """Everything the service does at one instant: evaluate, digests, delivery."""
    queued = pipeline.evaluate(now)
    # every digest owed since the service began (a missed one too), once each: runs table
    for year, month in missed_months(start, now, schedule.day, schedule.hour):
        queued += send_digests(pipeline, year, month, now)
    report = deliver_due(pipeline.outbox, mailer, FakeClock(from_us(now)))
    return queued, report.sent, [f.message_id for f in report.parked]


def replay(
    lines: Iterable[bytes],
    until: int,
    pipeline: Pipeline,
    mailer: Mailer,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Replay ``lines`` through ``pipeline`` on simulated time up to ``until``."""
    s = pipeline.settings
    schedule = Schedule(s.tick_minutes, s.digest.day, s.digest.hour)
    summary = ReplaySummary()
    batch: list[tuple[int, bytes]] = []
    now: int | None = None
    resume = pipeline.resume_clock()  # a replay interrupted earlier goes on from its last decision
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        parsed = pipeline.card.validate(raw, number)
        t = parsed.time_us if isinstance(parsed, Event) else (now or 0)
        if isinstance(parsed, Event) and t > until:
            continue
        if now is None and isinstance(parsed, Event):
            summary.start = pipeline.started(t)
            now = t if resume is None else max(t, resume)
        while now is not None and (nxt := schedule.after(now)) < t:
            _flush(pipeline, batch, summary)
            now = nxt
            _tick(pipeline, schedule, mailer, now, summary)
        batch.append((number, raw))
        if progress is not None and number % 1000 == 0:
            progress(number)
    _flush(pipeline, batch, summary)
    while now is not None and (nxt := schedule.after(now)) <= until:
        now = nxt
        _tick(pipeline, schedule, mailer, now, summary)
    if now is not None:  # mail decided before an interruption and not yet sent
        report = deliver_due(pipeline.outbox, mailer, FakeClock(from_us(now)))
        summary.sent += report.sent
        summary.undeliverable += [f.message_id for f in report.parked]
    summary.end = now
    return summary


def _flush(pipeline: Pipeline, batch: list[tuple[int, bytes]], summary: ReplaySummary) -> None:
    if batch:
        result = pipeline.card.ingest_numbered(batch)
        summary.ingest.accepted += result.accepted
        summary.ingest.duplicates += result.duplicates
        summary.ingest.rejections += result.rejections
        batch.clear()


def _tick(
    pipeline: Pipeline, schedule: Schedule, mailer: Mailer, now: int, summary: ReplaySummary
) -> None:
    queued, sent, parked = run_tick(pipeline, schedule, mailer, now, summary.start or now)
    summary.ticks += 1
    summary.queued += queued
    summary.sent += sent
    summary.undeliverable += parked
