"""The PostgreSQL tables of a bsc_rules database, as the statements of the numbered
migrations (:data:`bsc_rules.store.db.MIGRATIONS` ``["postgres"]`` puts them in order,
with the same versions and names as SQLite's), and the SQL the PostgreSQL store runs.

Events are partitioned by ``LIST (office)``, one partition per office, created on the
office's first use (:func:`partition_name`). LIST rather than HASH because an office is the
unit of everything else: its own ``(source, id)`` unique index and ``seq`` index stay the
size of one office (the global ``UNIQUE (source, id)`` index is what slows a national year
in one SQLite file), an office's replay reads only its partition, an office can be
detached or archived alone, and the layout is the one Citus distributes by office. HASH
would need no DDL at run time, but would mix offices in each partition and give none of
that.

The other tables (alerts, their history, runs, the outbox, the notes) hold one office's
rows beside the others', keyed by office: ``office`` leads every primary key and index.
They stay small (an office's alerts and mail, not its events), so partitioning them would
buy nothing; an office column in every key is what Citus needs to distribute them by
office beside the events (a distributed table's unique keys must hold its distribution
column).
"""

from __future__ import annotations

import hashlib
import re

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

EVENT_LOG = (
    _EVENTS,
    _REJECTED,
    _APPEND_ONLY,
    # Row triggers on a partitioned table are cloned to every partition.
    "CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events"
    " FOR EACH ROW EXECUTE FUNCTION events_append_only()",
    "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events"
    " FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()",
)

ALERTS_AND_OUTBOX = (
    """CREATE TABLE alerts (
    office       text NOT NULL,
    key          text NOT NULL,
    state        text NOT NULL,
    since_us     bigint NOT NULL,
    notified     bigint NOT NULL,
    told         text NOT NULL,
    escalated    bigint NOT NULL,
    acknowledged bigint NOT NULL,
    ack_note     text,
    sent         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (office, key)
)""",
    """CREATE TABLE alert_history (
    seq        bigserial NOT NULL,
    office     text NOT NULL,
    at_us      bigint NOT NULL,
    key        text NOT NULL,
    event      text NOT NULL,
    state      text,
    message_id text,
    recipients text,
    note       text,
    PRIMARY KEY (office, seq)
)""",
    "CREATE INDEX alert_history_key ON alert_history (office, key, seq)",
    """CREATE TABLE runs (
    office  text NOT NULL,
    job     text NOT NULL,
    period  text NOT NULL,
    done_us bigint NOT NULL,
    PRIMARY KEY (office, job, period)
)""",
    """CREATE TABLE outbox (
    office          text NOT NULL,
    message_id      text NOT NULL,
    created_us      bigint NOT NULL,
    send_after_us   bigint NOT NULL,
    sender          text NOT NULL,
    recipients      text NOT NULL,
    subject         text NOT NULL,
    body            bytea NOT NULL,
    alert_key       text,
    kind            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'parked')),
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_us bigint NOT NULL,
    last_error      text,
    sent_us         bigint,
    PRIMARY KEY (office, message_id)
)""",
    "CREATE INDEX outbox_due ON outbox (office, status, next_attempt_us)",
)

NOTES = (
    """CREATE TABLE notes (
    seq    bigserial NOT NULL,
    office text NOT NULL,
    kpi    text NOT NULL,
    month  text NOT NULL,  -- YYYY-MM, the month the note is about
    author text NOT NULL,
    text   text NOT NULL,
    at_us  bigint NOT NULL,  -- when it was entered
    PRIMARY KEY (office, seq)
)""",
    "CREATE INDEX notes_month ON notes (office, month, kpi, seq)",
)

# Services sharing offices (store/lease.py): a row per office, held by one service at a
# time; ``epoch`` grows by one at every takeover and fences the holder's writes. A free
# office has no holder. ``lease_holders`` is each running service's heartbeat: the live
# services among which the offices are spread. Times are the database's (now()).
LEASES = (
    """CREATE TABLE leases (
    office     text PRIMARY KEY,
    holder     text,
    epoch      bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
)""",
    """CREATE TABLE lease_holders (
    holder     text PRIMARY KEY,
    expires_at timestamptz NOT NULL
)""",
)

# Run before the migrations, in their transaction: the version table, and one upgrader at
# a time (a transaction-scoped advisory lock; the key is arbitrary but fixed).
PREAMBLE = (
    "SELECT pg_advisory_xact_lock(7262381)",
    "CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)",
)
HAS_META = "SELECT to_regclass('meta') IS NOT NULL"
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
PARTITION_BOUNDS = (
    "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
    " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"
)
PARTITION_CREATE = "CREATE TABLE {name} PARTITION OF events FOR VALUES IN ({office})"

# Every write to an office's log takes this lock first, for the transaction: the writers of
# one office take turns, so its seqs are committed in their order and "rows after seq N"
# is a cursor that never skips a row (concurrent transactions would commit a lower seq
# after a reader had moved past it). The office's one service writes; others rarely.
OFFICE_WRITE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7262381))"

# New events of an office: a wake-up for the services (store/lease.py), sent inside the
# transaction that stored them, so delivered at its commit and never for a rollback.
EVENTS_CHANNEL = "bsc_rules_events"
NOTIFY_EVENTS = f"SELECT pg_notify('{EVENTS_CHANNEL}', %s)"

# Every transaction on an office's other tables (alerts, runs, outbox, notes: see
# sqlconn.Db.transaction) takes this lock first: SQLite's BEGIN IMMEDIATE, per office, so a
# block that reads and then writes loses no other writer's update. Another key than the
# log's (seed 7262382): appending events never waits for an alert transaction.
OFFICE_TABLES_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7262382))"
