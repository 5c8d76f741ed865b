"""The PostgreSQL schema as numbered migration steps (SQL as data, folded into the
database layer's migrations when merged).

``MIGRATIONS`` is a list of ``(version, [statement, ...])``; a database at version ``v``
runs every step above ``v`` in one transaction and records the last in ``meta``.

Events are partitioned by ``LIST (office)``, one partition per office, created on the
office's first use (:func:`partition_sql`). LIST rather than HASH because an office is the
unit of everything else: its own ``(source, id)`` unique index and ``seq`` index stay the
size of one office (the global ``UNIQUE (source, id)`` index is what slows a national year
in one SQLite file), an office's replay reads only its partition, an office can be
detached or archived alone, and the layout is the one Citus distributes by office. HASH
would need no DDL at run time, but would mix offices in each partition and give none of
that.
"""

from __future__ import annotations

import hashlib
import re

SCHEMA_VERSION = 1

_EVENTS = """
CREATE TABLE events (
    seq      bigserial NOT NULL,
    office   text NOT NULL,
    source   text NOT NULL,
    id       text NOT NULL,
    type     text NOT NULL,
    time_us  bigint NOT NULL,
    subject  text NOT NULL,
    digest   bytea NOT NULL,  -- BLAKE2b-128 of body: a fingerprint for audits and tools
    body     bytea NOT NULL,  -- the event as received (see events.Event.body)
    PRIMARY KEY (office, seq),
    UNIQUE (office, source, id)
) PARTITION BY LIST (office)
"""

_REJECTED = """
CREATE TABLE rejected (
    seq      bigserial PRIMARY KEY,
    office   text NOT NULL,
    origin   text NOT NULL DEFAULT '',
    line     bigint NOT NULL DEFAULT 0,
    digest   bytea NOT NULL,
    event_id text,
    source   text,
    field    text NOT NULL,
    reason   text NOT NULL,
    raw      bytea NOT NULL,
    UNIQUE (office, origin, line, digest)
)
"""

_APPEND_ONLY = """
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only' USING ERRCODE = 'restrict_violation';
END
$$
"""

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            _EVENTS,
            _REJECTED,
            _APPEND_ONLY,
            # Row triggers on a partitioned table are cloned to every partition.
            "CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events"
            " FOR EACH ROW EXECUTE FUNCTION events_append_only()",
            "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events"
            " FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()",
        ],
    ),
]

# Run before the migrations, in their transaction: the version table, and one upgrader at
# a time (a transaction-scoped advisory lock; the key is arbitrary but fixed).
PREAMBLE = [
    "SELECT pg_advisory_xact_lock(7262381)",
    "CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)",
]
READ_VERSION = "SELECT value FROM meta WHERE key = 'schema'"
WRITE_VERSION = (
    "INSERT INTO meta (key, value) VALUES ('schema', %s)"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
)


def partition_name(office: str) -> str:
    """The events partition of ``office``: ``events_<code>`` for a plain lower-case code,
    else a name with a digest (any code gives a valid, distinct identifier)."""
    if re.fullmatch(r"[a-z][a-z0-9_]{0,40}", office):
        return f"events_{office}"
    tag = hashlib.blake2b(office.encode(), digest_size=6).hexdigest()
    plain = re.sub(r"[^a-z0-9_]", "", office.lower())[:30]
    return f"events_{plain}_{tag}"


# Creating an office's partition: under the same lock as the migrations (two processes
# meeting a new office at once create it once). Formatted with psycopg.sql.
PARTITION_LOCK = "SELECT pg_advisory_xact_lock(7262381)"
PARTITION_EXISTS = (
    "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'events'::regclass AND c.relname = %s"
)
PARTITION_CREATE = "CREATE TABLE {name} PARTITION OF events FOR VALUES IN ({office})"

# Every write to an office's log takes this lock first, for the transaction: the writers of
# one office take turns, so its seqs are committed in their order and "rows after seq N"
# is a cursor that never skips a row (concurrent transactions would commit a lower seq
# after a reader had moved past it). The office's one service writes; others rarely.
OFFICE_WRITE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7262381))"
