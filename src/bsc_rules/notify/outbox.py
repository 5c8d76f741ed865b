"""The transactional outbox: every notification is written here before it is sent.

The outbox lives in the same database as the event log (its own table: one office's in a
SQLite file, each office's rows by ``office`` in PostgreSQL; see
:class:`bsc_rules.store.sqlconn.Db`). The alert pipeline writes its transition rows and
:meth:`Outbox.enqueue` in one transaction::

    with outbox.db.transaction():  # or store.db.transaction(conn) on SQLite
        ...  # alert transition rows
        outbox.enqueue(mail, kind="overdue", alert_key=key, now_us=now)

so a crash either keeps both or neither, and nothing decided is lost before it is sent.
Enqueueing a ``Message-ID`` that is already there is a no-op: replays and restarts that
decide the same notification again do not send it twice.

Delivery (:func:`bsc_rules.mailer.deliver_due`) takes :meth:`Outbox.due` items, sends
them and records the outcome with :meth:`Outbox.mark_sent` or :meth:`Outbox.mark_failed`;
a failure is retried after an exponential backoff (:class:`RetryPolicy`) and parked as
undeliverable at once on a permanent (5xx) error or when the retry budget is spent.
:meth:`Outbox.retry` puts parked mail back in the queue.

The outbox takes a :class:`~bsc_rules.store.sqlconn.Db` (of one office) or a connection
it wraps in one: SQLite's of :mod:`bsc_rules.store.sqlite` (``isolation_level=None``:
transactions are explicit ``BEGIN IMMEDIATE`` / ``COMMIT``), PostgreSQL's with the office;
and one delivering process per office.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any, Literal

from bsc_rules.calendar import US_PER_DAY, US_PER_SECOND, local_date
from bsc_rules.errors import UsageError
from bsc_rules.notify.notices import Mail
from bsc_rules.notify.render import to_bytes
from bsc_rules.privacy import mask_text
from bsc_rules.store.sqlconn import Db

if TYPE_CHECKING:
    from bsc_rules.store.sqlconn import AnyConnection

Status = Literal["pending", "sent", "parked"]
Render = Callable[[Mail], bytes]

_ERROR_LIMIT = 500
_MINUTE_US = 60 * US_PER_SECOND


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed send is tried again, and when it is given up (parked).

    The n-th failure waits ``first_delay_us * 2**(n-1)``, capped at ``max_delay_us``,
    less a jitter of up to ``jitter`` of that delay derived from the Message-ID (so
    messages spread out, and a replay waits exactly as long as the run it replays).
    A message is parked when it fails for the ``max_attempts``-th time, fails
    ``max_age_us`` or more after it was first due, or (``within_day``) when its next
    attempt would fall after the Asia/Taipei day it was due: mail is retried until the end
    of its day, then parked and reported in the next morning mail and the digest.
    """

    first_delay_us: int = _MINUTE_US
    max_delay_us: int = 60 * _MINUTE_US
    jitter: float = 0.1
    max_attempts: int = 100
    max_age_us: int = 3 * US_PER_DAY
    within_day: bool = True  # retried until the end of the (Asia/Taipei) day it was due

    def __post_init__(self) -> None:
        if not 0 < self.first_delay_us <= self.max_delay_us:
            msg = "retry policy: first_delay_us must be positive and at most max_delay_us"
            raise UsageError(msg)
        if not 0 <= self.jitter < 1:
            msg = f"retry policy: jitter must be in [0, 1), got {self.jitter}"
            raise UsageError(msg)
        if self.max_attempts < 1 or self.max_age_us < 0:
            msg = "retry policy: max_attempts must be at least 1 and max_age_us not negative"
            raise UsageError(msg)

    def delay_us(self, message_id: str, attempts: int) -> int:
        """How long to wait after the ``attempts``-th failed send of ``message_id``."""
        base = min(self.first_delay_us << min(max(attempts - 1, 0), 62), self.max_delay_us)
        seed = hashlib.sha256(f"{message_id}\0{attempts}".encode()).digest()
        fraction = int.from_bytes(seed[:8], "big") / 2**64
        return base - int(base * self.jitter * fraction)

    def past_its_day(self, due_us: int, at_us: int) -> bool:
        """Whether an attempt at ``at_us`` would fall after the local day of ``due_us``
        (notifications.md: retried until the end of its day, then parked)."""
        return self.within_day and local_date(at_us) > local_date(due_us)

    def exhausted(self, attempts: int, age_us: int) -> bool:
        """Whether a message that has failed ``attempts`` times, ``age_us`` after it was
        first due, is given up."""
        return attempts >= self.max_attempts or age_us >= self.max_age_us


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message in the outbox. ``body`` is the RFC 5322 message, as sent."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: bytes
    alert_key: str | None
    kind: str
    status: Status
    attempts: int
    created_us: int
    send_after_us: int
    next_attempt_us: int
    last_error: str | None
    sent_us: int | None


