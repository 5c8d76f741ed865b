"""The door's side of the scorecard: one writer thread, a bounded queue, verdicts.

SQLite has one writer and the scorecard is not thread-safe, so every write goes through
one thread fed by a bounded queue: a full queue is answered 429 at once rather than
waited on. Events are parsed and validated before the queue (:meth:`Door.judge`, in the
request's thread), so the writer only stores. The writer takes one request, then the
lock, then every request already waiting (up to :data:`GROUP_EVENTS` events): they are
stored in one transaction (rejections kept in it too), and only after its commit applied
to the scorecard and answered, each with its own verdicts. Reads hold the same lock as
the writer (the service's lock, shared with the scheduler's ticks).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson

from bsc_rules.errors import StoreError, UsageError
from bsc_rules.events import Event, Rejection, parse_line, parse_object
from bsc_rules.http.binding import Item
from bsc_rules.measures.report import Report
from bsc_rules.scorecard import CONFLICT, Scorecard
from bsc_rules.store.db import MIGRATIONS, transaction
from bsc_rules.store.sqlconn import Db
from bsc_rules.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from bsc_rules.store.postgres import PostgresStore

log = logging.getLogger("bsc_rules.http")
T = TypeVar("T")
ORIGIN = "http"
CODES = {"accepted": 201, "duplicate": 200, "conflict": 409, "rejected": 400, "forbidden": 403}


#: Events a writer's transaction takes at most when it groups waiting requests.
GROUP_EVENTS = 2000


class Busy(Exception):
    """The ingest queue is full: answer 429."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on one event of a request."""

    status: str  # accepted, duplicate, conflict, rejected, forbidden
    id: str | None
    source: str | None
    error: str | None = None
    field: str | None = None

    @property
    def code(self) -> int:
        return CODES[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "status": self.code, "error": self.error}


#: An event to store, a rejection to keep, or a verdict already reached (403).
Judged = Event | Rejection | Outcome
#: A request waiting for the writer: its judged events and the answer to give.
Job = tuple[list[Judged], "Future[list[Outcome]]"]


def by_office(doors: Door | Iterable[Door]) -> dict[str, Door]:
    """One door, or several (one per office), by office code."""
    listed = [doors] if isinstance(doors, Door) else list(doors)
    return {door.office: door for door in listed}


