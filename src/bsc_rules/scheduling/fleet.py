"""Many offices in one process: ``bsc-rules run --db DIR`` and ``--db postgresql://…``.

A :class:`Fleet` runs one :class:`~.service.Service` per office it serves, under one
scheduler (every tick, and every hour at which one of its offices sends a morning mail
or a digest), each office's mail decided and delivered as its own service would.

- **A directory** (``DIR/<office>.db``): one process serves every office of the
  deployment (or those named); each office's file is locked as a one-office service
  locks it, so a second service on the directory refuses to start, naming the holder.
- **PostgreSQL**: any number of processes share the offices. Which office each serves is
  decided by the leases of :mod:`bsc_rules.store.lease`: an office gained opens its
  service (the state rebuilt from the office's log, mail left pending resent with the
  same Message-ID), an office lost closes it. Every write of the office's service (alerts,
  mail queued, a sending recorded, a run) commits only inside a transaction that checks
  the lease's epoch first (:attr:`~bsc_rules.store.sqlconn.Db.fence`), so a service that
  lost an office commits nothing more in its name. New events are picked up when
  PostgreSQL notifies them (:class:`~bsc_rules.store.lease.Wakeups`), and at every tick.

**The city's digest** (service.md, "Deployments and --db"): where the rule folder
describes a city and the fleet serves every office, :class:`CityDesk` sends the city's
monthly digest once, when every office's digest of the month is due (the latest of
their digest instants), from its own outbox and runs (``DIR/_city.db``, or the office
``_city`` of the PostgreSQL tables, held by a lease like an office).

The lease loop and the wake-ups run on threads of their own and never wait for a tick;
opening and closing services runs on a third (:meth:`Fleet._keep`), so that rebuilding an
office's state never delays the renewal of the others' leases. The lease loop and the
wake-ups connect again by themselves after the server restarts; an office's service does
not (its connection is shared by its tables and transactions): the keeper opens again, at
least every renew interval, each office held whose connection was lost or whose opening
failed (:meth:`Fleet.heal`).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bsc_rules.alerts.pipeline import Pipeline
from bsc_rules.calendar import iso, roc_year, to_us
from bsc_rules.clock import Clock
from bsc_rules.errors import UsageError
from bsc_rules.notify.city import city_mail
from bsc_rules.notify.mailer import Mailer
from bsc_rules.notify.outbox import Outbox
from bsc_rules.privacy import mask_text
from bsc_rules.rules.offices import Deployment, load_deployment
from bsc_rules.scheduling.schedule import deliver, digest_instant, previous_month
from bsc_rules.scheduling.service import Service, mailer_for, scheduler_for
from bsc_rules.settings import Settings
from bsc_rules.store.dbform import create_offices, form_of
from bsc_rules.store.runs import Runs
from bsc_rules.store.sqlconn import Db

__all__ = ["CITY", "CityDesk", "Fleet", "city_instant", "serve_fleet"]

log = logging.getLogger(__name__)

CITY = "_city"
"""The lease, outbox and runs of the city's digest (never an office code: ``_`` starts
only a database's own names)."""


def _info(message: str, office: str = "-") -> None:
    log.info(mask_text(message), extra={"office": office})


def _warn(message: str, office: str = "-") -> None:
    log.warning(mask_text(message), extra={"office": office})


# ---------------------------------------------------------------- the city's digest


def city_instant(deployment: Deployment, year: int, month: int) -> int:
    """When the city's digest of (year, month) is due: the latest of its offices' digest
    instants of that month (each office's working day and hour, in its calendar)."""
    return max(
        digest_instant(year, month, r.calendar, r.office.digest.working_day, r.office.digest.hour)
        for r in deployment.offices.values()
    )


