"""Delivery: send what the outbox holds, through SMTP or into a Maildir.

A :class:`Mailer` has one method, ``send``; it raises :class:`DeliveryError` saying
whether the failure is permanent (an SMTP 5xx reply: parked at once) or temporary
(4xx, connection refused, timeout, connection lost: retried with backoff).

:func:`deliver_due` sends every due outbox item once and records the outcome. A
message is marked sent only after the server accepted it, so a crash between the two
(or a connection lost after the server took the message but before its reply came)
resends it later: at least once, never lost, and a resend carries the same
``Message-ID`` so mail clients show it once. A message marked sent is never sent again.

Errors name the server (``host:port``) and the SMTP code and reply; they never
contain the message itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import smtplib
import ssl
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from mailbox import Maildir
from pathlib import Path
from typing import Literal, Protocol

from bsc_rules.calendar import iso, to_us
from bsc_rules.clock import Clock
from bsc_rules.errors import BscRulesError, UsageError
from bsc_rules.notify.outbox import DEFAULT_POLICY, Outbox, RetryPolicy, message_id_of

log = logging.getLogger(__name__)

Security = Literal["none", "starttls", "tls"]
_REPLY_LIMIT = 200


class DeliveryError(BscRulesError):
    """A message could not be handed over; ``permanent`` says whether retrying can help."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class Mailer(Protocol):
    """Hands one message to its recipients."""

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        """Deliver ``message`` (RFC 5322 bytes) or raise :class:`DeliveryError`."""
        ...


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())[:_REPLY_LIMIT]


def _check(reply: tuple[int, bytes], *accepted: int, what: str) -> None:
    """Raise the reply as an SMTP error unless its code is one of ``accepted``."""
    code, text = reply
    if code not in accepted:
        raise smtplib.SMTPResponseException(code, f"{what}: {_reply_text(text)}")