def normal_message_id(message_id: str) -> str:
    """``<local@domain>``, however the id was written (with or without brackets)."""
    core = message_id.strip().strip("<>").strip()
    if not core or any(c.isspace() or c in "<>" for c in core):
        msg = f"not a usable Message-ID: {message_id!r}"
        raise UsageError(msg)
    return f"<{core}>"


@dataclass(frozen=True, slots=True)
class _Envelope:
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str


def _parse_head(body: bytes) -> tuple[EmailMessage, str]:
    head = BytesHeaderParser(policy=default_policy).parsebytes(body)
    message_id = str(head.get("Message-ID", ""))
    if not message_id:
        msg = "the message has no Message-ID header: the outbox keys on it"
        raise UsageError(msg)
    return head, normal_message_id(message_id)


def message_id_of(body: bytes) -> str:
    """The ``<Message-ID>`` of an RFC 5322 message (:class:`UsageError` if it has none)."""
    return _parse_head(body)[1]


def _headers_of(body: bytes) -> _Envelope:
    """Message-ID, sender, recipients and subject from a message's own headers."""
    head, message_id = _parse_head(body)
    fields = [str(v) for name in ("To", "Cc") for v in head.get_all(name, [])]
    recipients = tuple(addr for _, addr in getaddresses(fields) if addr)
    senders = [addr for _, addr in getaddresses([str(head.get("From", ""))]) if addr]
    if not recipients or not senders:
        msg = f"message {message_id}: needs a From and at least one To or Cc address"
        raise UsageError(msg)
    subject = mask_text(str(head.get("Subject", "")))
    return _Envelope(message_id, senders[0], recipients, subject)


_FIELDS = tuple(f.name for f in fields(OutboxItem))
_COLUMNS = ", ".join(_FIELDS)


def _item(row: tuple[Any, ...]) -> OutboxItem:
    """An item from a row of ``SELECT {_COLUMNS}``."""
    values = dict(zip(_FIELDS, row, strict=True))
    values["recipients"] = tuple(json.loads(values["recipients"]))
    values["body"] = bytes(values["body"])
    return OutboxItem(**values)


