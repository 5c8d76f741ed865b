"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, in a background thread.

:class:`SmtpServer` listens on a free port and keeps what it accepts in
:attr:`SmtpServer.received`. Its :class:`Behaviour` makes it misbehave on demand:
refuse chosen recipients (``refuse``), answer the next N messages with an error
(``fail_next``), drop the connection in the middle of DATA (``drop_next``) or keep a
message waiting in DATA until the test sets an event (``hold``). It can be
stopped and started again on the same port, so "the server is down" is a stopped
server. Replies are sent only after the handler has stored the message, so a client
that got ``250`` can read :attr:`received` at once: nothing needs to wait.

Use it as a context manager, or through the :func:`smtp_server` fixture (register the
module with ``pytest_plugins = ["tests.smtp_server"]`` in the root conftest).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from types import TracebackType
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"
HOLD_LIMIT_S = 120  # a held message waits at most this long (a failing test ends anyway)


@dataclass(frozen=True, slots=True)
class Received:
    """A message the server accepted: envelope and content."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes

    def message(self) -> EmailMessage:
        """The content parsed as an email message (headers decoded)."""
        return message_from_bytes(self.content, policy=default)

    @property
    def message_id(self) -> str:
        return str(self.message()["Message-ID"])


@dataclass
class Behaviour:
    """How the server answers; change it between sends."""

    refuse: dict[str, str] = field(default_factory=dict)  # recipient → reply, e.g. "550 …"
    fail_next: list[str] = field(default_factory=list)  # replies to the next DATA commands
    drop_next: int = 0  # connections to close in the middle of DATA
    hold: threading.Event | None = None  # while not set, DATA waits (the client hears nothing)
    holding: threading.Event = field(default_factory=threading.Event)  # a message waits


class _Handler:
    """aiosmtpd hooks: store accepted messages, misbehave as told."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        self.sessions = 0
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self.lock:
            reply = self.behaviour.refuse.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        hold = self.behaviour.hold
        if hold is not None and not hold.is_set():
            self.behaviour.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, hold.wait, HOLD_LIMIT_S)
        with self.lock:
            behaviour = self.behaviour
            if behaviour.drop_next > 0:
                behaviour.drop_next -= 1
                assert server.transport is not None
                server.transport.close()  # the client never hears back
                return "421 closed"
            if behaviour.fail_next:
                return behaviour.fail_next.pop(0)
            content = envelope.original_content or envelope.content or b""
            assert isinstance(content, bytes)
            self.received.append(
                Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), content)
            )
        return "250 OK: queued"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class SmtpServer:
    """An aiosmtpd server on ``127.0.0.1:port`` that can be stopped and started again."""

    def __init__(self, port: int | None = None) -> None:
        self.host = HOST
        self.port = port or free_port()
        self._handler = _Handler()
        self._controller: Controller | None = None

    @property
    def behaviour(self) -> Behaviour:
        return self._handler.behaviour

    @property
    def received(self) -> list[Received]:
        """Messages accepted so far (a copy)."""
        with self._handler.lock:
            return list(self._handler.received)

    @property
    def sessions(self) -> int:
        """SMTP sessions opened so far (EHLO commands seen)."""
        with self._handler.lock:
            return self._handler.sessions

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SmtpServer:
        """Listen (returns once the server answers)."""
        if self._controller is None:
            controller = Controller(self._handler, hostname=self.host, port=self.port)
            controller.start()
            self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A running SMTP server on a free port, stopped after the test."""
    with SmtpServer() as server:
        yield server
