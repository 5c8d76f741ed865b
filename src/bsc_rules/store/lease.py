"""Leases: services sharing the offices of one PostgreSQL database (spec/service.md).

Each office has a row in ``leases`` (``holder``, ``epoch``, ``expires_at``; migration 5,
:data:`.pg_schema.LEASES`). A service holds an office while its row names it; every
takeover (of a free office, or of one whose ``expires_at`` has passed) adds one to
``epoch``. Expiry is judged by the database's clock alone (``now()``): this module reads
no clock, and its renew loop waits through an injected function.

One :meth:`Leases.tick` (every ``renew_every``, 5 s by default) is one transaction:

1. the service's heartbeat in ``lease_holders`` (expires like a lease); heartbeats
   expired are deleted, and the live services are those with an unexpired heartbeat;
2. renew: every office still held *at the epoch we took it* gets ``now() + ttl``;
   an office whose epoch moved on is lost (another service took it over);
3. spread: a service holds at most ``ceil(offices / live services)``; it releases the
   extra ones (the last in code order) or takes free or expired ones up to that share
   (rows another transaction has locked are skipped, so a takeover never waits).

A new service thus gets its share within two ticks of the others' (they release at their
next tick, it takes at its next one), and a killed service's offices are taken over within
``ttl + renew_every`` (20 + 5 s by default). :meth:`Leases.release` (SIGTERM, a clean stop:
:meth:`Leases.run` does it on the way out) frees the offices and the heartbeat at once.

**Fencing.** ``held()`` is what the last tick saw; the truth is the row. A send recorded,
a scheduled job's result committed, or any other write made in an office's name is
committed only inside a transaction that first ran :func:`assert_current` (or
:meth:`Leases.fence`) on the same connection: it locks the lease row ``FOR SHARE``, so no
takeover can commit until that transaction ends, and raises :class:`LeaseLost` if the
epoch is no longer the one given; the transaction then rolls back and nothing of the
stale holder is committed. (Use one office per transaction: renewals wait for the lock.)

**Wake-ups.** New events are signalled by ``NOTIFY bsc_rules_events, '<office>'``
(:func:`notify`, inside the ingest transaction: delivered at its commit, not at all on a
rollback) and awaited by :class:`Wakeups`. A notification is only a wake-up: the durable
per-office cursor is the event log itself, ``events.seq`` of the office, read in order
after the last seq applied (``rows_after``; the office's writers take turns, so no row is
ever skipped). A missed notification (a reconnect) only delays a refresh to the next
timeout, and a successor replays the office from its log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bsc_rules.errors import StoreError, UsageError
from bsc_rules.store import pg_schema
from bsc_rules.store.postgres import connect, describe
from bsc_rules.store.sqlconn import Db

TTL = 20.0
RENEW_EVERY = 5.0
CHANNEL = pg_schema.EVENTS_CHANNEL
EVERY = "*"
"""What :meth:`Wakeups.wait` returns after a reconnect: notifications may have been
missed, refresh every office."""

log = logging.getLogger(__name__)

_REGISTER = (
    "INSERT INTO leases (office) SELECT unnest(%(offices)s::text[]) ON CONFLICT (office) DO NOTHING"
)
_HEARTBEAT = (
    "INSERT INTO lease_holders (holder, expires_at)"
    " VALUES (%(holder)s, now() + %(ttl)s * interval '1 second')"
    " ON CONFLICT (holder) DO UPDATE SET expires_at = EXCLUDED.expires_at"
)
# Skipping rows another tick has locked: two ticks never wait for each other.
_FORGET_DEAD = (
    "DELETE FROM lease_holders WHERE holder IN (SELECT holder FROM lease_holders"
    " WHERE expires_at <= now() FOR UPDATE SKIP LOCKED)"
)
_LIVE = "SELECT count(*) FROM lease_holders WHERE expires_at > now()"
_OURS = (
    " FROM unnest(%(offices)s::text[], %(epochs)s::bigint[]) AS h (office, epoch)"
    " WHERE l.office = h.office AND l.epoch = h.epoch AND l.holder = %(holder)s"
)
_RENEW = (
    "UPDATE leases AS l SET expires_at = now() + %(ttl)s * interval '1 second'"
    + _OURS
    + " RETURNING l.office, l.epoch"
)
_RELEASE = (
    "UPDATE leases AS l SET holder = NULL, expires_at = now()" + _OURS + " RETURNING l.office"
)
_TAKE = (
    "UPDATE leases AS l SET holder = %(holder)s, epoch = l.epoch + 1,"
    " expires_at = now() + %(ttl)s * interval '1 second'"
    " WHERE l.office IN (SELECT office FROM leases WHERE office = ANY (%(offices)s::text[])"
    "  AND (holder IS NULL OR expires_at <= now())"
    "  ORDER BY office LIMIT %(wanted)s FOR UPDATE SKIP LOCKED)"
    " RETURNING l.office, l.epoch"
)
_LEAVE = "DELETE FROM lease_holders WHERE holder = %(holder)s"
_FENCE = "SELECT holder, epoch FROM leases WHERE office = %s FOR SHARE"


class LeaseLost(StoreError):
    """The office's lease is no longer at the epoch the write was made under."""


