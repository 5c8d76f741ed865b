"""The service: the scheduler that runs the pipeline on wall-clock time.

:class:`Service` does, at each scheduled instant, what a replay does at the same instant
(:func:`bsc_rules.scheduling.schedule.run_tick`): send the digests due, decide the
morning mail and the director's list once on each working day from ``lists.hour`` on,
deliver the outbox. It decides (:func:`~bsc_rules.scheduling.schedule.decide_tick`) under
its lock and delivers (:func:`~bsc_rules.scheduling.schedule.deliver`) after releasing it,
through an outbox on a second connection to the same SQLite file (WAL): a slow or failing
SMTP server holds up only the mail, never the events written meanwhile (the HTTP door
takes the same lock).

APScheduler (3.11, the only module that imports it) decides *when*: a tick every
``tick_minutes`` from local midnight in Asia/Taipei (the instants of
:class:`bsc_rules.scheduling.schedule.Schedule`; they deliver, retry and send a morning
mail missed while down, the same day only) and a run every day at the office file's
``lists.hour``:00 and ``digest.hour``:00.
The injected :class:`~bsc_rules.clock.Clock` says *what time it is*; nothing here reads
the wall clock, so tests call :meth:`Service.scheduled` with a fake clock and never wait.

The first start is recorded in the ``runs`` table (job ``service``, period ``started``):
digests due before it are not owed; a digest whose instant passed while the service was
down is sent once by :meth:`Service.catch_up` (the ``runs`` table makes it once-only).

Events written to the same database by other processes (the library, ``bsc-rules
ingest``) are applied to the in-memory scorecard at the next tick.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.executors.pool import (  # type: ignore[import-untyped]  # no py.typed in 3.x
    ThreadPoolExecutor,
)
from apscheduler.schedulers.background import (  # type: ignore[import-untyped]
    BackgroundScheduler,
)
from apscheduler.triggers.combining import OrTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

from bsc_rules.alerts.pipeline import Pipeline, open_pipeline
from bsc_rules.calendar import TAIPEI, iso, roc_year, to_us
from bsc_rules.clock import Clock, SystemClock
from bsc_rules.errors import BscRulesError
from bsc_rules.notify.mailer import Mailer, SmtpMailer
from bsc_rules.notify.outbox import Outbox
from bsc_rules.privacy import mask_text
from bsc_rules.scheduling.schedule import Schedule, decide_tick, deliver, missed_months
from bsc_rules.scorecard import Ingested, IngestSummary
from bsc_rules.settings import Settings
from bsc_rules.store.db import connect
from bsc_rules.store.lock import ServiceLock

__all__ = [
    "LogFormatter",
    "Service",
    "TickResult",
    "digest_trigger",
    "mailer_for",
    "missed_months",
    "scheduler_for",
    "serve",
    "tick_trigger",
]

log = logging.getLogger(__name__)
MINUTES_PER_DAY = 24 * 60
STDIN = "stdin"


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one run did: events picked up, message ids queued, sent and parked."""

    picked_up: int
    queued: tuple[str, ...]
    sent: tuple[str, ...]
    parked: tuple[str, ...]


# ---------------------------------------------------------------- triggers


def _csv(values: Iterable[int], whole: range) -> str:
    values = list(values)
    return "*" if values == list(whole) else ",".join(map(str, values))


