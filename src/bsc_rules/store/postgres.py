"""The event log of one office in a PostgreSQL database (psycopg 3).

:class:`PostgresStore` keeps the same guarantees as :class:`~bsc_rules.store.sqlite.SQLiteStore`:
an event is acknowledged only once its transaction is committed (``synchronous_commit``
on, the server's default, so the commit is on the server's disk); the idempotency key is
``(office, source, id)``, a duplicate being the same content even when written otherwise;
rows of ``events`` can be neither updated nor deleted (a trigger). Events are partitioned
by office (:mod:`.pg_schema`); a batch is loaded by binary COPY into a temporary staging
table and stored by one ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``. A
transaction that stored events notifies ``bsc_rules_events`` with the office (a wake-up
for the services sharing the database: :mod:`.lease`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bsc_rules.errors import StoreError
from bsc_rules.events import Event, Rejection, content_digest, same_content
from bsc_rules.privacy import mask_text
from bsc_rules.store import pg_schema
from bsc_rules.store.base import KeepsOwnWrites, OwnWrites, Verdict
from bsc_rules.store.db import migrate
from bsc_rules.store.sqlconn import Db

_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS staging (ord int4, source text, id text, type text,"
    " time_us int8, subject text, digest bytea, body bytea) ON COMMIT DELETE ROWS"
)
_COPY = (
    "COPY staging (ord, source, id, type, time_us, subject, digest, body)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["int4", "text", "text", "text", "int8", "text", "bytea", "bytea"]
# The first of each key in the batch, in arrival order (seq follows the ORDER BY).
_INSERT_STAGED = (
    "INSERT INTO events (office, source, id, type, time_us, subject, digest, body)"
    " SELECT %(office)s, source, id, type, time_us, subject, digest, body FROM ("
    "  SELECT DISTINCT ON (source, id) * FROM staging ORDER BY source, id, ord"
    " ) AS first ORDER BY ord"
    " ON CONFLICT (office, source, id) DO NOTHING RETURNING seq, source, id"
)
# The body that stands for each key given (stored before, or by this batch): asked only
# for the keys of the batch that were not inserted or come again after their first.
_STANDING = (
    "SELECT e.source, e.id, e.body FROM events AS e"
    " JOIN unnest(%(sources)s::text[], %(ids)s::text[]) AS k (source, id) USING (source, id)"
    " WHERE e.office = %(office)s"
)
_INSERT_ONE = (
    "INSERT INTO events (office, source, id, type, time_us, subject, digest, body)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (office, source, id) DO NOTHING RETURNING seq"
)
_REJECT = (
    "INSERT INTO rejected (office, origin, line, digest, event_id, source, field, reason, raw)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_ROWS_AFTER = "SELECT seq, body FROM events WHERE office = %s AND seq > %s ORDER BY seq LIMIT %s"
_PAGE = 4096


def describe(url: str) -> str:
    """``host:port/dbname`` of a connection string, without user or password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable postgresql:// URL)"
    host = str(info.get("host") or "localhost")
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _scrub(text: str, url: str) -> str:
    """An error text without the URL's password (libpq does not print it; be sure)."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return text
    return text.replace(str(password), "***") if password else text


def connect(url: str, *, upgrade: bool = True) -> psycopg.Connection[Any]:
    """An autocommit connection (transactions explicit), its schema brought up to this
    code's version unless ``upgrade`` is false (``db upgrade`` reads the version first)."""
    where = describe(url)
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        reason = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        msg = f"cannot reach the PostgreSQL server {where}: {reason}"
        raise StoreError(msg) from exc
    if upgrade:
        try:
            migrate(conn, where)
        except BaseException:
            conn.close()
            raise
    return conn


def ensure_partition(conn: psycopg.Connection[Any], office: str) -> None:
    """Create the events partition of ``office`` unless it exists (once, under a lock)."""
    name = pg_schema.partition_name(office)
    if conn.execute(pg_schema.PARTITION_EXISTS, (name,)).fetchone():
        return
    with conn.transaction():
        conn.execute(pg_schema.PARTITION_LOCK)
        if conn.execute(pg_schema.PARTITION_EXISTS, (name,)).fetchone():
            return
        create = sql.SQL(pg_schema.PARTITION_CREATE).format(
            name=sql.Identifier(name), office=sql.Literal(office)
        )
        conn.execute(create)