@dataclass(frozen=True, slots=True)
class Change:
    """What a tick changed: offices gained (with their new epoch) and lost (taken over by
    another service, or released as more than this service's share)."""

    gained: dict[str, int] = field(default_factory=dict)
    lost: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.gained or self.lost)


def _pg(conn: psycopg.Connection[Any] | Db) -> psycopg.Connection[Any]:
    raw = conn.connection if isinstance(conn, Db) else conn
    if not isinstance(raw, psycopg.Connection):
        raise UsageError("leases live in a PostgreSQL database: a psycopg connection is needed")
    return raw


def assert_current(conn: psycopg.Connection[Any] | Db, office: str, epoch: int) -> None:
    """Inside the caller's open transaction on ``conn``: lock ``office``'s lease row
    ``FOR SHARE`` (no takeover commits until this transaction ends) and raise
    :class:`LeaseLost` unless its epoch is still ``epoch``."""
    raw = _pg(conn)
    if raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        msg = f"office {office!r}: the lease check belongs inside the write's transaction"
        raise UsageError(msg)
    try:
        row = raw.execute(_FENCE, (office,)).fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"office {office!r}: cannot check its lease: {exc}") from exc
    if row is None or int(row[1]) != epoch:
        now = "no lease row" if row is None else f"epoch {row[1]}, holder {row[0]!r}"
        msg = f"office {office!r}: lease epoch {epoch} is over ({now}); nothing is committed"
        raise LeaseLost(msg)