class Door:
    """Ingest and read one office's scorecard on behalf of HTTP requests."""

    def __init__(
        self,
        card: Scorecard,
        lock: AbstractContextManager[Any] | None = None,
        queue_size: int = 64,
        scheduler_running: Callable[[], bool] = lambda: True,
        reopen: Callable[[], Scorecard] | None = None,
    ) -> None:
        store = card.store
        if not isinstance(getattr(store, "db", None), Db):  # a SQLite file or PostgreSQL
            msg = "the HTTP door needs a scorecard over a SQLite or PostgreSQL event log"
            raise UsageError(msg)
        self.card = card
        self.store = cast("SQLiteStore | PostgresStore", store)
        self.office = card.rules.code
        self.lock: AbstractContextManager[Any] = lock if lock is not None else threading.RLock()
        self.scheduler_running = scheduler_running
        self._reopen = reopen
        self.counts: Counter[str] = Counter()
        self.writes = Counter[str]()  # requests and transactions of the writer
        self._jobs: queue.Queue[Job | None] = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._write_loop, name="bsc-http-writer")
        self._thread.start()

    # ------------------------------------------------------------ the writer

    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self.lock:  # the lock first: while it waits, later requests keep queueing
                group, stop = self._group(job)
                self._write(group)
            if stop:
                return

    def _group(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` and the requests already waiting (up to :data:`GROUP_EVENTS` events):
        one transaction for them all. True when the stop mark was met."""
        group, events = [first], len(first[0])
        while events < GROUP_EVENTS:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return group, True
            group.append(job)
            events += len(job[0])
        return group, False

    def _write(self, group: list[Job]) -> None:
        """Store the group in one transaction; answer each request after the commit."""
        live = [(judged, f) for judged, f in group if f.set_running_or_notify_cancel()]
        self.writes.update(requests=len(live), transactions=1)
        try:
            results = self._again_if_lost(lambda: self.store_judged([j for j, _ in live]))
        except BaseException as exc:
            for _, future in live:
                future.set_exception(exc)
            return
        for (_, future), outcomes in zip(live, results, strict=True):
            future.set_result(outcomes)

    def submit(self, judged: list[Judged]) -> Future[list[Outcome]]:
        """Queue a request's judged events for the writer; :class:`Busy` when the queue is
        full."""
        future: Future[list[Outcome]] = Future()
        try:
            self._jobs.put_nowait((judged, future))
        except queue.Full:
            raise Busy from None
        return future

    def busy(self) -> bool:
        """True when the queue is full (a new request would be refused)."""
        return self._jobs.full()

    def close(self) -> None:
        """Let the writer finish what is queued, then stop it."""
        self._jobs.put(None)
        self._thread.join()
        w = self.writes
        log.info(f"- writer: {w['requests']} requests in {w['transactions']} transactions")

    # ------------------------------------------------------------ a lost connection

    def heal(self) -> None:
        """Where the door can reopen its scorecard (``reopen``) and the connection was
        lost: the scorecard opened again on a new connection, its state rebuilt from the
        log (the caller holds the lock). A :class:`StoreError` while the server is away."""
        if self._reopen is None or not self.store.db.lost:
            return
        card = self._reopen()
        old, self.card = self.store, card
        self.store = cast("SQLiteStore | PostgresStore", card.store)
        try:
            old.close()
        except Exception as exc:  # already broken: nothing of it is needed
            log.debug(f"{self.office} closing the lost connection: {exc}")
        log.info(f"{self.office} database connection opened again")

    def _again_if_lost(self, work: Callable[[], T]) -> T:
        """``work()`` on a healed connection; once more on a new one if the connection
        was lost meanwhile (the server restarted since the last request: the failed
        transaction was rolled back, and storing is idempotent)."""
        self.heal()
        try:
            return work()
        except StoreError:
            if self._reopen is None or not self.store.db.lost:
                raise
        self.heal()
        return work()

    # ------------------------------------------------------------ ingest

    def judge(self, items: list[Item], office: str, batch: bool = False) -> list[Judged]:
        """Parse and validate a request's events (any thread: reads nothing shared).

        A batch's rejections name their element (``line N``: the N-th of the array)."""
        return [
            self._judge(item, number if batch else None, office)
            for number, item in enumerate(items, 1)
        ]

    def store_judged(self, requests: list[list[Judged]]) -> list[list[Outcome]]:
        """Requests' judged events in one transaction, then applied to the scorecard (the
        caller holds the lock). Nothing is stored when the transaction fails."""
        before = self.store.own_writes()
        try:
            with self._transaction():
                results = [self._store(judged) for judged in requests]
        finally:  # inside our transaction the store cannot know the commit: applied below
            for seq in self.store.own_writes() - before:  # from the log, once committed
                self.store.take_own(seq)
        self.card.refresh()
        for outcomes in results:
            self.counts.update(o.status for o in outcomes)
        return results

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction of the log (SQLite's ``BEGIN IMMEDIATE``, or PostgreSQL's: the
        store's own statements join it); a database error becomes a StoreError."""
        store = self.store
        if isinstance(store, SQLiteStore):
            with transaction(store.connection, store.path):
                yield
            return
        import psycopg

        try:
            with store.connection.transaction():
                yield
        except psycopg.Error as exc:
            raise StoreError(f"cannot write to {store.where}: {str(exc).strip()}") from exc

    def _store(self, judged: list[Judged]) -> list[Outcome]:
        for j in judged:
            if isinstance(j, Rejection):
                self.store.reject(j, ORIGIN)
        valid = [j for j in judged if isinstance(j, Event)]
        verdicts = iter(self.store.append_batch(valid) if valid else [])
        return [self._outcome(j, verdicts) for j in judged]

    def _outcome(self, judged: Judged, verdicts: Iterator[str]) -> Outcome:
        if isinstance(judged, Outcome):
            return judged
        if isinstance(judged, Rejection):
            return Outcome("rejected", judged.event_id, judged.source, str(judged), judged.field)
        verdict = next(verdicts)
        if verdict == "conflict":
            rejection = Rejection(
                CONFLICT, field="id", event_id=judged.id, source=judged.source, raw=judged.body
            )
            self.store.reject(rejection, ORIGIN)
            return Outcome("conflict", judged.id, judged.source, str(rejection), "id")
        return Outcome(verdict, judged.id, judged.source)

    def _judge(self, item: Item, number: int | None, office: str) -> Judged:
        """An event to store, a rejection to keep, or a 403 (another office: nothing kept)."""
        parsed = _parse(item, number)
        claimed = parsed.office if isinstance(parsed, Event) else _claimed(item, parsed)
        if claimed is not None and claimed != office:
            error = f"office: this token posts only {office!r}'s events, got {claimed!r}"
            ident = parsed.id if isinstance(parsed, Event) else parsed.event_id
            return Outcome("forbidden", ident, parsed.source, error, "office")
        if isinstance(parsed, Event) and office != self.office:
            message = f"expected {self.office!r} (this deployment's office), got {office!r}"
            return Rejection(message, "office", number, parsed.id, parsed.source, parsed.body)
        return parsed

    # ------------------------------------------------------------ reading

    @contextmanager
    def reading(self) -> Iterator[Scorecard]:
        """The scorecard, current with what other processes wrote, under the lock."""
        with self.lock:
            self._again_if_lost(lambda: self.card.refresh())
            yield self.card

    def report(self, as_of_us: int, year: int | None = None) -> Report:
        with self.reading() as card:
            return card.report_at(as_of_us, year)

    def ready(self) -> str | None:
        """None when ready, else why not (database, schema, scheduler)."""
        try:
            with self.lock:
                self.heal()
                db = self.store.db
                found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except (sqlite3.Error, StoreError) as exc:
            return f"database: cannot be read ({exc})"
        expected = len(MIGRATIONS[db.engine])
        if found is None or str(found[0]) != str(expected):
            return f"database: schema {found[0] if found else None}, expected {expected}"
        return None if self.scheduler_running() else "scheduler: not running"


def _parse(item: Item, number: int | None) -> Event | Rejection:
    if item.raw is not None:
        return parse_line(item.raw, number)
    if item.binary_problem is not None:
        obj = item.obj if isinstance(item.obj, dict) else {}
        raw = orjson.dumps(obj, default=str)
        ident, source = obj.get("id"), obj.get("source")
        return Rejection(item.binary_problem, "data", number, ident, source, raw)
    return parse_object(item.obj, line=number)


def _claimed(item: Item, rejection: Rejection) -> str | None:
    """The office a rejected event names, if it names one as text."""
    obj = item.obj
    if obj is None:
        try:
            obj = orjson.loads(rejection.raw)
        except orjson.JSONDecodeError:
            return None
    office = obj.get("office") if isinstance(obj, dict) else None
    return office if isinstance(office, str) else None
