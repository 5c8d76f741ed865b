"""``bsc-rules serve``: the HTTP door under uvicorn, beside the service's scheduler.

The service starts as ``bsc-rules run`` starts it (catch-up, then the scheduler); the
door's writer shares the service's lock. On SIGINT/SIGTERM uvicorn stops accepting,
answers the requests in flight (their events committed first), then the writer drains
its queue, the scheduler stops and the database is closed.

Before serving, what the start built (the modules imported, the rules, the state rebuilt
from the log) is frozen out of the garbage collector (:func:`freeze_startup`): a full
collection then walks only what came after, not the ~70,000 objects of the start, and
takes 1-4 ms instead of 15-45 (docs/benchmarks.md, "The batch-of-100 p99").
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from bsc_rules.clock import Clock, SystemClock
from bsc_rules.errors import UsageError
from bsc_rules.http.ack import ack_routes
from bsc_rules.http.app import create_app
from bsc_rules.http.auth import TokenBook
from bsc_rules.http.config import HttpConfig, load_config
from bsc_rules.http.door import Door
from bsc_rules.scheduling.service import LogFormatter, Service
from bsc_rules.scorecard import Scorecard
from bsc_rules.settings import Settings
from bsc_rules.store.dbform import form_of

log = logging.getLogger("bsc_rules.http")


def _ack(settings: Settings, doors: Door | list[Door], clock: Clock) -> list[Route]:
    """The /ack pages, where the office signs acknowledgement links (BSC_RULES_ACK_SECRET)."""
    if settings.ack_secret is None:
        return []
    return ack_routes(doors, settings.ack_secret.get_secret_value().encode(), clock)


@contextmanager
def _logging(clock: Clock) -> Iterator[LogFormatter]:
    """The package's and uvicorn's log lines on standard error, as the service writes
    them (:class:`LogFormatter`: the injected clock's time in +08:00, the level, the
    office once known)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = LogFormatter(clock)
    handler.setFormatter(formatter)
    names = ("bsc_rules", "uvicorn.error")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield formatter
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


@contextmanager
def _quiet_signals() -> Iterator[None]:
    """uvicorn re-raises the stopping signal after its graceful shutdown: let it land here
    (ignored) so that the scheduler and the database are closed after it."""
    if sys.modules["threading"].current_thread() is not sys.modules["threading"].main_thread():
        yield
        return

    def noted(signum: int, frame: FrameType | None) -> None:
        log.info(f"- stopping on signal {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, noted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def tokens_for(config: HttpConfig, served: str | list[str]) -> TokenBook:
    """The tokens of the offices served (others are ignored, with a warning) and the read
    token."""
    codes = [served] if isinstance(served, str) else served
    offices = config.office_tokens()
    for other in sorted(set(offices) - set(codes)):
        log.warning(f"- tokens for office {other!r} ignored: this deployment does not serve it")
    for office in codes:
        if office not in offices:
            log.warning(f"- no token for office {office!r} (BSC_RULES_TOKENS__{office.upper()})")
    read = config.read_token.get_secret_value() if config.read_token is not None else None
    return TokenBook({office: offices.get(office, ()) for office in codes}, read)


def freeze_startup() -> None:
    """Collect the start's garbage, then move every object still alive to the collector's
    permanent generation (:func:`gc.freeze`), which no collection walks again. Those are
    long-lived (modules, the rules, the rebuilt state) and are still freed by reference
    counting; only a reference cycle among them would stay until the process ends."""
    gc.collect()
    gc.freeze()


def _run_uvicorn(app: Starlette, host: str, port: int) -> None:
    """uvicorn on ``host:port`` until SIGINT/SIGTERM; its protocol and loop modules are
    imported before the start is frozen."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    config.load()
    freeze_startup()
    uvicorn.Server(config).run()


def serve_http(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8080,
    clock: Clock | None = None,
    config: HttpConfig | None = None,
    *,
    db: str | None = None,
    offices: Iterable[str] | None = None,
) -> None:
    """Run the service's scheduler and the HTTP door until SIGINT/SIGTERM: over one
    office's SQLite file (``db``, default: the settings' database), or over a directory of
    per-office files or a PostgreSQL URL (:func:`serve_offices`)."""
    clock = clock if clock is not None else SystemClock()
    config = config if config is not None else load_config()
    target = str(db if db is not None else settings.database)
    if form_of(target) != "file":
        serve_offices(settings, target, host, port, clock, config, offices)
        return
    if offices:
        raise UsageError(f"--office: the SQLite file {target} holds one office")
    settings = settings.model_copy(update={"database": Path(target)})
    with _logging(clock) as formatter, _quiet_signals():
        service = Service(settings, clock)
        formatter.office = service.pipeline.rules.code
        try:
            service.start()
            door = Door(
                service.pipeline.card,
                service.lock,  # the service's own lock: ticks and writes never overlap
                config.http.queue,
                lambda: service.scheduler is not None and bool(service.scheduler.running),
            )
            try:
                tokens, ack = tokens_for(config, door.office), _ack(settings, door, clock)
                app = create_app(door, tokens, clock, config.origins(), config.http.rate, ack)
                _run_uvicorn(app, host, port)
            finally:
                door.close()
        finally:
            service.close()
            log.info("- bsc-rules serve stopped")


def serve_offices(
    settings: Settings,
    db: str,
    host: str,
    port: int,
    clock: Clock,
    config: HttpConfig,
    offices: Iterable[str] | None = None,
) -> None:
    """``serve --db DIR|URL``: the offices' scheduling by a :class:`Fleet` (on PostgreSQL,
    this process's share of the offices by the leases, as ``run`` takes them), and a door
    for every office named (all of the deployment's by default): the workflow may post
    any office's events to any process, whichever one holds the office's mail. Each door
    has its own connection, scorecard and lock; the office's holder picks the events up
    (the wake-up, then its cursor)."""
    from bsc_rules.scheduling.fleet import Fleet

    with _logging(clock), _quiet_signals():
        fleet = Fleet(settings, clock, db, offices=offices)
        doors: list[Door] = []
        try:
            fleet.start()
            for code in fleet.codes:
                doors.append(_door(settings, db, code, fleet, config))
            tokens, ack = tokens_for(config, fleet.codes), _ack(settings, doors, clock)
            app = create_app(doors, tokens, clock, config.origins(), config.http.rate, ack)
            where = f"PostgreSQL {doors[0].store.db.where}" if fleet.form == "postgres" else db
            log.info(f"- serving the doors of {len(doors)} offices ({where})")
            _run_uvicorn(app, host, port)
        finally:
            for door in doors:
                door.close()
                door.store.close()
            fleet.close()
            log.info("- bsc-rules serve stopped")


def _door(settings: Settings, db: str, code: str, fleet: Any, config: HttpConfig) -> Door:
    """The door of office ``code`` over its own store and scorecard (opened again after
    a lost connection)."""

    def card() -> Scorecard:  # also when the connection was lost (PostgreSQL restarted)
        return Scorecard.open(db, fleet.deployment.offices[code], settings.matcher)

    running = lambda: fleet.scheduler is not None and bool(fleet.scheduler.running)  # noqa: E731
    return Door(card(), None, config.http.queue, running, reopen=card)