class Leases:
    """This service's leases on ``offices`` of the database at ``db_url``."""

    def __init__(
        self,
        db_url: str,
        holder: str,
        offices: Iterable[str],
        *,
        ttl: float = TTL,
        renew_every: float = RENEW_EVERY,
    ) -> None:
        """``holder`` names this service uniquely (e.g. ``host:pid:start``); ``offices``
        are the deployment's. The rows of the offices are created if absent; nothing is
        taken until :meth:`tick`."""
        self.url, self.holder = db_url, holder
        self.offices = tuple(sorted(set(offices)))
        if not self.offices:
            raise UsageError("leases need at least one office")
        if not 0 < renew_every < ttl:
            raise UsageError(f"leases: renew every {renew_every:g} s, within the ttl {ttl:g} s")
        self.ttl, self.renew_every = ttl, renew_every
        self.where = describe(db_url)
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._errors():
            self._connection().execute(_REGISTER, {"offices": list(self.offices)})

    def held(self) -> dict[str, int]:
        """The offices held at the last tick, with their epochs."""
        with self._lock:
            return dict(self._held)

    def fence(self, conn: psycopg.Connection[Any] | Db, office: str) -> int:
        """:func:`assert_current` at the epoch of the last tick; the epoch. Work begun under
        an earlier epoch (the office lost and taken again meanwhile) should rather check
        the epoch it began under (``Change.gained``) with :func:`assert_current`."""
        epoch = self.held().get(office)
        if epoch is None:
            raise LeaseLost(f"office {office!r}: not held by {self.holder}; nothing is committed")
        assert_current(conn, office, epoch)
        return epoch

    def tick(self) -> Change:
        """Heartbeat, renew, then release or take to this service's share (one transaction)."""
        before = self.held()
        with self._errors():
            conn = self._connection()
            with conn.transaction():
                live = self._heartbeat(conn)
                held = self._renew(conn, before)
                share = -(-len(self.offices) // live)
                if len(held) > share:
                    self._let_go(conn, {o: held.pop(o) for o in sorted(held)[share:]})
                elif len(held) < share:
                    held.update(self._take(conn, share - len(held)))
        with self._lock:
            self._held = held
        gained = {o: e for o, e in held.items() if before.get(o) != e}
        return Change(gained, frozenset(o for o in before if held.get(o) != before[o]))

    def release(self) -> None:
        """Free every office held and the heartbeat, at once (a clean stop)."""
        held = self.held()
        with self._errors():
            conn = self._connection()
            with conn.transaction():
                self._let_go(conn, held)
                conn.execute(_LEAVE, {"holder": self.holder})
        with self._lock:
            self._held = {}

    def run(
        self,
        stop: threading.Event,
        *,
        wait: Callable[[float], bool] | None = None,
        on_change: Callable[[Change], None] | None = None,
    ) -> None:
        """Tick every ``renew_every`` until ``stop`` is set, then release. ``wait(seconds)``
        pauses between ticks and returns true to stop (default ``stop.wait``); a tick that
        fails (the database unreachable) is logged and retried at the next one."""
        pause = stop.wait if wait is None else wait
        try:
            while not stop.is_set():
                try:
                    change = self.tick()
                except StoreError as exc:
                    log.warning("leases of %s: %s", self.holder, exc)
                else:
                    if change and on_change is not None:
                        on_change(change)
                if pause(self.renew_every):
                    break
        finally:
            self._release_quietly()

    def close(self) -> None:
        """Close the connection (the leases stay until they expire: see :meth:`release`)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------ the statements

    def _heartbeat(self, conn: psycopg.Connection[Any]) -> int:
        conn.execute(_HEARTBEAT, {"holder": self.holder, "ttl": self.ttl})
        conn.execute(_FORGET_DEAD)
        row = conn.execute(_LIVE).fetchone()
        return max(1, int(row[0]) if row else 1)

    def _ours(self, held: dict[str, int]) -> dict[str, Any]:
        offices = sorted(held)
        return {
            "holder": self.holder,
            "ttl": self.ttl,
            "offices": offices,
            "epochs": [held[o] for o in offices],
        }

    def _renew(self, conn: psycopg.Connection[Any], held: dict[str, int]) -> dict[str, int]:
        if not held:
            return {}
        rows = conn.execute(_RENEW, self._ours(held)).fetchall()
        return {str(office): int(epoch) for office, epoch in rows}

    def _let_go(self, conn: psycopg.Connection[Any], held: dict[str, int]) -> None:
        if held:
            conn.execute(_RELEASE, self._ours(held))

    def _take(self, conn: psycopg.Connection[Any], wanted: int) -> dict[str, int]:
        params = {
            "holder": self.holder,
            "ttl": self.ttl,
            "offices": list(self.offices),
            "wanted": wanted,
        }
        rows = conn.execute(_TAKE, params).fetchall()
        return {str(office): int(epoch) for office, epoch in rows}

    # ------------------------------------------------------------ the connection

    def _connection(self) -> psycopg.Connection[Any]:
        """The connection, opened again after it broke (a database restart)."""
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self.close()
        if self._conn is None:
            self._conn = connect(self.url)
        return self._conn

    def _release_quietly(self) -> None:
        try:
            self.release()
        except StoreError as exc:  # the leases expire by themselves
            log.warning("leases of %s not released: %s", self.holder, exc)

    def _errors(self) -> _Errors:
        return _Errors(self.where)


class _Errors:
    """A database error inside the block becomes a StoreError naming the server."""

    def __init__(self, where: str) -> None:
        self._where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, psycopg.Error):
            msg = f"cannot use the database {self._where} for leases: {str(exc).strip()}"
            raise StoreError(msg) from exc


# ---------------------------------------------------------------- wake-ups


def notify(conn: psycopg.Connection[Any] | Db, office: str) -> None:
    """Signal new events of ``office`` to the listening services: inside the ingest
    transaction it is delivered at the commit (once per office), not at all on a rollback."""
    _pg(conn).execute(pg_schema.NOTIFY_EVENTS, (office,))


class Wakeups:
    """A connection listening on :data:`CHANNEL`; :meth:`wait` returns the offices notified."""

    def __init__(self, db_url: str, channel: str = CHANNEL) -> None:
        self.url, self.channel, self.where = db_url, channel, describe(db_url)
        self._conn = self._listen()

    def _listen(self) -> psycopg.Connection[Any]:
        conn = connect(self.url, upgrade=False)
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot listen on {self.where}: {exc}") from exc
        return conn

    def wait(self, timeout: float) -> set[str]:
        """The offices notified, waiting at most ``timeout`` seconds for the first (an
        empty set: none came); ``{EVERY}`` after the connection was lost and made again."""
        try:
            got = {n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)}
            if got:  # and whatever else has arrived meanwhile
                got.update(n.payload for n in self._conn.notifies(timeout=0))
        except psycopg.OperationalError as exc:
            log.warning("wake-ups from %s: %s; listening again", self.where, exc)
            self._conn.close()
            self._conn = self._listen()
            return {EVERY}
        return got

    def close(self) -> None:
        self._conn.close()
