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
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from bsc_rules.clock import Clock, SystemClock
from bsc_rules.http.ack import ack_routes
from bsc_rules.http.app import create_app
from bsc_rules.http.auth import TokenBook
from bsc_rules.http.config import HttpConfig, load_config
from bsc_rules.http.door import Door
from bsc_rules.scheduling.service import LogFormatter, Service
from bsc_rules.settings import Settings

log = logging.getLogger("bsc_rules.http")


def _ack(settings: Settings, door: Door, clock: Clock) -> list[Route]:
    """The /ack pages, where the office signs acknowledgement links (BSC_RULES_ACK_SECRET)."""
    if settings.ack_secret is None:
        return []
    return ack_routes(door, settings.ack_secret.get_secret_value().encode(), clock)


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


def tokens_for(config: HttpConfig, office: str) -> TokenBook:
    """The deployment's office tokens (others are ignored, with a warning) and the read token."""
    offices = config.office_tokens()
    for other in sorted(set(offices) - {office}):
        log.warning(f"- tokens for office {other!r} ignored: this deployment serves {office!r}")
    if office not in offices:
        log.warning(f"- no token for office {office!r} (BSC_RULES_TOKENS__{office.upper()})")
    read = config.read_token.get_secret_value() if config.read_token is not None else None
    return TokenBook({office: offices.get(office, ())}, read)


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
) -> None:
    """Run the service's scheduler and the HTTP door until SIGINT/SIGTERM."""
    clock = clock if clock is not None else SystemClock()
    config = config if config is not None else load_config()
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