class SmtpMailer:
    """Delivery to an SMTP server (plain, STARTTLS or implicit TLS, optional login).

    A message goes to all its recipients or to none: the recipients are announced
    first, and if the server refuses any of them the message is not sent (so a retry
    cannot duplicate it for the ones that were accepted).
    """

    def __init__(
        self,
        host: str,
        port: int,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            msg = f"smtp security: expected none, starttls or tls, got {security!r}"
            raise UsageError(msg)
        if (username is None) != (password is None):
            msg = "smtp login: give both a username and a password, or neither"
            raise UsageError(msg)
        self.host, self.port, self.security = host, port, security
        self.timeout = timeout
        self._login = (username, password) if username and password else None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:  # never the password
        return f"SmtpMailer({self.address}, security={self.security})"

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        if not recipients:
            msg = f"SMTP {self.address}: a message without recipients cannot be sent"
            raise DeliveryError(msg, permanent=True)
        try:
            smtp = self._open()
        except OSError as exc:  # smtplib's errors are OSErrors
            raise self._error(exc, "connecting") from None
        try:
            self._transmit(smtp, sender, recipients, message)
        except OSError as exc:
            raise self._error(exc, "sending") from None
        finally:
            _close(smtp)

    def _open(self) -> smtplib.SMTP:
        if self.security == "tls":
            context = ssl.create_default_context()
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self._login is not None:
                smtp.login(*self._login)
        except BaseException:
            _close(smtp)
            raise
        return smtp

    def _transmit(
        self, smtp: smtplib.SMTP, sender: str, recipients: Sequence[str], message: bytes
    ) -> None:
        options = ["BODY=8BITMIME"] if not message.isascii() and smtp.has_extn("8bitmime") else []
        _check(smtp.mail(sender, options), 250, what=f"sender {sender}")
        refused = [(r, smtp.rcpt(r)) for r in recipients]
        refused = [(r, reply) for r, reply in refused if reply[0] not in (250, 251)]
        if refused:
            with suppress(OSError):  # the session ends anyway
                smtp.rset()
            worst = max(refused, key=lambda r: r[1][0])  # 5xx before 4xx
            names = ", ".join(r for r, _ in refused)
            _check(worst[1], 250, what=f"recipient {names}")
        _check(smtp.data(message), 250, what="message")  # data() raises only if not 354

    def _error(self, exc: BaseException, stage: str) -> DeliveryError:
        code, why = _describe(exc, self.timeout)
        permanent = code is not None and 500 <= code < 600
        msg = f"SMTP {self.address} {stage}: {why}"
        return DeliveryError(msg, permanent=permanent, code=code)


def _describe(exc: BaseException, timeout: float) -> tuple[int | None, str]:
    """The SMTP code (if the server answered) and a readable cause."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code, f"{exc.smtp_code} {_reply_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return None, "the server closed the connection"
    if isinstance(exc, TimeoutError):
        return None, f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return None, "connection refused (is the SMTP server running, on this port?)"
    if isinstance(exc, ssl.SSLError):
        return None, f"TLS failed ({exc.reason or exc}): check the security setting"
    if isinstance(exc, smtplib.SMTPException):
        return None, _reply_text(str(exc))
    return None, (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))


def _close(smtp: smtplib.SMTP) -> None:
    """End the session politely if the server is still there; never raise."""
    try:
        smtp.quit()
    except OSError:  # smtplib's errors included
        smtp.close()


_UNSAFE = re.compile(r"[^A-Za-z0-9@._+=-]")


def maildir_name(message_id: str) -> str:
    """A file name for a Message-ID: the same every time, safe in a Maildir."""
    core = message_id.strip().strip("<>")
    safe = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), core)
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    if len(safe) > 200:  # file names stop at 255 bytes; keep long ids apart by a digest
        safe = f"{safe[:160]}-{hashlib.sha256(core.encode()).hexdigest()[:32]}"
    return f"{safe}.eml"


class MaildirMailer:
    """Delivery into a Maildir (``new/``), one file per Message-ID, named after it.

    The file holds the message with LF line ends (the Maildir convention). Sending the
    same message again rewrites the same file with the same bytes, so two replays
    leave identical Maildirs. Envelope recipients are not recorded (they are the
    message's To/Cc).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        Maildir(self.path, create=True)
        for sub in ("new", "cur", "tmp"):  # Maildir() makes them only for a new folder
            (self.path / sub).mkdir(mode=0o700, exist_ok=True)

    def __repr__(self) -> str:
        return f"MaildirMailer({str(self.path)!r})"

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        name = maildir_name(message_id_of(message))
        staged = self.path / "tmp" / name
        try:  # owner-only, like the database: the message holds office data
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(message.replace(b"\r\n", b"\n"))
                out.flush()
                os.fsync(out.fileno())
            os.replace(staged, self.path / "new" / name)
        except OSError as exc:
            msg = f"Maildir {self.path}: cannot write {name}: {exc.strerror or exc}"
            raise DeliveryError(msg, permanent=False) from None


@dataclass(frozen=True, slots=True)
class Failure:
    """A send that failed: retried at ``next_attempt_us``, or parked."""

    message_id: str
    error: str
    next_attempt_us: int | None


@dataclass(slots=True)
class DeliveryReport:
    """What one :func:`deliver_due` pass did."""

    sent: list[str] = field(default_factory=list)
    deferred: list[Failure] = field(default_factory=list)
    parked: list[Failure] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return len(self.sent) + len(self.deferred) + len(self.parked)


def deliver_due(
    outbox: Outbox, mailer: Mailer, clock: Clock, policy: RetryPolicy = DEFAULT_POLICY
) -> DeliveryReport:
    """Send every outbox message due now, once, and record each outcome."""
    report = DeliveryReport()
    for item in outbox.due(to_us(clock.now())):
        try:
            mailer.send(item.sender, item.recipients, item.body)
        except DeliveryError as exc:
            now_us = to_us(clock.now())
            failed = outbox.mark_failed(
                item.message_id, now_us, str(exc), permanent=exc.permanent, policy=policy
            )
            error = failed.last_error or str(exc)  # as kept: masked, bounded
            if failed.status == "parked":
                report.parked.append(Failure(item.message_id, error, None))
            else:
                report.deferred.append(Failure(item.message_id, error, failed.next_attempt_us))
            _log_failure(failed.attempts, item.message_id, error, failed.next_attempt_us)
        else:
            outbox.mark_sent(item.message_id, to_us(clock.now()))
            report.sent.append(item.message_id)
    return report


def _log_failure(attempt: int, message_id: str, error: str, retry_at: int | None) -> None:
    """A warning at every failed attempt: which, why, and when it is tried again."""
    then = f"將於 {iso(retry_at)} 重試" if retry_at is not None else "已擱置，不再重試"
    log.warning("郵件寄送失敗（第%d次嘗試）：%s：%s；%s", attempt, message_id, error, then)
