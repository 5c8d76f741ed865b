"""The example digest through a real SMTP server, and as a browser draws it."""

from __future__ import annotations

import smtplib

from bsc_rules.notify.examples import example
from bsc_rules.notify.render import to_bytes
from tests.smtp_server import SmtpServer


def test_digest_survives_smtp() -> None:
    """The digest's bytes go through a real SMTP server and parse into the same parts."""
    mail = example("digest")
    with SmtpServer() as server:
        with smtplib.SMTP(server.host, server.port) as client:
            client.sendmail("bsc-rules@dthr.example", ["director@dthr.example"], to_bytes(mail))
        (received,) = server.received
    parsed = received.message()
    assert str(parsed["Subject"]) == mail.subject
    assert str(parsed["Message-ID"]) == mail.message_id
    types = [p.get_content_type() for p in parsed.walk()]
    assert types[:4] == ["multipart/alternative", "text/plain", "multipart/related", "text/html"]
    assert types.count("image/png") == len(mail.images)


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))
