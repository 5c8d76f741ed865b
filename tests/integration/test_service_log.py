"""The service's log lines: ISO 8601 time in +08:00 from the injected clock, level, office."""

from __future__ import annotations

import io
import logging
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bsc_rules.clock import FakeClock
from bsc_rules.scheduling.service import LogFormatter, serve
from tests.integration.test_service import make_settings
from tests.smtp_server import SmtpServer


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("bsc_rules.x", level, __file__, 1, message, None, None)


def test_the_formatter_takes_its_time_from_the_clock_in_taipei() -> None:
    """A UTC clock instant is written in +08:00 with milliseconds, then level and office."""
    clock = FakeClock(datetime(2017, 3, 23, 0, 0, 0, 123456, tzinfo=UTC))
    formatter = LogFormatter(clock, "datong")
    assert formatter.format(record("服務已啟動")) == (
        "2017-03-23T08:00:00.123+08:00 INFO datong 服務已啟動"
    )
    clock.set(datetime(2017, 12, 31, 16, 30, tzinfo=UTC))
    assert formatter.format(record("投遞失敗", logging.WARNING)) == (
        "2018-01-01T00:30:00.000+08:00 WARNING datong 投遞失敗"
    )


def test_serve_logs_every_line_with_the_clock_time_level_and_office(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every line ``bsc-rules run`` logs starts with the fake clock's time, INFO, datong."""
    clock = FakeClock(datetime(2017, 5, 10, 1, 0, 0, 250000, tzinfo=UTC))
    stop = threading.Event()
    stop.set()
    with SmtpServer() as smtp:
        serve(make_settings(tmp_path, smtp), clock=clock, stdin=io.BytesIO(b""), stop=stop)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 3, lines  # started, end of standard input, stopped
    head = re.compile(r"^2017-05-10T09:00:00\.250\+08:00 INFO datong \S")
    assert all(head.match(line) for line in lines), lines
    assert any("服務已啟動" in line for line in lines)
    assert any("服務已停止" in line for line in lines)