class CityDesk:
    """The city's monthly digest, queued and delivered once per month (its own outbox)."""

    JOB = "city-digest"

    def __init__(self, deployment: Deployment, db: str, settings: Settings, mailer: Mailer) -> None:
        if deployment.city is None:
            raise UsageError(f"{deployment.directory / 'deployment.yaml'}: no city described")
        self.deployment, self.source, self.settings, self.mailer = (
            deployment,
            db,
            settings,
            mailer,
        )
        if form_of(db) == "postgres":
            from bsc_rules.store.postgres import connect

            self.db = Db(connect(db), CITY)
        else:
            from bsc_rules.store.db import open_database

            self.db = Db(open_database(Path(db) / f"{CITY}.db"))
        self.outbox, self.runs = Outbox(self.db), Runs(self.db)

    def owed(self, start: int, now: int) -> list[tuple[int, int]]:
        """The months whose city digest fell due in ``[start, now]`` and is not sent."""
        months: list[tuple[int, int]] = []
        year, month = previous_month(start)
        while (instant := city_instant(self.deployment, year, month)) <= now:
            if instant >= start and not self.runs.done(self.JOB, f"{year}-{month:02d}"):
                months.append((year, month))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return months

    def tick(self, now: int) -> tuple[list[str], list[str]]:
        """Queue each digest owed (from the first start on), then deliver the city's
        outbox; the Message-IDs queued and sent."""
        start = self.runs.record_once("service", "started", now)
        queued = []
        for year, month in self.owed(start, now):
            s = self.settings
            mail = city_mail(self.deployment, self.source, year, month, sender=s.sender,
                             now=now, matcher=s.matcher, templates=s.templates)  # fmt: skip
            with self.db.transaction():
                self.outbox.enqueue(mail, kind="city", now_us=now)
                self.runs.record(self.JOB, f"{year}-{month:02d}", now)
            queued.append(mail.message_id)
            _info(f"市府月報已排入寄送：{roc_year(year)}年{month}月", CITY)
        sent, parked = deliver(self.outbox, self.mailer, now)
        for message_id in parked:
            _warn(f"郵件無法投遞，已擱置：{message_id}", CITY)
        return queued, sent

    def close(self) -> None:
        self.db.connection.close()


# ---------------------------------------------------------------- the fleet


def holder_name(clock: Clock) -> str:
    """This process as a lease holder: ``host:pid:start`` (start in µs, the clock's)."""
    return f"{socket.gethostname()}:{os.getpid()}:{to_us(clock.now())}"