_INSERT = (
    "INSERT INTO outbox ({office_col}message_id, created_us, send_after_us, sender,"
    " recipients, subject, body, alert_key, kind, next_attempt_us)"
    " VALUES ({office_val}?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# Parked mail put back: due at ``now_us`` or at its creation, the earlier.
_RETRY = (
    "UPDATE outbox SET status = 'pending', attempts = 0,"
    " next_attempt_us = CASE WHEN created_us < ? THEN created_us ELSE ? END,"
    " send_after_us = ? WHERE {office} AND status = 'parked'"
)


class Outbox:
    """The outbox table (created by :mod:`bsc_rules.store.db`) of one office, on the
    connection of its event log (a :class:`Db`, or a connection wrapped in one)."""

    def __init__(self, db: Db | AnyConnection, render: Render | None = None) -> None:
        self.db = Db.of(db)
        self.conn = self.db.connection  # the connection itself, as callers used to reach it
        self._render = render or to_bytes

    def enqueue(
        self,
        mail: Mail | bytes,
        *,
        kind: str,
        now_us: int,
        alert_key: str | None = None,
        send_after_us: int | None = None,
    ) -> bool:
        """Add a message to send at ``send_after_us`` (default ``now_us``), inside the
        caller's open transaction (see :meth:`Db.transaction`); it does not commit.

        ``mail`` is a :class:`Mail` (rendered here) or the RFC 5322 bytes; either way
        Message-ID, envelope sender and recipients (From, To and Cc addresses) and
        Subject are read from the message's headers. Return False when the Message-ID is
        already in the outbox, whatever its status: then nothing changes.
        """
        if not self.db.in_transaction:
            msg = "enqueue runs inside the caller's transaction: use `with db.transaction()`"
            raise UsageError(msg)
        body, env = self._prepare(mail)
        due = now_us if send_after_us is None else send_after_us
        cur = self.db.execute(
            _INSERT,
            (env.message_id, now_us, due, env.sender, json.dumps(env.recipients),
             env.subject, body, alert_key, kind, due),
        )  # fmt: skip
        return cur.rowcount == 1

    def _prepare(self, mail: Mail | bytes) -> tuple[bytes, _Envelope]:
        if isinstance(mail, bytes):
            return mail, _headers_of(mail)
        body = self._render(mail)
        rendered = _headers_of(body)  # bare addresses, the subject as sent (masked)
        expected = normal_message_id(mail.message_id)
        if rendered.message_id != expected:
            msg = f"the rendered message has Message-ID {rendered.message_id}, the mail {expected}"
            raise UsageError(msg)
        return body, rendered

    def get(self, message_id: str) -> OutboxItem | None:
        """The message with this Message-ID, if it is in the outbox."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE {{office}} AND message_id = ?",
            (normal_message_id(message_id),),
        ).fetchone()
        return None if row is None else _item(row)

    def due(self, now_us: int) -> list[OutboxItem]:
        """Pending messages whose next attempt is at or before ``now_us``, oldest first."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM outbox"
            " WHERE {office} AND status = 'pending' AND next_attempt_us <= ?"
            " ORDER BY send_after_us, created_us, message_id",
            (now_us,),
        )
        return [_item(r) for r in rows]

    def next_attempt(self, after: int) -> int | None:
        """The earliest next attempt of a pending message later than ``after``, if any."""
        row = self.db.execute(
            "SELECT MIN(next_attempt_us) FROM outbox WHERE {office} AND status = 'pending'"
            " AND next_attempt_us > ?",
            (after,),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def items(self, status: Status | None = None) -> list[OutboxItem]:
        """Every message (or those with ``status``), oldest first: ``bsc-rules outbox``."""
        where, params = (" AND status = ?", (status,)) if status else ("", ())
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE {{office}}{where}"
            " ORDER BY created_us, message_id",
            params,
        )
        return [_item(r) for r in rows]

    def parked(self) -> list[OutboxItem]:
        """Messages given up as undeliverable (for the digest and the CLI)."""
        return self.items("parked")

    def mark_sent(self, message_id: str, now_us: int) -> None:
        """Record that a pending message was accepted by the server at ``now_us``."""
        with self.db.transaction():
            self.db.execute(
                "UPDATE outbox SET status = 'sent', sent_us = ?, attempts = attempts + 1"
                " WHERE {office} AND message_id = ? AND status = 'pending'",
                (now_us, normal_message_id(message_id)),
            )

    def mark_failed(
        self,
        message_id: str,
        now_us: int,
        error: str,
        *,
        permanent: bool,
        policy: RetryPolicy = DEFAULT_POLICY,
    ) -> OutboxItem:
        """Record a failed send: schedule the next attempt by ``policy``, or park the
        message if the error is permanent or the retry budget is spent."""
        with self.db.transaction():
            item = self._require(message_id, "pending")
            attempts = item.attempts + 1
            park = permanent or policy.exhausted(attempts, now_us - item.send_after_us)
            wait = 0 if park else policy.delay_us(item.message_id, attempts)
            if not park and policy.past_its_day(item.send_after_us, now_us + wait):
                park, wait = True, 0  # the day is over: parked, reported the next morning
            updated = replace(
                item,
                status="parked" if park else "pending",
                attempts=attempts,
                next_attempt_us=now_us + wait,
                last_error=mask_text(error)[:_ERROR_LIMIT],
            )
            self.db.execute(
                "UPDATE outbox SET status = ?, attempts = ?, next_attempt_us = ?,"
                " last_error = ? WHERE {office} AND message_id = ?",
                (updated.status, attempts, updated.next_attempt_us, updated.last_error,
                 item.message_id),
            )  # fmt: skip
        return updated

    def _require(self, message_id: str, status: Status) -> OutboxItem:
        item = self.get(message_id)
        if item is None or item.status != status:
            state = "not in the outbox" if item is None else item.status
            msg = f"message {message_id} is {state}, not {status}"
            raise UsageError(msg)
        return item

    def retry(self, message_id: str | None = None, *, now_us: int) -> list[str]:
        """Put a parked message (or every parked message) back in the queue with a fresh
        retry budget (no attempts yet; the age budget counts from ``now_us``), due at once
        whatever the clock of the next delivery: at ``now_us`` or at its creation, the
        earlier, so that a replay on simulated time after a retry on the wall clock
        delivers it too. Return the Message-IDs put back, oldest first."""
        where, params = "", []
        with self.db.transaction():
            if message_id is not None:
                where = " AND message_id = ?"
                params.append(self._require(message_id, "parked").message_id)
            rows = self.db.execute(
                f"{_RETRY}{where} RETURNING message_id, created_us",
                (now_us, now_us, now_us, *params),
            ).fetchall()
        return [mid for mid, _ in sorted(rows, key=lambda r: (r[1], r[0]))]
