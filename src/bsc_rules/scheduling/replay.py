"""Replay on event time: the whole pipeline with a simulated clock.

``replay`` feeds a JSON Lines stream of events in arrival order, moving a simulated
clock from the first event's time to ``until``. It acts only where the service's actions
can differ: at the mail instants (the morning mail of each working day, the digests) and
at the retry of a message the server did not take; there it does what the service does
at that instant (:func:`~bsc_rules.scheduling.schedule.run_tick`). Between them it only
stores and measures events. Each message carries the ``Date:`` of its simulated sending.
Nothing reads the wall clock, so two replays of the same input send identical messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bsc_rules.alerts.pipeline import Pipeline
from bsc_rules.events import Event
from bsc_rules.notify.mailer import Mailer
from bsc_rules.scheduling.schedule import Schedule, deliver, run_tick
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


def replay(
    lines: Iterable[bytes],
    until: int,
    pipeline: Pipeline,
    mailer: Mailer,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Replay ``lines`` through ``pipeline`` on simulated time up to ``until``."""
    schedule = Schedule.of(pipeline, pipeline.settings.tick_minutes)
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
            _tick(pipeline, schedule, mailer, now, summary)  # as a service started then
        while now is not None and (nxt := _next(pipeline, schedule, now)) < t:
            _flush(pipeline, batch, summary)
            now = nxt
            _tick(pipeline, schedule, mailer, now, summary)
        batch.append((number, raw))
        if progress is not None and number % 1000 == 0:
            progress(number)
    _flush(pipeline, batch, summary)
    while now is not None and (nxt := _next(pipeline, schedule, now)) <= until:
        now = nxt
        _tick(pipeline, schedule, mailer, now, summary)
    if now is not None:  # mail decided before an interruption and not yet sent
        sent, parked = deliver(pipeline.outbox, mailer, now)
        summary.sent += sent
        summary.undeliverable += parked
    summary.end = now
    return summary


def _next(pipeline: Pipeline, schedule: Schedule, now: int) -> int:
    """The next instant a replay acts at: a mail instant, or a failed message's retry."""
    retry = pipeline.outbox.next_attempt(after=now)
    mail = schedule.mail_after(now)
    return mail if retry is None else min(mail, retry)


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
