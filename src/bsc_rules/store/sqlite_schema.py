"""The SQLite tables of a bsc_rules database, as the statements of the numbered
migrations (:data:`bsc_rules.store.db.MIGRATIONS` puts them in order)."""

from __future__ import annotations

EVENT_LOG = (
    """CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY,
    source   TEXT NOT NULL,
    id       TEXT NOT NULL,
    type     TEXT NOT NULL,
    time_us  INTEGER NOT NULL,
    subject  TEXT NOT NULL,
    digest   BLOB NOT NULL,  -- BLAKE2b-128 of body: a fingerprint for audits and tools
    body     BLOB NOT NULL,  -- the event as received (see events.Event.body)
    UNIQUE (source, id)
)""",
    """CREATE TABLE IF NOT EXISTS rejected (
    seq      INTEGER PRIMARY KEY,
    origin   TEXT NOT NULL DEFAULT '',
    line     INTEGER NOT NULL DEFAULT 0,
    digest   BLOB NOT NULL,
    event_id TEXT,
    source   TEXT,
    field    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    raw      BLOB NOT NULL,
    UNIQUE (origin, line, digest)
)""",
    """CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END""",
)

# Before version 2 these tables were created on first use (IF NOT EXISTS), and
# ``alerts.sent`` was added to the statement later: a database made then may lack it.
ALERTS_AND_OUTBOX = (
    """CREATE TABLE IF NOT EXISTS alerts (
    key          TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    since_us     INTEGER NOT NULL,
    notified     INTEGER NOT NULL,
    told         TEXT NOT NULL,
    escalated    INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL,
    ack_note     TEXT,
    sent         INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS alert_history (
    seq        INTEGER PRIMARY KEY,
    at_us      INTEGER NOT NULL,
    key        TEXT NOT NULL,
    event      TEXT NOT NULL,
    state      TEXT,
    message_id TEXT,
    recipients TEXT,
    note       TEXT
)""",
    "CREATE INDEX IF NOT EXISTS alert_history_key ON alert_history (key, seq)",
    """CREATE TABLE IF NOT EXISTS runs (
    job     TEXT NOT NULL,
    period  TEXT NOT NULL,
    done_us INTEGER NOT NULL,
    PRIMARY KEY (job, period)
)""",
    """CREATE TABLE IF NOT EXISTS outbox (
    message_id      TEXT PRIMARY KEY,
    created_us      INTEGER NOT NULL,
    send_after_us   INTEGER NOT NULL,
    sender          TEXT NOT NULL,
    recipients      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            BLOB NOT NULL,
    alert_key       TEXT,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'parked')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_us INTEGER NOT NULL,
    last_error      TEXT,
    sent_us         INTEGER
)""",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_us)",
)

# The owner sections' analysis and improvement notes per KPI and month (bsc-rules
# comment): every entry is kept; the digest shows the latest before it is sent.
NOTES = (
    """CREATE TABLE IF NOT EXISTS notes (
    seq    INTEGER PRIMARY KEY,
    kpi    TEXT NOT NULL,
    month  TEXT NOT NULL,  -- YYYY-MM, the month the note is about
    author TEXT NOT NULL,
    text   TEXT NOT NULL,
    at_us  INTEGER NOT NULL  -- when it was entered
)""",
    "CREATE INDEX IF NOT EXISTS notes_month ON notes (month, kpi, seq)",
)
