"""One seam over a SQLite or a PostgreSQL connection, for the tables beside the event log.

The alerts, their history, the runs, the outbox and the notes are the same tables on both
engines (:mod:`.db` creates them), with one difference: in PostgreSQL, where a database
holds many offices, each of these tables has an ``office`` column that leads its keys; a
SQLite file holds one office and has none. :class:`Db` hides that difference, and the
placeholder style, so that one SQL text serves both engines::

    db = Db.of(store.connection, office=store.office)  # or Db.of(sqlite_connection)
    with db.transaction():
        db.execute(
            "INSERT INTO runs ({office_col}job, period, done_us) VALUES ({office_val}?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            ("digest", "2017-05", now),
        )
    row = db.execute(
        "SELECT done_us FROM runs WHERE {office} AND job = ? AND period = ?", ("digest", "2017-05")
    ).fetchone()

**SQL.** Parameters are ``?`` (positional, a sequence; ``%s`` on PostgreSQL, where a
literal ``%`` is doubled for the driver). Write ``?`` nowhere but as a parameter (not in a
string literal). Three markers place the office; each is bound to :attr:`Db.office` on
PostgreSQL, and vanishes (or is always true) on SQLite:

=================  =============================  ==================
marker             PostgreSQL                     SQLite
=================  =============================  ==================
``{office}``       ``office = %s``                ``1 = 1``
``{t.office}``     ``t.office = %s`` (an alias)   ``1 = 1``
``{office_col}``   ``office,`` (then a space)     (nothing)
``{office_val}``   ``%s,`` (then a space)         (nothing)
=================  =============================  ==================

``{office}`` is a condition: ``WHERE {office}``, ``WHERE {office} AND key = ?``; every
read and every UPDATE or DELETE of these tables carries one. ``{office_col}`` and
``{office_val}`` open an INSERT's column and VALUES lists, and ``{office_col}`` a conflict
target: ``ON CONFLICT ({office_col}job, period) DO UPDATE SET done_us = excluded.done_us``
(the primary key on each engine). ``INSERT … ON CONFLICT DO NOTHING`` (no target) stands
for ``INSERT OR IGNORE``; an upsert like the one above for ``INSERT OR REPLACE``;
``RETURNING`` works on both. Functions both engines have: ``CASE``, ``COALESCE``,
``count``, ``max`` of a column (not SQLite's two-argument ``MIN(a, b)``: use ``CASE``).

**Transactions.** :meth:`Db.transaction` is SQLite's ``BEGIN IMMEDIATE`` … ``COMMIT``
(:func:`.db.transaction`), or a PostgreSQL transaction that first takes the office's
advisory lock: either way the office's writers take turns, so a block that reads and then
writes (an alert table's load and save, the outbox's ``mark_failed``) loses no other
writer's update. Inside a transaction already, the block joins it (the outer one
commits); ``ROLLBACK`` if it raises. On PostgreSQL a failed statement spoils the whole
transaction: do not catch a database error and go on inside one. :attr:`Db.in_transaction`
tells whether one is open (the outbox's ``enqueue`` requires it).

**Fencing.** :attr:`Db.fence`, when set, runs at the start of every PostgreSQL write
transaction (after the office's lock, before the block): a service holding the office by
a lease sets it to :func:`.lease.assert_current` at its epoch, so that every alert saved,
mail queued, sending recorded or run recorded in the office's name commits only while
that epoch is current; it raises (:class:`.lease.LeaseLost`) and the transaction rolls
back otherwise.

**Errors.** A PostgreSQL error becomes a :class:`StoreError` naming the server (never its
password); a SQLite error is what it was (a ``sqlite3.Error``, a :class:`StoreError` from
a transaction), as the CLI and the HTTP door already expect.

**Connections.** A SQLite connection as :func:`.db.connect` opens it
(``isolation_level=None``); a PostgreSQL one as :func:`.postgres.connect` opens it
(autocommit). Both hand rows back as tuples (``bytea`` as ``bytes``, ``bigint`` as
``int``); fetch only from a statement that returns rows (PostgreSQL raises otherwise), and
read ``rowcount`` only after a write. :attr:`Db.connection` is the connection itself, for
the rare statement that is one engine's own.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from bsc_rules.errors import StoreError, UsageError
from bsc_rules.store import pg_schema
from bsc_rules.store.db import transaction as sqlite_transaction

if TYPE_CHECKING:
    import psycopg

    AnyConnection: TypeAlias = sqlite3.Connection | psycopg.Connection[Any]

Engine = Literal["sqlite", "postgres"]

_TOKEN = re.compile(r"\?|%|\{office_col\}|\{office_val\}|\{(?:(?P<alias>\w+)\.)?office\}")


class Rows(Protocol):
    """What :meth:`Db.execute` returns: a cursor of either driver."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...

    def __iter__(self) -> Iterator[tuple[Any, ...]]: ...