class Fleet:
    """The services of a multi-office database's offices in this process (see the module)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        db: str,
        *,
        mailer: Mailer | None = None,
        offices: Iterable[str] | None = None,
        holder: str | None = None,
    ) -> None:
        self.settings, self.clock, self.db = settings, clock, str(db)
        self.form = form_of(self.db)
        if self.form == "file":
            raise UsageError(f"--db {db}: one office's file is served by a one-office service")
        self.deployment = load_deployment(settings.rules)
        ordered = self.deployment.ordered()
        named = list(dict.fromkeys(offices)) if offices else ordered
        unknown = sorted(set(named) - set(ordered))
        if unknown:
            msg = f"--office {', '.join(unknown)}: not in the deployment ({', '.join(ordered)})"
            raise UsageError(msg)
        self.codes = named
        self.mailer = mailer if mailer is not None else mailer_for(settings)
        self.services: dict[str, Service] = {}
        self._lock = threading.Lock()  # guards services and city
        self._stop = threading.Event()
        self._changes: queue.Queue[Any] = queue.Queue()
        self._epochs: dict[str, int] = {}  # what the keeper was told it holds (PostgreSQL)
        self._threads: list[threading.Thread] = []
        self.scheduler: Any = None
        self.city: CityDesk | None = None
        self._city_wanted = self.deployment.city is not None and set(named) == set(ordered)
        self.leases: Any = None
        self.wakeups: Any = None
        if self.form == "postgres":
            from bsc_rules.store import lease

            units = [*self.codes, *([CITY] if self._city_wanted else [])]
            ttl, renew = settings.lease_ttl_seconds, settings.lease_renew_seconds
            name = holder or holder_name(clock)
            self.leases = lease.Leases(self.db, name, units, ttl=ttl, renew_every=renew)

    # ------------------------------------------------------------ which offices

    def held(self) -> list[str]:
        """The offices this process serves now, in the city's order."""
        with self._lock:
            return [code for code in self.codes if code in self.services]

    def service(self, office: str) -> Service | None:
        with self._lock:
            return self.services.get(office)

    def _open(self, office: str, epoch: int | None) -> None:
        """Open ``office``'s service (its state rebuilt), fenced at ``epoch`` on
        PostgreSQL, and catch it up; one already open (an earlier epoch) is closed first."""
        self._close(office)
        now = to_us(self.clock.now())
        if self.form == "directory":
            settings = self.settings.model_copy(update={"database": Path(self.db) / f"{office}.db"})
            service = Service(settings, self.clock, self.mailer, office=office)
        else:
            from bsc_rules.alerts.pipeline import open_pipeline

            pipeline = open_pipeline(self.settings, self.db, office=office)
            pipeline.db.fence = _fence(office, epoch)
            service = _ServiceOf(pipeline, self.settings, self.clock, self.mailer)
        with self._lock:
            self.services[office] = service
        result = service.catch_up(now)
        held = "" if epoch is None else f"（租約第 {epoch} 代）"
        _info(f"開始服務本所{held}：補寄 {len(result.sent)} 件", office)

    def _close(self, office: str) -> None:
        with self._lock:
            service = self.services.pop(office, None)
        if service is not None:
            service.close()
            _info("停止服務本所", office)

    def _open_city(self, epoch: int | None) -> None:
        self._close_city()
        city = CityDesk(self.deployment, self.db, self.settings, self.mailer)
        if epoch is not None:
            city.db.fence = _fence(CITY, epoch)
        with self._lock:
            self.city = city

    def _close_city(self) -> None:
        with self._lock:
            city, self.city = self.city, None
        if city is not None:
            city.close()

    def changed(self, change: Any) -> None:
        """The lease loop's news (offices gained and lost), handled on the keeper thread."""
        self._changes.put(change)

    def apply(self, change: Any) -> None:
        """Close the services of the offices lost, open those gained (at their epoch)."""
        for office in sorted(change.lost):
            self._epochs.pop(office, None)
            if office == CITY:
                self._close_city()
            else:
                self._close(office)
        for office, epoch in sorted(change.gained.items()):
            self._epochs[office] = epoch
            try:
                self._open_unit(office, epoch)
            except Exception as exc:  # unserved until :meth:`heal` opens it again
                _warn(f"無法開始服務本所：{type(exc).__name__}: {exc}", office)

    def _open_unit(self, office: str, epoch: int) -> None:
        if office == CITY:
            self._open_city(epoch)
        else:
            self._open(office, epoch)

    def heal(self) -> None:
        """Open again, at the epoch it is held under, every office (and the city) whose
        opening failed or whose connection to the database was lost (the server restarted:
        a connection is never made again in place). The state is rebuilt from the log, and
        mail whose sending could not be recorded is resent with the same Message-ID."""
        for office, epoch in sorted(self._epochs.items()):
            db = self._db_of(office)
            if db is not None and not db.lost:
                continue
            if db is not None:
                _warn("資料庫連線中斷，重新開始服務本所", office)
            try:
                self._open_unit(office, epoch)
            except Exception as exc:  # the database still away: tried again at the next turn
                _warn(f"無法開始服務本所（稍後重試）：{type(exc).__name__}: {exc}", office)

    def _db_of(self, office: str) -> Db | None:
        """The database of ``office``'s service (or the city's desk), if it is open."""
        with self._lock:
            if office == CITY:
                return None if self.city is None else self.city.db
            service = self.services.get(office)
        return None if service is None else service.pipeline.db

    def _keep(self) -> None:
        """The keeper thread: the lease loop's changes as they come and, at least every
        renew interval, :meth:`heal`."""
        every = self.settings.lease_renew_seconds
        while True:
            try:
                change = self._changes.get(timeout=every)
            except queue.Empty:
                change = False
            if change is None:
                return
            if change:
                self.apply(change)
            self.heal()

    def _listen(self) -> None:
        from bsc_rules.store.lease import EVERY

        while not self._stop.is_set():
            try:
                offices = self.wakeups.wait(1.0)
            except Exception as exc:  # the server away: the next tick picks up
                _warn(f"事件通知中斷：{exc}")
                if self._stop.wait(1.0):
                    return
                continue
            for office in self.held() if EVERY in offices else offices:
                service = self.service(office)
                if service is not None:
                    try:
                        service.pick_up()
                    except Exception as exc:
                        _warn(f"新事件讀取失敗（下次排程將重試）：{exc}", office)

    # ------------------------------------------------------------ runs

    def start(self, *, background: bool = True) -> None:
        """Open the offices served (a directory: all at once; PostgreSQL: the lease loop,
        whose first tick takes this process's share, and the wake-ups), then schedule the
        ticks. With
        ``background`` false, only the offices are opened: the caller ticks the leases
        (``fleet.apply(fleet.leases.tick())``) and the offices (:meth:`tick`)."""
        if self.form == "directory":
            create_offices(self.db, self.codes)
            for office in self.codes:
                self._open(office, None)
            if self._city_wanted:
                self._open_city(None)
            if not background:
                return
        else:
            from bsc_rules.store.lease import Wakeups

            if not background:
                self.apply(self.leases.tick())
                return
            self.wakeups = Wakeups(self.db)
            self._spawn(self._keep, "keeper")  # the lease loop's first tick comes at once
            self._spawn(lambda: self.leases.run(self._stop, on_change=self.changed), "leases")
            self._spawn(self._listen, "wakeups")
        hours = {
            h
            for r in self.deployment.offices.values()
            for h in (r.office.digest.hour, r.office.lists.hour)
        }
        self.scheduler = scheduler_for(self.scheduled, self.settings.tick_minutes, hours)
        self.scheduler.start()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=f"bsc-rules-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def tick(self, now: int) -> None:
        """Every office served, then the city: what its own service does at ``now``."""
        with self._lock:
            services = list(self.services.values())
            city = self.city
        for service in services:
            service.tick(now)
        if city is not None:
            city.tick(now)

    def scheduled(self) -> None:
        """The scheduler's job: each office's tick (errors logged office by office)."""
        with self._lock:
            services = list(self.services.items())
            city = self.city
        for office, service in services:
            try:
                result = service.tick(to_us(self.clock.now()))
            except Exception as exc:
                _warn(f"排程執行失敗（下次排程將重試）：{type(exc).__name__}: {exc}", office)
                continue
            if result.queued or result.sent:
                _info(
                    f"排程執行：新通知 {len(result.queued)} 件，寄出 {len(result.sent)} 件", office
                )
        if city is not None:
            try:
                city.tick(to_us(self.clock.now()))
            except Exception as exc:
                _warn(f"市府月報排程失敗（下次排程將重試）：{type(exc).__name__}: {exc}", CITY)

    def close(self) -> None:
        """Stop the scheduler, release the leases (the offices pass to others at once),
        close every service."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        self._stop.set()
        self._changes.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        for office in list(self.services):
            self._close(office)
        self._close_city()
        if self.wakeups is not None:
            self.wakeups.close()
        if self.leases is not None:
            self.leases.release()
            self.leases.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fence(office: str, epoch: int | None) -> Any:
    """The check every write transaction of ``office`` runs first (None: no lease)."""
    if epoch is None:
        return None
    from bsc_rules.store.lease import assert_current

    def fence(db: Db) -> None:
        assert_current(db, office, epoch)

    return fence


class _ServiceOf(Service):
    """A service over a pipeline opened (and fenced) by the fleet, which it closes."""

    def __init__(
        self, pipeline: Pipeline, settings: Settings, clock: Clock, mailer: Mailer
    ) -> None:
        super().__init__(settings, clock, mailer, pipeline, exclusive=False)
        self._owned = True


def serve_fleet(
    settings: Settings,
    db: str,
    clock: Clock | None = None,
    stop: threading.Event | None = None,
    offices: Iterable[str] | None = None,
) -> None:
    """``bsc-rules run --db DIR|URL``: start the fleet, run until stopped (``stop`` set,
    SIGINT or SIGTERM), then release the leases and close (see :class:`Fleet`)."""
    from bsc_rules.clock import SystemClock
    from bsc_rules.scheduling.service import Stopped, signals, stderr_log

    clock = clock if clock is not None else SystemClock()
    stop = stop if stop is not None else threading.Event()
    with stderr_log(clock), signals(stop):
        fleet = Fleet(settings, clock, db, offices=offices)
        try:
            fleet.start()
            where = "PostgreSQL" if fleet.form == "postgres" else f"目錄 {fleet.db}"
            held = "、".join(fleet.held()) or "尚無，等待租約"
            _info(f"多戶所服務已啟動（{iso(to_us(clock.now()))}）：{where}，本程序服務：{held}")
            stop.wait()
        except Stopped:
            pass
        finally:
            fleet.close()
            _info(f"服務已停止（{iso(to_us(clock.now()))}）")