def offices(url: str) -> list[str]:
    """The offices that have an events partition in the database, sorted."""
    conn = connect(url)
    try:
        rows = conn.execute(pg_schema.PARTITION_BOUNDS).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot use the database {describe(url)}: {exc}") from exc
    finally:
        conn.close()
    return sorted(_listed_value(str(bound)) for (bound,) in rows)


def _listed_value(bound: str) -> str:
    """The office of a partition bound as PostgreSQL prints it: ``FOR VALUES IN ('x')``."""
    inner = bound.removeprefix("FOR VALUES IN (").removesuffix(")")
    return inner[1:-1].replace("''", "'")


class PostgresStore(KeepsOwnWrites):
    """The append-only event log of one office in a PostgreSQL database."""

    def __init__(self, url: str, office: str, *, partition: bool = True) -> None:
        """The store of ``office``, its events partition created unless ``partition`` is
        false (a store that only keeps rejections, e.g. of offices outside the deployment)."""
        if not office:
            raise StoreError("a PostgreSQL store needs an office code")
        self.url = url
        self.office = office
        self.where = describe(url)
        self._own = OwnWrites()  # committed seqs this store wrote (see Scorecard.refresh)
        self._conn = connect(url)
        try:
            with self._errors():
                if partition:
                    ensure_partition(self._conn, office)
                self._conn.execute(_STAGING)
        except BaseException:
            self._conn.close()
            raise

    def _errors(self) -> _Errors:
        return _Errors(self)

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The connection, for tables that share the log's transactions."""
        return self._conn

    @property
    def db(self) -> Db:
        """The connection as the seam of this office's other tables (alerts, runs, outbox,
        notes: :mod:`.sqlconn`), scoped to the office, sharing the log's transactions."""
        return Db(self._conn, self.office)

    def _check_office(self, events: Sequence[Event]) -> None:
        for e in events:
            if e.office is not None and e.office != self.office:
                msg = (
                    f"{self.where}: event {e.id!r}: office: this store holds {self.office!r},"
                    f" got {e.office!r}"
                )
                raise StoreError(msg)

    def append(self, event: Event) -> Verdict:
        self._check_office([event])
        body, key = event.body, (_text(event.source), _text(event.id))
        row = (self.office, *key, event.type, event.time_us, _text(event.subject))
        with self._errors(), self._conn.transaction():
            self._conn.execute(pg_schema.OFFICE_WRITE_LOCK, (self.office,))
            got = self._conn.execute(_INSERT_ONE, (*row, content_digest(body), body)).fetchone()
            if got is not None:
                self._conn.execute(pg_schema.NOTIFY_EVENTS, (self.office,))
            else:
                standing = self._conn.execute(
                    "SELECT body FROM events WHERE office = %s AND source = %s AND id = %s",
                    (self.office, *key),
                ).fetchone()
        if got is not None:
            self._own.add([int(got[0])])
            return "accepted"
        return _verdict(bytes(standing[0]) if standing else None, body)

    def append_batch(self, events: Iterable[Event]) -> list[Verdict]:
        batch = list(events)
        if not batch:
            return []
        self._check_office(batch)
        with self._errors(), self._conn.transaction():
            self._conn.execute(pg_schema.OFFICE_WRITE_LOCK, (self.office,))
            keys = self._stage(batch)
            params = {"office": self.office}
            inserted = {
                (src, id_): int(seq)
                for seq, src, id_ in self._conn.execute(_INSERT_STAGED, params).fetchall()
            }
            if inserted:
                self._conn.execute(pg_schema.NOTIFY_EVENTS, (self.office,))
            standing: dict[tuple[str, str], bytes] = {}
            if len(inserted) < len(batch):
                again = _judged_keys(keys, inserted)
                ask = {**params, "sources": [k[0] for k in again], "ids": [k[1] for k in again]}
                rows = self._conn.execute(_STANDING, ask).fetchall()
                standing = {(src, id_): bytes(body) for src, id_, body in rows}
        return self._verdicts(batch, keys, inserted, standing)

    def _stage(self, batch: list[Event]) -> list[tuple[str, str]]:
        """COPY the batch into the staging table; the keys of its events, in order."""
        keys: list[tuple[str, str]] = []
        with self._conn.cursor().copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for ord_, e in enumerate(batch):
                body = e.body
                key = (_text(e.source), _text(e.id))
                keys.append(key)
                write((ord_, *key, e.type, e.time_us, _text(e.subject), content_digest(body), body))
        return keys

    def _verdicts(
        self,
        batch: list[Event],
        keys: list[tuple[str, str]],
        inserted: dict[tuple[str, str], int],
        standing: dict[tuple[str, str], bytes],
    ) -> list[Verdict]:
        """After the commit: the first of each inserted key accepted, the rest judged
        against the body that stands (stored before, or the batch's first)."""
        verdicts: list[Verdict] = []
        written: list[int] = []
        for e, key in zip(batch, keys, strict=True):
            seq = inserted.pop(key, None)
            if seq is not None:
                written.append(seq)
                verdicts.append("accepted")
            else:
                verdicts.append(_verdict(standing.get(key), e.body))
        self._own.add(written)
        return verdicts

    def reject(self, rejection: Rejection, origin: str = "") -> None:
        row = (
            self.office,
            _text(origin),
            rejection.line or 0,
            content_digest(rejection.raw),
            None if rejection.event_id is None else _text(rejection.event_id),
            None if rejection.source is None else _text(rejection.source),
            _text(rejection.field),
            _text(mask_text(rejection.message)),
            rejection.raw,
        )
        with self._errors():
            self._conn.execute(_REJECT, row)

    def rejected_count(self) -> int:
        return self._scalar("SELECT count(*) FROM rejected WHERE office = %s")

    def rejections(self) -> list[tuple[str, int, str | None, str, str]]:
        """``(origin, line, event id, field, reason)`` of every rejection, oldest first."""
        with self._errors():
            rows = self._conn.execute(
                "SELECT origin, line, event_id, field, reason FROM rejected"
                " WHERE office = %s ORDER BY seq",
                (self.office,),
            ).fetchall()
        return [(o, int(n), i, f, r) for o, n, i, f, r in rows]

    def count(self) -> int:
        return self._scalar("SELECT count(*) FROM events WHERE office = %s")

    def _scalar(self, query: str) -> int:
        with self._errors():
            row = self._conn.execute(query, (self.office,)).fetchone()
        return int(row[0]) if row else 0

    def replay(self) -> Iterator[bytes]:
        for _seq, body in self.rows_after(0):
            yield body

    def rows_after(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """``(seq, body)`` of the events stored after ``seq``, in order (read by pages,
        no transaction held open between them). The rows come in PostgreSQL's binary
        format: ``int8`` and ``bytea`` as they are stored, not as decimal and hex text
        (half the bytes on the wire, no hex to decode), already ``(int, bytes)``."""
        last = seq
        while True:
            with self._errors():
                rows: list[tuple[int, bytes]] = self._conn.execute(
                    _ROWS_AFTER, (self.office, last, _PAGE), binary=True
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield from rows
            if len(rows) < _PAGE:
                return

    def close(self) -> None:
        self._conn.close()


def _judged_keys(
    keys: list[tuple[str, str]], inserted: dict[tuple[str, str], int]
) -> list[tuple[str, str]]:
    """The keys of a batch that get a duplicate-or-conflict verdict: not inserted, or
    seen again after their first."""
    seen: set[tuple[str, str]] = set()
    again: set[tuple[str, str]] = set()
    for key in keys:
        if key in seen or key not in inserted:
            again.add(key)
        seen.add(key)
    return sorted(again)


def _text(value: str) -> str:
    """A string as a text column holds it: PostgreSQL's text cannot hold NUL, which a valid
    event's id or subject may (SQLite's can). Backslash and NUL are escapes (``\\\\``,
    ``\\0``): one-to-one, so keys stay distinct, and the identity on every usual string."""
    if "\x00" not in value and "\\" not in value:
        return value
    return value.replace("\\", "\\\\").replace("\x00", "\\0")


def _verdict(standing: bytes | None, body: bytes) -> Verdict:
    """A duplicate or a conflict: the key is taken, by the same content or not."""
    return "duplicate" if standing is not None and same_content(standing, body) else "conflict"


class _Errors:
    """A database error inside the block becomes a StoreError naming the server."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, psycopg.Error):
            reason = _scrub(str(exc).strip(), self._store.url)
            msg = f"cannot use the database {self._store.where}: {reason}"
            raise StoreError(msg) from exc