@lru_cache(maxsize=512)
def compile_sql(text: str, engine: Engine) -> tuple[str, tuple[int, ...], int]:
    """``text`` as it runs on ``engine``: the SQL, the positions of the office among its
    parameters, and how many parameters it takes in all."""
    pg = engine == "postgres"
    out: list[str] = []
    slots: list[int] = []
    count, at = 0, 0
    for m in _TOKEN.finditer(text):
        out.append(text[at : m.start()])
        at = m.end()
        token = m.group(0)
        if token == "?":
            out.append("%s" if pg else "?")
            count += 1
        elif token == "%":
            out.append("%%" if pg else "%")
        elif token == "{office_col}":
            out.append("office, " if pg else "")
        elif not pg:
            out.append("" if token == "{office_val}" else "1 = 1")
        else:
            alias = m.group("alias")
            column = f"{alias}.office" if alias else "office"
            out.append("%s, " if token == "{office_val}" else f"{column} = %s")
            slots.append(count)
            count += 1
    out.append(text[at:])
    return "".join(out), tuple(slots), count


class Db:
    """A SQLite or PostgreSQL connection, scoped to one office (see the module's text)."""

    def __init__(self, conn: AnyConnection, office: str | None = None) -> None:
        """Wrap ``conn``. On PostgreSQL ``office`` is required (it scopes every statement);
        on SQLite it is only kept (the file is the office)."""
        self.connection = conn
        self.office = office
        self.fence: Callable[[Db], None] | None = None
        self.engine: Engine = "sqlite" if isinstance(conn, sqlite3.Connection) else "postgres"
        if isinstance(conn, sqlite3.Connection):
            if conn.isolation_level is not None:
                msg = "the database needs a connection with isolation_level=None (explicit BEGIN)"
                raise UsageError(msg)
        else:
            if not office:
                raise UsageError("a PostgreSQL database holds many offices: name one (office=)")
            if not conn.autocommit:
                raise UsageError("a PostgreSQL connection must be in autocommit mode")

    @classmethod
    def of(cls, conn: Db | AnyConnection, office: str | None = None) -> Db:
        """``conn`` itself if it is a :class:`Db` (of ``office``, when given), else it wrapped."""
        if isinstance(conn, Db):
            if office is not None and conn.office != office:
                msg = f"the database is scoped to office {conn.office!r}, not {office!r}"
                raise UsageError(msg)
            return conn
        return cls(conn, office)

    @property
    def where(self) -> str:
        """The database, as messages name it (a file, or ``host:port/dbname``)."""
        conn = self.connection
        if isinstance(conn, sqlite3.Connection):
            try:
                row = conn.execute("PRAGMA database_list").fetchone()
            except sqlite3.Error:
                return "the SQLite database"
            return str(row[2]) if row and row[2] else "the SQLite database"
        info = conn.info
        return f"{info.host}:{info.port}/{info.dbname}"

    def sql(self, text: str) -> str:
        """``text`` as this engine runs it (the markers and placeholders replaced)."""
        return compile_sql(text, self.engine)[0]

    def _bind(self, text: str, params: Sequence[Any]) -> tuple[str, list[Any]]:
        query, slots, count = compile_sql(text, self.engine)
        if len(params) != count - len(slots):
            msg = f"the statement takes {count - len(slots)} parameters, got {len(params)}: {text}"
            raise UsageError(msg)
        given = iter(params)
        return query, [self.office if n in slots else next(given) for n in range(count)]

    def execute(self, text: str, params: Sequence[Any] = ()) -> Rows:
        """Run one statement (``?`` parameters, office markers); its rows, if any."""
        query, bound = self._bind(text, params)
        conn = self.connection
        if isinstance(conn, sqlite3.Connection):
            cursor: Rows = conn.execute(query, bound)
            return cursor
        with self._pg_errors():
            return conn.execute(query, bound)

    @property
    def lost(self) -> bool:
        """Whether the PostgreSQL connection is closed for good (the server went away: a
        connection is never made again in place); never for SQLite."""
        conn = self.connection
        return not isinstance(conn, sqlite3.Connection) and bool(conn.closed)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""
        conn = self.connection
        if isinstance(conn, sqlite3.Connection):
            return conn.in_transaction
        from psycopg.pq import TransactionStatus

        return conn.info.transaction_status != TransactionStatus.IDLE

    @contextmanager
    def transaction(self) -> Iterator[Db]:
        """A write transaction, the office's writers in turn; joins one already open."""
        conn = self.connection
        if isinstance(conn, sqlite3.Connection):
            with sqlite_transaction(conn):
                yield self
            return
        if self.in_transaction:
            yield self
            return
        with self._pg_errors(), conn.transaction():
            conn.execute(pg_schema.OFFICE_TABLES_LOCK, (self.office,))
            if self.fence is not None:
                self.fence(self)
            yield self

    @contextmanager
    def _pg_errors(self) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            reason = str(exc).strip()
            conn = self.connection
            password = None if isinstance(conn, sqlite3.Connection) else conn.info.password
            if password:
                reason = reason.replace(str(password), "***")
            msg = f"cannot use the database {self.where}: {reason}"
            raise StoreError(msg) from exc