def tick_trigger(tick_minutes: int) -> Any:
    """Every ``tick_minutes`` from local midnight (restarting at each midnight), Taipei time.

    Cron fields cannot say "every 90 minutes from midnight", so the minutes of the day
    are grouped into cron triggers sharing the same hours (``*/15`` → one trigger,
    90 → two: ``0:00, 3:00, …`` and ``1:30, 4:30, …``), combined with ``OrTrigger``.
    """
    hours_of: dict[int, list[int]] = defaultdict(list)
    for minute_of_day in range(0, MINUTES_PER_DAY, tick_minutes):
        hours_of[minute_of_day % 60].append(minute_of_day // 60)
    minutes_of: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for minute, hours in hours_of.items():
        minutes_of[tuple(hours)].append(minute)
    crons = [
        CronTrigger(hour=_csv(hours, range(24)), minute=_csv(minutes, range(60)), timezone=TAIPEI)
        for hours, minutes in minutes_of.items()
    ]
    return crons[0] if len(crons) == 1 else OrTrigger(crons)


def digest_trigger(hour: int) -> Any:
    """Every day at ``hour``:00, Taipei time: the tick then sends the digest (or the
    morning mail) if today is its working day (:meth:`Schedule.missed_months`,
    :meth:`Schedule.lists_day`), which a cron field cannot say."""
    return CronTrigger(hour=hour, minute=0, timezone=TAIPEI)


def scheduler_for(job: Callable[[], None], tick_minutes: int, hours: Iterable[int]) -> Any:
    """A background scheduler (not started; memory store, nothing pickled, one job at a
    time) running ``job`` at every tick (:func:`tick_trigger`) and every day at each of
    ``hours``:00 (the digest's and the morning mail's hours, :func:`digest_trigger`)."""
    grace = tick_minutes * 60  # later than one tick: the next tick does the work
    scheduler = BackgroundScheduler(
        timezone=TAIPEI,
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
    )
    scheduler.add_job(job, tick_trigger(tick_minutes), id="tick", name="tick")
    for hour in sorted(set(hours)):
        scheduler.add_job(job, digest_trigger(hour), id=f"at-{hour}", name=f"{hour}:00")
    return scheduler


def mailer_for(settings: Settings) -> Mailer:
    """The SMTP mailer the settings describe (the password only from the environment)."""
    smtp = settings.smtp
    secret = settings.smtp_password
    password = secret.get_secret_value() if secret is not None else None
    return SmtpMailer(
        smtp.host, smtp.port, smtp.security, smtp.username, password, smtp.timeout_seconds
    )


def _info(message: str, office: str | None = None) -> None:
    log.info(mask_text(message), extra=None if office is None else {"office": office})


def _warn(message: str, office: str | None = None) -> None:
    log.warning(mask_text(message), extra=None if office is None else {"office": office})


# ---------------------------------------------------------------- the service


class Service:
    """The pipeline on a schedule, with catch-up on start and events from other processes.

    Only one service runs per database: the constructor takes the database's lock
    (:class:`~bsc_rules.store.lock.ServiceLock`) or raises
    :class:`~bsc_rules.store.lock.DatabaseBusy` naming the holder; :meth:`close` (or the
    end of the process) releases it.

    Every method that touches the pipeline holds one lock (:attr:`lock`): the scheduler's
    thread, the thread reading standard input and the HTTP door share the pipeline's SQLite
    connection. Delivery alone runs outside it, on the outbox's own connection
    (:meth:`deliver`), one delivery at a time.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        mailer: Mailer | None = None,
        pipeline: Pipeline | None = None,
        *,
        office: str | None = None,
        exclusive: bool = True,
    ) -> None:
        """The service of the settings' database (of ``office`` where the rule folder has
        several). With ``exclusive`` false the caller guards the office (a lease on
        PostgreSQL: :mod:`.fleet`) and no file lock is taken."""
        self.settings, self.clock = settings, clock
        # One scheduler per database: refused here, naming the holder, if another runs.
        self._db_lock = ServiceLock(settings.database) if exclusive else None
        if self._db_lock is not None:
            self._db_lock.acquire(to_us(clock.now()))
        try:
            self.mailer = mailer if mailer is not None else mailer_for(settings)
            self._owned = pipeline is None
            self.pipeline, self._outbox = _open(settings, pipeline, office)
        except BaseException:
            if self._db_lock is not None:
                self._db_lock.release()
            raise
        secret = settings.ack_secret
        if settings.public_url and secret is not None and self.pipeline.ack_links is None:
            self.pipeline.ack_links = (settings.public_url, secret.get_secret_value().encode())
        self.schedule = Schedule.of(self.pipeline, settings.tick_minutes)
        self.scheduler: Any = None
        self._lock = threading.RLock()
        # one delivery at a time; a pipeline in memory has no second connection: its own
        # outbox then, under the service lock
        own_conn = self._outbox is not self.pipeline.outbox
        self._delivering = threading.Lock() if own_conn else self._lock
        self._start: int | None = None

    @property
    def code(self) -> str:
        """The office served."""
        return self.pipeline.card.rules.code

    @property
    def lock(self) -> threading.RLock:
        """The lock every database action of the service holds: another writer in the same
        process (the HTTP door) takes it too, so that its writes and a tick never overlap."""
        return self._lock

    # ------------------------------------------------------------ start record

    def started(self, now: int) -> int:
        """The instant of the first start: recorded now if there is none yet."""
        if self._start is None:
            with self._lock:
                self._start = self.pipeline.started(now)
        return self._start

    # ------------------------------------------------------------ runs

    def catch_up(self, now: int) -> TickResult:
        """On start: every digest missed while down (once each), then one regular tick."""
        with self._lock:
            start, schedule = self.started(now), self.schedule
            for year, month in schedule.missed_months(start, now):
                if not self.pipeline.digest_sent(year, month):
                    _info(f"補寄月報：{roc_year(year)}年{month}月", self.code)
        return self.tick(now)  # the tick sends every digest still owed, once each

    def tick(self, now: int) -> TickResult:
        """One scheduled run at ``now``: pick up others' events, then what replay does;
        the mail decided is committed under the lock and delivered after it."""
        with self._lock:
            picked = self.pick_up()
            self._reread_calendar()
            queued = decide_tick(self.pipeline, self.schedule, now, self.started(now))
        sent, parked = self.deliver(now)
        for message_id in parked:
            _warn(f"郵件無法投遞，已擱置：{message_id}", self.code)
        return TickResult(picked, tuple(queued), tuple(sent), tuple(parked))

    def deliver(self, now: int) -> tuple[list[str], list[str]]:
        """Send the outbox's mail due at ``now`` and record each outcome: outside the
        service lock, on the outbox's own connection, so that ingest goes on while an SMTP
        server is slow or retried. One delivery at a time: each message is marked sent
        (a short transaction of its own) before the next delivery reads what is due.
        Return the Message-IDs sent and those parked."""
        with self._delivering:
            return deliver(self._outbox, self.mailer, now)

    def _reread_calendar(self) -> None:
        """Closures are re-read before every evaluation (kpis.md); a broken rule folder
        keeps the calendar as it was and says why."""
        try:
            moved = self.pipeline.card.reread_calendar()
        except BscRulesError as exc:
            _warn(f"行事曆重新讀取失敗，沿用原設定：{exc}", self.code)
            return
        if moved:
            _info(f"行事曆已更新（停止上班日等）：{moved} 件案件期限隨之調整", self.code)

    def scheduled(self) -> None:
        """The scheduler's job: a tick at the clock's time; errors are logged, not raised."""
        try:
            result = self.tick(to_us(self.clock.now()))
        except Exception as exc:  # a failed tick must not stop the service; the next retries
            _warn(f"排程執行失敗（下次排程將重試）：{type(exc).__name__}: {exc}", self.code)
            return
        if result.queued or result.sent or result.picked_up:
            _info(
                f"排程執行：新事件 {result.picked_up} 筆，新通知 {len(result.queued)} 件，"
                f"寄出 {len(result.sent)} 件"
            )

    # ------------------------------------------------------------ events

    def pick_up(self) -> int:
        """Apply the events other processes appended to the log since the last look."""
        with self._lock:
            return self.pipeline.card.refresh()

    def ingest(self, raw: bytes, line: int | None = None, origin: str = STDIN) -> Ingested:
        """Validate, store durably (committed before this returns) and apply one event."""
        with self._lock:
            return self.pipeline.card.ingest(raw, line=line, origin=origin)

    def ingest_stream(self, stream: Iterable[bytes], origin: str = STDIN) -> IngestSummary:
        """JSON Lines as they arrive, one durable commit per line; bad lines kept as rejected."""
        summary = IngestSummary()
        for number, raw in enumerate(stream, 1):
            if not raw.strip():
                continue
            outcome = self.ingest(raw, number, origin)
            summary.add(outcome)
            if outcome.rejection is not None:
                _warn(f"標準輸入第 {number} 行未接受：{outcome.rejection}", self.code)
        return summary

    # ------------------------------------------------------------ scheduler

    def start(self) -> TickResult:
        """Catch up at the clock's time, then schedule the ticks and the digest."""
        result = self.catch_up(to_us(self.clock.now()))
        if self.scheduler is None:
            self.scheduler = self._scheduler()
            self.scheduler.start()
        return result

    def _scheduler(self) -> Any:
        """A scheduler with the jobs built from the settings (memory store, nothing pickled)."""
        hours = {self.schedule.hour, self.schedule.lists_hour}
        return scheduler_for(self.scheduled, self.settings.tick_minutes, hours)

    def shutdown(self) -> None:
        """Stop the scheduler, waiting for a running job; its threads are gone on return."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None

    def close(self) -> None:
        """Shut down, and close the pipeline if this service opened it."""
        self.shutdown()
        with self._delivering:  # a delivery running in another thread finishes first
            if self._outbox is not self.pipeline.outbox:
                self._outbox.conn.close()
        if self._owned:
            with self._lock:
                self.pipeline.card.close()
        if self._db_lock is not None:
            self._db_lock.release()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(
    settings: Settings, given: Pipeline | None, office: str | None
) -> tuple[Pipeline, Outbox]:
    """The pipeline (``given``, or opened over the settings' database) and the outbox that
    delivers its mail (:func:`_delivery_outbox`); a pipeline opened here is closed again if
    the outbox cannot be had."""
    pipeline = given if given is not None else open_pipeline(settings, office=office)
    try:
        return pipeline, _delivery_outbox(pipeline)
    except BaseException:
        if given is None:
            pipeline.card.close()
        raise


def _delivery_outbox(pipeline: Pipeline) -> Outbox:
    """The outbox on a connection of its own to the pipeline's database file (WAL: its
    reads and short writes go on beside the pipeline's), or the pipeline's own outbox for
    a database in memory, or on PostgreSQL (there it delivers under the service lock)."""
    if pipeline.db.engine != "sqlite":
        return pipeline.outbox
    rows: list[tuple[int, str, str]] = pipeline.conn.execute("PRAGMA database_list").fetchall()
    file = next((f for _, name, f in rows if name == "main"), "")
    return Outbox(connect(Path(file))) if file else pipeline.outbox


# ---------------------------------------------------------------- bsc-rules run


class Stopped(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM to leave a blocking read."""


@contextmanager
def signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (and interrupt the main thread once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            stop.set()
            raise Stopped

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


class LogFormatter(logging.Formatter):
    """``2017-03-23T08:00:00.123+08:00 INFO datong message``: the time is the injected
    clock's (not the record's wall-clock time), in Asia/Taipei; then the level and office
    (the record's own ``office``, where a service of many offices gives it one)."""

    def __init__(self, clock: Clock, office: str = "-") -> None:
        super().__init__()
        self.clock, self.office = clock, office

    def format(self, record: logging.LogRecord) -> str:
        moment = self.clock.now().astimezone(TAIPEI).isoformat(timespec="milliseconds")
        office = getattr(record, "office", None) or self.office
        line = f"{moment} {record.levelname} {office} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


@contextmanager
def stderr_log(clock: Clock, office: str = "-") -> Iterator[LogFormatter]:
    """The package's log lines (every ``bsc_rules`` logger: the service's, the mailer's)
    on standard error, formatted by :class:`LogFormatter`."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = LogFormatter(clock, office)
    handler.setFormatter(formatter)
    package = logging.getLogger("bsc_rules")
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield formatter
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def serve(
    settings: Settings,
    clock: Clock | None = None,
    stdin: Iterable[bytes] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """``bsc-rules run``: start, ingest ``stdin`` to its end, run until stopped, shut down.

    Stops when ``stop`` is set or on SIGINT/SIGTERM (in the main thread).
    """
    clock = clock if clock is not None else SystemClock()
    stop = stop if stop is not None else threading.Event()
    with stderr_log(clock) as formatter, signals(stop):
        service = Service(settings, clock)
        formatter.office = service.pipeline.card.rules.code
        try:
            _run(service, settings, clock, stdin, stop)
        except Stopped:
            pass
        finally:
            service.close()
            _info(f"服務已停止（{iso(to_us(clock.now()))}）")


def _run(
    service: Service,
    settings: Settings,
    clock: Clock,
    stdin: Iterable[bytes] | None,
    stop: threading.Event,
) -> None:
    result = service.start()
    _info(
        f"服務已啟動（{iso(to_us(clock.now()))}）：資料庫 {settings.database}，"
        f"每 {settings.tick_minutes} 分鐘檢查一次，"
        f"每日提醒於上班日 {service.schedule.lists_hour} 時，"
        f"月報於每月第 {service.schedule.working_day} 個工作日 {service.schedule.hour} 時；"
        f"啟動時寄出 {len(result.sent)} 件"
    )
    if stdin is not None:
        summary = service.ingest_stream(stdin)
        _info(
            f"標準輸入結束：接受 {summary.accepted} 筆，重複 {summary.duplicates} 筆，"
            f"未接受 {summary.rejected} 筆"
        )
    stop.wait()
